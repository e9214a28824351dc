"""NetworkPolicy, resolved: for each node, which of its pods are isolated, by which
policies, and what each policy allows, with peers turned into sets of addresses. Pure (no
kernel, no command): both dataplanes (the renderers of netns_lab.policy) render
exactly this, so they cannot disagree on a verdict.

The semantics are the API's (networking/v1 types.go) and the upstream e2e tests':

* a pod is isolated for ingress (egress) when a policy of its namespace selects it and has
  ``Ingress`` (``Egress``) in its policyTypes; then only what some such policy allows passes
  (policies add up, their order does not matter), replies included via conntrack;
* ingress is enforced on the destination pod's node, egress on the source pod's, both after
  kube-proxy's DNAT (the address of the pod behind a Service);
* a rule with no peers allows every address, with no ports every port and protocol; a peer
  is pods (podSelector in the policy's namespace; namespaceSelector alone: every pod of those
  namespaces; both: AND) or an ipBlock (cidr minus its excepts);
* a named port means, for each pod it could reach, that pod's container port of that name
  and protocol: for ingress the selected pod's, for egress the destination pod's. It is
  matched as a set of (pod address, protocol, port), Calico's named-port sets;
* traffic between a pod and its own node is never filtered (the node reaches its pods for
  kubelet's probes): the dataplanes filter forwarded traffic only.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass

from netns_lab.controllers.topology import Topology
from netns_lab.model import LabelSelector, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule
from netns_lab.store import Objects

INGRESS, EGRESS = "Ingress", "Egress"


@dataclass(frozen=True)
class AddressSet:
    """A named set: ``net`` holds addresses and CIDRs, ``port`` holds (address, protocol, port)."""

    name: str  # Calico's set ID ("s:<hash>", "n:<hash>"): stable for what defines it, not its members
    kind: str  # net | port
    members: tuple[str, ...]  # net: "10.244.0.2/32", "10.0.0.0/8"; port: "10.244.0.2,tcp:80"
    comment: str


@dataclass(frozen=True)
class Match:
    """One allow line of a policy: every set field must hold (None: anything)."""

    peer: str | None = None  # a net set the peer's address (source for ingress, destination for egress) is in
    peer_not: str | None = None  # an ipBlock's excepts: a net set the peer's address is not in
    protocol: str | None = None  # tcp | udp | sctp; None: every protocol
    ports: tuple[int, int] | None = None  # destination ports, inclusive
    named: str | None = None  # a port set (destination address, protocol, destination port)


@dataclass(frozen=True)
class PolicyChain:
    """What one policy allows in one direction: any match accepts."""

    policy: str  # NS/NAME
    direction: str  # Ingress | Egress
    matches: tuple[Match, ...]

    @property
    def id(self) -> str:
        """Calico's policy ID for a Kubernetes NetworkPolicy (v3.2x): ``NS/knp.default.NAME``."""
        ns, _, name = self.policy.partition("/")
        return f"{self.direction[0]}:{ns}/knp.default.{name}"


@dataclass(frozen=True)
class Endpoint:
    """A pod of this node that some policy isolates: its policies per direction, by chain id
    (None: not isolated in that direction, everything passes)."""

    pod: str  # NS/NAME
    ip: str
    iface: str  # the node side of the pod's veth
    ingress: tuple[str, ...] | None
    egress: tuple[str, ...] | None


@dataclass(frozen=True)
class NodePolicy:
    node: str
    endpoints: tuple[Endpoint, ...]
    chains: tuple[PolicyChain, ...]
    sets: tuple[AddressSet, ...]

    @property
    def empty(self) -> bool:
        return not self.endpoints


def b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def set_id(prefix: str, definition: str) -> str:
    """Calico's ipset IDs: ``s:`` + base64url(sha224("s:" + selector)) (``n:`` for named ports)."""
    return prefix + b64(hashlib.sha224((prefix + definition).encode()).digest())


def _selector_text(sel: LabelSelector | None) -> str:
    if sel is None:
        return "-"
    parts = [f"{k}=={v}" for k, v in sel.match_labels]
    parts += [f"{k} {op} ({','.join(sorted(vals))})" for k, op, vals in sel.match_expressions]
    return " && ".join(parts) or "all()"


