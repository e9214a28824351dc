"""Build a :class:`~netns_lab.controllers.topology.Topology` in the kernel with rtnetlink.

Layout (every object lives in a lab-owned namespace; the host's is never touched):

* ``<lab>__net``: the node network, a bridge ``br0`` with one port per node (``uplinkN``),
  the router's and the cloud load balancer's (the world outside: :mod:`.outside`). In a lab
  spread over several machines, each builds only its own nodes (and the first one the world
  outside), and ``trunk0`` joins the machines' bridges into one segment: a VXLAN port whose
  UDP socket is on the machine's own network (:mod:`netns_lab.controllers.spread`).
* ``<lab>_<node>``: ``eth0`` on the node network, ``cni0`` bridge holding the pod subnet's
  gateway, ``ip_forward`` and ``bridge-nf-call-iptables`` on, and either ``flannel.1``
  (VXLAN with static FDB/neighbour entries, flannel's layout) or host-gw routes; with the
  ``bgp`` network, no route to another node's pods until its BIRD announces them.
* ``<lab>_<ns>_<pod>``: ``eth0`` (veth peer of ``vethXXXXXXXX`` on ``cni0``), default route
  via the gateway.

MACs come from the plan (``0a:58:`` + IP), so neighbour entries a node or pod would learn by
ARP from the gateway, the node's own pods and the other nodes are installed permanent; see
:func:`~netns_lab.controllers.topology.mac_for` for why. Interface indexes are chosen too
(``eth0`` is 2 everywhere, ``cni0`` 3, ``flannel.1`` 4, pod veths 10+), so no request has to
look a name up, and requests go to each namespace in one batch (:mod:`.rtnl`).

The builder calls ``on_step(name)`` between phases so the lab can record progress and tests
can inject faults (SIGKILL) at exact points.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from netns_lab.controllers.spread import TRUNK_PORT, TRUNK_VNI
from netns_lab.controllers.topology import VXLAN_PORT, VXLAN_VNI, NodePlan, PodPlan, Topology, mac_for
from netns_lab.errors import RealizeError
from netns_lab.realize import netns, outside
from netns_lab.realize.netns import NetnsThread, in_thread, write_sysctl
from netns_lab.realize.rtnl import Rtnl, veth_peer

Step = Callable[[str], None]
LO, ETH0, CNI0, VXLAN = 1, 2, 3, 4
UPLINK_BASE = 10  # uplinkN in the underlay namespace (the router and the cloud LB use 9 and 8)
TRUNK = 7  # trunk0 in the underlay namespace of a spread lab: the node network's way to the other machines
VETH_BASE = 1000  # a pod's host-side veth is VETH_BASE + its host part: unique on its node
CHUNK = 128  # pods whose namespaces are open at once (bounds file descriptors)
NODE_SYSCTLS = {
    "net/ipv4/ip_forward": 1,
    "net/ipv4/conf/all/rp_filter": 0,  # node traffic to remote pods is asymmetric by design
    "net/ipv4/conf/default/rp_filter": 0,
    "net/bridge/bridge-nf-call-iptables": 1,  # as kubeadm requires: bridged traffic meets netfilter
    "net/bridge/bridge-nf-call-ip6tables": 1,
}


IPV6_SYSCTLS = {  # a dual-stack lab: addresses come from the plan, never from router adverts
    "net/ipv6/conf/all/accept_dad": 0,  # and are unique by construction (no DAD delay)
    "net/ipv6/conf/default/accept_dad": 0,
    "net/ipv6/conf/all/accept_ra": 0,
    "net/ipv6/conf/default/accept_ra": 0,
}


def ip_sysctls(ipv6: bool) -> None:
    """An IPv4 lab disables IPv6 (else every new link sends DAD/RS noise into captures); a
    dual-stack or IPv6 lab keeps it, without DAD or autoconfiguration. Called in a fresh namespace."""
    if ipv6:
        for key, value in IPV6_SYSCTLS.items():
            write_sysctl(key, value)
        return
    for key in ("net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6"):
        if os.path.exists("/proc/sys/" + key):
            write_sysctl(key, 1)


def build(topo: Topology, on_step: Step = lambda _s: None) -> None:
    """Create every namespace and link of ``topo``. Raises RealizeError; the caller cleans up."""
    in_thread(lambda w: _Builder(topo, w, on_step).run())


def add_pods(topo: Topology, pods: tuple[PodPlan, ...]) -> None:
    """Create pods in a running lab (``topo`` already includes them)."""

    def job(w: NetnsThread) -> None:
        b = _Builder(topo, w, lambda _s: None)
        try:
            for node in {p.node for p in pods}:
                w.enter(topo.node(node).netns)
                try:
                    b.node_nl[node] = Rtnl(topo.node(node).netns)
                finally:
                    w.go_home()
            b._pods(pods)
        finally:
            for nl in b.node_nl.values():
                nl.close()

    in_thread(job)


def remove_host_veths(topo: Topology, pods: tuple[PodPlan, ...]) -> None:
    """Delete pods' host-side veths in their nodes, where they still are. A deleted pod
    namespace is torn down by the kernel in the background (later under load, and not at all
    while a process holds a socket in it), its veth pair with it: a pod made again at once
    under the same name (same veth name, same interface index) would find the old one."""
    from pyroute2.netlink.exceptions import NetlinkError

    def job(w: NetnsThread) -> None:
        from pyroute2 import IPRoute

        for node in sorted({p.node for p in pods}):
            w.enter(topo.node(node).netns)
            try:
                with IPRoute() as ipr:
                    for pod in (p for p in pods if p.node == node):
                        for index in ipr.link_lookup(ifname=pod.host_veth):
                            try:
                                ipr.link("del", index=index)
                            except NetlinkError as exc:
                                if exc.code != 19:  # ENODEV: the kernel's teardown was quicker
                                    raise RealizeError(f"{topo.node(node).netns}/{pod.host_veth} (for {pod.key})", "delete",
                                                       exc.code) from None
            finally:
                w.go_home()

    if pods:
        in_thread(job)


def forget_pod(topo: Topology, pod: PodPlan) -> None:
    """Remove what a deleted pod left in its node: the permanent neighbour entry."""

    def job(w: NetnsThread) -> None:
        node = topo.node(pod.node)
        w.enter(node.netns)
        with Rtnl(node.netns) as nl:
            w.go_home()
            for ip in pod.ips:
                nl.neigh_del(f"{node.netns}/cni0 neighbour {ip}", CNI0, str(ip))
            nl.commit()

    in_thread(job)


class _Builder:
    def __init__(self, topo: Topology, worker: NetnsThread, on_step: Step) -> None:
        self.topo = topo
        self.w = worker
        self.on_step = on_step
        self.node_nl: dict[str, Rtnl] = {}

    def run(self) -> None:
        try:
            self._underlay_and_nodes()
            self.on_step("nodes")
            self._pods()
            self.on_step("pods")
            self._node_routes()
            self.on_step("routes")
        finally:
            for nl in self.node_nl.values():
                nl.close()

    def _new_namespace(self, name: str, sysctls: dict[str, int] | None = None) -> Rtnl:
        """Create ``name``, configure its sysctls and return a netlink channel inside it."""
        self.w.create(name)
        try:
            ip_sysctls(self.topo.uses_ipv6)
            for key, value in (sysctls or {}).items():
                write_sysctl(key, value)
            nl = Rtnl(name)
        finally:
            self.w.go_home()
        nl.link_set(f"{name}/lo", index=LO, up=True)
        return nl

    # -- node network and nodes -------------------------------------------------------
    def _underlay_and_nodes(self) -> None:
        topo = self.topo
        with self._new_namespace(topo.underlay_netns, {"net/bridge/bridge-nf-call-iptables": 0}) as under:
            under.link_add(f"{topo.underlay_netns}/br0", index=ETH0, ifname="br0", kind="bridge", mtu=topo.underlay_mtu, up=True)
            under.commit()
            if topo.is_spread:
                self._trunk(under)
            for node in topo.local_nodes:
                self.node_nl[node.name] = self._new_namespace(
                    node.netns, {**NODE_SYSCTLS, **(outside.IPV6_FORWARDING if topo.uses_ipv6 else {})})
                fd = netns.open_fd(node.netns)
                try:
                    under.link_add(
                        f"{node.netns}/eth0", index=UPLINK_BASE + node.index, ifname=node.uplink, kind="veth",
                        mtu=topo.underlay_mtu, master=ETH0, up=True,
                        data=veth_peer(ifname="eth0", index=ETH0, net_ns_fd=fd, address=node.mac, mtu=topo.underlay_mtu),
                    )
                    under.commit()
                finally:
                    os.close(fd)
                self._node(node)
            if topo.has_outside:
                outside.build(topo, under, ETH0, self._new_namespace)

    def _trunk(self, under: Rtnl) -> None:
        """VXLAN port of the node network's bridge towards the other machines.

        The request is sent from a netlink socket in this machine's own namespace with the
        lab's namespace as the target: the device lands in ``<lab>__net`` while its UDP socket
        stays on the machine's network (a tunnel's socket lives where it was created), which
        is what lets the node network cross the real network between the VMs. No link,
        address or route of the machine's namespace changes.
        """
        topo = self.topo
        me = topo.hosts[topo.host]
        fd = netns.open_fd(topo.underlay_netns)
        try:
            with Rtnl("this machine") as home:
                home.link_add(
                    f"{topo.underlay_netns}/trunk0", index=TRUNK, ifname="trunk0", kind="vxlan", net_ns_fd=fd,
                    mtu=topo.underlay_mtu,
                    data={"attrs": [("IFLA_VXLAN_ID", TRUNK_VNI), ("IFLA_VXLAN_LOCAL", str(me.ip)), ("IFLA_VXLAN_PORT", TRUNK_PORT)]},
                )
                home.commit()
        finally:
            os.close(fd)
        under.link_set(f"{topo.underlay_netns}/trunk0", index=TRUNK, master=ETH0, up=True)
        for peer in topo.hosts:
            if peer is not me:  # head-end replication: unknown and broadcast frames go to every other machine
                under.fdb_append(f"{topo.underlay_netns}/trunk0 flood to {peer.name} ({peer.ip})", TRUNK, "00:00:00:00:00:00", str(peer.ip))
        under.commit()

    def _node(self, node: NodePlan) -> None:
        topo = self.topo
        nl = self.node_nl[node.name]
        nl.link_set(f"{node.netns}/eth0", index=ETH0, up=True)
        nl.addr_add(f"{node.netns}/eth0 {node.ip}", ETH0, str(node.ip), topo.node_cidr.prefixlen)
        nl.link_add(f"{node.netns}/cni0", index=CNI0, ifname="cni0", kind="bridge", mtu=topo.pod_mtu, address=node.bridge_mac, up=True)
        nl.addr_add(f"{node.netns}/cni0 {node.gateway}", CNI0, str(node.gateway), node.pod_subnet.prefixlen)
        if topo.network == "vxlan":
            nl.link_add(
                f"{node.netns}/flannel.1", index=VXLAN, ifname="flannel.1", kind="vxlan", address=node.vtep_mac,
                mtu=topo.pod_mtu, up=True,  # the underlay's less VXLAN's headers (controllers.topology.pod_mtu)
                data={"attrs": [
                    # an IPv6-only lab's tunnel runs over its IPv6 underlay
                    ("IFLA_VXLAN_ID", VXLAN_VNI), ("IFLA_VXLAN_LOCAL6" if node.ip.version == 6 else "IFLA_VXLAN_LOCAL", str(node.ip)),
                    ("IFLA_VXLAN_LINK", ETH0),
                    ("IFLA_VXLAN_PORT", VXLAN_PORT), ("IFLA_VXLAN_LEARNING", 0),
                ]},
            )
            nl.addr_add(f"{node.netns}/flannel.1 {node.vtep_ip}", VXLAN, str(node.vtep_ip), node.vtep_ip.max_prefixlen)
        if node.ip6 is not None and node.pod_subnet6 is not None and topo.node_cidr6 is not None:
            # IPv6 on the same links; flannel.1 carries it over the IPv4 underlay
            nl.addr_add(f"{node.netns}/eth0 {node.ip6}", ETH0, str(node.ip6), topo.node_cidr6.prefixlen)
            nl.addr_add(f"{node.netns}/cni0 {node.gateway6}", CNI0, str(node.gateway6), node.pod_subnet6.prefixlen)
            if topo.network == "vxlan":
                nl.addr_add(f"{node.netns}/flannel.1 {node.vtep_ip6}", VXLAN, str(node.vtep_ip6), 128)
        nl.commit()

    # -- pods --------------------------------------------------------------------------
    def _pods(self, pods: tuple[PodPlan, ...] | None = None) -> None:
        pods = self.topo.local_pods if pods is None else pods
        for start in range(0, len(pods), CHUNK):
            chunk = pods[start : start + CHUNK]
            opened: list[tuple[PodPlan, Rtnl, int]] = []
            try:
                for pod in chunk:
                    nl = self._new_namespace(pod.netns)
                    opened.append((pod, nl, netns.open_fd(pod.netns)))
                    self.on_step("pod")
                for pod, _nl, fd in opened:  # host side first: the pod's eth0 is born with it
                    self._host_side(pod, fd)
                for node in {pod.node for pod, _nl, _fd in opened}:
                    self.node_nl[node].commit()
                for pod, nl, _fd in opened:
                    self._pod_side(pod, nl)
            finally:
                for _pod, nl, fd in opened:
                    nl.close()
                    os.close(fd)

    def _host_side(self, pod: PodPlan, pod_fd: int) -> None:
        node = self.topo.node(pod.node)
        index = VETH_BASE + int(pod.ip) - int(node.pod_subnet.network_address)
        nl = self.node_nl[pod.node]
        mtu = self.topo.pod_mtu
        nl.link_add(
            f"{node.netns}/{pod.host_veth} (for {pod.key})", index=index, ifname=pod.host_veth, kind="veth",
            mtu=mtu, master=CNI0, up=True,
            data=veth_peer(ifname="eth0", index=ETH0, net_ns_fd=pod_fd, address=pod.mac, mtu=mtu),
        )
        nl.bridge_port_hairpin(f"{node.netns}/{pod.host_veth} hairpin", index)
        nl.neigh_add(f"{node.netns}/cni0 neighbour {pod.ip}", CNI0, str(pod.ip), pod.mac)
        if pod.ip6 is not None:
            nl.neigh_add(f"{node.netns}/cni0 neighbour {pod.ip6}", CNI0, str(pod.ip6), pod.mac)

    def _pod_side(self, pod: PodPlan, nl: Rtnl) -> None:
        node = self.topo.node(pod.node)
        nl.link_set(f"{pod.netns}/eth0", index=ETH0, up=True)
        nl.addr_add(f"{pod.netns}/eth0 {pod.ip}", ETH0, str(pod.ip), node.pod_subnet.prefixlen)
        nl.neigh_add(f"{pod.netns}/eth0 gateway neighbour", ETH0, str(node.gateway), node.bridge_mac)
        nl.route_add(f"{pod.netns} default route", "0.0.0.0", 0, str(node.gateway), ETH0)
        if pod.ip6 is not None and node.pod_subnet6 is not None:
            nl.addr_add(f"{pod.netns}/eth0 {pod.ip6}", ETH0, str(pod.ip6), node.pod_subnet6.prefixlen)
            nl.neigh_add(f"{pod.netns}/eth0 gateway neighbour (IPv6)", ETH0, str(node.gateway6), node.bridge_mac)
            nl.route_add(f"{pod.netns} default route (IPv6)", "::", 0, str(node.gateway6), ETH0)
        nl.commit()

    # -- routes between nodes ------------------------------------------------------------
    def _node_routes(self) -> None:
        topo = self.topo
        for node in topo.local_nodes:
            nl = self.node_nl[node.name]
            # The router to the world outside the cluster is the nodes' default gateway, as in a
            # datacenter: traffic to unknown addresses leaves the node.
            nl.neigh_add(f"{node.netns}/eth0 neighbour {topo.router_ip}", ETH0, str(topo.router_ip), mac_for(topo.router_ip))
            nl.neigh_add(f"{node.netns}/eth0 neighbour {topo.lb_ip}", ETH0, str(topo.lb_ip), mac_for(topo.lb_ip))
            nl.route_add(f"{node.netns} default route", "0.0.0.0", 0, str(topo.router_ip), ETH0)
            if topo.router_ip6 is not None and topo.lb_ip6 is not None:
                nl.neigh_add(f"{node.netns}/eth0 neighbour {topo.router_ip6}", ETH0, str(topo.router_ip6), mac_for(topo.router_ip))
                nl.neigh_add(f"{node.netns}/eth0 neighbour {topo.lb_ip6}", ETH0, str(topo.lb_ip6), mac_for(topo.lb_ip))
                nl.route_add(f"{node.netns} default route (IPv6)", "::", 0, str(topo.router_ip6), ETH0)
            for peer in topo.nodes:
                if peer is node:
                    continue
                where = f"{node.netns} -> {peer.name}"
                nl.neigh_add(f"{where}: eth0 neighbour {peer.ip}", ETH0, str(peer.ip), peer.mac)
                if topo.network == "vxlan":
                    # flannel's static wiring: ARP and FDB answered from the plan, no multicast.
                    nl.fdb_append(f"{where}: flannel.1 fdb", VXLAN, peer.vtep_mac, str(peer.ip))
                for subnet, vtep, ip in ((peer.pod_subnet, peer.vtep_ip, peer.ip), (peer.pod_subnet6, peer.vtep_ip6, peer.ip6)):
                    if subnet is None or vtep is None or ip is None:
                        continue  # an IPv4 lab
                    if ip.version == 6:
                        nl.neigh_add(f"{where}: eth0 neighbour {ip}", ETH0, str(ip), peer.mac)
                    net, prefix = str(subnet.network_address), subnet.prefixlen
                    if topo.network == "bgp":
                        continue  # BIRD installs the peers' subnets (proto bird): reconcile.bgp
                    if topo.network == "vxlan":
                        nl.neigh_add(f"{where}: flannel.1 neighbour {vtep}", VXLAN, str(vtep), peer.vtep_mac)
                        nl.route_add(f"{where}: route {subnet}", net, prefix, str(vtep), VXLAN, onlink=True)
                    else:
                        nl.route_add(f"{where}: route {subnet}", net, prefix, str(ip), ETH0)
            nl.commit()


__all__ = ["build"]
