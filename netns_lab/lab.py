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
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from ipaddress import IPv4Address
from collections.abc import Callable
from typing import Any

from netns_lab import atomic, cleanup, interrupts, model_io, procs, state
from netns_lab.controllers import dns as dns_records
from netns_lab.controllers import loadbalancer, spread
from netns_lab.controllers.envvars import pod_env
from netns_lab.controllers.topology import NODE_AGENT_PORT, NodePlan, PodPlan, Topology, from_dict, plan, to_dict
from netns_lab.errors import LabError, RealizeError
from netns_lab.model import Ingress, ObjectRef, Pod, Scenario, Secret, Service, find_service
from netns_lab.proxy.types import NodeContext, ServicePortInfo, service_ports
from netns_lab.realize import network, outside, resolvconf
from netns_lab.realize.proxier import (
    IPTABLES_BACKEND_ENV,
    Proxier,
    delete_stale_udp,
    delete_stale_udp_nodeport,
    make_proxier,
)
from netns_lab.realize.netns import exists as netns_exists
from netns_lab.realize.netns import run_in

FAULT_ENV = "NETNS_LAB_FAULT"  # tests: SIGKILL ourselves at a named step of up()
READY_TIMEOUT = 120.0
PHASE_URL = "http://node-agent/netns-lab/phase"  # served by netexec on every node's agent port