class _Resolver:
    """Selectors to pod addresses, memoised per (namespace, selectors) for one plan."""

    def __init__(self, objects: Objects, topology: Topology) -> None:
        plans = {p.key: p for p in topology.pods}
        self.pods = [(p, plans[p.key]) for p in objects.pods if p.key in plans]
        self.by_ns: dict[str, list] = {}
        for pod, plan in self.pods:
            self.by_ns.setdefault(pod.namespace, []).append((pod, plan))
        self.ns_labels = {n.name: n.labels for n in objects.namespaces}
        self.sets: dict[str, AddressSet] = {}
        self.memo: dict[tuple[object, ...], list] = {}  # policies repeat their selectors: each resolved once

    def pods_of(self, namespace: str | None, pod_sel: LabelSelector | None, ns_sel: LabelSelector | None) -> list:
        """The pods ``pod_sel`` selects in ``namespace`` (``ns_sel`` None) or in every
        namespace ``ns_sel`` selects; None selects every pod."""
        key = (namespace if ns_sel is None else None, pod_sel, ns_sel)
        hit = self.memo.get(key)
        if hit is None:
            names = [namespace] if ns_sel is None else [n for n, labels in self.ns_labels.items() if ns_sel.matches(labels)]
            hit = [(pod, plan) for n in names for pod, plan in self.by_ns.get(n, ()) if pod_sel is None or pod_sel.matches(pod.labels)]
            self.memo[key] = hit
        return hit

    def add(self, key: str, kind: str, members, comment: str) -> str:  # type: ignore[no-untyped-def]
        """The set named for ``key`` (what defines it); ``members`` (a callable) is computed only
        the first time that set is asked for."""
        name = set_id("s:" if kind == "net" else "n:", key)
        if name not in self.sets:
            self.sets[name] = AddressSet(name, kind, tuple(sorted(set(members()), key=_member_order)), comment)
        return name

    def peer_set(self, namespace: str, peer: PolicyPeer) -> tuple[str, str | None]:
        if peer.ip_block is not None:  # the lab is IPv4: an IPv6 block matches nothing, as in a single-stack cluster
            block = peer.ip_block
            net = ipaddress.ip_network(block.cidr, strict=False)
            nets = [str(net)] if net.version == 4 else []
            cidr = self.add(f"net:{net}", "net", lambda: nets, f"ipBlock {net}")
            excepts = [str(n) for n in ipaddress.collapse_addresses(
                ipaddress.ip_network(e, strict=False) for e in block.excepts if ipaddress.ip_network(e, strict=False).version == 4)]
            return cidr, (self.add(f"net:{','.join(excepts)}", "net", lambda: excepts, f"ipBlock except {','.join(excepts)}")
                          if excepts else None)
        ns = None if peer.namespace_selector is not None else namespace
        key = f"pods:{ns or '*'}:{_selector_text(peer.pod_selector)}:{_selector_text(peer.namespace_selector)}"
        what = (f"pods {_selector_text(peer.pod_selector)} in " +
                (f"namespace {namespace}" if ns else f"namespaces {_selector_text(peer.namespace_selector)}"))
        return self.add(key, "net", lambda: [f"{plan.ip}/32" for _pod, plan in self.pods_of(ns, peer.pod_selector, peer.namespace_selector)],
                        what), None

    def named_set(self, candidates: list, scope: str, port: PolicyPort) -> str:
        proto = port.protocol.lower()
        return self.add(f"named:{scope}:{port.protocol}:{port.port}", "port",
                        lambda: [f"{plan.ip},{proto}:{number}" for pod, plan in candidates
                                 if (number := pod.named_port(str(port.port), port.protocol)) is not None],
                        f"named port {port.port}/{port.protocol} of {scope}")


def _member_order(m: str) -> tuple[int, ...]:
    head = m.replace("/", ",").split(",")[0]
    try:
        return tuple(int(x) for x in head.split(".")) + (len(m),)
    except ValueError:
        return (1 << 16, len(m))


def _matches(res: _Resolver, policy: NetworkPolicy, rule: PolicyRule, direction: str) -> list[Match]:
    peers: list[tuple[str | None, str | None]] = [res.peer_set(policy.namespace, p) for p in rule.peers] or [(None, None)]
    ports: list[dict] = []
    for port in rule.ports or (None,):
        if port is None:
            ports.append({})
        elif isinstance(port.port, str):
            if direction == INGRESS:  # the selected pods' port of that name
                scope = f"pods {_selector_text(policy.pod_selector)} in namespace {policy.namespace}"
                candidates = res.pods_of(policy.namespace, policy.pod_selector, None)
            else:  # the destination pod's port of that name: any pod may be it
                scope, candidates = "every pod", res.pods
            ports.append({"protocol": port.protocol.lower(), "named": res.named_set(candidates, scope, port)})
        elif port.port is None:
            ports.append({"protocol": port.protocol.lower()})
        else:
            ports.append({"protocol": port.protocol.lower(), "ports": (port.port, port.end_port or port.port)})
    return [Match(peer=peer, peer_not=not_, **spec) for peer, not_ in peers for spec in ports]


def plan(objects: Objects, topology: Topology) -> dict[str, NodePolicy]:
    """node -> what its dataplane enforces. A node none of whose pods a policy selects gets
    an empty NodePolicy (nothing rendered: no chain, no set)."""
    res = _Resolver(objects, topology)
    chains: dict[tuple[str, str], PolicyChain] = {}
    isolated: dict[str, dict[str, list[str]]] = {}  # pod key -> direction -> chain ids
    for policy in sorted(objects.network_policies, key=lambda p: p.key):
        selected = res.pods_of(policy.namespace, policy.pod_selector, None)
        for direction, rules in ((INGRESS, policy.ingress), (EGRESS, policy.egress)):
            if direction not in policy.policy_types:
                continue
            chain = PolicyChain(policy.key, direction, tuple(m for r in rules for m in _matches(res, policy, r, direction)))
            chains[(policy.key, direction)] = chain
            for pod, _plan in selected:
                isolated.setdefault(pod.key, {}).setdefault(direction, []).append(chain.id)
    out = {}
    for node in topology.local_nodes:
        endpoints = []
        for pod, p in res.pods:
            if p.node != node.name or pod.key not in isolated:
                continue
            dirs = isolated[pod.key]
            endpoints.append(Endpoint(pod.key, str(p.ip), p.host_veth,
                                      tuple(dirs[INGRESS]) if INGRESS in dirs else None,
                                      tuple(dirs[EGRESS]) if EGRESS in dirs else None))
        used = {c for e in endpoints for c in (e.ingress or ()) + (e.egress or ())}
        node_chains = tuple(c for c in chains.values() if c.id in used)
        set_names = {n for c in node_chains for m in c.matches for n in (m.peer, m.peer_not, m.named) if n}
        out[node.name] = NodePolicy(node.name, tuple(endpoints), node_chains,
                                    tuple(res.sets[n] for n in sorted(set_names)))
    return out
