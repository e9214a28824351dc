"""The one Service model every proxier renders: kube-proxy's ``ServicePort`` + endpoints.

Built per node from the cluster model (Services, pods, endpoints), so the renderers need
nothing else: they are pure functions and can be tested without a kernel.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from netns_lab.controllers.endpoints import Endpoint, endpoints
from netns_lab.controllers.topology import Topology
from netns_lab.model import Pod, Service

MASQ_MARK = "0x4000"
SERVICE_PROXY_NAME = "service.kubernetes.io/service-proxy-name"
HEADLESS = "service.kubernetes.io/headless"


@dataclass(frozen=True)
class NodeContext:
    """What a node's kube-proxy knows about itself (``--cluster-cidr``, node IPs)."""

    node: str
    cluster_cidr: IPv4Network | IPv6Network  # podCIDR: "is this source a pod?" (kube-proxy's local detector)
    service_cidr: IPv4Network | IPv6Network
    node_ips: tuple[str, ...]
    # iptables mode: kube-proxy's --iptables-localhost-nodeports (default true): NodePorts also
    # answer on 127.0.0.1, with route_localnet=1 and KUBE-FIREWALL against spoofed 127/8
    localhost_node_ports: bool = True
    nfacct: bool = False  # iptables mode: kube-proxy counts with nfacct where the kernel has it (not here)
    random_fully: bool = True  # iptables' MASQUERADE --random-fully (kube-proxy uses it when iptables has it)
    # 6: the node's IPv6 proxier (a dual-stack lab runs one per family, as kube-proxy's
    # metaproxier does): ip6 table, ip6tables, the family's ranges and node address
    family: int = 4

    @property
    def nft_family(self) -> str:
        """The nftables family (and address match keyword): ``ip`` or ``ip6``."""
        return "ip6" if self.family == 6 else "ip"

    @property
    def addr_type(self) -> str:
        return "ipv6_addr" if self.family == 6 else "ipv4_addr"



@dataclass(frozen=True)
class ServicePortInfo:
    namespace: str
    name: str
    port_name: str | None
    protocol: str  # TCP | UDP
    cluster_ip: str
    port: int
    node_port: int | None
    affinity_timeout: int | None  # seconds, when sessionAffinity is ClientIP
    external_local: bool  # externalTrafficPolicy: Local
    internal_local: bool  # internalTrafficPolicy: Local
    endpoints: tuple[Endpoint, ...]
    external_ips: tuple[str, ...] = ()  # spec.externalIPs
    lb_ips: tuple[str, ...] = ()  # status.loadBalancer.ingress[].ip
    source_ranges: tuple[str, ...] = ()  # loadBalancerSourceRanges
    health_check_node_port: int | None = None  # LoadBalancer with externalTrafficPolicy Local

    def __hash__(self) -> int:
        # Cached: proxiers key their rendered fragments by Service port, and with 10,000
        # Services re-hashing every port and its endpoints each sync would dominate.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((self.namespace, self.name, self.port_name, self.protocol, self.cluster_ip, self.port,
                           self.node_port, self.affinity_timeout, self.external_local, self.internal_local, self.endpoints,
                           self.external_ips, self.lb_ips, self.source_ranges, self.health_check_node_port))
            object.__setattr__(self, "_hash", cached)
        return cached

    @property
    def port_name_string(self) -> str:
        """kube-proxy's ``ServicePortName.String()``: ``ns/name:port`` (``ns/name`` if unnamed)."""
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port_name}" if self.port_name else base

    @property
    def proto(self) -> str:
        return self.protocol.lower()

    def ranges_hold(self, ctx: "NodeContext") -> bool:
        """A loadBalancerSourceRange holds the node's IP (kube-proxy's allowFromNode): the
        node's own requests to its LB IPs, which loop back from the VIP, are let in too."""
        if not ctx.node_ips:
            return False
        node = ip_address(ctx.node_ips[0])
        return any(node in ip_network(cidr, strict=False) for cidr in self.source_ranges)

    def local_endpoints(self, node: str) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.node == node)


@dataclass(frozen=True)
class TrafficPolicy:
    """Which endpoints serve which traffic on one node: kube-proxy's ``CategorizeEndpoints``
    (pkg/proxy/topology.go), shared by every proxier so the modes cannot disagree. Ready
    endpoints serve; when a Service (or, for a Local policy, the node) has no ready one left,
    its serving terminating endpoints do instead, so connections are not dropped while pods
    shut down."""

    cluster: tuple[Endpoint, ...]  # for Cluster policies: ready, else serving-terminating
    local: tuple[Endpoint, ...]  # this node's: ready, else serving-terminating
    reachable: tuple[Endpoint, ...]  # every endpoint some policy chain may use (its endpoint chains)
    has_any: bool  # any ready or serving-terminating endpoint anywhere
    internal: tuple[Endpoint, ...]  # for ClusterIP traffic (internalTrafficPolicy)
    external: tuple[Endpoint, ...]  # for NodePort, externalIP and LB traffic (externalTrafficPolicy)
    is_external: bool  # has a NodePort, an externalIP or a load-balancer IP
    uses_cluster_chain: bool
    uses_local_chain: bool


