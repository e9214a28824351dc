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

from netns_lab.proxy.types import MASQ_MARK, NodeContext, ServicePortInfo, traffic_policy

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq")
DUMMY = "kube-ipvs0"
SET_TYPES = {
    "KUBE-CLUSTER-IP": "hash:ip,port",
    "KUBE-LOOP-BACK": "hash:ip,port,ip",
    "KUBE-NODE-PORT-TCP": "bitmap:port",
    "KUBE-NODE-PORT-UDP": "bitmap:port",
    "KUBE-NODE-PORT-LOCAL-TCP": "bitmap:port",
    "KUBE-NODE-PORT-LOCAL-UDP": "bitmap:port",
    "KUBE-IPVS-IPS": "hash:ip",
    "KUBE-LOAD-BALANCER": "hash:ip,port",
    "KUBE-LOAD-BALANCER-LOCAL": "hash:ip,port",
    "KUBE-LOAD-BALANCER-FW": "hash:ip,port",
    "KUBE-LOAD-BALANCER-SOURCE-CIDR": "hash:ip,port,net",
    "KUBE-EXTERNAL-IP": "hash:ip,port",
    "KUBE-EXTERNAL-IP-LOCAL": "hash:ip,port",
    "KUBE-HEALTH-CHECK-NODE-PORT": "bitmap:port",
}


@dataclass(frozen=True)
class VirtualServer:
    addr: str
    port: int
    protocol: str  # TCP | UDP
    scheduler: str
    persistence: int | None  # seconds (ClientIP affinity)
    reals: tuple[tuple[str, int], ...]

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.addr, self.port, self.protocol)


@dataclass
class IpvsPlan:
    vips: set[str] = field(default_factory=set)
    services: dict[tuple[str, int, str], VirtualServer] = field(default_factory=dict)
    sets: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name in SET_TYPES})


def render(ctx: NodeContext, ports: tuple[ServicePortInfo, ...], scheduler: str = "rr") -> IpvsPlan:
    plan = IpvsPlan()
    for sp in ports:
        tp = traffic_policy(sp, ctx.node)
        proto = sp.proto
        persistence = sp.affinity_timeout
        plan.vips.add(sp.cluster_ip)
        plan.sets["KUBE-IPVS-IPS"].add(sp.cluster_ip)
        plan.sets["KUBE-CLUSTER-IP"].add(f"{sp.cluster_ip},{proto}:{sp.port}")
        reals = tuple((e.ip, e.port) for e in tp.internal)
        vs = VirtualServer(sp.cluster_ip, sp.port, sp.protocol, scheduler, persistence, reals)
        plan.services[vs.key] = vs
        for e in sp.endpoints:
            plan.sets["KUBE-LOOP-BACK"].add(f"{e.ip},{proto}:{e.port},{e.ip}")
        ext_reals = tuple((e.ip, e.port) for e in tp.external)
        if sp.node_port is not None:
            plan.sets[f"KUBE-NODE-PORT-{sp.protocol}"].add(str(sp.node_port))
            if sp.external_local:
                plan.sets[f"KUBE-NODE-PORT-LOCAL-{sp.protocol}"].add(str(sp.node_port))
            for ip in ctx.node_ips:
                nvs = VirtualServer(ip, sp.node_port, sp.protocol, scheduler, persistence, ext_reals)
                plan.services[nvs.key] = nvs
        for ip in (*sp.external_ips, *sp.lb_ips):
            # externalIPs and LB IPs are VIPs on kube-ipvs0 too, served with the external policy
            entry = f"{ip},{proto}:{sp.port}"
            kind = "KUBE-EXTERNAL-IP" if ip in sp.external_ips else "KUBE-LOAD-BALANCER"
            plan.vips.add(ip)
            plan.sets["KUBE-IPVS-IPS"].add(ip)
            plan.sets[kind].add(entry)
            if sp.external_local:
                plan.sets[f"{kind}-LOCAL"].add(entry)
            if kind == "KUBE-LOAD-BALANCER" and sp.source_ranges:
                plan.sets["KUBE-LOAD-BALANCER-FW"].add(entry)
                for cidr in sp.source_ranges:
                    plan.sets["KUBE-LOAD-BALANCER-SOURCE-CIDR"].add(f"{entry},{cidr}")
            evs = VirtualServer(ip, sp.port, sp.protocol, scheduler, persistence, ext_reals)
            plan.services[evs.key] = evs
    return plan


