"""kube-proxy's iptables mode, rendered (pkg/proxy/iptables/proxier.go, same layout/names).

nat:    KUBE-SERVICES -> KUBE-SVC-<hash> (random via ``statistic``) -> KUBE-SEP-<hash> (DNAT);
        KUBE-NODEPORTS (reached via ``addrtype --dst-type LOCAL``) -> KUBE-EXT-<hash>;
        KUBE-SVL-<hash> for Local traffic policies; KUBE-MARK-MASQ / KUBE-POSTROUTING.
filter: KUBE-SERVICES / KUBE-EXTERNAL-SERVICES reject (no endpoints) or drop (no local
        endpoints); KUBE-FORWARD accepts marked and established traffic.

Each Service port renders to a :class:`Fragment` (its own chains, plus its lines in the
shared dispatch chains). :class:`IptablesSync` keeps the fragments it applied last and, like
kube-proxy's partial sync, rewrites the dispatch chains plus only the chains of Service
ports that changed, in one ``iptables-restore --noflush`` input.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from netns_lab.model import hostport
from netns_lab.proxy.types import (
    MASQ_MARK,
    NodeContext,
    ServicePortInfo,
    TrafficPolicy,
    endpoint_hash,
    port_proto_hash,
    traffic_policy,
)

TABLES = ("filter", "nat")
# Chains every sync rewrites whole (they list every Service), and the fixed ones.
SHARED = {"filter": ("KUBE-NODEPORTS", "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL"),
          "nat": ("KUBE-SERVICES", "KUBE-NODEPORTS")}
FIXED = {"filter": ("KUBE-FORWARD", "KUBE-FIREWALL"), "nat": ("KUBE-POSTROUTING", "KUBE-MARK-MASQ")}
SHARED_ORDER = tuple((t, c) for t in TABLES for c in SHARED[t])
# Jumps from the built-in chains, installed once (kube-proxy's iptablesJumpChains).
JUMPS = {
    "filter": [
        '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        *(f'-A {c} -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL'
          for c in ("INPUT", "OUTPUT", "FORWARD")),
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
# kubelet's own jumps, which kube-proxy also makes (iptablesKubeletJumpChains): KUBE-FIREWALL drops
# packets to 127/8 that did not come from 127/8 (CVE-2020-8558: route_localnet=1 would let a
# neighbour reach the node's localhost services, NodePorts included)
KUBELET_JUMPS = ["-A INPUT -j KUBE-FIREWALL", "-A OUTPUT -j KUBE-FIREWALL"]
LOCALNET_DROP = ('-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 '
                 '! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP')


def nodeports_jump(ctx: NodeContext) -> str:
    """The last rule of nat KUBE-SERVICES: NodePorts on every local address (and on 127/8
    only with localhostNodePorts)."""
    # IPv6 (ip6tables): never on ::1, "for IPv6 they never work" (kube-proxy)
    loopback = " ! -d ::1/128" if ctx.family == 6 else "" if ctx.localhost_node_ports else " ! -d 127.0.0.0/8"
    return ('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last '
            f'rule in this chain" -m addrtype --dst-type LOCAL{loopback} -j KUBE-NODEPORTS')


def svc_chain(sp: ServicePortInfo) -> str:
    return "KUBE-SVC-" + port_proto_hash(sp.port_name_string, sp.proto)


def svl_chain(sp: ServicePortInfo) -> str:
    return "KUBE-SVL-" + port_proto_hash(sp.port_name_string, sp.proto)


def ext_chain(sp: ServicePortInfo) -> str:
    return "KUBE-EXT-" + port_proto_hash(sp.port_name_string, sp.proto)


def fw_chain(sp: ServicePortInfo) -> str:
    return "KUBE-FW-" + port_proto_hash(sp.port_name_string, sp.proto)


def sep_chain(sp: ServicePortInfo, ip: str, port: int) -> str:
    return "KUBE-SEP-" + endpoint_hash(sp.port_name_string, sp.proto, hostport(ip, port))


def _c(text: str) -> str:
    return f'-m comment --comment "{text}"' if " " in text else f"-m comment --comment {text}"


@dataclass
class Fragment:
    """What one Service port contributes: its own chains and its lines in shared chains."""

    chains: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (table, chain) -> rules
    shared: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def own(self, table: str, chain: str) -> list[str]:
        return self.chains.setdefault((table, chain), [])

    def add(self, table: str, chain: str, rule: str) -> None:
        target = self.shared if chain in SHARED[table] else self.chains
        target.setdefault((table, chain), []).append(f"-A {chain} {rule}")


def fixed_chains(ctx: NodeContext) -> dict[tuple[str, str], list[str]]:
    invalid = " -m nfacct --nfacct-name ct_state_invalid_dropped_pkts" if ctx.nfacct else ""
    chains = {
        ("filter", "KUBE-FORWARD"): [
            f"-A KUBE-FORWARD -m conntrack --ctstate INVALID{invalid} -j DROP",
            f"-A KUBE-FORWARD {_c('kubernetes forwarding rules')} -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
            f"-A KUBE-FORWARD {_c('kubernetes forwarding conntrack rule')} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        ],
        ("nat", "KUBE-POSTROUTING"): [
            f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
            f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
            f"-A KUBE-POSTROUTING {_c('kubernetes service traffic requiring SNAT')} -j MASQUERADE"
            + (" --random-fully" if ctx.random_fully else ""),
        ],
        ("nat", "KUBE-MARK-MASQ"): [f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}"],
    }
    if ctx.localhost_node_ports:  # kube-proxy writes the chain only then (kubelet has it anyway)
        chains[("filter", "KUBE-FIREWALL")] = [LOCALNET_DROP]
    return chains


def jump_rules(ctx: NodeContext) -> list[tuple[str, str]]:
    """(table, ``-A CHAIN ...``) of every hook from a built-in chain kube-proxy makes sure of."""
    out = [(t, rule) for t in TABLES for rule in JUMPS[t]]
    if ctx.localhost_node_ports:
        out += [("filter", rule) for rule in KUBELET_JUMPS]
    return out


def render_port(ctx: NodeContext, sp: ServicePortInfo) -> Fragment:
    """kube-proxy's per-Service-port rules for node ``ctx.node`` (pure)."""
    f = Fragment()
    name = sp.port_name_string
    match = f"-m {sp.proto} -p {sp.proto}"
    dst = f"-d {sp.cluster_ip} --dport {sp.port}"
    tp = traffic_policy(sp, ctx.node)
    local, cluster_eps, internal_eps, external_eps = tp.local, tp.cluster, tp.internal, tp.external
    has_eps = tp.has_any
    external, uses_svc, uses_svl = tp.is_external, tp.uses_cluster_chain, tp.uses_local_chain
    internal_chain = svl_chain(sp) if sp.internal_local else svc_chain(sp)
    external_chain = svl_chain(sp) if sp.external_local else svc_chain(sp)

    if internal_eps:
        f.add("nat", "KUBE-SERVICES", f"{_c(name + ' cluster IP')} {match} {dst} -j {internal_chain}")
    elif not has_eps:
        f.add("filter", "KUBE-SERVICES", f"{_c(name + ' has no endpoints')} {match} {dst} -j REJECT")
    else:
        f.add("filter", "KUBE-SERVICES", f"{_c(name + ' has no local endpoints')} {match} {dst} -j DROP")

    if external:
        ext = ext_chain(sp)
        _external_destinations(f, ctx, sp, tp)
        if has_eps:
            f.own("nat", ext)
            if not sp.external_local:
                f.add("nat", ext, _c(f"masquerade traffic for {name} external destinations") + " -j KUBE-MARK-MASQ")
            else:
                f.add("nat", ext, _c(f"pod traffic for {name} external destinations") + f" -s {ctx.cluster_cidr} -j {svc_chain(sp)}")
                f.add("nat", ext, _c(f"masquerade LOCAL traffic for {name} external destinations") + " -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ")
                f.add("nat", ext, _c(f"route LOCAL traffic for {name} external destinations") + f" -m addrtype --src-type LOCAL -j {svc_chain(sp)}")
            if external_eps:
                f.add("nat", ext, f"-j {external_chain}")

    if uses_svc:
        chain = svc_chain(sp)
        f.own("nat", chain)
        f.add("nat", chain, f"{_c(name + ' cluster IP')} {match} {dst} ! -s {ctx.cluster_cidr} -j KUBE-MARK-MASQ")
        _endpoint_jumps(f, chain, sp, cluster_eps)
    if uses_svl:
        _endpoint_jumps(f, svl_chain(sp), sp, local)
    if uses_svc or uses_svl:
        for ep in tp.reachable:
            _sep(f, sp, ep.ip, ep.port)
    return f


