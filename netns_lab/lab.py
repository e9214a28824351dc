"""A lab's lifecycle: ``up()`` builds it, ``down()`` removes it, and helpers probe it.

``up`` follows one rule that makes cleanup total: write the ownership record first (every
namespace the lab will create, a fresh instance token), then create. Whatever instant the
process dies at, ``clean`` (or the next ``up`` of the same name) finds everything from the
record and removes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from ipaddress import ip_address
from typing import Any, TypeVar

from netns_lab import cleanup, interrupts, procs, state
from netns_lab.controllers import spread
from netns_lab.controllers.serviceports import ServicePorts
from netns_lab.controllers.topology import NODE_AGENT_PORT, NodePlan, address_of, PodPlan, Topology, from_dict, plan, replan, to_dict
from netns_lab.errors import LabError, RealizeError, ScenarioError
from netns_lab.events import describe_all, log_events, object_changes
from netns_lab.faults import ENV
from netns_lab.objectlog import ObjectLog
from netns_lab.faults import fault as _fault
from netns_lab.model import MAX_GRACE_PERIOD, ClusterConfig, Ingress, ObjectRef, Pod, Scenario, Secret, Service, find_service
from netns_lab.proxy.types import ServicePortInfo
from netns_lab.realize import network, resolvconf
from netns_lab.realize.netns import exists as netns_exists
from netns_lab.realize.netns import addresses
from netns_lab.realize.proxier import IPTABLES_BACKEND_ENV, Proxier
from netns_lab.reconcile import View
from netns_lab.reconcile.agents import NodeAgents
from netns_lab.reconcile.bgp import BgpSpeakers, BgpWithdrawals
from netns_lab.reconcile.cloudlb import CloudLB
from netns_lab.reconcile.dns import ClusterDNS
from netns_lab.reconcile.haproxy import HAProxyIngress
from netns_lab.reconcile.ingress import IngressNginx
from netns_lab.reconcile.netpol import NetworkPolicies
from netns_lab.reconcile.pods import PodSandboxes, write_resolv_confs
from netns_lab.reconcile.proxy import KubeProxy
from netns_lab.reconcile.routes import ExternalIPRoutes
from netns_lab.scenario.admission import Action, Apply, Delete, Label, SetReady, admit
from netns_lab.scenario.yamlsrc import Source
from netns_lab.store import Objects

FAULT_ENV = ENV  # tests: SIGKILL ourselves at a named step (see faults.py)
READY_TIMEOUT = 120.0
R = TypeVar("R")
CHANGE_LOCK_WAIT = 30.0  # a change waits this long for another change (or a build) of the same lab
PHASE_URL = "http://node-agent/netns-lab/phase"  # served by netexec on every node's agent port


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
    """``pod/NAME``, ``pod/NS/NAME``, ``node/NAME`` or an IP address (IPv4 or IPv6)."""
    if isinstance(text, ObjectRef):
        return text
    if text == "external":
        return ObjectRef("external", "external")
    if text.startswith("external/"):
        return ObjectRef("external", text.split("/", 1)[1])
    try:
        return ObjectRef("ip", str(ip_address(text)))
    except ValueError:
        pass
    kind, _, rest = text.partition("/")
    if kind == "node":
        return ObjectRef("node", rest)
    ns, _, name = rest.rpartition("/")
    return ObjectRef(kind, name, ns or "default")


class Lab:
    """One running (or to-be-running) lab: the owner of its lifecycle (``up``, ``down``, the
    ownership record) and of its objects (:class:`~netns_lab.store.Objects`). Every change,
    the first build included, goes one way: admit (pure) -> plan the pods' addresses (pure)
    -> run the reconcilers (:mod:`netns_lab.reconcile`) -> record events. Use as a context
    manager for automatic ``down``."""

    #: Set by the pytest plugin: a lab built by a test run belongs to that run, which downs it at
    #: its end; a run killed before then must not make the next run fail on its remains.
    temporary_by_default = False

    def __init__(self, scenario: Scenario | None, topology: Topology | None = None, objects: Objects | None = None) -> None:
        self.scenario = scenario
        self.topology = topology if topology is not None else plan(scenario)  # type: ignore[arg-type]
        self.name = self.topology.lab
        self.state: state.LabState | None = None
        self.objects = objects if objects is not None else Objects.of(scenario) if scenario else Objects(ClusterConfig())
        self.proxy_mode = scenario.cluster.proxy_mode if scenario else "iptables"
        self.ipvs = (scenario.cluster.ipvs_scheduler, scenario.cluster.ipvs_legacy_ping) if scenario else ("rr", False)
        self.iptables_backend = os.environ.get(IPTABLES_BACKEND_ENV, "nft")
        self.progress: Callable[[str, int, int], None] | None = None  # (phase, done, total), see progress.py
        # run-scenario without --keep, and every lab a test session builds: once its builder is
        # dead, the next up of its name clears it
        self.temporary = self.temporary_by_default
        self._reconcilers: tuple[Any, ...] = ()
        self.timings: dict[str, float] = {}  # seconds per phase of the last change (see _sync)
        self._service_ports = ServicePorts()  # kept up to date per change (controllers/serviceports.py)
        self._synced: Objects | None = None  # the objects of the last sync: a view knows what changed since
        self._log: ObjectLog = ObjectLog("")  # the objects on disk (objectlog.py), set by up/attach
        self._recorded_plan: Topology | None = None  # the plan whose dict is in the record

    # -- the objects ------------------------------------------------------------------------
    @property
    def pods(self) -> tuple[Pod, ...]:
        return self.objects.pods

    @property
    def services(self) -> tuple[Service, ...]:
        return self.objects.services

    @property
    def ingresses(self) -> tuple[Ingress, ...]:
        return self.objects.ingresses

    @property
    def secrets(self) -> tuple[Secret, ...]:
        return self.objects.secrets

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
        """A handle on a lab that is already up (built by another process): its objects and
        plan from the record, and reconcilers that know what the kernel holds."""
        st = state.load(state.check_name(name, "attach"))
        if st is None or st.phase != "up":
            raise LabError(f"lab {name!r} is not up (see `invoke status`)")
        try:
            log = ObjectLog.read(st.workdir)
        except (OSError, ValueError, KeyError) as exc:
            raise LabError(f"lab {name}: its objects cannot be read ({exc}); `invoke down {name}` removes it") from None
        lab = cls(None, from_dict(st.topology), log.recorded)
        lab._log = log
        lab.state = st
        lab.proxy_mode = st.proxy_mode
        lab.ipvs = (st.ipvs_scheduler, st.ipvs_legacy_ping)
        lab.iptables_backend = st.iptables_backend
        return lab

    @property
    def reconcilers(self) -> tuple[Any, ...]:
        """In the order a sync runs them: pods exist before anything points at them; DNS
        answers as soon as it can (CoreDNS does not wait for kube-proxy either)."""
        if not self._reconcilers:
            speakers = BgpSpeakers(self)  # around kube-proxy: withdraw before its rules go, announce after they came
            self._reconcilers = (
                PodSandboxes(self, self.topology), NodeAgents(self, self._serving), ClusterDNS(self),
                BgpWithdrawals(speakers), KubeProxy(self.proxy_mode, self.iptables_backend, self.ipvs), speakers,
                NetworkPolicies(self.iptables_backend),
                IngressNginx(self), HAProxyIngress(self), CloudLB(self),
                ExternalIPRoutes(),
            )
            if self.state is not None and self.state.phase == "up":  # built by another process: learn what it realised
                view = self._view()
                for r in self._reconcilers:
                    if hasattr(r, "restore"):
                        r.restore(view)
        return self._reconcilers

    def _reconciler(self, kind: type[R]) -> R:
        """The reconciler of that class (by name, not by its place in the sync order)."""
        return next(r for r in self.reconcilers if isinstance(r, kind))

    @property
    def _proxy(self) -> KubeProxy:
        return self._reconciler(KubeProxy)

    # -- lifecycle -----------------------------------------------------------------------
    def up(self) -> "Lab":
        """Build the lab, holding its lock (``state.acquire``) for the whole build: of two
        builds of one lab, exactly one proceeds; the other is refused in one line."""
        if self.proxy_mode == "ipvs":
            from netns_lab.realize.ipvs import require_ipvs

            require_ipvs()  # before anything is built
        if any(cp.protocol == "SCTP" for p in self.objects.pods for c in p.containers for cp in c.ports):
            from netns_lab.realize.hostinfo import require_sctp

            require_sctp("start")  # before anything is built
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
            st.save()
            self.state = st
            _fault("state")
            os.makedirs(st.workdir, exist_ok=True)
            self._log = ObjectLog(st.workdir)
            counter: dict[str, int] = {}

            made = [0]

            def step(s: str) -> None:
                _fault(s, counter if s == "pod" else None)
                if self.progress and s == "pod":
                    made[0] += 1
                    self.progress("pod namespaces", made[0], len(topo.local_pods))

            network.build(topo, on_step=step)
            write_resolv_confs(self.pods, topo)
            self._sync(full=True, why="up")
            _fault("ready")
            st.phase = "up"
            st.save()
            self._announce("up")  # what the other machines of a spread lab wait for
        except BaseException:
            cleanup.remove_unlocked(self.name)  # up() holds the lock
            self.state = None
            raise
        return self

    # -- changes -------------------------------------------------------------------------
    def change(self, actions: Sequence[Action], why: str = "") -> list[str]:
        """Apply ``actions`` as one change: admitted whole (a refusal raises ScenarioError and
        changes nothing), recorded, then realised by every reconciler. Returns the events.

        The record is written before the kernel is touched and marked ``pending`` until every
        reconciler is done: a change that fails half way (an error, a kill) leaves a lab whose
        next change, or ``reconcile()``, first brings the kernel back to the recorded objects."""
        self._changeable()
        lock = state.acquire(self.name, wait=CHANGE_LOCK_WAIT)
        if lock is None:
            raise state.busy_error(self.name, "being changed, built or removed")
        try:
            t0 = time.perf_counter()
            self._catch_up()
            _ = self.reconcilers  # made (and told what is realised) from the objects before the change
            t1 = time.perf_counter()
            objects = admit(self.objects, actions)
            topo = replan(self.topology, self.objects, objects)
            if objects.same_as(self.objects):
                return []
            before, self.objects, self.topology = self.objects, objects, topo
            admitted = time.perf_counter()
            try:
                events = self._sync(why=why or describe_all(actions), changed=object_changes(before, objects))
            except RealizeError as exc:  # recorded, marked pending: never half applied silently
                raise RealizeError(exc.obj, exc.action, exc.errno,
                                   f"{exc.detail}; the change is recorded and unfinished: `invoke reconcile {self.name}` "
                                   "(or the next change) finishes it") from exc
            self.timings = {"attach": t1 - t0, "admission": admitted - t1, **self.timings}
        finally:
            lock.release()
        return events + self._keep_time()

    def _keep_time(self) -> list[str]:
        """A terminating pod is removed by the lab's API server once its grace period is over
        (it watches the record's ``next_deletion``): make sure one runs, whoever made the
        change (a step, a test, the command line). The change is made either way: a server
        that does not start is a warning, and the next command starts one."""
        from netns_lab import apiclient, procs
        from netns_lab.apiserver import ROLE

        st = self.state
        if st is None or not st.next_deletion:
            return []
        if any(p["role"] == ROLE and procs.owned_by(p["pid"], st.instance) for p in st.processes):
            return []
        try:
            apiclient.start(self.name)
        except LabError as exc:
            return [f"warning: terminating pods are not removed on time: {exc}"]
        return []

    def _catch_up(self) -> None:
        """Under the lock: if another process changed the lab since this one last did (its
        record's generation moved on), start again from the record; if a change was left
        unfinished (killed half way), finish it first with a full sync."""
        st = state.load(self.name)
        if st is None or st.phase != "up" or self.state is None or st.instance != self.state.instance:
            raise LabError(f"lab {self.name} is not up any more (see `invoke status`)")
        if st.generation != self.state.generation:
            fresh = Lab.attach(self.name)
            self.state, self.objects, self.topology, self._log = fresh.state, fresh.objects, fresh.topology, fresh._log
            self._service_ports, self._synced = ServicePorts(), None
            self._reconcilers = ()  # made again, from the record, when the sync below needs them
        if self.state.pending:
            self._sync(full=True, why="finish an unfinished change")

    def reconcile(self) -> list[str]:
        """Bring everything back to the recorded objects (a full sync), e.g. after a change
        that failed half way; under the lab's lock, from the latest record."""
        return self._locked(lambda: self._sync(full=True, why="reconcile"))

    def _locked(self, work: Callable[[], list[str]]) -> list[str]:
        lock = state.acquire(self.name, wait=CHANGE_LOCK_WAIT)
        if lock is None:
            raise state.busy_error(self.name, "being changed, built or removed")
        try:
            self._catch_up()
            return work()
        finally:
            lock.release()

    def _view(self, full: bool = False) -> View:
        objects, topo = self.objects, self.topology
        before, self._synced = self._synced, objects
        cache = self._service_ports
        return View(objects, topo, lambda: cache.update(objects, topo), full, None if full else before, lambda: None if cache.delta is None else (cache.previous, cache.delta))

    def _sync(self, full: bool = False, why: str = "", changed: list[str] | None = None) -> list[str]:
        """Run every reconciler against the current objects; record the objects first (marked
        pending until the last reconciler is done) and the events after."""
        st = self.state
        assert st is not None
        if full:  # the plan follows the recorded objects (a killed change may have recorded one without the other)
            self.topology = replan(self.topology, self.objects, self.objects)
        recs = self.reconcilers  # before the view: made (and restored) from what was realised
        t0 = time.perf_counter()
        if self.topology is not self._recorded_plan:  # the plan is immutable: serialised again only when replaced
            st.topology, self._recorded_plan = to_dict(self.topology), self.topology
        st.pending = True  # first: a kill from here on leaves a record that says "finish me"
        st.next_deletion = min((p.deletion_deadline for p in self.objects.pods if p.deletion_deadline is not None), default=0.0)
        st.generation += 1  # another process holding an older generation starts again from the record
        st.save()
        _fault("pending")  # tests: marked pending, the objects not yet recorded
        self._log.record(self.objects)  # on disk (fsynced) before the kernel is touched
        timings = {"record": time.perf_counter() - t0}
        t0 = time.perf_counter()
        view = self._view(full)
        timings["view"] = time.perf_counter() - t0
        events: list[str] = [f"objects: {c}" for c in changed or ()]
        pods = self._reconciler(PodSandboxes)
        for r in recs:
            t0 = time.perf_counter()
            done = r.sync(view, self.progress) if r is self._proxy else r.sync(view)
            timings[r.name] = time.perf_counter() - t0
            events += [f"{r.name}: {e}" for e in done]
            if r is self._proxy:
                _fault("rules")
            _fault(f"sync:{r.name}")
        t0 = time.perf_counter()
        events += [f"{pods.name}: {e}" for e in pods.prune(view)]
        timings["prune"] = time.perf_counter() - t0
        st.pending = False
        st.generation += 1
        t0 = time.perf_counter()
        st.save()
        timings["record"] += time.perf_counter() - t0
        self.timings = timings  # seconds per phase of the last sync: what benchmarks/bench_changes.py reports
        if events:
            log_events(st.workdir, why, events)
        return events

    def sync(self, full: bool = False) -> list[str]:
        """Realise the current objects again (``full``: rewrite every rule and file)."""
        return self._locked(lambda: self._sync(full=full, why="sync"))

    # -- convenience: kubectl's verbs, each one change ------------------------------------------
    def apply(self, *manifests: dict[str, Any]) -> list[str]:
        """``kubectl apply``: create or replace each manifest (a dict), in order, as one change."""
        return self.change([Apply(Source("apply", m), "", m) for m in manifests])

    def delete(self, *refs: str, grace_period: int | None = None) -> list[str]:
        """``kubectl delete KIND/NS/NAME... [--grace-period S]``: a pod with a grace period
        stays terminating (and serving) that long; the lab's API server removes it then."""
        if grace_period is not None and not (isinstance(grace_period, int) and 0 <= grace_period <= MAX_GRACE_PERIOD):
            raise ScenarioError("delete", "grace_period", f"Invalid value: {grace_period!r}: must be a number of seconds from 0 to {MAX_GRACE_PERIOD}")
        now = time.time()
        return self.change([Delete(Source("delete", r), "", r, grace=grace_period, now=now) for r in refs])

    def label(self, ref: str, **labels: str | None) -> list[str]:
        """``kubectl label KIND/NS/NAME key=value key-`` (None removes)."""
        return self.change([Label(Source("label", ref), ref, ref, tuple(labels.items()))])

    def set_ready(self, pod: str, ready: bool = True) -> list[str]:
        """A pod's readiness (its readiness probe, in effect): the Service rules follow."""
        ref = pod if pod.startswith("pod/") else f"pod/{pod}"
        return self.change([SetReady(Source("pod-ready", ref), "", ref, ready)])

    # -- processes ---------------------------------------------------------------------------
    def spawn(self, role: str, args: list[str]) -> None:
        """Start an in-lab server, record it, and wait for its READY line."""
        st = self.state
        assert st is not None
        log = os.path.join(st.workdir, f"{role}.log")
        proc = procs.spawn([sys.executable, *args], self.name, st.instance, log)
        _fault("spawned")
        st.processes.append({"role": role, "pid": proc.pid, "start": procs.start_time(proc.pid)})
        st.save()
        _fault("servers")
        why = procs.wait_ready(proc, log, READY_TIMEOUT)
        if why is not None:
            raise RealizeError(role, "start", None, why)

    def signal(self, role: str, sig: int = signal.SIGHUP) -> None:
        assert self.state is not None
        for p in self.state.processes:
            if p["role"] == role and procs.owned_by(p["pid"], self.state.instance):
                os.kill(p["pid"], sig)

    def running(self, role: str) -> bool:
        st = self.state
        return st is not None and any(p["role"] == role and procs.owned_by(p["pid"], st.instance) for p in st.processes)

    def _serving(self, pod: PodPlan) -> bool:
        node = f"node/{pod.node}"
        port, proto = pod.ports[0]
        return bool(self.connect(node, str(pod.ip), port, "sctp" if proto == "SCTP" else "tcp", timeout=0.5).result == "ok")

    # -- what the reconcilers realised, for probes and tests -------------------------------------
    @property
    def proxiers(self) -> dict[str, Proxier]:
        return self._proxy.proxiers

    @property
    def proxiers6(self) -> dict[str, Proxier]:
        """A dual-stack lab's IPv6 proxiers, by node (empty in an IPv4 lab)."""
        return self._proxy.proxiers6

    def service_ports(self) -> tuple[ServicePortInfo, ...]:
        return self._proxy.ports

    @property
    def ingress_dir(self) -> str:
        return self._reconciler(IngressNginx).dir

    def ingress_reloads(self) -> int:
        return self._reconciler(IngressNginx).reloads()

    def ingress_dynamic_updates(self) -> int:
        """Endpoint changes the ingress controller took without a reload (POSTs to its balancer)."""
        return self._reconciler(IngressNginx).dynamic_updates()

    def haproxy_reloads(self) -> int:
        return self._reconciler(HAProxyIngress).reloads()

    def haproxy_dynamic_updates(self) -> int:
        """Endpoint changes HAProxy took through its runtime API, without a reload."""
        return self._reconciler(HAProxyIngress).dynamic_updates()

    @property
    def zone_file(self) -> str:
        return self._reconciler(ClusterDNS).path

    @property
    def bgp_run_dir(self) -> str:
        """Where the BIRDs' configurations, control sockets, pid files and logs are."""
        return self._reconciler(BgpSpeakers).run_dir

    def bgp_socket(self, speaker: str) -> str:
        """A speaker's BIRD control socket (a node's name, or "router")."""
        from netns_lab.controllers.bgp import ROUTER, file_stem

        return self._reconciler(BgpSpeakers).paths(ROUTER if speaker == ROUTER else file_stem(self.topology, speaker))["sock"]

    @property
    def bgp_convergence_s(self) -> float | None:
        """How long the BIRDs took, once started, to put every route in place (this process's `up`)."""
        return self._reconciler(BgpSpeakers).converged_s

    @property
    def balancer_status_file(self) -> str:
        return self._reconciler(CloudLB).status_path

    def secret(self, key: str) -> Secret:
        return self._find("secret", self.secrets, key)  # type: ignore[no-any-return]

    def _find(self, kind: str, objects: tuple[Any, ...], key: str) -> Any:
        """``NAME`` (namespace default) or ``NS/NAME`` among ``objects``."""
        key = key if "/" in key else f"default/{key}"
        for o in objects:
            if o.key == key:
                return o
        raise LabError(f"no {kind} {key} in lab {self.name}")

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
        if not self.running("cloudlb"):
            return
        start = self.balancer_status().get("round", 0)
        _until(lambda: self.balancer_status().get("round", 0) >= start + rounds, timeout, 0.05)

    def _changeable(self) -> None:
        """Run-time changes need every machine to see them; a spread lab has no API server to
        carry them, so it is changed by editing its scenario and bringing it up again."""
        if self.topology.is_spread:
            raise LabError(
                f"lab {self.name} is spread over {len(self.topology.hosts)} machines: a change made here would not reach "
                "the others; edit the scenario and run `up --spread` again on every machine"
            )
        if self.state is None:
            raise LabError(f"lab {self.name} is not up")

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
        agents = self._reconciler(NodeAgents)
        agents.sync(self._view().but_full())  # the phase is part of netexec's configuration
        node = self.topology.local_nodes[0]
        if not _until(lambda: self.agent_phase(node) == phase, timeout, 0.01):
            raise RealizeError(f"node agent of {node.name}", f"announce {phase!r}", None, "netexec did not reload")

    def agent_phase(self, node: NodePlan) -> str | None:
        """The lab's phase as ``node``'s agent tells it (``GET :10250/netns-lab/phase``), asked
        from one of this machine's nodes; None when nothing answers."""
        from netns_lab.probes.http import get

        r = get(self.topology.local_nodes[0].netns, PHASE_URL, str(node.ip), NODE_AGENT_PORT, timeout=1.0)
        return r.body.strip() if r.result == "ok" and r.status == 200 else None

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

    def ip_of(self, ref: str | ObjectRef, family: int | None = None) -> str:
        """The object's address: of the primary family, or of IP version ``family`` (4 or 6;
        a dual-stack lab's pods, nodes and external clients have both)."""
        r = parse_ref(ref)
        if r.kind == "ip":
            return r.name
        if r.kind in ("node", "pod", "external"):
            plan = (self.topology.node(r.name) if r.kind == "node" else self._client(r.name) if r.kind == "external"
                    else self.topology.pod(f"{r.namespace}/{r.name}"))
            ip = address_of(plan, family)
            if ip is None:
                raise LabError(f"{r} has no IPv{family} address: lab {self.name} is single-stack (cluster.ipFamily)")
            return str(ip)
        if r.kind == "loadbalancer":
            svc = self.service(f"{r.namespace}/{r.name}")
            if not svc.load_balancer_ips:
                raise LabError(f"{r}: service {svc.key} has no load-balancer IP (type {svc.type})")
            return _of_family(r, svc.load_balancer_ips, family, "load-balancer IP")
        if r.kind == "service":
            svc = self.service(f"{r.namespace}/{r.name}")
            if svc.cluster_ip is None:
                raise LabError(f"{r} is headless: it has no clusterIP")
            return _of_family(r, svc.cluster_ips or (svc.cluster_ip,), family, "clusterIP")
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

    def addresses(self, ref: str | ObjectRef, family: int | None = None) -> list[str]:
        """The addresses of IP version ``family`` (default: the lab's primary one) the object's
        namespace shows for itself (its own `ip addr`)."""
        return addresses(self.netns_of(ref), family or self.topology.families[0])

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

    def connect(self, src: str | ObjectRef, dst: str | ObjectRef, port: int, protocol: str = "tcp", timeout: float = 2.0,
                family: int | None = None):  # type: ignore[no-untyped-def]
        from netns_lab.probes.connect import probe_one

        return probe_one(self.netns_of(src), self.ip_of(dst, family), port, protocol, timeout)

    def ping(self, src: str | ObjectRef, dst: str | ObjectRef, timeout: float = 1.0, family: int | None = None):  # type: ignore[no-untyped-def]
        from netns_lab.probes.icmp import ping

        return ping(self.netns_of(src), self.ip_of(dst, family), timeout)

    def matrix(self, kind: str = "pod-to-pod", protocol: str = "tcp"):  # type: ignore[no-untyped-def]
        """Every source to every target of ``kind`` (see :mod:`netns_lab.probes.promises`)."""
        from netns_lab.probes.promises import matrix

        return matrix(self.topology, kind, protocol)


def _of_family(ref: ObjectRef, ips: tuple[str, ...], family: int | None, what: str) -> str:
    """The first of ``ips`` (primary first) of IP version ``family``; the first when None."""
    if family is None:
        return ips[0]
    for ip in ips:
        if (":" in ip) == (family == 6):
            return ip
    raise LabError(f"{ref} has no IPv{family} {what} (spec.ipFamilies)")
