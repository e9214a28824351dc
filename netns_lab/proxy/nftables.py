"""kube-proxy's nftables mode, rendered (pkg/proxy/nftables/proxier.go, same names).

One ``ip kube-proxy`` table per node: the ``services`` chain dispatches through the
``service-ips`` / ``service-nodeports`` verdict maps (one lookup, whatever the number of
Services) to ``service-<hash>-ns/name/proto/port`` chains, which pick an endpoint with
``numgen random mod N`` and ``goto`` an ``endpoint-...`` chain that DNATs. ``cluster-ips``
lets the filter hooks reject traffic to a ClusterIP on a port it does not serve;
``no-endpoint-services`` / ``no-endpoint-nodeports`` reject (or drop, for Local policies).

Each Service port renders to a :class:`Fragment` (chains, map elements, affinity sets);
:class:`NftSync` caches the fragments it applied and plans one ``nft -f`` transaction that
touches only the chains and map elements of Service ports that changed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections import Counter
from dataclasses import dataclass, field

from netns_lab.model import hostport
from netns_lab.proxy.types import MASQ_MARK, NodeContext, ServicePortInfo, traffic_policy

TABLE = "ip kube-proxy"
CHAIN_NAME_MAX = 200


def base(table: str = TABLE, addr: str = "ipv4_addr") -> str:
    """The table and its fixed objects (``ip6 kube-proxy`` with ipv6_addr keys for IPv6)."""
    return f"""add table {table} {{ comment "rules for kube-proxy" ; }}
add chain {table} filter-prerouting-pre-dnat {{ type filter hook prerouting priority -110 ; }}
add chain {table} filter-output-pre-dnat {{ type filter hook output priority -110 ; }}
add chain {table} filter-input {{ type filter hook input priority 0 ; }}
add chain {table} filter-forward {{ type filter hook forward priority 0 ; }}
add chain {table} filter-output {{ type filter hook output priority 0 ; }}
add chain {table} nat-prerouting {{ type nat hook prerouting priority -100 ; }}
add chain {table} nat-output {{ type nat hook output priority -100 ; }}
add chain {table} nat-postrouting {{ type nat hook postrouting priority 100 ; }}
add set {table} cluster-ips {{ type {addr} ; comment "Active ClusterIPs" ; }}
add set {table} nodeport-ips {{ type {addr} ; comment "IPs that accept NodePort traffic" ; }}
add map {table} service-ips {{ type {addr} . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }}
add map {table} service-nodeports {{ type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }}
add map {table} no-endpoint-services {{ type {addr} . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }}
add map {table} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }}
add map {table} firewall-ips {{ type {addr} . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }}
add chain {table} reject-chain {{ comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }}
"""


BASE = base()


MAPS = ("cluster-ips", "nodeport-ips", "service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports",
        "firewall-ips")


@functools.lru_cache(maxsize=1 << 18)
def hash_and_truncate(name: str) -> str:
    """kube-proxy's ``hashAndTruncate``: 8 base32 chars of sha256, a dash, the readable name."""
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:8]
    full = f"{digest}-{name}"
    return full if len(full) <= CHAIN_NAME_MAX else full[: CHAIN_NAME_MAX - 3] + "..."


def _base(sp: ServicePortInfo) -> str:
    return hash_and_truncate(f"{sp.namespace}/{sp.name}/{sp.proto}/{sp.port_name or ''}")


def _ep_base(sp: ServicePortInfo, ip: str, port: int) -> str:
    # an IPv6 address's colons become dots, as kube-proxy's servicePortEndpointChainNameBase writes them
    return hash_and_truncate(f"{sp.namespace}/{sp.name}/{sp.proto}/{sp.port_name or ''}__{ip.replace(':', '.')}/{port}")


def service_chain(sp: ServicePortInfo) -> str:
    return "service-" + _base(sp)


def local_chain(sp: ServicePortInfo) -> str:
    return "local-" + _base(sp)


def external_chain(sp: ServicePortInfo) -> str:
    return "external-" + _base(sp)


def firewall_chain(sp: ServicePortInfo) -> str:
    return "firewall-" + _base(sp)