def _external_destinations(f: Fragment, ctx: NodeContext, sp: ServicePortInfo, tp: TrafficPolicy) -> None:
    """NodePort, externalIPs and load-balancer IPs: each jumps to KUBE-EXT (through KUBE-FW when
    loadBalancerSourceRanges are set), or is rejected / dropped in the filter table when there
    is no endpoint (on this node, for Local policies) to send it to."""
    name = sp.port_name_string
    match = f"-m {sp.proto} -p {sp.proto}"
    ext = ext_chain(sp)
    has_eps = tp.has_any
    fw = has_eps and bool(sp.source_ranges) and bool(sp.lb_ips)
    no_eps = "" if tp.external else (f"{_c(name + ' has no endpoints')}" if not has_eps else f"{_c(name + ' has no local endpoints')}")
    verdict = "REJECT" if not has_eps else "DROP"
    if sp.health_check_node_port is not None:  # kube-proxy's health check server answers the cloud LB
        f.add("filter", "KUBE-NODEPORTS", f"{_c(name + ' health check node port')} -m tcp -p tcp --dport {sp.health_check_node_port} -j ACCEPT")
    for ip, lb in [(ip, False) for ip in sp.external_ips] + [(ip, True) for ip in sp.lb_ips]:
        dst = f"{match} -d {ip} --dport {sp.port}"
        if has_eps:
            what, target = ("loadbalancer IP", fw_chain(sp) if fw else ext) if lb else ("external IP", ext)
            f.add("nat", "KUBE-SERVICES", f"{_c(f'{name} {what}')} {dst} -j {target}")
        if fw and lb:
            f.add("filter", "KUBE-PROXY-FIREWALL", f"{_c(f'{name} traffic not accepted by {fw_chain(sp)}')} {dst} -j DROP")
        if no_eps:
            f.add("filter", "KUBE-EXTERNAL-SERVICES", f"{no_eps} {dst} -j {verdict}")
    if sp.node_port is not None:
        np = f"{match} --dport {sp.node_port}"
        if has_eps:
            if ctx.localhost_node_ports and ctx.nfacct:  # counted on its own (kube-proxy's localhost_nps_accepted_pkts)
                f.add("nat", "KUBE-NODEPORTS", f"{_c(name)} {match} -d 127.0.0.0/8 --dport {sp.node_port} "
                                               f"-m nfacct --nfacct-name localhost_nps_accepted_pkts -j {ext}")
            f.add("nat", "KUBE-NODEPORTS", f"{_c(name)} {np} -j {ext}")
        if no_eps:
            f.add("filter", "KUBE-EXTERNAL-SERVICES", f"{no_eps} -m addrtype --dst-type LOCAL {np} -j {verdict}")
    if fw:
        chain = fw_chain(sp)
        f.own("nat", chain)
        for cidr in sp.source_ranges:
            f.add("nat", chain, f"{_c(name + ' loadbalancer IP')} -s {cidr} -j {ext}")
        f.add("nat", chain, _c(f"other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL"))


