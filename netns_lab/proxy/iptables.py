"""kube-proxy's iptables mode, rendered (pkg/proxy/iptables/proxier.go, same layout/names).

nat:    KUBE-SERVICES -> KUBE-SVC-<hash> (random via ``statistic``) -> KUBE-SEP-<hash> (DNAT);
        KUBE-NODEPORTS (reached via ``addrtype --dst-type LOCAL``) -> KUBE-EXT-<hash>;
        KUBE-SVL-<hash> for Local traffic policies; KUBE-MARK-MASQ / KUBE-POSTROUTING.
filter: KUBE-SERVICES / KUBE-EXTERNAL-SERVICES reject (no endpoints) or drop (no local
        endpoints); KUBE-FORWARD accepts marked and established traffic.

:func:`render` returns chains and rules as data; :func:`restore_input` turns the difference
between two renders into ``iptables-restore --noflush`` input that rewrites only the chains
that changed (kube-proxy's partial sync) and deletes the ones that went away.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netns_lab.proxy.types import MASQ_MARK, NodeContext, ServicePortInfo, endpoint_hash, port_proto_hash

TABLES = ("filter", "nat")
# Jumps from the built-in chains, installed once (kube-proxy's iptablesJumpChains).
JUMPS = {
    "filter": [
        "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES",
        "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD",
        "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES",
        "-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
    ],
    "nat": [
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
    ],
}


@dataclass
class Ruleset:
    """``{table: {chain: [rule, ...]}}`` in insertion order (chains are written in that order)."""

    tables: dict[str, dict[str, list[str]]] = field(default_factory=lambda: {t: {} for t in TABLES})

    def chain(self, table: str, name: str) -> list[str]:
        return self.tables[table].setdefault(name, [])

    def add(self, table: str, chain: str, rule: str) -> None:
        self.chain(table, chain).append(f"-A {chain} {rule}")


def svc_chain(sp: ServicePortInfo) -> str:
    return "KUBE-SVC-" + port_proto_hash(sp.port_name_string, sp.proto)


def svl_chain(sp: ServicePortInfo) -> str:
    return "KUBE-SVL-" + port_proto_hash(sp.port_name_string, sp.proto)


def ext_chain(sp: ServicePortInfo) -> str:
    return "KUBE-EXT-" + port_proto_hash(sp.port_name_string, sp.proto)


def sep_chain(sp: ServicePortInfo, ip: str, port: int) -> str:
    return "KUBE-SEP-" + endpoint_hash(sp.port_name_string, sp.proto, f"{ip}:{port}")


def _c(text: str) -> str:
    return f'-m comment --comment "{text}"' if " " in text else f"-m comment --comment {text}"


def render(ctx: NodeContext, ports: tuple[ServicePortInfo, ...]) -> Ruleset:
    r = Ruleset()
    for table, chains in (("filter", ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD")),
                          ("nat", ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"))):
        for c in chains:
            r.chain(table, c)
    r.add("nat", "KUBE-POSTROUTING", f"-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN")
    r.add("nat", "KUBE-POSTROUTING", f"-j MARK --xor-mark {MASQ_MARK}")
    r.add("nat", "KUBE-POSTROUTING", _c("kubernetes service traffic requiring SNAT") + " -j MASQUERADE --random-fully")
    r.add("nat", "KUBE-MARK-MASQ", f"-j MARK --or-mark {MASQ_MARK}")
    r.add("filter", "KUBE-FORWARD", "-m conntrack --ctstate INVALID -j DROP")
    r.add("filter", "KUBE-FORWARD", _c("kubernetes forwarding rules") + f" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT")
    r.add("filter", "KUBE-FORWARD", _c("kubernetes forwarding conntrack rule") + " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    for sp in ports:
        _service_port(r, ctx, sp)
    r.add("nat", "KUBE-SERVICES", _c("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
          + " -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
    return r


def _service_port(r: Ruleset, ctx: NodeContext, sp: ServicePortInfo) -> None:
    name = sp.port_name_string
    match = f"-m {sp.proto} -p {sp.proto}"
    dst = f"-d {sp.cluster_ip}/32 --dport {sp.port}"
    local = sp.local_endpoints(ctx.node)
    all_eps = sp.endpoints
    internal_eps = local if sp.internal_local else all_eps
    external_eps = local if sp.external_local else all_eps
    internal_chain = svl_chain(sp) if sp.internal_local else svc_chain(sp)
    external_chain = svl_chain(sp) if sp.external_local else svc_chain(sp)
    external = sp.node_port is not None
    uses_svc = bool(all_eps) and (not sp.internal_local or (external and not sp.external_local))
    uses_svl = bool(local) and (sp.internal_local or (external and sp.external_local))
    uses_ext = bool(all_eps) and external

    # cluster IP
    if internal_eps:
        r.add("nat", "KUBE-SERVICES", f"{_c(name + ' cluster IP')} {match} {dst} -j {internal_chain}")
    elif not all_eps:
        r.add("filter", "KUBE-SERVICES", f"{_c(name + ' has no endpoints')} {match} {dst} -j REJECT")
    else:
        r.add("filter", "KUBE-SERVICES", f"{_c(name + ' has no local endpoints')} {match} {dst} -j DROP")

    # node port
    if sp.node_port is not None:
        np = f"{match} --dport {sp.node_port}"
        if uses_ext:
            r.add("nat", "KUBE-NODEPORTS", f"{_c(name)} {np} -j {ext_chain(sp)}")
            ext = ext_chain(sp)
            r.chain("nat", ext)
            if not sp.external_local:
                r.add("nat", ext, _c(f"masquerade traffic for {name} external destinations") + " -j KUBE-MARK-MASQ")
            else:
                r.add("nat", ext, f"-s {ctx.cluster_cidr} " + _c(f"pod traffic for {name} external destinations") + f" -j {svc_chain(sp)}")
                r.add("nat", ext, _c(f"masquerade LOCAL traffic for {name} external destinations") + " -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ")
                r.add("nat", ext, _c(f"route LOCAL traffic for {name} external destinations") + f" -m addrtype --src-type LOCAL -j {svc_chain(sp)}")
            if external_eps:
                r.add("nat", ext, f"-j {external_chain}")
        if not all_eps:
            r.add("filter", "KUBE-EXTERNAL-SERVICES", f"{_c(name + ' has no endpoints')} -m addrtype --dst-type LOCAL {np} -j REJECT")
        elif not external_eps:
            r.add("filter", "KUBE-EXTERNAL-SERVICES", f"{_c(name + ' has no local endpoints')} -m addrtype --dst-type LOCAL {np} -j DROP")

    if uses_svc:
        chain = svc_chain(sp)
        r.chain("nat", chain)
        r.add("nat", chain, f"{_c(name + ' cluster IP')} {match} {dst} ! -s {ctx.cluster_cidr} -j KUBE-MARK-MASQ")
        _endpoint_jumps(r, chain, sp, all_eps)
    if uses_svl:
        chain = svl_chain(sp)
        r.chain("nat", chain)
        _endpoint_jumps(r, chain, sp, local)
    if uses_svc or uses_svl:
        for ep in all_eps:
            _sep(r, sp, ep.ip, ep.port)


def _endpoint_jumps(r: Ruleset, chain: str, sp: ServicePortInfo, eps: tuple) -> None:  # type: ignore[type-arg]
    name = sp.port_name_string
    if sp.affinity_timeout is not None:
        for ep in eps:
            sep = sep_chain(sp, ep.ip, ep.port)
            r.add("nat", chain, f"{_c(f'{name} -> {ep.ip}:{ep.port}')} -m recent --name {sep} --rcheck --seconds {sp.affinity_timeout} --reap -j {sep}")
    n = len(eps)
    for i, ep in enumerate(eps):
        sep = sep_chain(sp, ep.ip, ep.port)
        comment = _c(f"{name} -> {ep.ip}:{ep.port}")
        if i < n - 1:
            r.add("nat", chain, f"{comment} -m statistic --mode random --probability {1.0 / (n - i):0.10f} -j {sep}")
        else:
            r.add("nat", chain, f"{comment} -j {sep}")


def _sep(r: Ruleset, sp: ServicePortInfo, ip: str, port: int) -> None:
    chain = sep_chain(sp, ip, port)
    if chain in r.tables["nat"]:
        return
    name = sp.port_name_string
    r.chain("nat", chain)
    r.add("nat", chain, f"{_c(name)} -s {ip}/32 -j KUBE-MARK-MASQ")
    recent = f"-m recent --name {chain} --set " if sp.affinity_timeout is not None else ""
    r.add("nat", chain, f"{_c(name)} {recent}-m {sp.proto} -p {sp.proto} -j DNAT --to-destination {ip}:{port}")


def restore_input(new: Ruleset, old: Ruleset | None, existing: dict[str, set[str]] | None = None, jumps: bool = False) -> str:
    """``iptables-restore --noflush`` input taking the kernel from ``old`` to ``new``.

    Only chains whose rules changed are declared (which flushes them) and rewritten; chains
    in ``old`` (or ``existing``, read from the kernel) but not in ``new`` are deleted.
    ``jumps`` adds the hooks from the built-in chains (first sync only).
    """
    lines: list[str] = []
    for table in TABLES:
        chains = new.tables[table]
        before = old.tables[table] if old is not None else {}
        known = set(before) | set((existing or {}).get(table, ()))
        changed = [c for c in chains if c not in before or before[c] != chains[c]]
        stale = [c for c in known if c not in chains]
        lines.append(f"*{table}")
        for c in changed + stale:
            lines.append(f":{c} - [0:0]")
        for c in changed:
            lines.extend(chains[c])
        for c in sorted(stale):
            lines.append(f"-X {c}")
        if jumps:
            lines.extend(JUMPS[table])
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def full_text(rs: Ruleset) -> str:
    """The whole ruleset as ``iptables-save`` would list it (for golden files and reading)."""
    return restore_input(rs, None)
