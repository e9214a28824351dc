"""kube-proxy's nftables mode, rendered (pkg/proxy/nftables/proxier.go, same names).

One ``ip kube-proxy`` table per node: the ``services`` chain dispatches through the
``service-ips`` / ``service-nodeports`` verdict maps (one lookup, whatever the number of
Services) to ``service-<hash>-ns/name/proto/port`` chains, which pick an endpoint with
``numgen random mod N`` and ``goto`` an ``endpoint-...`` chain that DNATs. ``cluster-ips``
lets the filter hooks reject traffic to a ClusterIP on a port it does not serve;
``no-endpoint-services`` / ``no-endpoint-nodeports`` reject (or drop, for Local policies).

:func:`transaction` turns two renders into one ``nft -f`` transaction that touches only the
chains and map elements that changed.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from netns_lab.proxy.types import MASQ_MARK, NodeContext, ServicePortInfo

TABLE = "ip kube-proxy"
CHAIN_NAME_MAX = 200

BASE = f"""add table {TABLE} {{ comment "rules for kube-proxy" ; }}
add chain {TABLE} filter-prerouting {{ type filter hook prerouting priority -110 ; }}
add chain {TABLE} filter-input {{ type filter hook input priority -110 ; }}
add chain {TABLE} filter-forward {{ type filter hook forward priority -110 ; }}
add chain {TABLE} filter-output {{ type filter hook output priority -110 ; }}
add chain {TABLE} filter-output-post-dnat {{ type filter hook output priority -90 ; }}
add chain {TABLE} nat-prerouting {{ type nat hook prerouting priority -100 ; }}
add chain {TABLE} nat-output {{ type nat hook output priority -100 ; }}
add chain {TABLE} nat-postrouting {{ type nat hook postrouting priority 100 ; }}
add set {TABLE} cluster-ips {{ type ipv4_addr ; comment "Active ClusterIPs" ; }}
add set {TABLE} nodeport-ips {{ type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }}
add map {TABLE} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }}
add map {TABLE} service-nodeports {{ type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }}
add map {TABLE} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }}
add map {TABLE} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }}
"""
MAPS = ("cluster-ips", "nodeport-ips", "service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports")


def hash_and_truncate(name: str) -> str:
    """kube-proxy's ``hashAndTruncate``: 8 base32 chars of sha256, a dash, the readable name."""
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:8]
    full = f"{digest}-{name}"
    return full if len(full) <= CHAIN_NAME_MAX else full[: CHAIN_NAME_MAX - 3] + "..."


def _base(sp: ServicePortInfo) -> str:
    return hash_and_truncate(f"{sp.namespace}/{sp.name}/{sp.proto}/{sp.port_name or ''}")


def _ep_base(sp: ServicePortInfo, ip: str, port: int) -> str:
    return hash_and_truncate(f"{sp.namespace}/{sp.name}/{sp.proto}/{sp.port_name or ''}__{ip}/{port}")


def service_chain(sp: ServicePortInfo) -> str:
    return "service-" + _base(sp)


def local_chain(sp: ServicePortInfo) -> str:
    return "local-" + _base(sp)


def external_chain(sp: ServicePortInfo) -> str:
    return "external-" + _base(sp)


def endpoint_chain(sp: ServicePortInfo, ip: str, port: int) -> str:
    return "endpoint-" + _ep_base(sp, ip, port)


def affinity_set(sp: ServicePortInfo, ip: str, port: int) -> str:
    return "affinity-" + _ep_base(sp, ip, port)


@dataclass
class NftRuleset:
    chains: dict[str, list[str]] = field(default_factory=dict)
    elements: dict[str, set[str]] = field(default_factory=lambda: {m: set() for m in MAPS})
    affinity_sets: dict[str, int] = field(default_factory=dict)  # name -> timeout seconds

    def add(self, chain: str, rule: str) -> None:
        self.chains.setdefault(chain, []).append(rule)