def _fault(step: str, counter: dict[str, int] | None = None) -> None:
    want = os.environ.get(FAULT_ENV)
    if not want:
        return
    if counter is not None:
        counter[step] = counter.get(step, 0) + 1
        step = f"{step}:{counter[step]}"
    if want == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _until(done: Callable[[], bool], timeout: float, interval: float) -> bool:
    """Poll ``done`` every ``interval`` seconds until it holds (True) or ``timeout`` passes (False):
    the one way the lab waits for its servers (netexec, nginx, the cloud LB) to catch up."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def parse_ref(text: str | ObjectRef) -> ObjectRef:
    """``pod/NAME``, ``pod/NS/NAME``, ``node/NAME`` or an IPv4 address."""
    if isinstance(text, ObjectRef):
        return text
    if text == "external":
        return ObjectRef("external", "external")
    if text.startswith("external/"):
        return ObjectRef("external", text.split("/", 1)[1])
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
        # The live model: changes at run time (pods added, deleted, made unready).
        self.pods: tuple[Pod, ...] = scenario.pods if scenario else ()
        self.services: tuple[Service, ...] = scenario.services if scenario else ()
        self.ingresses: tuple[Ingress, ...] = scenario.ingresses if scenario else ()
        self.secrets: tuple[Secret, ...] = scenario.secrets if scenario else ()
        self._ingress_conf: str | None = None  # nginx.conf as last written
        self.proxy_mode = scenario.cluster.proxy_mode if scenario else "iptables"
        self.ipvs = (scenario.cluster.ipvs_scheduler, scenario.cluster.ipvs_legacy_ping) if scenario else ("rr", False)
        self.iptables_backend = os.environ.get(IPTABLES_BACKEND_ENV, "nft")
        self.proxiers: dict[str, Proxier] = {}
        self._ports: tuple[ServicePortInfo, ...] = ()
        self._health: dict[str, dict[str, dict[str, Any]]] = {}  # what netexec's health ports say
        self._balancer: dict[str, Any] | None = None  # the cloud LB's config, as last written
        self.progress: Callable[[str, int, int], None] | None = None  # (phase, done, total), see progress.py
        self.temporary = False  # run-scenario without --keep: once its builder is dead, the next up clears it

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str, overrides: dict[str, Any] | None = None, spread_over: str = "") -> "Lab":
        """Load a scenario; ``spread_over`` (``IP,IP[,IP]``, the machines of a lab spread over
        several VMs) makes this lab this machine's share of it (see controllers/spread.py)."""
        from netns_lab.realize.hostinfo import host_networks, machine_address
        from netns_lab.scenario import load_scenario

        scenario = load_scenario(path, overrides, host_networks())
        topo = plan(scenario)
        if spread_over:
            hosts = spread.parse_hosts(spread_over)
            here, link_mtu = machine_address(hosts)
            topo = spread.spread(topo, hosts, here, link_mtu)
        return cls(scenario, topo)

    @classmethod
    def attach(cls, name: str) -> "Lab":
        """A handle on a lab that is already up (built by another process)."""
        st = state.load(state.check_name(name, "attach"))
        if st is None or st.phase != "up":
            raise LabError(f"lab {name!r} is not up (see `invoke status`)")
        lab = cls(None, from_dict(st.topology))
        lab.state = st
        lab.pods = tuple(model_io.load_pod(p) for p in st.pods)
        lab.services = tuple(model_io.load_service(s) for s in st.services)
        lab.ingresses = tuple(model_io.load_ingress(i) for i in st.ingresses)
        lab.secrets = tuple(model_io.load_secret(s) for s in st.secrets)
        lab.proxy_mode = st.proxy_mode
        lab.ipvs = (st.ipvs_scheduler, st.ipvs_legacy_ping)
        lab.iptables_backend = st.iptables_backend
        lab._ports = service_ports(lab.services, lab.pods, lab.topology)
        lab._health = loadbalancer.health_answers(lab.services, lab._ports, lab.topology)
        if any(p["role"] == "ingress" for p in st.processes):
            lab._ingress_conf = lab._render_ingress()[0]
        if any(p["role"] == "cloudlb" for p in st.processes):
            lab._balancer = loadbalancer.balancer_config(lab.services, lab.topology, lab.balancer_status_file)
        return lab

    # -- lifecycle -----------------------------------------------------------------------
    def up(self) -> "Lab":
        """Build the lab, holding its lock (``state.acquire``) for the whole build: of two
        builds of one lab, exactly one proceeds; the other is refused in one line."""
        if self.proxy_mode == "ipvs":
            from netns_lab.realize.ipvs import require_ipvs

            require_ipvs()  # before anything is built
        lock = state.acquire(self.name)
        if lock is None:
            raise state.busy_error(self.name)
        try:
            self._clear_remains()
            return self._build()
        finally:  # the lock file stays as long as the record does (down removes both)
            lock.release(remove=state.load(self.name) is None)

    def _clear_remains(self) -> None:
        """Refuse to touch a lab that is up (or being built by a live process); clear the
        remains of one whose build died (its owner is dead) or whose record is unreadable."""
        st = state.load(self.name)
        if st is None:
            return
        since = state.when(st.created)
        pid = st.owner_pid
        alive = state.alive(pid, st.owner_start)
        by = f"process {pid}{'' if alive else ', which has exited'}" if pid else "an unknown process"
        if st.phase == "up" and (alive or not st.temporary):
            raise LabError(f"lab {self.name} is already up (since {since}, built by {by}): "
                           f"use `invoke down {self.name}` or another `name`")
        # "building" while we hold the lock: its builder is gone (or gave up), whatever its PID says
        with interrupts.deferred():  # a Ctrl-C now must not leave half-removed remains
            cleanup.remove_unlocked(self.name)  # the remains of an earlier run of this lab

    def _build(self) -> "Lab":
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
            proxy_mode=self.proxy_mode,
            iptables_backend=self.iptables_backend,
            ipvs_scheduler=self.ipvs[0],
            ipvs_legacy_ping=self.ipvs[1],
            dirs=[resolvconf.config_dir(p.netns) for p in topo.local_pods],
        )
        st.owner_pid, st.owner_start = state.owner()
        st.temporary = self.temporary
        try:  # from the first save on: an exception (Ctrl-C too) removes whatever was made
            self._save_model(st)
            st.save()
            self.state = st
            _fault("state")
            os.makedirs(st.workdir, exist_ok=True)
            counter: dict[str, int] = {}

            made = [0]

            def step(s: str) -> None:
                _fault(s, counter if s == "pod" else None)
                if self.progress and s == "pod":
                    made[0] += 1
                    self.progress("pod namespaces", made[0], len(topo.local_pods))

            network.build(topo, on_step=step)
            if topo.has_outside:
                outside.route_external_ips(topo, tuple(ip for s in self.services for ip in s.external_ips))
            self._write_resolv_confs(self.pods)
            self.sync(full=True)
            _fault("rules")
            self._start_netexec(st)
            self._start_dns(st)
            self._start_ingress(st)
            self._start_balancer(st)
            _fault("ready")
            st.phase = "up"
            st.save()
            self._announce("up")  # what the other machines of a spread lab wait for
        except BaseException:
            cleanup.remove_unlocked(self.name)  # up() holds the lock
            self.state = None
            raise
        return self

    def _save_model(self, st: state.LabState) -> None:
        st.pods = [model_io.dump(p) for p in self.pods]
        st.services = [model_io.dump(s) for s in self.services]
        st.ingresses = [model_io.dump(i) for i in self.ingresses]
        st.secrets = [model_io.dump(s) for s in self.secrets]
        st.topology = to_dict(self.topology)

    def _write_netexec_config(self, st: state.LabState) -> str:
        topo = self.topology
        targets = [
            {"netns": p.netns, "name": p.name, "ports": sorted({port for port, _ in p.ports})}
            for p in topo.local_pods
            if p.ports and p.netexec
        ]
        targets += [
            {"netns": n.netns, "name": n.name, "ports": [NODE_AGENT_PORT, loadbalancer.KUBE_PROXY_HEALTHZ_PORT],
             "health": self._health[n.name], "agent": True}
            for n in topo.local_nodes
        ]
        config = os.path.join(st.workdir, "netexec.json")
        phase = "checked" if st.checked else st.phase
        atomic.write(config, json.dumps({"lab": self.name, "phase": phase, "targets": targets}))
        return config

    def _write_resolv_confs(self, pods: tuple[Pod, ...]) -> None:
        topo = self.topology
        local = {p.key: p.netns for p in topo.local_pods}
        resolvconf.write_all(tuple(p for p in pods if p.key in local), local, str(topo.dns_ip), topo.cluster_domain)

    @property
    def zone_file(self) -> str:
        assert self.state is not None
        return os.path.join(self.state.workdir, "dns-zone.json")

    def _write_zone(self) -> None:
        """The DNS records of the live model; the server sees the new file at its next query."""
        if self.state is None or not os.path.isdir(self.state.workdir):
            return
        records = dns_records.build(self.services, self.pods, self.topology, self.topology.cluster_domain)
        atomic.write(self.zone_file, json.dumps(records.to_json(), separators=(",", ":")))

    def _start_dns(self, st: state.LabState) -> None:
        dns_pod = self.topology.local_pod("kube-system/coredns")
        if dns_pod is None:
            return
        self._write_zone()
        self._spawn(st, "dns", ["-m", "netns_lab.services.dns", "--supervise", f"/run/netns/{dns_pod.netns}", self.zone_file])

    def _reload_netexec(self) -> None:
        assert self.state is not None
        self._write_netexec_config(self.state)
        self._signal("netexec")

    def _start_netexec(self, st: state.LabState) -> None:
        config = self._write_netexec_config(st)
        self._spawn(st, "netexec", ["-m", "netns_lab.services.netexec", config])

    # -- Ingress: real nginx in the controller pod --------------------------------------------
    @property
    def ingress_dir(self) -> str:
        assert self.state is not None
        return os.path.join(self.state.workdir, "ingress")

    def _render_ingress(self) -> tuple[str, dict[str, str]]:
        from netns_lab.controllers import ingress as ingress_ctl

        return ingress_ctl.render(self.ingresses, self.services, self.pods, self.topology, self.secrets, self.ingress_dir)

    def _write_ingress(self) -> bool:
        """Write nginx.conf and its certificates; True when the configuration changed."""
        conf, files = self._render_ingress()
        if conf == self._ingress_conf:
            return False
        os.makedirs(os.path.join(self.ingress_dir, "certs"), exist_ok=True)
        for path, text in files.items():
            atomic.write(path, text, 0o600)  # private keys among them
        atomic.write(os.path.join(self.ingress_dir, "nginx.conf"), conf)
        self._ingress_conf = conf
        return True

    def _start_ingress(self, st: state.LabState) -> None:
        pod = self.topology.local_pod("ingress-nginx/ingress-nginx-controller")
        if not self.ingresses or pod is None:
            return
        self._write_ingress()
        self._spawn(st, "ingress", ["-m", "netns_lab.services.ingress", f"/run/netns/{pod.netns}", self.ingress_dir])

    def ingress_reloads(self) -> int:
        try:
            with open(os.path.join(self.ingress_dir, "reloaded")) as fh:
                return int(fh.read() or 0)
        except (OSError, ValueError):
            return 0

    def _reload_ingress(self, timeout: float = 10.0) -> None:
        """Graceful nginx reload; returns once the new workers run (old ones drain)."""
        before = self.ingress_reloads()
        self._signal("ingress")
        _until(lambda: self.ingress_reloads() > before, timeout, 0.01)

    def secret(self, key: str) -> Secret:
        return self._find("secret", self.secrets, key)  # type: ignore[no-any-return]

    def _find(self, kind: str, objects: tuple[Any, ...], key: str) -> Any:
        """``NAME`` (namespace default) or ``NS/NAME`` among ``objects``."""
        key = key if "/" in key else f"default/{key}"
        for o in objects:
            if o.key == key:
                return o
        raise LabError(f"no {kind} {key} in lab {self.name}")

    @property
    def balancer_status_file(self) -> str:
        assert self.state is not None
        return os.path.join(self.state.workdir, "cloudlb-status.json")

    def _balancer_config_file(self, st: state.LabState) -> str:
        return os.path.join(st.workdir, "cloudlb.json")

    def _write_balancer_config(self, st: state.LabState) -> bool:
        """Write the cloud LB's configuration; True when it changed."""
        config = loadbalancer.balancer_config(self.services, self.topology, self.balancer_status_file)
        if config == self._balancer:
            return False
        self._balancer = config
        atomic.write(self._balancer_config_file(st), json.dumps(config))
        return True

    def _start_balancer(self, st: state.LabState) -> None:
        """The emulated cloud load balancer, when the lab has a Service of type LoadBalancer
        (otherwise nothing is written, and syncs skip the balancer entirely)."""
        if not self.topology.has_outside or not any(s.type == "LoadBalancer" and s.load_balancer_ips for s in self.services):
            return
        self._write_balancer_config(st)
        self._spawn(st, "cloudlb", ["-m", "netns_lab.services.cloudlb", self._balancer_config_file(st)])

    def balancer_status(self) -> dict[str, Any]:
        """The cloud LB's last health round: which nodes are in service for which Service."""
        try:
            with open(self.balancer_status_file) as fh:
                return json.load(fh)  # type: ignore[no-any-return]
        except FileNotFoundError:
            return {}

    def wait_balancer_rounds(self, rounds: int = 2, timeout: float = 30.0) -> None:
        """Let the cloud LB finish ``rounds`` more health rounds: a round under way may have
        missed nodes that only just started answering (another machine of a spread lab)."""
        if self._balancer is None:
            return
        start = self.balancer_status().get("round", 0)
        _until(lambda: self.balancer_status().get("round", 0) >= start + rounds, timeout, 0.05)

    def _signal(self, role: str, sig: int = signal.SIGHUP) -> None:
        assert self.state is not None
        for p in self.state.processes:
            if p["role"] == role and procs.owned_by(p["pid"], self.state.instance):
                os.kill(p["pid"], sig)

    def _spawn(self, st: state.LabState, role: str, args: list[str]) -> None:
        """Start an in-lab server, record it, and wait for its READY line."""
        log = os.path.join(st.workdir, f"{role}.log")
        proc = procs.spawn([sys.executable, *args], self.name, st.instance, log)
        _fault("spawned")
        st.processes.append({"role": role, "pid": proc.pid, "start": procs.start_time(proc.pid)})
        st.save()
        _fault("servers")
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        line = proc.stdout.readline().decode().strip() if ready else ""
        proc.stdout.close()
        if not line.startswith("READY"):
            with open(log, errors="replace") as fh:
                tail = fh.read()[-500:].strip().replace("\n", " | ")
            raise RealizeError(role, "start", None, tail or "no READY line")

    # -- Services: kube-proxy's job ----------------------------------------------------------
    def node_context(self, node: str) -> NodeContext:
        topo = self.topology
        return NodeContext(node, topo.pod_cidr, topo.service_cidr, (str(topo.node(node).ip),))

    def sync(self, full: bool = False) -> dict[str, object]:
        """Recompute endpoints and bring every node's Service rules up to date (one
        iptables-restore / nft transaction per node); remove stale UDP conntrack entries."""
        if not self.proxiers:
            self.proxiers = {
                n.name: make_proxier(self.proxy_mode, n.netns, self.node_context(n.name), self.iptables_backend, *self.ipvs)
                for n in self.topology.local_nodes
            }
            full = True
        self._write_zone()  # DNS first: the cheapest part, and what users wait for
        old_ports = self._ports
        ports = service_ports(self.services, self.pods, self.topology)
        stats = {}
        for i, (name, p) in enumerate(self.proxiers.items(), 1):
            stats[name] = p.sync(ports, full=full)
            if self.progress:
                self.progress(f"Service rules ({len(ports)} ports)", i, len(self.proxiers))
        self._ports = ports
        self._forget_stale_udp(old_ports, ports)
        # kube-proxy's health answers (served by netexec) and the cloud LB follow the endpoints
        health = loadbalancer.health_answers(self.services, ports, self.topology)
        health_changed, self._health = health != self._health, health
        if self.state is not None and self.state.processes:
            if health_changed:
                self._reload_netexec()
            if self._ingress_conf is not None and self._write_ingress():
                self._reload_ingress()
            if self._balancer is not None and self._write_balancer_config(self.state):
                self._signal("cloudlb")
        if self.state is not None:
            self._save_model(self.state)
            self.state.save()
        return stats  # type: ignore[return-value]

    def _forget_stale_udp(self, old: tuple[ServicePortInfo, ...], new: tuple[ServicePortInfo, ...]) -> None:
        now = {(p.namespace, p.name, p.port_name, p.protocol): {e.ip for e in p.endpoints} for p in new}
        for p in old:
            if p.protocol != "UDP":
                continue
            gone = {e.ip for e in p.endpoints} - now.get((p.namespace, p.name, p.port_name, p.protocol), set())
            for ip in gone:
                for node in self.topology.local_nodes:
                    delete_stale_udp(node.netns, p.cluster_ip, p.port, ip)
                    if p.node_port is not None:
                        delete_stale_udp_nodeport(node.netns, p.node_port, ip)

    def service_ports(self) -> tuple[ServicePortInfo, ...]:
        return self._ports

    def update_service(self, key: str, **changes: object) -> Service:
        """Change a Service in place (e.g. ``external_name=``) and sync rules and DNS."""
        self._changeable()
        old = self.service(key)
        new = replace(old, **changes)  # type: ignore[arg-type]
        self.services = tuple(new if s.key == old.key else s for s in self.services)
        self.sync()
        return new

    def apply_ingress(self, ing: Ingress) -> None:
        """Create or replace an Ingress (``kubectl apply``); nginx reloads gracefully."""
        self._changeable()
        if not self.ingresses:
            raise LabError("this lab runs no ingress controller (its scenario has no Ingress)")
        if any(i.key == ing.key for i in self.ingresses):
            self.ingresses = tuple(ing if i.key == ing.key else i for i in self.ingresses)
        else:
            self.ingresses = (*self.ingresses, ing)
        self.sync()

    def set_ready(self, pod: str, ready: bool = True) -> None:
        """Mark a pod ready or not (its readiness probe, in effect) and sync the rules."""
        self._changeable()
        key = self._pod_key(pod)
        self.pods = tuple(replace(p, ready=ready) if p.key == key else p for p in self.pods)
        self.sync()

    def delete_pod(self, pod: str) -> None:
        """Delete a pod: it stops serving, its endpoints go, its namespace is removed."""
        self._changeable()
        key = self._pod_key(pod)
        plan_ = self.topology.pod(key)
        self.pods = tuple(p for p in self.pods if p.key != key)
        self.topology = replace(self.topology, pods=tuple(p for p in self.topology.pods if p.key != key))
        self.sync()
        self._reload_netexec()
        time.sleep(0.05)  # let netexec close the pod's sockets before the namespace goes
        from netns_lab.realize import netns as nsmod

        nsmod.delete(plan_.netns)
        network.forget_pod(self.topology, plan_)
        shutil.rmtree(resolvconf.config_dir(plan_.netns), ignore_errors=True)

    def add_pod(self, pod: Pod, node: str | None = None) -> PodPlan:
        """Create a pod at run time (the scheduler picks the least-loaded node unless given)."""
        from netns_lab.controllers.topology import add_pod_plan

        self._changeable()
        if any(p.key == pod.key for p in self.pods):
            raise LabError(f'pods "{pod.name}" already exists in namespace "{pod.namespace}"')
        self.topology, plan_ = add_pod_plan(self.topology, pod, node or pod.node_name)
        assert self.state is not None
        if plan_.netns not in self.state.namespaces:
            self.state.namespaces.append(plan_.netns)
        conf_dir = resolvconf.config_dir(plan_.netns)
        if conf_dir not in self.state.dirs:
            self.state.dirs.append(conf_dir)
        self.state.save()  # record ownership before creating
        network.add_pods(self.topology, (plan_,))
        pod = replace(pod, node_name=plan_.node, service_env=pod_env(pod, self.services))
        self._write_resolv_confs((pod,))
        self.pods = (*self.pods, pod)
        self._reload_netexec()
        self._wait_serving(plan_)
        self.sync()
        return plan_

    def _wait_serving(self, plan_: PodPlan, timeout: float = 5.0) -> None:
        if not plan_.ports:
            return
        node = f"node/{plan_.node}"
        if not _until(lambda: self.connect(node, str(plan_.ip), plan_.ports[0][0], timeout=0.5).result == "ok", timeout, 0.02):
            raise RealizeError(f"pod {plan_.key}", "start serving", None, "netexec did not open its ports")

    def _changeable(self) -> None:
        """Run-time changes need every machine to see them; a spread lab has no API server to
        carry them, so it is changed by editing its scenario and bringing it up again."""
        if self.topology.is_spread:
            raise LabError(
                f"lab {self.name} is spread over {len(self.topology.hosts)} machines: a change made here would not reach "
                "the others; edit the scenario and run `up --spread` again on every machine"
            )

    def mark_checked(self) -> None:
        """This machine ran its checks. Its node agents answer ``GET /netns-lab/phase`` with
        the lab's phase (``building``, ``up``, ``checked``): the other machines of a spread lab
        wait on it before they run their checks and before they tear down."""
        assert self.state is not None
        self.state.checked = True
        self.state.save()
        self._announce("checked")

    def _announce(self, phase: str, timeout: float = 10.0) -> None:
        """Have the node agents say ``phase``; return once one of them does (so a caller never
        races netexec's reload, and the answer is known to cross the node's own stack)."""
        self._reload_netexec()
        node = self.topology.local_nodes[0]
        if not _until(lambda: self.agent_phase(node) == phase, timeout, 0.01):
            raise RealizeError(f"node agent of {node.name}", f"announce {phase!r}", None, "netexec did not reload")

    def agent_phase(self, node: NodePlan) -> str | None:
        """The lab's phase as ``node``'s agent tells it (``GET :10250/netns-lab/phase``), asked
        from one of this machine's nodes; None when nothing answers."""
        from netns_lab.probes.http import get

        r = get(self.topology.local_nodes[0].netns, PHASE_URL, str(node.ip), NODE_AGENT_PORT, timeout=1.0)
        return r.body.strip() if r.result == "ok" and r.status == 200 else None

    def _pod_key(self, pod: str) -> str:
        r = parse_ref(pod if pod.startswith("pod/") else f"pod/{pod}")
        key = f"{r.namespace}/{r.name}"
        if not any(p.key == key for p in self.pods):
            raise LabError(f"no pod {key} in lab {self.name}")
        return key

    def down(self) -> None:
        """Remove the lab (under its lock: waits for a concurrent down, refuses a build under way)."""
        cleanup.remove_lab(self.name)
        self.state = None

    def __enter__(self) -> "Lab":
        return self.up() if self.state is None else self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- addressing ----------------------------------------------------------------------
    def netns_of(self, ref: str | ObjectRef) -> str:
        r = parse_ref(ref)
        if r.kind == "external":
            return self._client(r.name).netns
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
        if r.kind == "external":
            return str(self._client(r.name).ip)
        if r.kind == "loadbalancer":
            svc = self.service(f"{r.namespace}/{r.name}")
            if not svc.load_balancer_ips:
                raise LabError(f"{r}: service {svc.key} has no load-balancer IP (type {svc.type})")
            return svc.load_balancer_ips[0]
        if r.kind == "service":
            svc = self.service(f"{r.namespace}/{r.name}")
            if svc.cluster_ip is None:
                raise LabError(f"{r} is headless: it has no clusterIP")
            return svc.cluster_ip
        raise LabError(f"{r}: no IP for this kind of object yet")

    def _client(self, name: str):  # type: ignore[no-untyped-def]
        try:
            return self.topology.client(name)
        except KeyError:
            raise LabError(f"no external client {name!r} in lab {self.name} (cluster.external.clients)") from None

    def pod(self, key: str) -> Pod:
        return self._find("pod", self.pods, key)  # type: ignore[no-any-return]

    def service(self, key: str) -> Service:
        found = find_service(self.services, key)
        if found is None:
            raise LabError(f"no service {key} in lab {self.name}")
        return found

    def addresses(self, ref: str | ObjectRef) -> list[str]:
        """The IPv4 addresses the object's namespace shows for itself (its own `ip addr`)."""
        return namespace_addresses(self.netns_of(ref))

    # -- doing things inside ---------------------------------------------------------------
    def exec(self, ref: str | ObjectRef, cmd: list[str], check: bool = False, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run a real command in the object's namespace (``ip netns exec``), as ``kubectl exec``."""
        return subprocess.run(
            ["ip", "netns", "exec", self.netns_of(ref), *cmd],
            capture_output=True, text=True, check=check, timeout=timeout, env=self.exec_env(ref), **kw,
        )

    def exec_env(self, ref: str | ObjectRef) -> dict[str, str]:
        """The environment of a command run in the object: the lab's ownership token, and a
        pod's Service environment variables (kubelet's)."""
        env = procs.lab_env(self.name, self.state.instance if self.state else "")
        r = parse_ref(ref)
        if r.kind == "pod":
            env.update(self.pod(f"{r.namespace}/{r.name}").service_env)
        return env

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

