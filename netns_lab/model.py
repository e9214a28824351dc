"""Frozen description of a cluster: what the user asked for, independent of any kernel.

Everything here is immutable and hashable so the same model can be shared by the
controllers, the renderers and the realizer without anyone changing it under the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

NETWORK_MODES = ("vxlan", "host-gw", "bgp")
EXTERNAL_LOAD_BALANCERS = ("cloud", "bgp")  # cluster.external.loadBalancer: the emulated cloud LB or MetalLB's BGP mode
PROXY_MODES = ("iptables", "nftables", "ipvs")
PROTOCOLS = ("TCP", "UDP", "SCTP")
IP_FAMILIES = ("ipv4", "ipv6", "dual")  # cluster.ipFamily, as kind's networking.ipFamily
POLICY_DATAPLANES = ("iptables", "nftables")  # cluster.networkPolicy: Calico's two layouts
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
DNS_IMAGE = "netns-lab/dns"  # the cluster DNS pod's image: served by netns_lab.services.dns
INGRESS_IMAGE = "netns-lab/ingress-nginx"  # the ingress controller's image: real nginx (netns_lab.services.ingress)
HAPROXY_IMAGE = "netns-lab/haproxy-ingress"  # the second controller family: real HAProxy (netns_lab.services.haproxy)
SYSTEM_IMAGES = (DNS_IMAGE, INGRESS_IMAGE, HAPROXY_IMAGE)  # pods the lab runs itself, not netexec


@dataclass(frozen=True)
class ClusterConfig:
    """The ``cluster:`` section of a scenario, with DESIGN.md's defaults filled in."""

    nodes: tuple[str, ...] = ("node-1", "node-2")
    network: str = "vxlan"
    proxy_mode: str = "iptables"
    node_cidr: IPv4Network = IPv4Network("10.0.0.0/24")
    pod_cidr: IPv4Network = IPv4Network("10.244.0.0/16")
    service_cidr: IPv4Network = IPv4Network("10.96.0.0/12")
    # cluster.ipFamily: "dual" adds an IPv6 range to each of the three (the second value of
    # nodeCIDR/podCIDR/serviceCIDR; kind's IPv6 defaults), IPv4 staying the primary family
    ip_family: str = "ipv4"
    node_cidr6: IPv6Network | None = None
    pod_cidr6: IPv6Network | None = None
    service_cidr6: IPv6Network | None = None
    cluster_domain: str = "cluster.local"
    dns_ip: IPv4Address = IPv4Address("10.96.0.10")
    node_port_range: tuple[int, int] = (30000, 32767)
    mtu: int = 1500  # underlay MTU; the overlay takes 50 bytes off it
    ipvs_scheduler: str = "rr"
    ipvs_legacy_ping: bool = False  # pre-2022 ipvs mode: a ClusterIP answered ping (teaching)
    ingress_service_type: str = "LoadBalancer"  # how ingress-nginx/ingress-nginx is exposed
    network_policy: str = "iptables"  # the NetworkPolicy dataplane: one of POLICY_DATAPLANES
    external: ExternalConfig = field(default_factory=lambda: ExternalConfig())
    bgp: BgpConfig = field(default_factory=lambda: BgpConfig())

    @property
    def dual_stack(self) -> bool:
        return self.ip_family == "dual"

    @property
    def ip_families(self) -> tuple[str, ...]:
        """The families Services may have here, in Kubernetes' spelling, primary first (the
        order of kube-apiserver's --service-cluster-ip-range values)."""
        return {"dual": ("IPv4", "IPv6"), "ipv6": ("IPv6",)}.get(self.ip_family, ("IPv4",))


