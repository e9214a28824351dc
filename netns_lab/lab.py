"""A lab's lifecycle: ``up()`` builds it, ``down()`` removes it, and helpers probe it.

``up`` follows one rule that makes cleanup total: write the ownership record first (every
namespace the lab will create, a fresh instance token), then create. Whatever instant the
process dies at, ``clean`` (or the next ``up`` of the same name) finds everything from the
record and removes it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from ipaddress import IPv4Address
from typing import Any

from netns_lab import cleanup, procs, state
from netns_lab.controllers.topology import NODE_AGENT_PORT, Topology, from_dict, plan, to_dict
from netns_lab.errors import LabError, RealizeError
from netns_lab.model import ObjectRef, Scenario
from netns_lab.realize import network
from netns_lab.realize.netns import exists as netns_exists
from netns_lab.realize.netns import run_in

FAULT_ENV = "NETNS_LAB_FAULT"  # tests: SIGKILL ourselves at a named step of up()
READY_TIMEOUT = 120.0


def _fault(step: str, counter: dict[str, int] | None = None) -> None:
    want = os.environ.get(FAULT_ENV)
    if not want:
        return
    if counter is not None:
        counter[step] = counter.get(step, 0) + 1
        step = f"{step}:{counter[step]}"
    if want == step:
        os.kill(os.getpid(), signal.SIGKILL)


def parse_ref(text: str | ObjectRef) -> ObjectRef:
    """``pod/NAME``, ``pod/NS/NAME``, ``node/NAME`` or an IPv4 address."""
    if isinstance(text, ObjectRef):
        return text
    try:
        return ObjectRef("ip", str(IPv4Address(text)))
    except ValueError:
        pass
    kind, _, rest = text.partition("/")
    if kind == "node":
        return ObjectRef("node", rest)
    ns, _, name = rest.rpartition("/")
    return ObjectRef(kind, name, ns or "default")


class Lab:
    """One running (or to-be-running) lab. Use as a context manager for automatic ``down``."""

    def __init__(self, scenario: Scenario | None, topology: Topology | None = None) -> None:
        self.scenario = scenario
        self.topology = topology if topology is not None else plan(scenario)  # type: ignore[arg-type]
        self.name = self.topology.lab
        self.state: state.LabState | None = None

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str, overrides: dict[str, Any] | None = None) -> "Lab":
        from netns_lab.realize.hostinfo import host_networks
        from netns_lab.scenario import load_scenario

        return cls(load_scenario(path, overrides, host_networks()))

    @classmethod
    def attach(cls, name: str) -> "Lab":
        """A handle on a lab that is already up (built by another process)."""
        st = state.load(name)
        if st is None or st.phase != "up":
            raise LabError(f"lab {name!r} is not up (see `invoke status`)")
        lab = cls(None, from_dict(st.topology))
        lab.state = st
        return lab

    # -- lifecycle -----------------------------------------------------------------------
    def up(self) -> "Lab":
        if state.load(self.name) is not None:
            cleanup.remove_lab(self.name)  # the remains of an earlier run of this lab
        topo = self.topology
        foreign = [n for n in topo.namespaces if netns_exists(n)]
        if foreign:  # not ours (our own remains were just removed): never touch it
            raise LabError(
                f"network namespace {foreign[0]!r} already exists and no netns-lab record owns it; "
                f"remove it (ip netns del {foreign[0]}) or give the lab another name"
            )
        st = state.LabState(
            lab=self.name,
            instance=uuid.uuid4().hex,
            scenario=self.scenario.path if self.scenario else "",
            namespaces=list(topo.namespaces),
            topology=to_dict(topo),
            created=time.time(),
        )
        st.save()
        self.state = st
        _fault("state")
        try:
            os.makedirs(st.workdir, exist_ok=True)
            counter: dict[str, int] = {}
            network.build(topo, on_step=lambda s: _fault(s, counter if s == "pod" else None))
            self._start_netexec(st)
            _fault("ready")
            st.phase = "up"
            st.save()
        except BaseException:
            cleanup.remove_lab(self.name)
            self.state = None
            raise
        return self

    def _start_netexec(self, st: state.LabState) -> None:
        topo = self.topology
        targets = [
            {"netns": p.netns, "name": p.name, "ports": sorted({port for port, _ in p.ports})}
            for p in topo.pods
            if p.ports
        ]
        targets += [{"netns": n.netns, "name": n.name, "ports": [NODE_AGENT_PORT]} for n in topo.nodes]
        config = os.path.join(st.workdir, "netexec.json")
        with open(config, "w") as fh:
            json.dump({"lab": self.name, "targets": targets}, fh)
        log = os.path.join(st.workdir, "netexec.log")
        proc = procs.spawn([sys.executable, "-m", "netns_lab.services.netexec", config], self.name, st.instance, log)
        _fault("spawned")
        st.processes.append({"role": "netexec", "pid": proc.pid, "start": procs.start_time(proc.pid)})
        st.save()
        _fault("servers")
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        line = proc.stdout.readline().decode().strip() if ready else ""
        proc.stdout.close()
        if not line.startswith("READY"):
            with open(log, errors="replace") as fh:
                tail = fh.read()[-500:].strip().replace("\n", " | ")
            raise RealizeError("netexec", "start", None, tail or "no READY line")

    def down(self) -> None:
        cleanup.remove_lab(self.name)
        self.state = None

    def __enter__(self) -> "Lab":
        return self.up() if self.state is None else self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- addressing ----------------------------------------------------------------------
    def netns_of(self, ref: str | ObjectRef) -> str:
        r = parse_ref(ref)
        if r.kind == "node":
            return self.topology.node(r.name).netns
        if r.kind == "pod":
            return self.topology.pod(f"{r.namespace}/{r.name}").netns
        raise LabError(f"{r} has no network namespace")

    def ip_of(self, ref: str | ObjectRef) -> str:
        r = parse_ref(ref)
        if r.kind == "ip":
            return r.name
        if r.kind == "node":
            return str(self.topology.node(r.name).ip)
        if r.kind == "pod":
            return str(self.topology.pod(f"{r.namespace}/{r.name}").ip)
        raise LabError(f"{r}: no IP for this kind of object yet")

    def addresses(self, ref: str | ObjectRef) -> list[str]:
        """The IPv4 addresses the object's namespace shows for itself (its own `ip addr`)."""
        return namespace_addresses(self.netns_of(ref))

    # -- doing things inside ---------------------------------------------------------------
    def exec(self, ref: str | ObjectRef, cmd: list[str], check: bool = False, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run a real command in the object's namespace (``ip netns exec``), as ``kubectl exec``."""
        env = procs.lab_env(self.name, self.state.instance if self.state else "")
        return subprocess.run(
            ["ip", "netns", "exec", self.netns_of(ref), *cmd],
            capture_output=True, text=True, check=check, timeout=timeout, env=env, **kw,
        )

    def connect(self, src: str | ObjectRef, dst: str | ObjectRef, port: int, protocol: str = "tcp", timeout: float = 2.0):  # type: ignore[no-untyped-def]
        from netns_lab.probes.connect import probe_one

        return probe_one(self.netns_of(src), self.ip_of(dst), port, protocol, timeout)

    def ping(self, src: str | ObjectRef, dst: str | ObjectRef, timeout: float = 1.0):  # type: ignore[no-untyped-def]
        from netns_lab.probes.icmp import ping

        return ping(self.netns_of(src), self.ip_of(dst), timeout)

    def matrix(self, kind: str = "pod-to-pod", protocol: str = "tcp"):  # type: ignore[no-untyped-def]
        """Every source to every target of ``kind`` (see :mod:`netns_lab.probes.promises`)."""
        from netns_lab.probes.promises import matrix

        return matrix(self.topology, kind, protocol)


def namespace_addresses(ns: str) -> list[str]:
    from pyroute2 import IPRoute

    def read() -> list[str]:
        with IPRoute() as ipr:
            return [m.get_attr("IFA_ADDRESS") for m in ipr.get_addr(family=2) if m.get_attr("IFA_LABEL") != "lo"]

    return run_in(ns, read)