def render(ctx: NodeContext, ports: tuple[ServicePortInfo, ...]) -> NftRuleset:
    r = NftRuleset()
    r.add("filter-prerouting", "ct state new jump firewall-check")
    r.add("filter-input", "ct state new jump nodeport-endpoints-check")
    r.add("filter-input", "ct state new jump service-endpoints-check")
    r.add("filter-forward", "ct state new jump service-endpoints-check")
    r.add("filter-forward", "ct state new jump cluster-ips-check")
    r.add("filter-output", "ct state new jump service-endpoints-check")
    r.add("filter-output", "ct state new jump firewall-check")
    r.add("filter-output-post-dnat", "ct state new jump cluster-ips-check")
    r.add("nat-prerouting", "jump services")
    r.add("nat-output", "jump services")
    r.add("nat-postrouting", "jump masquerading")
    r.chains["firewall-check"] = []
    r.add("mark-for-masquerade", f"mark set mark or {MASQ_MARK}")
    r.add("masquerading", f"mark and {MASQ_MARK} == 0 return")
    r.add("masquerading", f"mark set mark xor {MASQ_MARK}")
    r.add("masquerading", "masquerade fully-random")
    r.add("services", "ip daddr . meta l4proto . th dport vmap @service-ips")
    r.add("services", "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports")
    r.add("reject-chain", 'reject comment "helper for @no-endpoint-services / @no-endpoint-nodeports"')
    r.add("cluster-ips-check", 'ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"')
    r.add("cluster-ips-check", f'ip daddr {{ {ctx.service_cidr} }} drop comment "Drop traffic to unallocated ClusterIPs"')
    r.add("nodeport-endpoints-check", "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports")
    r.add("service-endpoints-check", "ip daddr . meta l4proto . th dport vmap @no-endpoint-services")
    for ip in ctx.node_ips:
        r.elements["nodeport-ips"].add(ip)
    for sp in ports:
        _service_port(r, ctx, sp)
    return r


def _service_port(r: NftRuleset, ctx: NodeContext, sp: ServicePortInfo) -> None:
    key = f"{sp.cluster_ip} . {sp.proto} . {sp.port}"
    r.elements["cluster-ips"].add(sp.cluster_ip)
    local = sp.local_endpoints(ctx.node)
    all_eps = sp.endpoints
    internal_eps = local if sp.internal_local else all_eps
    external = sp.node_port is not None
    external_eps = local if sp.external_local else all_eps
    uses_svc = bool(all_eps) and (not sp.internal_local or (external and not sp.external_local))
    uses_local = bool(local) and (sp.internal_local or (external and sp.external_local))
    internal_chain = local_chain(sp) if sp.internal_local else service_chain(sp)
    external_policy = local_chain(sp) if sp.external_local else service_chain(sp)

    if internal_eps:
        r.elements["service-ips"].add(f"{key} : goto {internal_chain}")
    elif not all_eps:
        r.elements["no-endpoint-services"].add(f"{key} : goto reject-chain")
    else:
        r.elements["no-endpoint-services"].add(f"{key} : drop")

    if external:
        np_key = f"{sp.proto} . {sp.node_port}"
        if all_eps:
            ext = external_chain(sp)
            r.elements["service-nodeports"].add(f"{np_key} : goto {ext}")
            if not sp.external_local:
                r.add(ext, "jump mark-for-masquerade")
            else:
                r.add(ext, f'ip saddr {ctx.cluster_cidr} goto {service_chain(sp)} comment "short-circuit pod traffic"')
                r.add(ext, 'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"')
                r.add(ext, f'fib saddr type local goto {service_chain(sp)} comment "short-circuit local traffic"')
            if external_eps:
                r.add(ext, f"goto {external_policy}")
        if not all_eps:
            r.elements["no-endpoint-nodeports"].add(f"{np_key} : goto reject-chain")
        elif not external_eps:
            r.elements["no-endpoint-nodeports"].add(f"{np_key} : drop")

    if uses_svc:
        chain = service_chain(sp)
        r.add(chain, f"ip daddr {sp.cluster_ip} {sp.proto} dport {sp.port} ip saddr != {ctx.cluster_cidr} jump mark-for-masquerade")
        _endpoint_dispatch(r, chain, sp, all_eps)
    if uses_local:
        _endpoint_dispatch(r, local_chain(sp), sp, local)
    if uses_svc or uses_local:
        for ep in all_eps:
            chain = endpoint_chain(sp, ep.ip, ep.port)
            if chain in r.chains:
                continue
            r.add(chain, f"ip saddr {ep.ip} jump mark-for-masquerade")
            if sp.affinity_timeout is not None:
                aff = affinity_set(sp, ep.ip, ep.port)
                r.affinity_sets[aff] = sp.affinity_timeout
                r.add(chain, f"update @{aff} {{ ip saddr }}")
            r.add(chain, f"meta l4proto {sp.proto} dnat to {ep.ip}:{ep.port}")