def endpoint_chain(sp: ServicePortInfo, ip: str, port: int) -> str:
    return "endpoint-" + _ep_base(sp, ip, port)


def affinity_set(sp: ServicePortInfo, ip: str, port: int) -> str:
    return "affinity-" + _ep_base(sp, ip, port)


@dataclass
class Fragment:
    chains: dict[str, list[str]] = field(default_factory=dict)
    elements: dict[str, list[str]] = field(default_factory=dict)  # map/set -> "key : verdict" or "key"
    affinity_sets: dict[str, int] = field(default_factory=dict)  # name -> timeout seconds

    def add(self, chain: str, rule: str) -> None:
        self.chains.setdefault(chain, []).append(rule)

    def element(self, m: str, text: str) -> None:
        self.elements.setdefault(m, []).append(text)


def table_name(ctx: NodeContext) -> str:
    """``ip kube-proxy`` or, for a dual-stack node's IPv6 proxier, ``ip6 kube-proxy``."""
    return f"{ctx.nft_family} kube-proxy"


def fixed_chains(ctx: NodeContext) -> dict[str, list[str]]:
    ip = ctx.nft_family
    return {
        # kube-proxy v1.34's base chains: the firewall (loadBalancerSourceRanges) before DNAT,
        # the endpoint checks after it, at filter priority: a node's own packet to an
        # externalTrafficPolicy Local IP it has no endpoint for is DNATed to a remote endpoint
        # before the check, so it is delivered, not dropped (kubernetes#131765)
        "filter-prerouting-pre-dnat": ["ct state new jump firewall-check"],
        "filter-output-pre-dnat": ["ct state new jump firewall-check"],
        "filter-input": ["ct state new jump nodeport-endpoints-check", "ct state new jump service-endpoints-check"],
        "filter-forward": ["ct state new jump service-endpoints-check", "ct state new jump cluster-ips-check"],
        "filter-output": ["ct state new jump service-endpoints-check", "ct state new jump cluster-ips-check"],
        "nat-prerouting": ["jump services"],
        "nat-output": ["jump services"],
        "nat-postrouting": ["jump masquerading"],
        "firewall-check": [f"{ip} daddr . meta l4proto . th dport vmap @firewall-ips"],
        "mark-for-masquerade": [f"mark set mark or {MASQ_MARK}"],
        "masquerading": [f"mark and {MASQ_MARK} == 0 return", f"mark set mark xor {MASQ_MARK}", "masquerade fully-random"],
        "services": [f"{ip} daddr . meta l4proto . th dport vmap @service-ips",
                     f"{ip} daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"],
        "reject-chain": ["reject"],
        "cluster-ips-check": [f'{ip} daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"',
                              f'{ip} daddr {{ {ctx.service_cidr} }} drop comment "Drop traffic to unallocated ClusterIPs"'],
        "nodeport-endpoints-check": [f"{ip} daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports"],
        "service-endpoints-check": [f"{ip} daddr . meta l4proto . th dport vmap @no-endpoint-services"],
    }


