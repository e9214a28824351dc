"""The BGP speakers: BIRD in every node and in the router (``cluster.network: bgp`` and/or
``cluster.external.loadBalancer: bgp``).

The first sync writes every speaker's configuration (:mod:`netns_lab.controllers.bgp`),
starts the supervisor (:mod:`netns_lab.services.bgp`) and returns once BGP converged: the
router holds every pod subnet and announced load-balancer IP with the right next hops, and
each node every other node's pod subnet. A later change (a LoadBalancer Service, an
endpoint becoming ready or going) rewrites the configuration of the nodes whose
announcements changed and reloads only those (``birdc configure``: sessions stay up), then
waits for the router to have taken the change, as MetalLB's speaker announces and withdraws
per node. It runs in two steps around kube-proxy's sync: announcements that go are withdrawn
before (:class:`BgpWithdrawals`: the router stops sending a node flows before the node's
rules for them go), new ones are made after (the node's rules exist before flows arrive).
A full sync (``reconcile``, or the first sync of a process after a change that died half
way) writes and reloads every speaker.
"""

from __future__ import annotations

import json
import os
import time
from ipaddress import IPv4Address

from netns_lab import atomic, procs
from netns_lab.controllers import bgp
from netns_lab.errors import RealizeError
from netns_lab.faults import fault
from netns_lab.realize import bgp as birds
from netns_lab.reconcile import Runtime, View, plural

ROLE = "bgp"
CONVERGE_TIMEOUT = 30.0  # a first start: connect delay (1 s) plus the mesh's handshakes under load
CHANGE_TIMEOUT = 10.0
POKE_S = 0.3  # while waiting for convergence: see BgpSpeakers.poke
Announced = dict[str, tuple[str, ...]]