def hostport(ip: str, port: int) -> str:
    """``ip:port``, an IPv6 address in brackets: Go's net.JoinHostPort, as kube-proxy writes
    endpoints (comments, DNAT targets, chain-name hashes) and kubelet the Service links."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


IPV6_DEFAULTS = {  # cluster.ipFamily ipv6: the ranges when not written (kind's IPv6 defaults)
    "node_cidr": IPv6Network("fd00:10::/64"),
    "pod_cidr": IPv6Network("fd00:10:244::/56"),
    "service_cidr": IPv6Network("fd00:10:96::/112"),
    "dns_ip": IPv6Address("fd00:10:96::a"),
    "external_cidr": IPv6Network("2001:db8:203:113::/64"),
    "load_balancer_pool": IPv6Network("2001:db8:198:51::/120"),
}
DUAL_DEFAULTS = {  # cluster.ipFamily dual: the IPv6 half of each range when not written
    "node_cidr6": IPv6Network("fd00:10::/64"),  # kind's docker network is a ULA /64 too
    "pod_cidr6": IPv6Network("fd00:10:244::/56"),  # kind: a /64 per node
    "service_cidr6": IPv6Network("fd00:10:96::/112"),  # kind
    "external_cidr6": IPv6Network("2001:db8:203:113::/64"),  # documentation prefix: never a real address
    "load_balancer_pool6": IPv6Network("2001:db8:198:51::/120"),  # documentation prefix too
}


@dataclass(frozen=True)
class BfdConfig:
    """``cluster.bgp.bfd``: MetalLB's BFDProfile fields (milliseconds); detection takes the
    peer's transmit interval times the multiplier (300 ms with these defaults, below
    MetalLB's 900 ms so a lab's failover is seen at once)."""

    enabled: bool = True
    receive_interval: int = 100
    transmit_interval: int = 100
    detect_multiplier: int = 3


@dataclass(frozen=True)
class BgpConfig:
    """``cluster.bgp``: Calico's layout. One private AS for the cluster's nodes (Calico's
    default 64512), the router (the top-of-rack switch) an external peer in its own AS, the
    nodes in a full iBGP mesh unless told otherwise, BFD on every session. ``hold_time``:
    seconds without a keepalive before a session is declared down (what fails a node over
    when BFD is off; BIRD's default of 240 s is shortened for a lab)."""

    as_number: int = 64512
    router_as_number: int = 65000
    node_to_node_mesh: bool = True
    hold_time: int = 9
    bfd: BfdConfig = field(default_factory=BfdConfig)


@dataclass(frozen=True)
class ExternalConfig:
    """``cluster.external``: the world outside the cluster (a router, clients, a cloud LB).

    The external network holds the router (its first address) and the clients (from .10);
    the cloud load balancer sits on the node network, as a cloud's LB sits in the VPC, and
    the router sends the load-balancer pool to it.
    """

    cidr: IPv4Network = IPv4Network("203.0.113.0/24")  # TEST-NET-3: never a real address
    cidr6: IPv6Network | None = None  # dual-stack labs: 2001:db8::/32 (documentation) by default
    clients: tuple[str, ...] = ("external",)  # the first one is what ``external`` means in checks
    load_balancer_pool: IPv4Network = IPv4Network("198.51.100.0/24")  # TEST-NET-2
    load_balancer_pool6: IPv6Network | None = None  # dual-stack labs: the IPv6 load-balancer IPs
    health_check_interval: float = 1.0  # seconds between the cloud LB's health-check rounds
    load_balancer: str = "cloud"  # one of EXTERNAL_LOAD_BALANCERS


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    ports: tuple[ContainerPort, ...] = ()


NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every Namespace


@dataclass(frozen=True)
class Namespace:
    """A Namespace; its labels always include ``kubernetes.io/metadata.name: NAME``, which the
    API server sets (and NetworkPolicy namespaceSelectors rely on)."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        labels = dict(self.labels)
        labels[NAMESPACE_NAME_LABEL] = self.name
        object.__setattr__(self, "labels", tuple(sorted(labels.items())))

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class DnsConfig:
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str = "default"
    labels: tuple[tuple[str, str], ...] = ()
    node_name: str | None = None
    containers: tuple[Container, ...] = ()
    hostname: str | None = None
    subdomain: str | None = None
    ready: bool = True
    dns_policy: str = "ClusterFirst"
    dns_config: DnsConfig | None = None
    enable_service_links: bool = True
    # Service environment variables, fixed when the pod starts (kubelet's envvars)
    service_env: tuple[tuple[str, str], ...] = ()
    # spec.terminationGracePeriodSeconds as written (None: not set): how long the pod stays
    # terminating, still serving, when deleted without --grace-period (its process is taken to
    # delay its shutdown that long, as agnhost netexec's --delay-shutdown does)
    termination_grace_period: int | None = None
    # metadata.deletionTimestamp, in seconds since the epoch: set when the pod was deleted with a
    # grace period; it is terminating until then, then removed
    deletion_deadline: float | None = None

    @property
    def terminating(self) -> bool:
        return self.deletion_deadline is not None

    @property
    def key(self) -> str:
        """``namespace/name``: unique within a cluster."""
        return f"{self.namespace}/{self.name}"

    @property
    def ports(self) -> tuple[ContainerPort, ...]:
        """Every declared containerPort of every container, in manifest order."""
        return tuple(p for c in self.containers for p in c.ports)

    def named_port(self, name: str, protocol: str) -> int | None:
        """The number of this pod's containerPort ``name`` for ``protocol`` (TCP, UDP, SCTP):
        what a Service's named targetPort and a NetworkPolicy's named port mean on this pod."""
        return next((p.container_port for p in self.ports if p.name == name and p.protocol == protocol), None)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def runs_netexec(self) -> bool:
        """Every pod runs netexec except the lab's own DNS server and ingress controller."""
        return not any(c.image in SYSTEM_IMAGES for c in self.containers)


SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
MAX_GRACE_PERIOD = 86400  # seconds a pod may stay terminating in a lab (a day is more than any lab needs)
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds, as the API server defaults it


@dataclass(frozen=True)
class ServicePort:
    port: int
    protocol: str = "TCP"
    name: str | None = None
    target_port: int | str | None = None  # a number, a containerPort name, or None = port
    node_port: int | None = None

    @property
    def target(self) -> int | str:
        return self.port if self.target_port is None else self.target_port


@dataclass(frozen=True)
class Service:
    """A v1 Service after defaulting and allocation (clusterIP and nodePorts are filled)."""

    name: str
    namespace: str = "default"
    type: str = "ClusterIP"
    selector: tuple[tuple[str, str], ...] | None = None  # None: no selector, no endpoints managed
    ports: tuple[ServicePort, ...] = ()
    cluster_ip: str | None = None  # None for headless (clusterIP: None)
    # spec.clusterIPs / ipFamilies / ipFamilyPolicy after the API server's defaulting: one
    # cluster IP per family, primary first (clusterIP is clusterIPs[0]); () for ExternalName
    cluster_ips: tuple[str, ...] = ()
    ip_families: tuple[str, ...] = ()
    ip_family_policy: str | None = None
    session_affinity: str = "None"  # None | ClientIP
    affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT
    external_traffic_policy: str = "Cluster"
    internal_traffic_policy: str = "Cluster"
    labels: tuple[tuple[str, str], ...] = ()
    external_name: str | None = None  # type ExternalName: a CNAME, no VIP, no rules
    external_ips: tuple[str, ...] = ()  # spec.externalIPs
    load_balancer_ips: tuple[str, ...] = ()  # status.loadBalancer.ingress[].ip (allocated)
    load_balancer_source_ranges: tuple[str, ...] = ()
    health_check_node_port: int | None = None  # LoadBalancer + externalTrafficPolicy Local
    # spec.publishNotReadyAddresses: every selected pod is a ready endpoint (DNS and proxies),
    # whatever its readiness, terminating or not (StatefulSet peers finding each other)
    publish_not_ready_addresses: bool = False

    def __post_init__(self) -> None:
        # A Service made with clusterIP only (the lab's kube-dns, tests, kube-proxy's fixtures)
        # is single-stack in that IP's family, as the API server defaults an old client's one.
        if self.cluster_ip and not self.cluster_ips:
            object.__setattr__(self, "cluster_ips", (self.cluster_ip,))
            object.__setattr__(self, "ip_families", ("IPv6" if ":" in self.cluster_ip else "IPv4",))
            object.__setattr__(self, "ip_family_policy", self.ip_family_policy or "SingleStack")

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def headless(self) -> bool:
        return self.cluster_ip is None


@dataclass(frozen=True)
class IngressBackend:
    """``service.name`` + ``service.port.number`` or ``.name`` (networking.k8s.io/v1)."""

    service: str
    port_number: int | None = None
    port_name: str | None = None


@dataclass(frozen=True)
class IngressPath:
    path: str
    path_type: str  # Exact | Prefix | ImplementationSpecific
    backend: IngressBackend


@dataclass(frozen=True)
class IngressRule:
    host: str | None  # None: every host
    paths: tuple[IngressPath, ...] = ()


@dataclass(frozen=True)
class IngressTLS:
    hosts: tuple[str, ...]
    secret_name: str | None


LOAD_BALANCERS = ("round_robin", "ewma")  # ingress-nginx's balancers (round_robin is its default)


@dataclass(frozen=True)
class Ingress:
    name: str
    namespace: str = "default"
    class_name: str | None = None
    default_backend: IngressBackend | None = None
    rules: tuple[IngressRule, ...] = ()
    tls: tuple[IngressTLS, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    load_balance: str = "round_robin"  # nginx.ingress.kubernetes.io/load-balance: one of LOAD_BALANCERS

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class IngressClass:
    name: str
    controller: str
    default: bool = False
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class LabelSelector:
    """metav1.LabelSelector: every matchLabels pair and every requirement must hold; an empty
    selector selects everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (key, operator, values)

    def matches(self, labels: tuple[tuple[str, str], ...]) -> bool:
        have = dict(labels)
        if any(have.get(k) != v for k, v in self.match_labels):
            return False
        for key, op, values in self.match_expressions:
            present = key in have
            if op == "In" and not (present and have[key] in values):
                return False
            if op == "NotIn" and present and have[key] in values:
                return False
            if op == "Exists" and not present:
                return False
            if op == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    excepts: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyPeer:
    """One ``from``/``to`` entry: selectors (both set: AND; namespaceSelector None: the
    policy's namespace) or an ipBlock."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PolicyPort:
    protocol: str = "TCP"
    port: int | str | None = None  # None: every port of the protocol; str: a container port name
    end_port: int | None = None


@dataclass(frozen=True)
class PolicyRule:
    """An ingress or egress rule: empty ``peers`` or ``ports`` match everything."""

    peers: tuple[PolicyPeer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    name: str
    namespace: str = "default"
    pod_selector: LabelSelector = LabelSelector()
    policy_types: tuple[str, ...] = ("Ingress",)  # defaulted as the API server does
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Secret:
    """A v1 Secret; the lab uses ``kubernetes.io/tls`` ones (PEM text, decoded)."""

    name: str
    namespace: str = "default"
    type: str = "Opaque"
    data: tuple[tuple[str, str], ...] = ()  # key -> decoded text
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def get(self, item: str) -> str | None:
        return dict(self.data).get(item)


@dataclass(frozen=True)
class ObjectRef:
    """``pod/NS/NAME``, ``node/NAME``, ``service/X``..., or a literal IP (kind ``ip``)."""

    kind: str
    name: str
    namespace: str | None = None

    def __str__(self) -> str:
        if self.kind in ("ip", "name", "value"):
            return self.name
        if self.kind == "external":
            return "external" if self.name == "external" else f"external/{self.name}"
        if self.kind == "node" or self.namespace is None:
            return f"{self.kind}/{self.name}"
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Expect:
    result: str | None = None
    served_by: tuple[str, ...] | None = None
    client_ip: ObjectRef | None = None  # kind "self" means: the IP the source shows for itself
    answers: tuple[ObjectRef, ...] | None = None  # resolve: objects (their IPs) or literal values (kind "value")
    status: int | None = None  # http: the response status
    body: str | None = None  # http: a substring of the response body


@dataclass(frozen=True)
class Reachability:
    """A truth table (DESIGN.md, "Reachability tables"): every source row against every
    destination column; ``expected[i][j]`` is ``.`` connected, ``X`` blocked, ``-`` not probed."""

    pods: tuple[str, ...]  # NS/NAME, rows and columns in this order
    port: int | str  # a number, or a container port name resolved on each destination pod
    protocol: str  # tcp | udp
    expected: tuple[str, ...]


@dataclass(frozen=True)
class Check:
    """One line of the scenario's ``checks:``; ``action`` is connect, ping or matrix."""

    name: str
    action: str
    source: ObjectRef | None = None
    target: ObjectRef | None = None
    port: int | None = None
    protocol: str = "tcp"
    count: int = 1
    matrix: str | None = None  # pod-to-pod | node-to-pod | pod-to-node
    expect: Expect = field(default_factory=Expect)
    record_type: str = "A"  # resolve
    env: tuple[tuple[str, ObjectRef], ...] = ()  # env: variable -> expected value
    url: str | None = None  # http: the URL (its host is the Host header and the TLS SNI)
    ca: ObjectRef | None = None  # http: secret/NS/NAME whose ca.crt (or tls.crt) verifies the server
    insecure: bool = False  # http: do not verify the server's certificate
    # a step (action apply | delete | label): the admission actions it runs (scenario.admission)
    change: tuple[object, ...] = ()
    reachability: Reachability | None = None
    family: int | None = None  # 4 or 6: every object in the check means its address of that family (None: primary)

    @property
    def is_step(self) -> bool:
        return bool(self.change)


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    cluster: ClusterConfig
    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    checks: tuple[Check, ...] = ()
    description: str = ""
    services: tuple[Service, ...] = ()
    ingresses: tuple[Ingress, ...] = ()
    ingress_classes: tuple[IngressClass, ...] = ()
    secrets: tuple[Secret, ...] = ()
    network_policies: tuple[NetworkPolicy, ...] = ()

    def pod(self, key: str) -> Pod:
        for p in self.pods:
            if p.key == key:
                return p
        raise KeyError(key)

    def service(self, key: str) -> Service:
        found = find_service(self.services, key)
        if found is None:
            raise KeyError(key)
        return found


def find_service(services: tuple[Service, ...], key: str) -> Service | None:
    """``NAME`` (namespace default) or ``NS/NAME``."""
    if "/" not in key:
        key = f"default/{key}"
    return next((s for s in services if s.key == key), None)
