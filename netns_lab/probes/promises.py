"""The Kubernetes network model, proven with packets.

1. pod -> pod, same node and across nodes, and the server sees the client pod's own IP;
2. node -> pod and pod -> node, without NAT;
3. the IP a pod shows for itself (its own ``ip addr``) is the IP every peer sees.

"Own IP" is read from the kernel inside the source namespace, not from the plan, so a NAT
or a wrong address anywhere shows up as a mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

from netns_lab.controllers.topology import NODE_AGENT_PORT, Topology, address_of
from netns_lab.probes.connect import Probe, ProbeResult, run_probes
from netns_lab.realize.netns import in_thread

MATRICES = ("pod-to-pod", "node-to-pod", "pod-to-node")


@dataclass(frozen=True)
class Pair:
    src: str  # "pod/ns/name" or "node/name"
    dst: str
    result: ProbeResult
    own_ips: frozenset[str]  # what the source namespace shows for itself

    @property
    def reached(self) -> bool:
        return self.result.result == "ok"

    @property
    def no_nat(self) -> bool:
        return self.result.client_ip in self.own_ips

    @property
    def ok(self) -> bool:
        return self.reached and self.no_nat

    def describe(self) -> str:
        r = self.result
        if not self.reached:
            return f"{self.src} -> {self.dst}: {r.result} ({r.detail})"
        if not self.no_nat:
            return f"{self.src} -> {self.dst}: server saw {r.client_ip}, source has {sorted(self.own_ips)} (NAT?)"
        return f"{self.src} -> {self.dst}: ok, seen as {r.client_ip} by {r.served_by}"


@dataclass(frozen=True)
class MatrixReport:
    kind: str
    pairs: tuple[Pair, ...]

    @property
    def failures(self) -> tuple[Pair, ...]:
        return tuple(p for p in self.pairs if not p.ok)

    @property
    def ok(self) -> bool:
        return bool(self.pairs) and not self.failures

    def summary(self) -> str:
        reached = sum(p.reached for p in self.pairs)
        kept = sum(p.ok for p in self.pairs)
        return f"{reached}/{len(self.pairs)} pairs connected, source IP preserved in {kept}/{len(self.pairs)}"


def own_addresses(namespaces: list[str], family: int = 4) -> dict[str, frozenset[str]]:
    """The addresses of IP version ``family`` each namespace shows for itself (all but
    loopback and IPv6 link-local), read via netlink."""
    from pyroute2 import IPRoute

    def job(w):  # type: ignore[no-untyped-def]
        out: dict[str, frozenset[str]] = {}
        for ns in namespaces:
            w.enter(ns)
            with IPRoute() as ipr:
                if family == 6:
                    out[ns] = frozenset(m.get_attr("IFA_ADDRESS") for m in ipr.get_addr(family=10) if m["scope"] == 0)
                else:
                    out[ns] = frozenset(m.get_attr("IFA_ADDRESS") for m in ipr.get_addr(family=2)
                                        if not m.get_attr("IFA_ADDRESS").startswith("127."))
        return out

    return in_thread(job)


def matrix(topo: Topology, kind: str = "pod-to-pod", protocol: str = "tcp", timeout: float = 3.0, family: int | None = None) -> MatrixReport:
    """Connect every source to every target of ``kind`` at once; judge reach and NAT. With
    ``family`` 6 (a dual-stack lab) the targets' IPv6 addresses, judged against the sources'
    own IPv6 addresses."""

    family = family or topo.families[0]  # the primary family unless asked

    def ip(obj: object) -> str:
        addr = address_of(obj, family)
        if addr is None:
            raise ValueError(f"{getattr(obj, 'name')} has no IPv{family} address (cluster.ipFamily)")
        return str(addr)

    pods = list(topo.workload_pods)
    targets_pods = [p for p in pods if p.ports]
    specs: list[tuple[str, str, str, str, int]] = []  # (src label, src ns, dst label, ip, port)
    if kind == "pod-to-pod":
        for s in pods:
            for d in targets_pods:
                if d is not s:
                    specs.append((f"pod/{s.key}", s.netns, f"pod/{d.key}", ip(d), d.ports[0][0]))
    elif kind == "node-to-pod":
        for n in topo.nodes:
            for d in targets_pods:
                specs.append((f"node/{n.name}", n.netns, f"pod/{d.key}", ip(d), d.ports[0][0]))
    elif kind == "pod-to-node":
        for s in pods:
            for n in topo.nodes:
                specs.append((f"pod/{s.key}", s.netns, f"node/{n.name}", ip(n), NODE_AGENT_PORT))
    else:
        raise ValueError(f"unknown matrix {kind!r}; one of {', '.join(MATRICES)}")
    local = set(topo.namespaces)  # a spread lab probes from this machine's sources only
    specs = [s for s in specs if s[1] in local]
    sources = sorted({s[1] for s in specs})
    own = own_addresses(sources, family)
    results = run_probes([Probe(ns, ip, port, protocol) for _, ns, _, ip, port in specs], timeout=timeout)
    pairs = tuple(Pair(s[0], s[2], r, own[s[1]]) for s, r in zip(specs, results))
    return MatrixReport(kind, pairs)
