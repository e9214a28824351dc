"""Turn a scenario into a concrete plan: which namespace, interface and address each object gets.

This plays the part of the scheduler (round-robin for pods without ``nodeName``), the node
IPAM controller (node i gets the i-th /24 of podCIDR) and the CNI's host-local IPAM (pods get
.2, .3... of their node's subnet; .1 is the ``cni0`` gateway). It is pure, so it is unit
tested without root and the realizer only has to follow it.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING
from dataclasses import dataclass
import ipaddress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from netns_lab import kernelnames
from netns_lab.errors import ScenarioError
from netns_lab.model import Pod, Scenario

if TYPE_CHECKING:
    from netns_lab.store import Objects

VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8
VXLAN_OVERHEAD6 = 70  # over an IPv6 underlay (an IPv6-only lab): the outer IP header is 40 bytes


def pod_mtu(network: str, underlay_mtu: int, underlay_version: int) -> int:
    """The pods' (and flannel.1's) MTU: the underlay's less VXLAN's headers over that underlay."""
    if network != "vxlan":
        return underlay_mtu
    return underlay_mtu - (VXLAN_OVERHEAD6 if underlay_version == 6 else VXLAN_OVERHEAD)
VXLAN_VNI = 1
VXLAN_PORT = 8472  # flannel's (Linux's historical) VXLAN port
NODE_AGENT_PORT = 10250  # a server in every node namespace, for the pod-to-node promise
MAX_PODS_PER_NODE = 253  # a /24 minus network, gateway and broadcast


@dataclass(frozen=True)
class NodePlan:
    name: str
    index: int
    netns: str
    ip: IPv4Address  # on the node network (the underlay)
    pod_subnet: IPv4Network
    gateway: IPv4Address  # cni0's address, the pods' default route
    vtep_ip: IPv4Address  # flannel.1's address: the subnet's network address, /32
    vtep_mac: str
    uplink: str  # the node's port name inside the underlay namespace
    mac: str  # eth0, on the node network
    bridge_mac: str  # cni0
    host: int = 0  # which machine builds this node (spread labs; see spread())
    # dual-stack labs: the same host numbers in the IPv6 ranges (10.0.0.3 -> fd00:10::3;
    # pod subnet 10.244.2.0/24 -> fd00:10:244:2::/64, gateway ::1, flannel.1 its ::/128)
    ip6: IPv6Address | None = None
    pod_subnet6: IPv6Network | None = None
    gateway6: IPv6Address | None = None
    vtep_ip6: IPv6Address | None = None

    @property
    def ips(self) -> tuple[IPv4Address | IPv6Address, ...]:
        """status.addresses' InternalIPs: one per family, primary first."""
        return (self.ip,) if self.ip6 is None else (self.ip, self.ip6)


@dataclass(frozen=True)
class PodPlan:
    key: str
    name: str
    namespace: str
    node: str
    netns: str
    ip: IPv4Address
    host_veth: str
    ports: tuple[tuple[int, str], ...]  # (containerPort, protocol)
    mac: str  # the pod's eth0
    netexec: bool = True  # served by netexec (every pod but the cluster DNS server)
    ip6: IPv6Address | None = None  # dual-stack labs: its IPv6 address (same host number)

    @property
    def ips(self) -> tuple[IPv4Address | IPv6Address, ...]:
        """status.podIPs: one per family, primary first."""
        return (self.ip,) if self.ip6 is None else (self.ip, self.ip6)


@dataclass(frozen=True)
class ClientPlan:
    """A host outside the cluster, on the external network (``external`` or ``external/NAME``)."""

    name: str
    netns: str
    ip: IPv4Address
    mac: str
    ip6: IPv6Address | None = None


@dataclass(frozen=True)
class HostPlan:
    """One machine of a lab spread over several (Vagrant VMs): its address on their network."""

    name: str
    ip: IPv4Address