def _endpoint_dispatch(r: NftRuleset, chain: str, sp: ServicePortInfo, eps: tuple) -> None:  # type: ignore[type-arg]
    if sp.affinity_timeout is not None:
        for ep in eps:
            r.add(chain, f"ip saddr @{affinity_set(sp, ep.ip, ep.port)} goto {endpoint_chain(sp, ep.ip, ep.port)}")
    targets = ", ".join(f"{i} : goto {endpoint_chain(sp, ep.ip, ep.port)}" for i, ep in enumerate(eps))
    r.add(chain, f"numgen random mod {len(eps)} vmap {{ {targets} }}")


def transaction(new: NftRuleset, old: NftRuleset | None, existing_chains: set[str] | None = None,
                existing_sets: set[str] | None = None) -> str:
    """One ``nft -f`` transaction from ``old`` to ``new`` (``old=None``: first/full sync).

    Order matters inside the transaction: sets and chains are created before elements and
    rules refer to them, and stale ones are deleted only after nothing refers to them.
    """
    out: list[str] = []
    if old is None:
        out.append(BASE.rstrip())
    before_chains = old.chains if old is not None else {}
    known_chains = set(before_chains) | (existing_chains or set())
    before_sets = dict(old.affinity_sets) if old is not None else {}
    known_sets = set(before_sets) | (existing_sets or set())
    for name, timeout in new.affinity_sets.items():
        if name not in known_sets or before_sets.get(name) != timeout:
            out.append(f"add set {TABLE} {name} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ; }}")
    changed = [c for c, rules in new.chains.items() if before_chains.get(c) != rules or c not in known_chains]
    for c in changed:
        out.append(f"add chain {TABLE} {c}")
    for c in changed:
        out.append(f"flush chain {TABLE} {c}")
        out.extend(f"add rule {TABLE} {c} {rule}" for rule in new.chains[c])
    for m in MAPS:
        now = new.elements[m]
        if old is None:
            out.append(f"flush {'set' if m in ('cluster-ips', 'nodeport-ips') else 'map'} {TABLE} {m}")
            gone: set[str] = set()
            added = now
        else:
            gone = old.elements[m] - now
            added = now - old.elements[m]
        if gone:
            keys = sorted(e.split(" : ")[0] for e in gone)
            out.append(f"delete element {TABLE} {m} {{ {', '.join(keys)} }}")
        if added:
            out.append(f"add element {TABLE} {m} {{ {', '.join(sorted(added))} }}")
    for c in sorted(known_chains - set(new.chains)):
        out.append(f"flush chain {TABLE} {c}")
    for c in sorted(known_chains - set(new.chains)):
        out.append(f"delete chain {TABLE} {c}")
    for s in sorted(known_sets - set(new.affinity_sets)):
        out.append(f"delete set {TABLE} {s}")
    return "\n".join(out) + "\n"


def full_text(rs: NftRuleset) -> str:
    return transaction(rs, None)