def render_port(ctx: NodeContext, sp: ServicePortInfo) -> Fragment:
    """kube-proxy's nftables objects for one Service port on node ``ctx.node`` (pure), in the
    order its syncProxyRules writes them (the order of rules within a chain matters)."""
    f = Fragment()
    ip = ctx.nft_family
    key = f"{sp.cluster_ip} . {sp.proto} . {sp.port}"
    f.element("cluster-ips", sp.cluster_ip)
    tp = traffic_policy(sp, ctx.node)
    has_eps, internal_eps, external_eps = tp.has_any, tp.internal, tp.external
    internal_chain = local_chain(sp) if sp.internal_local else service_chain(sp)
    external_policy = local_chain(sp) if sp.external_local else service_chain(sp)
    comment = f'comment "{sp.port_name_string}"'

    if internal_eps:
        f.element("service-ips", f"{key} : goto {internal_chain}")
    else:  # no endpoint anywhere: reject; none for internal traffic (Local, none here): drop
        f.element("no-endpoint-services", f"{key} {comment} : {'drop' if has_eps else 'goto reject-chain'}")
    if tp.is_external:
        _external_destinations(f, ctx, sp, has_eps, bool(external_eps))
    if internal_eps:  # masquerade off-cluster sources (a route to the Service range via a node)
        f.add(internal_chain, f"{ip} daddr {sp.cluster_ip} {ip} saddr != {ctx.cluster_cidr} jump mark-for-masquerade")
    if has_eps and tp.is_external:
        ext = external_chain(sp)
        if not sp.external_local:
            f.add(ext, "jump mark-for-masquerade")
        else:
            f.add(ext, f'{ip} saddr {ctx.cluster_cidr} goto {service_chain(sp)} comment "short-circuit pod traffic"')
            f.add(ext, 'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"')
            f.add(ext, f'fib saddr type local goto {service_chain(sp)} comment "short-circuit local traffic"')
        if external_eps:
            f.add(ext, f"goto {external_policy}")
    if sp.source_ranges and sp.lb_ips:
        sources = list(sp.source_ranges)
        if sp.ranges_hold(ctx):
            sources += sp.lb_ips  # a node's request to a VIP that is local to it loops back from the VIP
        f.add(firewall_chain(sp), f"{ip} saddr != {{ {' , '.join(sources)} }} drop")
    if sp.affinity_timeout is not None:
        for ep in tp.reachable:
            f.affinity_sets[affinity_set(sp, ep.ip, ep.port)] = sp.affinity_timeout
    if tp.uses_cluster_chain:
        _endpoint_dispatch(f, service_chain(sp), sp, tp.cluster, ip)
    if tp.uses_local_chain:
        _endpoint_dispatch(f, local_chain(sp), sp, tp.local, ip)
    for ep in tp.reachable:
        chain = endpoint_chain(sp, ep.ip, ep.port)
        f.add(chain, f"{ip} saddr {ep.ip} jump mark-for-masquerade")
        if sp.affinity_timeout is not None:
            f.add(chain, f"update @{affinity_set(sp, ep.ip, ep.port)} {{ {ip} saddr }}")
        f.add(chain, f"meta l4proto {sp.proto} dnat to {hostport(ep.ip, ep.port)}")
    return f


def _external_destinations(f: Fragment, ctx: NodeContext, sp: ServicePortInfo, has_eps: bool, has_external_eps: bool) -> None:
    """externalIPs, load-balancer IPs and the NodePort go to the ``external-`` chain (LB IPs
    with source ranges first pass their ``firewall-`` chain, looked up before DNAT), or, with
    no endpoint for them, to a drop (Local policy, none on this node) or a reject (none at all)."""
    verdict = "drop" if has_eps else "goto reject-chain"
    comment = f'comment "{sp.port_name_string}"'
    ext = external_chain(sp)
    for ip in sp.external_ips:
        key = f"{ip} . {sp.proto} . {sp.port}"
        if has_eps:
            f.element("service-ips", f"{key} : goto {ext}")
        if not has_external_eps:
            f.element("no-endpoint-services", f"{key} {comment} : {verdict}")
    firewalled = bool(sp.source_ranges)
    for ip in sp.lb_ips:
        key = f"{ip} . {sp.proto} . {sp.port}"
        if has_eps:
            f.element("service-ips", f"{key} : goto {ext}")
        if firewalled:
            f.element("firewall-ips", f"{key} : goto {firewall_chain(sp)}")
    if not has_external_eps:
        for ip in sp.lb_ips:
            f.element("no-endpoint-services", f"{ip} . {sp.proto} . {sp.port} {comment} : {verdict}")
    if sp.node_port is not None:
        np_key = f"{sp.proto} . {sp.node_port}"
        if has_eps:
            f.element("service-nodeports", f"{np_key} : goto {ext}")
        if not has_external_eps:
            f.element("no-endpoint-nodeports", f"{np_key} {comment} : {verdict}")


def _endpoint_dispatch(f: Fragment, chain: str, sp: ServicePortInfo, eps: tuple, ip: str = "ip") -> None:  # type: ignore[type-arg]
    if sp.affinity_timeout is not None:
        for ep in eps:
            f.add(chain, f"{ip} saddr @{affinity_set(sp, ep.ip, ep.port)} goto {endpoint_chain(sp, ep.ip, ep.port)}")
    targets = " , ".join(f"{i} : goto {endpoint_chain(sp, ep.ip, ep.port)}" for i, ep in enumerate(eps))
    f.add(chain, f"numgen random mod {len(eps)} vmap {{ {targets} }}")


