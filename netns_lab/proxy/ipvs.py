"""kube-proxy's ipvs mode, rendered (pkg/proxy/ipvs/proxier.go): the desired state of a node.

* every ClusterIP (and NodePort node IP) is a virtual server; every endpoint a real server
  (masquerading/NAT forwarding), with the scenario's scheduler and, for ClientIP affinity,
  persistence with the affinity timeout;
* every ClusterIP is an address on the ``kube-ipvs0`` dummy interface (so the node accepts it);
* ipsets hold what iptables must match: KUBE-CLUSTER-IP (ip,port), KUBE-LOOP-BACK
  (endpoint ip,port,ip: hairpin), KUBE-NODE-PORT-TCP/-UDP (+ -LOCAL-), KUBE-IPVS-IPS (VIPs);
* a small fixed iptables glue (masquerade marks, NodePorts, KUBE-IPVS-FILTER so a VIP
  answers only its ports and not ping) whose rules never grow with the number of Services.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netns_lab.proxy.types import MASQ_MARK, NodeContext, ServicePortInfo, TrafficPolicy, traffic_policy

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq")
DUMMY = "kube-ipvs0"
SET_TYPES = {
    "KUBE-CLUSTER-IP": "hash:ip,port",
    "KUBE-LOOP-BACK": "hash:ip,port,ip",
    "KUBE-NODE-PORT-TCP": "bitmap:port",
    "KUBE-NODE-PORT-UDP": "bitmap:port",
    "KUBE-NODE-PORT-LOCAL-TCP": "bitmap:port",
    "KUBE-NODE-PORT-LOCAL-UDP": "bitmap:port",
    "KUBE-NODE-PORT-SCTP-HASH": "hash:ip,port",
    "KUBE-NODE-PORT-LOCAL-SCTP-HASH": "hash:ip,port",
    "KUBE-IPVS-IPS": "hash:ip",
    "KUBE-LOAD-BALANCER": "hash:ip,port",
    "KUBE-LOAD-BALANCER-LOCAL": "hash:ip,port",
    "KUBE-LOAD-BALANCER-FW": "hash:ip,port",
    "KUBE-LOAD-BALANCER-SOURCE-IP": "hash:ip,port,ip",
    "KUBE-LOAD-BALANCER-SOURCE-CIDR": "hash:ip,port,net",
    "KUBE-EXTERNAL-IP": "hash:ip,port",
    "KUBE-EXTERNAL-IP-LOCAL": "hash:ip,port",
    "KUBE-HEALTH-CHECK-NODE-PORT": "bitmap:port",
}
# kube-proxy's set comments (pkg/proxy/ipvs/ipset.go), which the iptables rules carry
COMMENT = {
    "KUBE-CLUSTER-IP": "Kubernetes service cluster ip + port for masquerade purpose",
    "KUBE-LOOP-BACK": "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
    "KUBE-EXTERNAL-IP": "Kubernetes service external ip + port for masquerade and filter purpose",
    "KUBE-EXTERNAL-IP-LOCAL": "Kubernetes service external ip + port with externalTrafficPolicy=local",
    "KUBE-LOAD-BALANCER": "Kubernetes service lb portal",
    "KUBE-LOAD-BALANCER-LOCAL": "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
    "KUBE-LOAD-BALANCER-FW": "Kubernetes service load balancer ip + port for load balancer with sourceRange",
    "KUBE-LOAD-BALANCER-SOURCE-IP": "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
    "KUBE-LOAD-BALANCER-SOURCE-CIDR": "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
    "KUBE-NODE-PORT-TCP": "Kubernetes nodeport TCP port for masquerade purpose",
    "KUBE-NODE-PORT-LOCAL-TCP": "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
    "KUBE-NODE-PORT-UDP": "Kubernetes nodeport UDP port for masquerade purpose",
    "KUBE-NODE-PORT-LOCAL-UDP": "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
    "KUBE-NODE-PORT-SCTP-HASH": "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
    "KUBE-NODE-PORT-LOCAL-SCTP-HASH": "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
    "KUBE-HEALTH-CHECK-NODE-PORT": "Kubernetes health check node port",
}


IPSET_NAME_MAX = 31


def set_name(name: str, family: int = 4) -> str:
    """kube-proxy's NewIPSet: an IPv6 proxier's sets are ``KUBE-6-...`` (both families' sets
    live in one kernel), cut to ipset's 31 characters as upstream cuts them."""
    return name if family != 6 else ("KUBE-6-" + name.removeprefix("KUBE-"))[:IPSET_NAME_MAX]


