"""The BGP speakers: BIRD in every node and in the router (``cluster.network: bgp`` and/or
``cluster.external.loadBalancer: bgp``).

The first sync writes every speaker's configuration (:mod:`netns_lab.controllers.bgp`),
starts the supervisor (:mod:`netns_lab.services.bgp`) and returns once BGP converged: the
router holds every pod subnet and announced load-balancer IP with the right next hops, and
each node every other node's pod subnet. A later change (a LoadBalancer Service, an
endpoint becoming ready or going) rewrites the configuration of the nodes whose
announcements changed and reloads only those (``birdc configure``), then waits for the
router to have taken the change, as MetalLB's speaker announces and withdraws per node.
"""

from __future__ import annotations

import json
import os
import time
from ipaddress import IPv4Address

from netns_lab import atomic
from netns_lab.controllers import bgp
from netns_lab.errors import RealizeError
from netns_lab.faults import fault
from netns_lab.realize import bgp as birds
from netns_lab.reconcile import Runtime, View, plural

ROLE = "bgp"
CONVERGE_TIMEOUT = 30.0  # a first start: connect delay (1 s) plus the mesh's handshakes under load
CHANGE_TIMEOUT = 10.0
POKE_S = 0.3  # while waiting for convergence: see BgpSpeakers.poke


class BgpSpeakers:
    name = "bgp"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.configs: dict[str, str] = {}
        self.announced: dict[str, tuple[str, ...]] = {}
        self.converged_s: float | None = None  # the first start's: speakers started -> every route in place

    @property
    def run_dir(self) -> str:
        assert self.rt.state is not None
        return os.path.join(self.rt.state.workdir, "bgp")

    def paths(self, name: str) -> dict[str, str]:
        base = os.path.join(self.run_dir, name)
        return {"conf": base + ".conf", "sock": base + ".ctl", "pid": base + ".pid", "log": base + ".log"}

    def desired(self, view: View) -> tuple[dict[str, tuple[str, ...]], tuple[bgp.Speaker, ...]]:
        announced = bgp.announcements(view.objects.services, view.ports, view.topology)
        return announced, bgp.speakers(view.topology, announced)

    def restore(self, view: View) -> None:
        if self.rt.running(ROLE):
            self.announced, speakers = self.desired(view)
            self.configs = {s.name: s.config for s in speakers}

    def sync(self, view: View) -> list[str]:
        topo = view.topology
        if not topo.uses_bgp or not topo.has_outside:
            return []
        if self.configs and view.untouched(lambda s: s.type == "LoadBalancer", pods=True):
            return []
        announced, speakers = self.desired(view)
        if not self.rt.running(ROLE):
            return self._start(view, announced, speakers)
        changed = [s for s in speakers if self.configs.get(s.name) != s.config]
        if not changed and not view.full:
            return []
        for s in changed:
            atomic.write(self.paths(s.name)["conf"], s.config)
            birds.configure(self.paths(s.name)["sock"])
        before = self.announced
        self.configs, self.announced = {s.name: s.config for s in speakers}, announced
        waited, missing = self.converge(view, announced, CHANGE_TIMEOUT)
        msgs = []
        for node, ips in sorted(announced.items()):
            new, gone = set(ips) - set(before.get(node, ())), set(before.get(node, ())) - set(ips)
            if new:
                msgs.append(f"BGP: {node} announces {', '.join(sorted(new))}")
            if gone:
                msgs.append(f"BGP: {node} withdraws {', '.join(sorted(gone))}")
        if missing:  # a node down (its link, its BIRD): its routes come back with it, as in a real network
            msgs.append(f"BGP: not converged after {waited:.0f} s: {'; '.join(missing[:4])}")
        elif msgs:
            msgs[-1] += f" (router converged in {waited * 1000:.0f} ms)"
        return msgs

    def _start(self, view: View, announced: dict[str, tuple[str, ...]], speakers: tuple[bgp.Speaker, ...]) -> list[str]:
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        listed = []
        for s in speakers:
            p = self.paths(s.name)
            atomic.write(p["conf"], s.config, 0o600)
            listed.append({"name": s.name, "netns": s.netns, **p})
        spec = os.path.join(self.run_dir, "speakers.json")
        atomic.write(spec, json.dumps({"speakers": listed}))
        self.rt.spawn(ROLE, ["-m", "netns_lab.services.bgp", spec])
        fault("bgp")  # tests: the builder dies with every BIRD running
        self.configs, self.announced = {s.name: s.config for s in speakers}, announced
        waited, missing = self.converge(view, announced, CONVERGE_TIMEOUT)
        self.converged_s = waited
        if missing:
            raise RealizeError(view.topology.router_netns, "BGP convergence", None,
                               f"not converged within {CONVERGE_TIMEOUT:.0f} s: {'; '.join(missing[:4])} "
                               f"(see `invoke bgp {view.topology.lab}` and {self.run_dir}/*.log)")
        return [f"BGP: {plural(len(speakers), 'speaker')} started (AS {view.topology.bgp_as}, router AS "
                f"{view.topology.bgp_router_as}); routes converged in {waited:.1f} s"]

    def converge(self, view: View, announced: dict[str, tuple[str, ...]], timeout: float) -> tuple[float, list[str]]:
        """Wait until the kernels hold what BGP should have put there: (seconds it took, what
        is still missing when ``timeout`` ran out: empty once converged)."""
        want = bgp.expected_routes(view.topology, announced)
        start = last_poke = time.monotonic()
        while True:
            missing = self.differences(view, want)
            if not missing or time.monotonic() - start > timeout:
                return time.monotonic() - start, missing
            if time.monotonic() - last_poke > POKE_S:
                self.poke()
                last_poke = time.monotonic()
            time.sleep(0.05)

    def poke(self) -> None:
        """Ask every BIRD for its status. Measured here: BIRD 2.0.12 at times left a freshly
        established session's updates unprocessed until its next timer (~2 s later; one run
        in two on a 3-node lab) unless something woke its event loop; a control-socket
        request does, and costs a few milliseconds."""
        for name in self.configs:
            try:
                birds.birdc(self.paths(name)["sock"], "show", "status")
            except RealizeError:
                pass  # a BIRD being restarted: its supervisor brings it back

    def differences(self, view: View, want: dict[str, frozenset[IPv4Address]]) -> list[str]:
        topo = view.topology
        got = birds.kernel_routes(topo.router_netns)
        out = [f"router: {p} via {', '.join(map(str, sorted(want.get(p, ())))) or 'nothing'}, has "
               f"{', '.join(map(str, sorted(got.get(p, ())))) or 'nothing'}"
               for p in sorted(set(want) | set(got)) if want.get(p) != got.get(p)]
        if topo.network == "bgp":
            for node in topo.local_nodes:
                have = birds.kernel_routes(node.netns)
                out += [f"{node.name}: no route to {peer.pod_subnet}" for peer in topo.nodes
                        if peer.name != node.name and str(peer.pod_subnet) not in have]
        return out