def _endpoint_jumps(f: Fragment, chain: str, sp: ServicePortInfo, eps: tuple) -> None:  # type: ignore[type-arg]
    f.own("nat", chain)
    name = sp.port_name_string
    if sp.affinity_timeout is not None:
        for ep in eps:
            sep = sep_chain(sp, ep.ip, ep.port)
            f.add("nat", chain, f"{_c(f'{name} -> {hostport(ep.ip, ep.port)}')} -m recent --name {sep} --rcheck --seconds {sp.affinity_timeout} --reap -j {sep}")
    n = len(eps)
    for i, ep in enumerate(eps):
        sep = sep_chain(sp, ep.ip, ep.port)
        comment = _c(f"{name} -> {hostport(ep.ip, ep.port)}")
        if i < n - 1:
            f.add("nat", chain, f"{comment} -m statistic --mode random --probability {1.0 / (n - i):0.10f} -j {sep}")
        else:
            f.add("nat", chain, f"{comment} -j {sep}")


def _sep(f: Fragment, sp: ServicePortInfo, ip: str, port: int) -> None:
    chain = sep_chain(sp, ip, port)
    if ("nat", chain) in f.chains:
        return
    name = sp.port_name_string
    f.own("nat", chain)
    f.add("nat", chain, f"{_c(name)} -s {ip} -j KUBE-MARK-MASQ")
    recent = f"-m recent --name {chain} --set " if sp.affinity_timeout is not None else ""
    f.add("nat", chain, f"{_c(name)} {recent}-m {sp.proto} -p {sp.proto} -j DNAT --to-destination {hostport(ip, port)}")