@dataclass(frozen=True)
class VirtualServer:
    addr: str
    port: int
    protocol: str  # TCP | UDP | SCTP
    scheduler: str
    persistence: int | None  # seconds (ClientIP affinity)
    reals: tuple[tuple[str, int], ...]

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.addr, self.port, self.protocol)


@dataclass
class IpvsPlan:
    vips: set[str] = field(default_factory=set)  # addresses on kube-ipvs0 (= KUBE-IPVS-IPS)
    services: dict[tuple[str, int, str], VirtualServer] = field(default_factory=dict)
    sets: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name in SET_TYPES})
    # LB entries ("ip,proto,port") with source ranges that do not hold the node's IP: the node
    # itself may not reach them through IPVS (KUBE-IPVS-OUT-FILTER, kubernetes#119656)
    lb_no_node_access: set[tuple[str, str, int]] = field(default_factory=set)


def _reals(sp: ServicePortInfo, tp: TrafficPolicy, local_only: bool) -> tuple[tuple[str, int], ...]:
    """kube-proxy's syncEndpoint: the Cluster endpoints, or with a Local policy the local ones,
    falling back to the Cluster ones when the node has none (kubernetes#97081: pods on the node
    still reach the Service; outside traffic's replies are lost, as upstream)."""
    eps = tp.local if local_only and tp.local else tp.cluster
    return tuple(sorted({(e.ip, e.port) for e in eps}, key=lambda r: f"{r[0]}:{r[1]}"))


def render(ctx: NodeContext, ports: tuple[ServicePortInfo, ...], scheduler: str = "rr") -> IpvsPlan:
    """kube-proxy's ipvs syncProxyRules for node ``ctx.node``: virtual servers, ipsets and the
    addresses of kube-ipvs0 (pure)."""
    plan = IpvsPlan()
    node_ips = set(ctx.node_ips)
    for sp in ports:
        tp = traffic_policy(sp, ctx.node)
        proto = sp.proto
        persistence = sp.affinity_timeout
        plan.vips.add(sp.cluster_ip)
        plan.sets["KUBE-CLUSTER-IP"].add(f"{sp.cluster_ip},{proto}:{sp.port}")
        vs = VirtualServer(sp.cluster_ip, sp.port, sp.protocol, scheduler, persistence, _reals(sp, tp, sp.internal_local))
        plan.services[vs.key] = vs
        for e in sp.endpoints:  # hairpin: every local endpoint, whatever its state
            if e.node == ctx.node:
                plan.sets["KUBE-LOOP-BACK"].add(f"{e.ip},{proto}:{e.port},{e.ip}")
        ext_reals = _reals(sp, tp, sp.external_local)
        for ip in sp.external_ips:
            entry = f"{ip},{proto}:{sp.port}"
            plan.sets["KUBE-EXTERNAL-IP-LOCAL" if sp.external_local else "KUBE-EXTERNAL-IP"].add(entry)
            if ip not in node_ips:  # an address the node has already needs no binding
                plan.vips.add(ip)
            evs = VirtualServer(ip, sp.port, sp.protocol, scheduler, persistence, ext_reals)
            plan.services[evs.key] = evs
        for ip in sp.lb_ips:
            entry = f"{ip},{proto}:{sp.port}"
            plan.sets["KUBE-LOAD-BALANCER"].add(entry)
            if sp.external_local:
                plan.sets["KUBE-LOAD-BALANCER-LOCAL"].add(entry)
            if sp.source_ranges:
                plan.sets["KUBE-LOAD-BALANCER-FW"].add(entry)
                for cidr in sp.source_ranges:
                    plan.sets["KUBE-LOAD-BALANCER-SOURCE-CIDR"].add(f"{entry},{cidr}")
                if sp.ranges_hold(ctx):  # a node's request to its own VIP loops back from the VIP
                    plan.sets["KUBE-LOAD-BALANCER-SOURCE-IP"].add(f"{entry},{ip}")
                else:
                    plan.lb_no_node_access.add((ip, proto, sp.port))
            if ip not in node_ips:
                plan.vips.add(ip)
            lvs = VirtualServer(ip, sp.port, sp.protocol, scheduler, persistence, ext_reals)
            plan.services[lvs.key] = lvs
        if sp.node_port is not None and ctx.node_ips:
            if sp.protocol == "SCTP":  # a hash of node IP and port, not a port bitmap
                for ip in ctx.node_ips:
                    plan.sets["KUBE-NODE-PORT-SCTP-HASH"].add(f"{ip},sctp:{sp.node_port}")
                    if sp.external_local:
                        plan.sets["KUBE-NODE-PORT-LOCAL-SCTP-HASH"].add(f"{ip},sctp:{sp.node_port}")
            else:
                plan.sets[f"KUBE-NODE-PORT-{sp.protocol}"].add(str(sp.node_port))
                if sp.external_local:
                    plan.sets[f"KUBE-NODE-PORT-LOCAL-{sp.protocol}"].add(str(sp.node_port))
            for ip in ctx.node_ips:
                nvs = VirtualServer(ip, sp.node_port, sp.protocol, scheduler, persistence, ext_reals)
                plan.services[nvs.key] = nvs
        if sp.health_check_node_port is not None:
            plan.sets["KUBE-HEALTH-CHECK-NODE-PORT"].add(str(sp.health_check_node_port))
    plan.sets["KUBE-IPVS-IPS"] = set(plan.vips)
    return plan