def _serving_terminating(e: Endpoint) -> bool:
    return e.serving and e.terminating


def traffic_policy(sp: ServicePortInfo, node: str) -> TrafficPolicy:
    external = sp.node_port is not None or bool(sp.external_ips) or bool(sp.lb_ips)
    uses_cluster = not sp.internal_local or (external and not sp.external_local)
    uses_local = sp.internal_local or (external and sp.external_local)
    cluster: tuple[Endpoint, ...] = ()
    if uses_cluster:
        cluster = tuple(e for e in sp.endpoints if e.ready) or tuple(e for e in sp.endpoints if _serving_terminating(e))
    has_any = bool(cluster) or any(e.ready or _serving_terminating(e) for e in sp.endpoints)
    local: tuple[Endpoint, ...] = ()
    if uses_local:
        mine = [e for e in sp.endpoints if e.node == node]
        local = tuple(e for e in mine if e.ready) or tuple(e for e in mine if _serving_terminating(e))
    if not uses_local:
        reachable = cluster
    elif not uses_cluster:
        reachable = local
    else:  # cluster endpoints, then the local ones (maybe terminating) that are not among them
        seen = set(cluster)
        reachable = cluster + tuple(e for e in local if e not in seen)
    return TrafficPolicy(
        cluster=cluster,
        local=local,
        reachable=reachable,
        has_any=has_any,
        internal=local if sp.internal_local else cluster,
        external=local if sp.external_local else cluster,
        is_external=external,
        uses_cluster_chain=bool(cluster) and uses_cluster,
        uses_local_chain=bool(local) and uses_local,
    )


@functools.lru_cache(maxsize=1 << 16)
def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """kube-proxy's ``portProtoHash``: base32(sha256(name + protocol))[:16]."""
    digest = hashlib.sha256((service_port_name + protocol).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


@functools.lru_cache(maxsize=1 << 16)  # every node's proxier names the same endpoint chains
def endpoint_hash(service_port_name: str, protocol: str, endpoint: str) -> str:
    digest = hashlib.sha256((service_port_name + protocol + endpoint).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def service_ports(services: tuple[Service, ...], pods: tuple[Pod, ...], topo: Topology, family: int | None = None) -> tuple[ServicePortInfo, ...]:
    """Every proxied Service port with its endpoints and their conditions (headless Services
    are skipped); :func:`traffic_policy` picks which of them serve. ``family``: what one
    family's proxier sees (kube-proxy's per-family trackers): the Services with a cluster IP
    of that family, their addresses and endpoints of that family only."""
    out: list[ServicePortInfo] = []
    family = family or topo.families[0]  # the primary family's proxier by default
    v6 = family == 6

    def mine(ips: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(ip for ip in ips if (":" in ip) == v6)

    for svc in services:
        if svc.headless or svc.type not in ("ClusterIP", "NodePort", "LoadBalancer"):
            continue
        cluster_ip = next(iter(mine(svc.cluster_ips)), None)
        if cluster_ip is None:
            continue  # a single-stack Service of the other family
        labels = dict(svc.labels)
        # kube-proxy's informers (Services and EndpointSlices alike) select objects without
        # either label: another proxy's Service, or one that says it is headless, gets no rules
        if SERVICE_PROXY_NAME in labels or HEADLESS in labels:
            continue
        eps = endpoints(svc, pods, topo, conditions=True, family=family)
        for sp in svc.ports:
            out.append(
                ServicePortInfo(
                    namespace=svc.namespace,
                    name=svc.name,
                    port_name=sp.name,
                    protocol=sp.protocol,
                    cluster_ip=cluster_ip,
                    port=sp.port,
                    node_port=sp.node_port if svc.type in ("NodePort", "LoadBalancer") else None,
                    affinity_timeout=svc.affinity_timeout if svc.session_affinity == "ClientIP" else None,
                    external_local=svc.external_traffic_policy == "Local",
                    internal_local=svc.internal_traffic_policy == "Local",
                    endpoints=eps.get(sp, ()),
                    external_ips=mine(svc.external_ips),
                    lb_ips=mine(svc.load_balancer_ips),
                    source_ranges=mine(svc.load_balancer_source_ranges),
                    health_check_node_port=svc.health_check_node_port if svc.external_traffic_policy == "Local" else None,
                )
            )
    return tuple(out)