class BgpSpeakers:
    name = "bgp"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.configs: dict[str, str] = {}  # stem -> the configuration the BIRD was given last
        self.announced: Announced = {}  # node -> LB IPs in that configuration
        self.converged_s: float | None = None  # the first start's: speakers started -> every route in place

    @property
    def run_dir(self) -> str:
        assert self.rt.state is not None
        return os.path.join(self.rt.state.workdir, "bgp")

    def paths(self, stem: str) -> dict[str, str]:
        base = os.path.join(self.run_dir, stem)
        return {"conf": base + ".conf", "sock": base + ".ctl", "pid": base + ".pid", "log": base + ".log"}

    def desired(self, view: View) -> tuple[Announced, tuple[bgp.Speaker, ...]]:
        announced = bgp.announcements(view.objects.services, view.ports, view.topology)
        return announced, bgp.speakers(view.topology, announced)

    def restore(self, view: View) -> None:
        """What the BIRDs were told: their configuration files (a change that died half way
        may have written some and not others; the full sync that follows rewrites them)."""
        if not self.rt.running(ROLE):
            return
        topo = view.topology
        for name, stem in [(n.name, bgp.file_stem(topo, n.name)) for n in topo.local_nodes] + [(bgp.ROUTER, bgp.ROUTER)]:
            try:
                with open(self.paths(stem)["conf"]) as fh:
                    self.configs[stem] = fh.read()
            except OSError:
                continue
            if name != bgp.ROUTER:
                self.announced[name] = bgp.announced_in(self.configs[stem])

    # -- the two steps of a change ----------------------------------------------------------------
    def withdraw(self, view: View) -> list[str]:
        """Before kube-proxy: each node stops announcing what it no longer should."""
        if not self._applies(view) or not self.configs or view.full:
            return []
        announced, _ = self.desired(view)
        kept = {n: tuple(ip for ip in ips if ip in announced.get(n, ())) for n, ips in self.announced.items()}
        if kept == self.announced:
            return []
        return self._apply(view, kept, bgp.speakers(view.topology, kept), full=False)

    def sync(self, view: View) -> list[str]:
        """After kube-proxy: start the speakers, or announce what is new (everything again in a full sync)."""
        if not self._applies(view):
            return []
        if self.configs and view.untouched(lambda s: s.type == "LoadBalancer", pods=True):
            return []
        announced, speakers = self.desired(view)
        if not self.rt.running(ROLE):
            return self._start(view, announced, speakers)
        return self._apply(view, announced, speakers, full=view.full)

    def _applies(self, view: View) -> bool:
        return view.topology.uses_bgp and view.topology.has_outside

    def _apply(self, view: View, announced: Announced, speakers: tuple[bgp.Speaker, ...], full: bool) -> list[str]:
        changed = [s for s in speakers if full or self.configs.get(s.stem) != s.config]
        if not changed:
            return []
        for s in changed:
            atomic.write(self.paths(s.stem)["conf"], s.config, 0o600)
            birds.configure(self.paths(s.stem)["sock"])
            self.configs[s.stem] = s.config
        before, self.announced = self.announced, announced
        waited, missing = self.converge(view, announced, CHANGE_TIMEOUT, only_lb=True)
        msgs = []
        for node, ips in sorted(announced.items()):
            new, gone = set(ips) - set(before.get(node, ())), set(before.get(node, ())) - set(ips)
            if new:
                msgs.append(f"BGP: {node} announces {', '.join(sorted(new))}")
            if gone:
                msgs.append(f"BGP: {node} withdraws {', '.join(sorted(gone))}")
        if full:
            msgs.append(f"BGP: {plural(len(changed), 'speaker')} reconfigured")
        if missing:
            msgs.append(f"BGP: the router has not taken it after {waited:.0f} s: {'; '.join(missing[:4])}")
        elif msgs:
            msgs[-1] += f" (router converged in {waited * 1000:.0f} ms)"
        return msgs

    def _start(self, view: View, announced: Announced, speakers: tuple[bgp.Speaker, ...]) -> list[str]:
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        self._stop_orphans(speakers)
        listed = []
        for s in speakers:
            p = self.paths(s.stem)
            atomic.write(p["conf"], s.config, 0o600)
            listed.append({"name": s.name, "netns": s.netns, **p})
        spec = os.path.join(self.run_dir, "speakers.json")
        atomic.write(spec, json.dumps({"speakers": listed}))
        self.rt.spawn(ROLE, ["-m", "netns_lab.services.bgp", spec])
        fault("bgp")  # tests: the builder dies with every BIRD running
        self.configs, self.announced = {s.stem: s.config for s in speakers}, announced
        waited, missing = self.converge(view, announced, CONVERGE_TIMEOUT)
        self.converged_s = waited
        if missing:
            raise RealizeError(view.topology.router_netns, "BGP convergence", None,
                               f"not converged within {CONVERGE_TIMEOUT:.0f} s: {'; '.join(missing[:4])} "
                               f"(see `invoke bgp {view.topology.lab}` and {self.run_dir}/*.log)")
        return [f"BGP: {plural(len(speakers), 'speaker')} started (AS {view.topology.bgp_as}, router AS "
                f"{view.topology.bgp_router_as}); routes converged in {waited:.1f} s"]

    def _stop_orphans(self, speakers: tuple[bgp.Speaker, ...]) -> None:
        """BIRDs whose supervisor died (SIGKILL) run on: stop them (by the PID they wrote, only
        if they carry the lab's token) before their successors start, or two BIRDs would share
        a namespace (the second cannot listen, its kernel protocol prunes the first's routes)."""
        assert self.rt.state is not None
        for s in speakers:
            try:
                with open(self.paths(s.stem)["pid"]) as fh:
                    pid = int(fh.read().strip() or 0)
            except (OSError, ValueError):
                continue
            if pid > 0:
                procs.stop(pid, self.rt.state.instance)

    # -- convergence ------------------------------------------------------------------------------
    def converge(self, view: View, announced: Announced, timeout: float, only_lb: bool = False) -> tuple[float, list[str]]:
        """Wait until the kernels hold what BGP should have put there: (seconds it took, what
        is still missing when ``timeout`` ran out: empty once converged). ``only_lb``: a
        change, which moves load-balancer IPs only (pod subnets never change once up), and
        expects them only from nodes whose session with the router is up (a node that is
        down, its link or its BIRD, comes back with its routes as in a real network)."""
        topo = view.topology
        want = bgp.expected_routes(topo, announced)
        if only_lb:
            up = self._nodes_up()
            want = {p: hops & up for p, hops in want.items() if p.endswith("/32")}
            want = {p: hops for p, hops in want.items() if hops}
        start = last_poke = time.monotonic()
        while True:
            missing = self.differences(view, want, only_lb)
            if not missing or time.monotonic() - start > timeout:
                return time.monotonic() - start, missing
            if time.monotonic() - last_poke > POKE_S:
                self.poke()
                last_poke = time.monotonic()
            time.sleep(0.05)

    def _nodes_up(self) -> frozenset[IPv4Address]:
        """The nodes whose session with the router is up (none while the router's own BIRD
        is being restarted: then nothing is to be waited for)."""
        try:
            sessions = birds.sessions(self.paths(bgp.ROUTER)["sock"])
        except RealizeError:
            return frozenset()
        return frozenset(IPv4Address(s.neighbor) for s in sessions if s.established and s.neighbor)

    def poke(self) -> None:
        """Ask every BIRD for its status. Measured here: BIRD 2.0.12 at times left a freshly
        established session's updates unprocessed until its next timer (~2 s later; one run
        in two on a 3-node lab) unless something woke its event loop; a control-socket
        request does, and costs a few milliseconds."""
        for stem in self.configs:
            try:
                birds.birdc(self.paths(stem)["sock"], "show", "status")
            except RealizeError:
                pass  # a BIRD being restarted: its supervisor brings it back

    def differences(self, view: View, want: dict[str, frozenset[IPv4Address]], only_lb: bool = False) -> list[str]:
        topo = view.topology
        got = birds.kernel_routes(topo.router_netns)
        if only_lb:
            got = {p: h for p, h in got.items() if p.endswith("/32")}
        out = [f"router: {p} via {', '.join(map(str, sorted(want.get(p, ())))) or 'nothing'}, has "
               f"{', '.join(map(str, sorted(got.get(p, ())))) or 'nothing'}"
               for p in sorted(set(want) | set(got)) if want.get(p) != got.get(p)]
        if topo.network == "bgp" and not only_lb:
            for node in topo.local_nodes:
                have = birds.kernel_routes(node.netns)
                out += [f"{node.name}: no route to {peer.pod_subnet}" for peer in topo.nodes
                        if peer.name != node.name and str(peer.pod_subnet) not in have]
        return out


class BgpWithdrawals:
    """The first step of a change (see the module): runs before kube-proxy's sync."""

    name = "bgp-withdraw"

    def __init__(self, speakers: BgpSpeakers) -> None:
        self.speakers = speakers

    def sync(self, view: View) -> list[str]:
        return self.speakers.withdraw(view)