class IptablesSync:
    """Pure bookkeeping of one node's applied rules; :meth:`restore_input` plans the next sync.

    Fragments are cached by their (immutable) Service port, so a sync renders only the
    Service ports that changed. Each port's lines in the shared dispatch chains are kept
    joined, per chain, so that writing KUBE-SERVICES whole (as kube-proxy does on every
    sync) costs one string join, not a walk over every port's rules.
    """

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.fragments: dict[ServicePortInfo, Fragment] = {}
        self.shared: dict[tuple[str, str], dict[ServicePortInfo, str]] = {}  # chain -> port -> its lines there
        self.chains: set[tuple[str, str]] = set()  # own chains currently in the kernel
        self.synced = False

    def _forget(self, sp: ServicePortInfo) -> Fragment:
        f = self.fragments.pop(sp)
        for key in f.shared:
            del self.shared[key][sp]
        return f

    def _learn(self, sp: ServicePortInfo, f: Fragment) -> None:
        self.fragments[sp] = f
        for key, rules in f.shared.items():
            self.shared.setdefault(key, {})[sp] = "\n".join(rules)

    def restore_input(self, ports: tuple[ServicePortInfo, ...], full: bool = False,
                      existing: set[tuple[str, str]] | None = None, jumps: bool | Collection[tuple[str, str]] = False,
                      delta: tuple[tuple[ServicePortInfo, ...], tuple[ServicePortInfo, ...]] | None = None) -> str:
        """``iptables-restore --noflush`` input for ``ports``; ``full`` rewrites everything.

        ``existing`` are KUBE chains read from the kernel (a full sync by a new process);
        ``jumps`` adds the hooks from the built-in chains (True: all of :func:`jump_rules`; or
        the (table, rule) pairs the kernel lacks: a full sync puts back what was deleted by
        hand, as kube-proxy's EnsureRule does). ``delta`` (ports
        gone, ports new since the last sync) spares looking at every port: the work is what
        changed, plus joining the shared chains (KUBE-SERVICES...), written whole either way,
        as kube-proxy writes them.
        """
        full = full or not self.synced
        if delta is not None and not full:  # a Service port's own chains belong to it alone
            gone = [self._forget(sp) for sp in delta[0]]
            written = [render_port(self.ctx, sp) for sp in delta[1]]
            for sp, f in zip(delta[1], written):
                self._learn(sp, f)
            now_chains = (self.chains - {k for f in gone for k in f.chains}) | {k for f in written for k in f.chains}
        else:
            old = self.fragments
            self.fragments, self.shared = {}, {}
            for sp in ports:
                self._learn(sp, old.get(sp) or render_port(self.ctx, sp))
            written = list(self.fragments.values()) if full else [f for sp, f in self.fragments.items() if sp not in old]
            now_chains = {key for f in self.fragments.values() for key in f.chains}
        keep = {(t, c) for t in TABLES for c in (*SHARED[t], *FIXED[t])}
        stale = ((self.chains | (existing or set())) - now_chains - keep) if full else (self.chains - now_chains)
        decl: dict[str, list[str]] = {t: [] for t in TABLES}
        out: dict[str, list[str]] = {t: [] for t in TABLES}
        for (table, chain), rules in fixed_chains(self.ctx).items():  # every sync, as kube-proxy writes them
            decl[table].append(f":{chain} - [0:0]")
            out[table].extend(rules)
        for table, chain in SHARED_ORDER:
            decl[table].append(f":{chain} - [0:0]")
            lines = self.shared.get((table, chain), {})
            if lines:
                out[table].append("\n".join(lines.values()))
            if (table, chain) == ("nat", "KUBE-SERVICES"):
                out[table].append(nodeports_jump(self.ctx))
        seen: set[tuple[str, str]] = set(SHARED_ORDER)
        for f in written:
            for (table, chain), rules in f.chains.items():
                if (table, chain) not in seen:
                    seen.add((table, chain))
                    decl[table].append(f":{chain} - [0:0]")
                out[table].extend(rules)
        text: list[str] = []
        for table in TABLES:
            gone_chains = sorted(c for t, c in stale if t == table)
            text.append(f"*{table}")
            text.extend(decl[table])
            text.extend(f":{c} - [0:0]" for c in gone_chains)
            text.extend(out[table])
            text.extend(f"-X {c}" for c in gone_chains)
            wanted = jump_rules(self.ctx) if jumps is True else list(jumps or ())
            text.extend(rule for t, rule in wanted if t == table)
            text.append("COMMIT")
        self.chains = now_chains
        self.synced = True
        return "\n".join(text) + "\n"


def full_text(ctx: NodeContext, ports: tuple[ServicePortInfo, ...]) -> str:
    """The complete ruleset for ``ports`` (golden files, reading)."""
    return IptablesSync(ctx).restore_input(ports, full=True)


def nat_chain_rules(ctx: NodeContext, ports: tuple[ServicePortInfo, ...], chain: str) -> list[str]:
    """Rules of one nat chain as a full sync writes them (for tests and tools)."""
    for sp in ports:
        rules = render_port(ctx, sp).chains.get(("nat", chain))
        if rules is not None:
            return rules
    return []