@dataclass(frozen=True)
class Topology:
    lab: str
    network: str
    underlay_mtu: int
    pod_mtu: int
    node_cidr: IPv4Network
    underlay_netns: str
    nodes: tuple[NodePlan, ...]
    pods: tuple[PodPlan, ...]
    pod_cidr: IPv4Network = IPv4Network("10.244.0.0/16")
    service_cidr: IPv4Network = IPv4Network("10.96.0.0/12")
    cluster_domain: str = "cluster.local"
    dns_ip: IPv4Address = IPv4Address("10.96.0.10")
    # The world outside the cluster: external network <-> router <-> node network; the
    # cloud load balancer on the node network owns the load-balancer pool.
    external_cidr: IPv4Network = IPv4Network("203.0.113.0/24")
    wan_netns: str = ""  # holds the external network's bridge
    router_netns: str = ""
    router_ip: IPv4Address = IPv4Address("0.0.0.0")  # on the node network: the nodes' default gateway
    router_ext_ip: IPv4Address = IPv4Address("0.0.0.0")  # on the external network: the clients' gateway
    lb_netns: str = ""
    lb_ip: IPv4Address = IPv4Address("0.0.0.0")  # the cloud load balancer, on the node network
    lb_pool: IPv4Network = IPv4Network("198.51.100.0/24")
    health_check_interval: float = 1.0
    clients: tuple[ClientPlan, ...] = ()
    # A spread lab (see spread()): the machines, and which of them this process builds.
    hosts: tuple[HostPlan, ...] = ()
    host: int = 0
    # cluster.ipFamily dual: the IPv6 ranges and the outside's IPv6 addresses (None: IPv4 lab)
    ip_family: str = "ipv4"
    node_cidr6: IPv6Network | None = None
    pod_cidr6: IPv6Network | None = None
    service_cidr6: IPv6Network | None = None
    external_cidr6: IPv6Network | None = None
    router_ip6: IPv6Address | None = None
    router_ext_ip6: IPv6Address | None = None
    lb_ip6: IPv6Address | None = None
    lb_pool6: IPv6Network | None = None
    # cluster.network bgp / cluster.external.loadBalancer bgp (cluster.bgp): who speaks BGP
    load_balancer: str = "cloud"
    bgp_as: int = 64512
    bgp_router_as: int = 65000
    bgp_mesh: bool = True
    bgp_hold_time: int = 9
    bfd_rx_ms: int = 0  # 0: BFD off
    bfd_tx_ms: int = 0
    bfd_multiplier: int = 0

    @property
    def uses_bgp(self) -> bool:
        """BIRD runs in every node and the router: the pod network or the LB is bgp."""
        return self.network == "bgp" or self.load_balancer == "bgp"

    @property
    def dual_stack(self) -> bool:
        return self.ip_family == "dual"

    @property
    def families(self) -> tuple[int, ...]:
        """The IP versions the lab's addresses have, primary first."""
        return {"dual": (4, 6), "ipv6": (6,)}.get(self.ip_family, (4,))

    @property
    def uses_ipv6(self) -> bool:
        return 6 in self.families

    @property
    def is_spread(self) -> bool:
        return len(self.hosts) > 1

    @property
    def local_nodes(self) -> tuple[NodePlan, ...]:
        """The nodes this machine builds (all of them unless the lab is spread)."""
        return tuple(n for n in self.nodes if n.host == self.host)

    @property
    def local_pods(self) -> tuple[PodPlan, ...]:
        local = {n.name for n in self.local_nodes}
        return tuple(p for p in self.pods if p.node in local)

    def local_pod(self, key: str) -> PodPlan | None:
        """``key``'s plan when this machine builds that pod: the system pods (cluster DNS,
        ingress controller) of a spread lab run on one machine only."""
        return next((p for p in self.local_pods if p.key == key), None)

    @property
    def has_outside(self) -> bool:
        """The router, the external network, its clients and the cloud LB live on the first host."""
        return self.host == 0

    @property
    def external_netns(self) -> str:
        """The default external client (``external`` in checks)."""
        return self.clients[0].netns

    @property
    def external_ip(self) -> IPv4Address:
        return self.clients[0].ip

    def client(self, name: str) -> ClientPlan:
        for c in self.clients:
            if c.name == name:
                return c
        raise KeyError(name)

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def pod(self, key: str) -> PodPlan:
        if "/" not in key:
            key = f"default/{key}"
        for p in self.pods:
            if p.key == key:
                return p
        raise KeyError(key)

    @property
    def workload_pods(self) -> tuple[PodPlan, ...]:
        """The pods that run netexec: everything but the lab's own system pods."""
        return tuple(p for p in self.pods if p.netexec)

    def pods_on(self, node: str) -> tuple[PodPlan, ...]:
        return tuple(p for p in self.pods if p.node == node)

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every network namespace this machine creates for the lab, in creation order."""
        outside = (self.wan_netns, self.router_netns, self.lb_netns, *(c.netns for c in self.clients)) if self.has_outside else ()
        return (self.underlay_netns, *outside, *(n.netns for n in self.local_nodes), *(p.netns for p in self.local_pods))


def address_of(plan: object, family: int | None) -> "IPv4Address | IPv6Address | None":
    """A planned host's address of IP version ``family`` (None: its primary one): ``ip`` or, in
    a dual-stack lab, ``ip6`` (an IPv6-only lab's ``ip`` is its IPv6 address); None without one."""
    ip, ip6 = getattr(plan, "ip"), getattr(plan, "ip6", None)
    if family is None or ip.version == family:
        return ip  # type: ignore[no-any-return]
    return ip6 if ip6 is not None and ip6.version == family else None


def underlay_netns(lab: str) -> str:
    return f"{lab}__net"  # "__" cannot occur in a node or pod namespace name


def client_netns(lab: str, name: str) -> str:
    """``<lab>__ext`` or ``<lab>__ext-NAME``; a 63-character client name is shortened (see kernelnames)."""
    return f"{lab}__ext" if name == "external" else kernelnames.netns(lab, f"_ext-{name}")


def node_netns(lab: str, node: str) -> str:
    """``<lab>_<node>``, shortened with a hash when a node name (up to 253 characters) makes it too long."""
    return kernelnames.netns(lab, node)


def pod_netns(lab: str, namespace: str, pod: str) -> str:
    """``<lab>_<namespace>_<pod>``, shortened with a hash when too long for a file name (see kernelnames)."""
    return kernelnames.netns(lab, namespace, pod)


def mac_for(ip: IPv4Address | IPv6Address) -> str:
    """``0a:58:`` + the IPv4 address, the convention of the CNI bridge plugin (and kubenet).

    Knowing every MAC from the plan lets the realizer install permanent neighbour entries:
    the kernel's ARP table is shared by *all* namespaces of the machine and dynamic entries
    beyond ``gc_thresh3`` (1,024 by default, a host sysctl we never touch) are refused, while
    permanent ones are exempt. So only same-node pod-to-pod traffic uses ARP, as on a real
    bridge, and a 1,000-pod lab still fits.
    """
    if ip.version == 6:  # an IPv6-only lab: 4 bytes of a hash of the address (its low bytes repeat per subnet)
        return "0a:58:" + ":".join(f"{b:02x}" for b in hashlib.sha1(ip.packed).digest()[:4])
    return "0a:58:" + ":".join(f"{b:02x}" for b in ip.packed)


def mirror(ip: IPv4Address, net: IPv4Network, net6: IPv6Network | None) -> IPv6Address | None:
    """``ip``'s host number in ``net6`` (None without one): a dual-stack host's IPv6 address
    (10.0.0.3 in 10.0.0.0/24 -> fd00:10::3 in fd00:10::/64), so the two read alike."""
    return None if net6 is None else net6.network_address + (int(ip) - int(net.network_address))


def _veth_name(key: str, taken: set[str]) -> str:
    """``veth`` + 8 hex digits of the pod key, as CNI plugins name host-side veths (15 chars max)."""
    salt = 0
    while True:
        digest = hashlib.sha1(f"{key}#{salt}".encode()).hexdigest()[:8]
        name = f"veth{digest}"
        if name not in taken:
            taken.add(name)
            return name
        salt += 1


def schedule(scenario: Scenario) -> dict[str, str]:
    """Pod key -> node name: ``spec.nodeName`` when set, otherwise round-robin in file order."""
    nodes = scenario.cluster.nodes
    out: dict[str, str] = {}
    rr = 0
    for pod in scenario.pods:
        if pod.node_name:
            out[pod.key] = pod.node_name
        else:
            out[pod.key] = nodes[rr % len(nodes)]
            rr += 1
    return out


class _Hosts:
    """``list(net.hosts())`` by index without building the list: a /8 node network has 16
    million hosts, and the plan only ever needs a handful of them (networks are /29 or larger)."""

    def __init__(self, net: IPv4Network) -> None:
        self.net = net

    def __getitem__(self, i: int) -> IPv4Address:
        size = self.net.num_addresses - 2
        if not -size <= i < size:
            raise IndexError(i)
        return self.net.network_address + 1 + (i % size)


def plan(scenario: Scenario) -> Topology:
    cluster = scenario.cluster
    lab = scenario.name
    node_hosts = _Hosts(cluster.node_cidr)
    subnets = cluster.pod_cidr.subnets(new_prefix=64 if cluster.pod_cidr.version == 6 else 24)
    subnets6 = cluster.pod_cidr6.subnets(new_prefix=64) if cluster.pod_cidr6 is not None else None
    nodes: list[NodePlan] = []
    for i, name in enumerate(cluster.nodes):
        subnet = next(subnets)
        subnet6 = next(subnets6) if subnets6 is not None else None
        nodes.append(
            NodePlan(
                name=name,
                index=i,
                netns=node_netns(lab, name),
                ip=node_hosts[i + 1],  # .1 stays free for a gateway/router
                pod_subnet=subnet,
                gateway=subnet.network_address + 1,
                vtep_ip=subnet.network_address,
                vtep_mac=f"02:6e:6c:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}",
                uplink=f"uplink{i}",
                mac=mac_for(node_hosts[i + 1]),
                bridge_mac=mac_for(subnet.network_address + 1),
                ip6=mirror(node_hosts[i + 1], cluster.node_cidr, cluster.node_cidr6),
                pod_subnet6=subnet6,
                gateway6=None if subnet6 is None else subnet6.network_address + 1,
                vtep_ip6=None if subnet6 is None else subnet6.network_address,
            )
        )
    by_name = {n.name: n for n in nodes}
    placement = schedule(scenario)
    used: dict[str, int] = {n.name: 0 for n in nodes}
    veths: dict[str, set[str]] = {n.name: set() for n in nodes}
    pods: list[PodPlan] = []
    for pod in scenario.pods:
        node = by_name[placement[pod.key]]
        used[node.name] += 1
        if used[node.name] > MAX_PODS_PER_NODE:
            raise ScenarioError(
                scenario.path,
                "objects",
                f'Too many: node "{node.name}" would hold more than {MAX_PODS_PER_NODE} pods (its pod subnet is {node.pod_subnet}); add nodes',
            )
        pods.append(_pod_plan(lab, pod, node, used[node.name], veths[node.name]))
    _distinct_netns(scenario.path, [(f"node/{n.name}", n.netns) for n in nodes] + [(f"pod/{p.key}", p.netns) for p in pods])
    return Topology(
        lab=lab,
        network=cluster.network,
        underlay_mtu=cluster.mtu,
        pod_mtu=pod_mtu(cluster.network, cluster.mtu, cluster.node_cidr.version),
        node_cidr=cluster.node_cidr,
        underlay_netns=underlay_netns(lab),
        nodes=tuple(nodes),
        pods=tuple(pods),
        pod_cidr=cluster.pod_cidr,
        service_cidr=cluster.service_cidr,
        cluster_domain=cluster.cluster_domain,
        dns_ip=cluster.dns_ip,
        ip_family=cluster.ip_family,
        node_cidr6=cluster.node_cidr6,
        pod_cidr6=cluster.pod_cidr6,
        service_cidr6=cluster.service_cidr6,
        load_balancer=cluster.external.load_balancer,
        bgp_as=cluster.bgp.as_number,
        bgp_router_as=cluster.bgp.router_as_number,
        bgp_mesh=cluster.bgp.node_to_node_mesh,
        bgp_hold_time=cluster.bgp.hold_time,
        **({"bfd_rx_ms": cluster.bgp.bfd.receive_interval, "bfd_tx_ms": cluster.bgp.bfd.transmit_interval,
            "bfd_multiplier": cluster.bgp.bfd.detect_multiplier} if cluster.bgp.bfd.enabled else {}),
        **_outside(lab, scenario),
    )


def _distinct_netns(path: str, owners: list[tuple[str, str]]) -> None:
    """Refuse two objects whose shortened namespace names collide (a 40-bit hash: only by
    design or astronomical bad luck) at load, not as EEXIST half way through the build."""
    seen: dict[str, str] = {}
    for ref, name in owners:
        if name in seen:
            raise ScenarioError(path, "objects", f'Invalid value: "{ref}": its network namespace name "{name}" is also '
                                                 f'that of "{seen[name]}"; rename one of them')
        seen[name] = ref


@dataclass(frozen=True)
class OutsideAddresses:
    """Where the machines the lab adds outside the cluster sit: the router takes the first
    address of the node network and of the external network, the cloud LB the last of the
    node network, external client i the (10+i)-th of the external network. One plan, read by
    the build and by the loader (which refuses externalIPs on these addresses)."""

    router_ip: IPv4Address
    router_ext_ip: IPv4Address
    lb_ip: IPv4Address
    clients: tuple[IPv4Address, ...]


def outside_addresses(node_cidr: IPv4Network, external_cidr: IPv4Network, clients: int) -> OutsideAddresses:
    node_hosts, ext_hosts = _Hosts(node_cidr), _Hosts(external_cidr)
    return OutsideAddresses(node_hosts[0], ext_hosts[0], node_hosts[-1], tuple(ext_hosts[9 + i] for i in range(clients)))


def _outside(lab: str, scenario: Scenario) -> dict[str, object]:
    """Addresses of the world outside the cluster (see Topology)."""
    ext, node_cidr, node_cidr6 = scenario.cluster.external, scenario.cluster.node_cidr, scenario.cluster.node_cidr6
    where = outside_addresses(node_cidr, ext.cidr, len(ext.clients))
    clients = tuple(
        ClientPlan(name, client_netns(lab, name), ip, mac_for(ip), mirror(ip, ext.cidr, ext.cidr6))
        for name, ip in zip(ext.clients, where.clients)
    )
    return {
        "external_cidr6": ext.cidr6, "router_ip6": mirror(where.router_ip, node_cidr, node_cidr6),
        "router_ext_ip6": mirror(where.router_ext_ip, ext.cidr, ext.cidr6), "lb_ip6": mirror(where.lb_ip, node_cidr, node_cidr6),
        "lb_pool6": ext.load_balancer_pool6,
        "external_cidr": ext.cidr, "wan_netns": f"{lab}__wan", "router_netns": f"{lab}__router",
        "router_ip": where.router_ip, "router_ext_ip": where.router_ext_ip, "lb_netns": f"{lab}__lb", "lb_ip": where.lb_ip,
        "lb_pool": ext.load_balancer_pool, "health_check_interval": ext.health_check_interval, "clients": clients,
    }


def _pod_plan(lab: str, pod: Pod, node: NodePlan, ordinal: int, taken: set[str]) -> PodPlan:
    ip = node.pod_subnet.network_address + 1 + ordinal
    return PodPlan(
        ip6=mirror(ip, node.pod_subnet, node.pod_subnet6),
        key=pod.key,
        name=pod.name,
        namespace=pod.namespace,
        node=node.name,
        netns=pod_netns(lab, pod.namespace, pod.name),
        ip=ip,
        host_veth=_veth_name(pod.key, taken),
        ports=tuple((p.container_port, p.protocol) for p in pod.ports),
        mac=mac_for(ip),
        netexec=pod.runs_netexec,
    )


def to_dict(topo: Topology) -> dict[str, object]:
    """JSON-ready form, stored in the lab's state file so ``down``/``status``/probes can work
    on a running lab without re-reading a scenario file that may have changed since."""
    import dataclasses

    def conv(v: object) -> object:
        if isinstance(v, (IPv4Address, IPv4Network, IPv6Address, IPv6Network)):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    out = {k: conv(v) for k, v in dataclasses.asdict(topo).items() if k not in ("nodes", "pods", "clients", "hosts")}
    for key in ("nodes", "pods", "clients", "hosts"):
        out[key] = [{f: conv(x) for f, x in dataclasses.asdict(o).items()} for o in getattr(topo, key)]
    return out


def from_dict(data: dict[str, object]) -> Topology:
    import dataclasses

    def typed(cls: type, raw: dict[str, object]) -> object:
        kw: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            if f.name not in raw:
                continue
            v = raw[f.name]
            t = str(f.type)
            if isinstance(v, tuple):
                kw[f.name] = v
                continue
            if v is None:
                pass
            elif t.startswith(("IPv4Address", "IPv6Address")):
                v = ipaddress.ip_address(v)  # type: ignore[arg-type]
            elif t.startswith(("IPv4Network", "IPv6Network")):
                v = ipaddress.ip_network(v)  # type: ignore[arg-type]
            elif f.name == "ports":
                v = tuple(tuple(x) for x in v)  # type: ignore[union-attr]
            kw[f.name] = v
        return cls(**kw)

    return typed(Topology, {  # type: ignore[return-value]
        **data,
        "nodes": tuple(typed(NodePlan, n) for n in data["nodes"]),  # type: ignore[union-attr, arg-type]
        "pods": tuple(typed(PodPlan, p) for p in data["pods"]),  # type: ignore[union-attr, arg-type]
        "clients": tuple(typed(ClientPlan, c) for c in data.get("clients", ())),  # type: ignore[union-attr, arg-type]
        "hosts": tuple(typed(HostPlan, h) for h in data.get("hosts", ())),  # type: ignore[union-attr, arg-type]
    })


def add_pod_plan(topo: Topology, pod: Pod, node: str | None = None, avoid: frozenset[IPv4Address] = frozenset()) -> tuple[Topology, PodPlan]:
    """Plan one more pod at run time: the given node or the least loaded, the lowest free IP
    (not one of ``avoid``: the addresses of pods that are being removed in the same change)."""
    import dataclasses

    if node is None:
        node = min(topo.nodes, key=lambda n: (len(topo.pods_on(n.name)), n.index)).name
    target = topo.node(node)
    used = {p.ip for p in topo.pods_on(node)} | avoid
    free = next((ip for ip in target.pod_subnet.hosts() if ip != target.gateway and ip not in used), None)
    if free is None:
        raise ScenarioError(topo.lab, "spec.nodeName", f'Too many: node "{node}" has no free pod address')
    taken = {p.host_veth for p in topo.pods_on(node)}
    _distinct_netns(topo.lab, [(f"node/{n.name}", n.netns) for n in topo.nodes] + [(f"pod/{p.key}", p.netns) for p in topo.pods]
                    + [(f"pod/{pod.key}", pod_netns(topo.lab, pod.namespace, pod.name))])
    new = PodPlan(
        key=pod.key, name=pod.name, namespace=pod.namespace, node=node,
        netns=pod_netns(topo.lab, pod.namespace, pod.name), ip=free, ip6=mirror(free, target.pod_subnet, target.pod_subnet6),
        host_veth=_veth_name(pod.key, taken), ports=tuple((p.container_port, p.protocol) for p in pod.ports),
        mac=mac_for(free), netexec=pod.runs_netexec,
    )
    return dataclasses.replace(topo, pods=(*topo.pods, new)), new


def replan(topo: Topology, old: "Objects", new: "Objects") -> Topology:
    """The plan after a change: pods that are gone leave it, new pods join it (on the node
    the scheduler put in ``spec.nodeName``, at the lowest free address); every other pod keeps
    its address, as a running pod does. Raises ScenarioError (nothing is built yet)."""
    import dataclasses

    keep = {p.key for p in new.pods}
    if all(p.key in keep for p in topo.pods) and len(keep) == len(topo.pods):
        return topo
    leaving = frozenset(p.ip for p in topo.pods if p.key not in keep)
    topo = dataclasses.replace(topo, pods=tuple(p for p in topo.pods if p.key in keep))
    planned = {p.key for p in topo.pods}
    for pod in new.pods:
        if pod.key not in planned:
            topo, _ = add_pod_plan(topo, pod, pod.node_name, leaving)
    return topo