def _kind(m: str) -> str:
    return "set" if m in ("cluster-ips", "nodeport-ips") else "map"


@dataclass
class Parts:
    """The last transaction in three parts: the table's fixed objects (a full sync only), the
    fragments of the Service ports it (re)wrote, and the map elements and stale objects after
    them. Its text is ``head``, :meth:`NftSync.body` of ``added``, ``tail``: a writer may send
    the fragments in several transactions before the tail switches the maps to them."""

    head: list[str]
    added: list[Fragment]
    tail: list[str]
    reused: frozenset[int] = frozenset()  # id() of the fragments the previous sync applied as they are


class NftSync:
    """Pure bookkeeping of one node's ``kube-proxy`` table; :meth:`transaction` plans a sync.

    Chains, sets and map elements are reference-counted across fragments, so a partial sync
    costs what the change costs, not what the whole table costs.
    """

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.table = table_name(ctx)
        self.fragments: dict[ServicePortInfo, Fragment] = {}
        self.elements: Counter[tuple[str, str]] = Counter()  # (map, element) -> fragments holding it
        self.chains: Counter[str] = Counter()
        self.sets: Counter[str] = Counter()
        self.synced = False
        self.parts = Parts([], [], [])

    def _count(self, f: Fragment, step: int, touched: dict[str, set], before: dict | None = None) -> None:  # type: ignore[type-arg]
        for m, es in f.elements.items():
            for e in es:
                if before is not None and (m, e) not in before:
                    before[(m, e)] = self.elements[(m, e)] > 0  # was it in the map before this sync
                self.elements[(m, e)] += step
                touched["elements"].add((m, e))
        for c in f.chains:
            self.chains[c] += step
            touched["chains"].add(c)
        for a in f.affinity_sets:
            self.sets[a] += step
            touched["sets"].add(a)

    def transaction(self, ports: tuple[ServicePortInfo, ...], full: bool = False,
                    existing_chains: set[str] | None = None, existing_sets: set[str] | None = None,
                    delta: tuple[tuple[ServicePortInfo, ...], tuple[ServicePortInfo, ...]] | None = None) -> str:
        """One ``nft -f`` transaction. Sets and chains are created before anything refers to
        them; stale ones are removed only after the elements and rules that used them.
        ``delta`` (ports gone, ports new since the last transaction) spares comparing them all."""
        full = full or not self.synced
        old = self.fragments
        added: list[Fragment] = []
        if delta is not None and not full:
            new = dict(old)
            removed = [new.pop(sp) for sp in delta[0] if sp in new]
            for sp in delta[1]:
                new[sp] = f = render_port(self.ctx, sp)
                added.append(f)
        else:
            new = {}
            for sp in ports:
                f = old.get(sp)
                if f is None:
                    f = render_port(self.ctx, sp)
                    added.append(f)
                new[sp] = f
            removed = [f for sp, f in old.items() if sp not in new] if len(new) != len(old) or added else []
        before_elements: dict[tuple[str, str], bool] = {}  # only for the elements this sync touches
        before_chains = {c for c, n in self.chains.items() if n > 0} if full else None
        before_sets = {c for c, n in self.sets.items() if n > 0} if full else None
        touched: dict[str, set] = {"elements": set(), "chains": set(), "sets": set()}  # type: ignore[type-arg]
        if full:
            self.elements, self.chains, self.sets = Counter(), Counter(), Counter()
            added = list(new.values())
            for f in added:
                self._count(f, 1, touched)
        else:
            for f in removed:
                self._count(f, -1, touched, before_elements)
            for f in added:
                self._count(f, 1, touched, before_elements)
        out: list[str] = []
        if full:
            out.append(base(self.table, self.ctx.addr_type).rstrip())
            fixed = fixed_chains(self.ctx)
            out.extend(f"add chain {self.table} {c}" for c in fixed)
            for c, rules in fixed.items():
                out.append(f"flush chain {self.table} {c}")
                out.extend(f"add rule {self.table} {c} {r}" for r in rules)
        head = out
        out = []
        gone: dict[str, list[str]] = {}
        fresh: dict[str, list[str]] = {}
        if full:
            for m in MAPS:
                out.append(f"flush {_kind(m)} {self.table} {m}")
            for ip in self.ctx.node_ips:
                self.elements[("nodeport-ips", ip)] += 1
            for (m, e), n in self.elements.items():
                if n > 0:
                    fresh.setdefault(m, []).append(e)
        else:
            for key in touched["elements"]:
                m, e = key
                now = self.elements[key] > 0
                if before_elements[key] and not now:
                    gone.setdefault(m, []).append(e.split(" : ")[0].split(" comment ")[0])  # the key alone
                elif not before_elements[key] and now:
                    fresh.setdefault(m, []).append(e)
        for m in MAPS:
            if gone.get(m):
                out.append(f"delete element {self.table} {m} {{ {', '.join(sorted(gone[m]))} }}")
        for m in MAPS:
            if fresh.get(m):
                out.append(f"add element {self.table} {m} {{ {', '.join(sorted(fresh[m]))} }}")
        fixed_names = set(fixed_chains(self.ctx))
        if full:
            stale_chains = sorted(((before_chains or set()) | (existing_chains or set())) - {c for c, n in self.chains.items() if n > 0} - fixed_names)
            stale_sets = sorted(((before_sets or set()) | (existing_sets or set())) - {s for s, n in self.sets.items() if n > 0})
        else:
            stale_chains = sorted(c for c in touched["chains"] if self.chains[c] <= 0)
            stale_sets = sorted(s for s in touched["sets"] if self.sets[s] <= 0)
        out.extend(f"flush chain {self.table} {c}" for c in stale_chains)
        out.extend(f"delete chain {self.table} {c}" for c in stale_chains)
        out.extend(f"delete set {self.table} {s}" for s in stale_sets)
        for counter in (self.elements, self.chains, self.sets):
            for k in [k for k in touched["elements" if counter is self.elements else "chains" if counter is self.chains else "sets"] if counter[k] <= 0]:
                del counter[k]
        self.fragments = new
        self.synced = True
        reused = frozenset(id(f) for sp, f in new.items() if old.get(sp) is f) if full else frozenset()
        self.parts = Parts(head, added, out, reused)
        return "\n".join(head + self.body(added) + out) + "\n"

    def batches(self, existing: set[str], size: int) -> list[str]:
        """The last full transaction's Service objects and tail as several transactions: the
        fragments the previous sync applied as they are, and those whose chains and sets the
        kernel does not hold (``existing``), in batches of ``size``, before the maps; the rest,
        whose chains now change, in the last one, with the maps switched and the stale objects
        removed. No packet then meets a Service's new chains with the old maps."""
        parts = self.parts
        early, late = [], []
        for f in parts.added:
            fresh = not (existing & (set(f.chains) | set(f.affinity_sets)))
            (early if id(f) in parts.reused or fresh else late).append(f)
        out = ["\n".join(self.body(early[i:i + size])) for i in range(0, len(early), size)]
        return out + ["\n".join(self.body(late) + parts.tail)]

    def body(self, fragments: list[Fragment]) -> list[str]:
        """The Service ports' own objects: affinity sets, then chains, then their rules (a
        chain exists before any rule jumps to it)."""
        out: list[str] = []
        for f in fragments:
            for name, timeout in f.affinity_sets.items():
                out.append(f"add set {self.table} {name} {{ type {self.ctx.addr_type} ; flags dynamic,timeout ; timeout {timeout}s ; }}")
        for f in fragments:
            out.extend(f"add chain {self.table} {c}" for c in f.chains)
        for f in fragments:
            for c, rules in f.chains.items():
                out.append(f"flush chain {self.table} {c}")
                out.extend(f"add rule {self.table} {c} {r}" for r in rules)
        return out


def full_text(ctx: NodeContext, ports: tuple[ServicePortInfo, ...]) -> str:
    return NftSync(ctx).transaction(ports, full=True)