def iptables_glue(ctx: NodeContext, legacy_ping: bool = False, jumps: bool = False) -> str:
    """kube-proxy's fixed ipvs-mode rules, as ``iptables-restore --noflush`` input."""
    c = '-m comment --comment'
    nat = [
        "*nat",
        ":KUBE-SERVICES - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-NODE-PORT - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
        ":KUBE-LOAD-BALANCER - [0:0]",
        f'-A KUBE-POSTROUTING {c} "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE',
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        f'-A KUBE-POSTROUTING {c} "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
        f'-A KUBE-SERVICES {c} "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s {ctx.cluster_cidr} -j KUBE-MARK-MASQ',
        f'-A KUBE-SERVICES {c} "Kubernetes service external ip + port with externalTrafficPolicy=local" -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j ACCEPT',
        f'-A KUBE-SERVICES {c} "Kubernetes service external ip + port for masquerade and filter purpose" -m set --match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ',
        f'-A KUBE-SERVICES {c} "Kubernetes service lb portal" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER',
        f'-A KUBE-LOAD-BALANCER {c} "Kubernetes service load balancer ip + port with externalTrafficPolicy=local" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN',
        "-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ",
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
        "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
    ]
    for proto in ("TCP", "UDP"):
        p = proto.lower()
        nat += [
            f"-A KUBE-NODE-PORT -p {p} {c} \"Kubernetes nodeport {proto} port with externalTrafficPolicy=local\" -m set --match-set KUBE-NODE-PORT-LOCAL-{proto} dst -j RETURN",
            f"-A KUBE-NODE-PORT -p {p} {c} \"Kubernetes nodeport {proto} port for masquerade purpose\" -m set --match-set KUBE-NODE-PORT-{proto} dst -j KUBE-MARK-MASQ",
        ]
    filt = [
        "*filter",
        ":KUBE-FORWARD - [0:0]", ":KUBE-NODE-PORT - [0:0]", ":KUBE-IPVS-FILTER - [0:0]", ":KUBE-IPVS-OUT-FILTER - [0:0]",
        ":KUBE-PROXY-FIREWALL - [0:0]", ":KUBE-SOURCE-RANGES-FIREWALL - [0:0]",
        f'-A KUBE-PROXY-FIREWALL {c} "Kubernetes service load balancer ip + port for load balancer with sourceRange" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL',
        f'-A KUBE-SOURCE-RANGES-FIREWALL {c} "Kubernetes service load balancer ip + port + source cidr for packet filter purpose" -m set --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN',
        "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP",
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        f'-A KUBE-FORWARD {c} "kubernetes forwarding rules" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT',
        f'-A KUBE-FORWARD {c} "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
        f'-A KUBE-NODE-PORT {c} "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT',
    ]
    if not legacy_ping:  # since 2022 (kubernetes#108460): a VIP answers only on its Service's ports
        filt += [
            "-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN",
            "-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN",
            "-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN",
            "-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN",
            "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT",
        ]
    if jumps:
        nat += [
            f'-A PREROUTING {c} "kubernetes service portals" -j KUBE-SERVICES',
            f'-A OUTPUT {c} "kubernetes service portals" -j KUBE-SERVICES',
            f'-A POSTROUTING {c} "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        ]
        filt += [
            f'-A INPUT -m conntrack --ctstate NEW {c} "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
            f'-A INPUT {c} "kubernetes health check service ports" -j KUBE-NODE-PORT',
            f'-A INPUT {c} "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER',
            f'-A FORWARD {c} "kubernetes forwarding rules" -j KUBE-FORWARD',
            f'-A OUTPUT {c} "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER',
        ]
    return "\n".join(nat + ["COMMIT"] + filt + ["COMMIT"]) + "\n"