def iptables_glue(ctx: NodeContext, plan: IpvsPlan | None = None, legacy_ping: bool = False, jumps: bool = False) -> str:
    """kube-proxy's ipvs-mode iptables rules (writeIptablesRules), as ``iptables-restore
    --noflush`` input. A rule that matches a set is written only when the set has entries, as
    kube-proxy does; their number never grows with the number of Services."""
    plan = plan or IpvsPlan()
    c = "-m comment --comment"

    def has(name: str) -> bool:
        return bool(plan.sets[name])

    def s(name: str) -> str:  # the set's name in this proxier's family
        return set_name(name, ctx.family)

    def match(name: str, how: str) -> str:
        return f'{c} "{COMMENT[name]}" -m set --match-set {s(name)} {how}'

    nat = ["*nat", *(f":{n} - [0:0]" for n in ("KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-NODE-PORT", "KUBE-LOAD-BALANCER", "KUBE-MARK-MASQ"))]
    filt = ["*filter", *(f":{n} - [0:0]" for n in ("KUBE-FORWARD", "KUBE-NODE-PORT", "KUBE-PROXY-FIREWALL",
                                                   "KUBE-SOURCE-RANGES-FIREWALL", "KUBE-IPVS-FILTER", "KUBE-IPVS-OUT-FILTER"))]
    if ctx.family != 6:  # localhost is never proxied (IPv4's rule: IPv6 has no route_localnet)
        nat.append("-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN")
    # the sets with a chain of their own (ipsetWithIptablesChain), in kube-proxy's order
    for name, how, table, chain, target, proto in (
        ("KUBE-LOAD-BALANCER", "dst,dst", nat, "KUBE-SERVICES", "KUBE-LOAD-BALANCER", ""),
        ("KUBE-LOAD-BALANCER-FW", "dst,dst", filt, "KUBE-PROXY-FIREWALL", "KUBE-SOURCE-RANGES-FIREWALL", ""),
        ("KUBE-LOAD-BALANCER-SOURCE-CIDR", "dst,dst,src", filt, "KUBE-SOURCE-RANGES-FIREWALL", "RETURN", ""),
        ("KUBE-LOAD-BALANCER-SOURCE-IP", "dst,dst,src", filt, "KUBE-SOURCE-RANGES-FIREWALL", "RETURN", ""),
        ("KUBE-LOAD-BALANCER-LOCAL", "dst,dst", nat, "KUBE-LOAD-BALANCER", "RETURN", ""),
        ("KUBE-NODE-PORT-LOCAL-TCP", "dst", nat, "KUBE-NODE-PORT", "RETURN", "tcp"),
        ("KUBE-NODE-PORT-TCP", "dst", nat, "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "tcp"),
        ("KUBE-NODE-PORT-LOCAL-UDP", "dst", nat, "KUBE-NODE-PORT", "RETURN", "udp"),
        ("KUBE-NODE-PORT-UDP", "dst", nat, "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "udp"),
        ("KUBE-NODE-PORT-LOCAL-SCTP-HASH", "dst,dst", nat, "KUBE-NODE-PORT", "RETURN", "sctp"),
        ("KUBE-NODE-PORT-SCTP-HASH", "dst,dst", nat, "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "sctp"),
    ):
        if has(name):
            table.append(f"-A {chain} {f'-p {proto} ' if proto else ''}{match(name, how)} -j {target}")
    if has("KUBE-CLUSTER-IP"):  # off-cluster sources to a ClusterIP are masqueraded
        nat.append(f"-A KUBE-SERVICES {match('KUBE-CLUSTER-IP', 'dst,dst')} ! -s {ctx.cluster_cidr} -j KUBE-MARK-MASQ")
    if has("KUBE-EXTERNAL-IP"):
        nat.append(f"-A KUBE-SERVICES {match('KUBE-EXTERNAL-IP', 'dst,dst')} -j KUBE-MARK-MASQ")
        nat += _external_ip_accepts(match("KUBE-EXTERNAL-IP", "dst,dst"))
    if has("KUBE-EXTERNAL-IP-LOCAL"):
        nat += _external_ip_accepts(match("KUBE-EXTERNAL-IP-LOCAL", "dst,dst"))
    nat += [
        "-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ",
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
    ]
    for name in ("KUBE-CLUSTER-IP", "KUBE-LOAD-BALANCER"):  # kube-proxy's acceptIPVSTraffic
        if has(name):
            nat.append(f"-A KUBE-SERVICES -m set --match-set {s(name)} dst,dst -j ACCEPT")
    filt += [
        f'-A KUBE-FORWARD {c} "kubernetes forwarding rules" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT',
        f'-A KUBE-FORWARD {c} "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
        f"-A KUBE-NODE-PORT {match('KUBE-HEALTH-CHECK-NODE-PORT', 'dst')} -j ACCEPT",
        "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP",
    ]
    if not legacy_ping:  # since 2022 (kubernetes#108460): a VIP answers only on its Service's ports
        filt += [
            f"-A KUBE-IPVS-FILTER -m set --match-set {s('KUBE-LOAD-BALANCER')} dst,dst -j RETURN",
            f"-A KUBE-IPVS-FILTER -m set --match-set {s('KUBE-CLUSTER-IP')} dst,dst -j RETURN",
            f"-A KUBE-IPVS-FILTER -m set --match-set {s('KUBE-EXTERNAL-IP')} dst,dst -j RETURN",
            f"-A KUBE-IPVS-FILTER -m set --match-set {s('KUBE-EXTERNAL-IP-LOCAL')} dst,dst -j RETURN",
            f"-A KUBE-IPVS-FILTER -m set --match-set {s('KUBE-HEALTH-CHECK-NODE-PORT')} dst -j RETURN",
            f"-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set {s('KUBE-IPVS-IPS')} dst -j REJECT",
        ]
    for ip, proto, port in sorted(plan.lb_no_node_access):
        filt.append(f"-A KUBE-IPVS-OUT-FILTER -s {ip} -m ipvs --vaddr {ip} --vproto {proto} --vport {port} -j DROP")
    post = [f"-A KUBE-POSTROUTING {match('KUBE-LOOP-BACK', 'dst,dst,src')} -j MASQUERADE"] if has("KUBE-LOOP-BACK") else []
    nat += post + [
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        f'-A KUBE-POSTROUTING {c} "kubernetes service traffic requiring SNAT" -j MASQUERADE' + (" --random-fully" if ctx.random_fully else ""),
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
    ]
    if jumps:  # kube-proxy's iptablesJumpChain
        nat += [
            f'-A PREROUTING {c} "kubernetes service portals" -j KUBE-SERVICES',
            f'-A OUTPUT {c} "kubernetes service portals" -j KUBE-SERVICES',
            f'-A POSTROUTING {c} "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        ]
        filt += [
            f'-A INPUT {c} "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER',
            f'-A INPUT {c} "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL',
            f'-A INPUT {c} "kubernetes health check rules" -j KUBE-NODE-PORT',
            f'-A FORWARD {c} "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL',
            f'-A FORWARD {c} "kubernetes forwarding rules" -j KUBE-FORWARD',
            f'-A OUTPUT {c} "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER',
        ]
    return "\n".join(nat + ["COMMIT"] + filt + ["COMMIT"]) + "\n"


def _external_ip_accepts(matched: str) -> list[str]:
    """kube-proxy's externalIPRules: an externalIP's traffic is accepted by iptables (IPVS takes
    it in INPUT) when it came from outside the node, not bridged, or was meant for the node."""
    return [
        f"-A KUBE-SERVICES {matched} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT",
        f"-A KUBE-SERVICES {matched} -m addrtype --dst-type LOCAL -j ACCEPT",
    ]
