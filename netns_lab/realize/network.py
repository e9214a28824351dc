"""Build a :class:`~netns_lab.controllers.topology.Topology` in the kernel with netlink.

Layout (every object lives in a lab-owned namespace; the host's is never touched):

* ``<lab>__net``: the node network, a bridge ``br0`` with one port per node (``uplinkN``).
* ``<lab>_<node>``: ``eth0`` on the node network, ``cni0`` bridge holding the pod subnet's
  gateway, ``ip_forward`` and ``bridge-nf-call-iptables`` on, and either ``flannel.1``
  (VXLAN with static FDB/neighbour entries, flannel's layout) or host-gw routes.
* ``<lab>_<ns>_<pod>``: ``eth0`` (veth peer of ``vethXXXXXXXX`` on ``cni0``), default route
  via the gateway.

MACs come from the plan (``0a:58:`` + IP), so neighbour entries a node or pod would learn by
ARP from the gateway, the node's own pods and the other nodes are installed permanent; see
:func:`~netns_lab.controllers.topology.mac_for` for why.

The builder calls ``on_step(name)`` between phases so the lab can record progress and tests
can inject faults (SIGKILL) at exact points.
"""

from __future__ import annotations

import errno as errno_mod
import os
from collections.abc import Callable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netns_lab.controllers.topology import VXLAN_PORT, VXLAN_VNI, NodePlan, PodPlan, Topology
from netns_lab.errors import RealizeError
from netns_lab.realize import netns
from netns_lab.realize.netns import NetnsThread, in_thread, write_sysctl

Step = Callable[[str], None]
NUD_PERMANENT = 0x80
NTF_SELF = 0x02


def _nl(obj: str, action: str, fn: Callable[[], object]) -> object:
    """Call netlink, turning its errors into :class:`RealizeError` naming the object."""
    try:
        return fn()
    except NetlinkError as exc:
        raise RealizeError(obj, action, exc.code) from None


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise RealizeError(ifname, "lookup", errno_mod.ENODEV)
    return found[0]


def _ipv4_only() -> None:
    """The lab is IPv4: without this every new link sends IPv6 DAD/RS noise into captures."""
    for key in ("net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6"):
        if os.path.exists("/proc/sys/" + key):
            write_sysctl(key, 1)


def build(topo: Topology, on_step: Step = lambda _s: None) -> None:
    """Create every namespace and link of ``topo``. Raises RealizeError; the caller cleans up."""
    in_thread(lambda w: _Builder(topo, w, on_step).run())


class _Builder:
    def __init__(self, topo: Topology, worker: NetnsThread, on_step: Step) -> None:
        self.topo = topo
        self.w = worker
        self.on_step = on_step
        self.node_ipr: dict[str, IPRoute] = {}
        self.node_fd: dict[str, int] = {}

    def run(self) -> None:
        try:
            self._underlay_and_nodes()
            self.on_step("nodes")
            self._pods()
            self.on_step("pods")
            self._pod_routes()
            self.on_step("routes")
        finally:
            for ipr in self.node_ipr.values():
                ipr.close()
            for fd in self.node_fd.values():
                os.close(fd)

    # -- node network and nodes -------------------------------------------------------
    def _underlay_and_nodes(self) -> None:
        topo = self.topo
        self.w.create(topo.underlay_netns)
        _ipv4_only()
        under = IPRoute()
        try:
            self.w.go_home()
            write_in = self._sysctls_in
            write_in(topo.underlay_netns, {"net/bridge/bridge-nf-call-iptables": 0, "net/bridge/bridge-nf-call-ip6tables": 0})
            _nl("br0", "add bridge", lambda: under.link("add", ifname="br0", kind="bridge", mtu=topo.underlay_mtu))
            br = _index(under, "br0")
            under.link("set", index=1, state="up")
            for node in topo.nodes:
                self._node(node, under, br)
            under.link("set", index=br, state="up")
        finally:
            under.close()

    def _sysctls_in(self, ns: str, values: dict[str, int]) -> None:
        self.w.enter(ns)
        try:
            for key, value in values.items():
                write_sysctl(key, value)
        finally:
            self.w.go_home()

    def _node(self, node: NodePlan, under: IPRoute, br: int) -> None:
        topo = self.topo
        self.w.create(node.netns)
        ipr = IPRoute()
        try:
            _ipv4_only()
            for key, value in {
                "net/ipv4/ip_forward": 1,
                "net/ipv4/conf/all/rp_filter": 0,
                "net/ipv4/conf/default/rp_filter": 0,
                "net/bridge/bridge-nf-call-iptables": 1,
                "net/bridge/bridge-nf-call-ip6tables": 1,
            }.items():
                write_sysctl(key, value)
        finally:
            self.w.go_home()
        self.node_ipr[node.name] = ipr
        fd = netns.open_fd(node.netns)
        self.node_fd[node.name] = fd
        obj = f"{node.netns}/eth0"
        # The uplink is created in the underlay namespace with its peer born in the node's.
        _nl(obj, "add veth", lambda: under.link(
            "add", ifname=node.uplink, kind="veth", mtu=topo.underlay_mtu,
            peer={"ifname": "eth0", "net_ns_fd": fd, "mtu": topo.underlay_mtu, "address": node.mac},
        ))
        _nl(node.uplink, "attach", lambda: under.link("set", index=_index(under, node.uplink), master=br, state="up"))
        ipr.link("set", index=1, state="up")
        eth0 = _index(ipr, "eth0")
        _nl(obj, "add address", lambda: ipr.addr("add", index=eth0, address=str(node.ip), prefixlen=topo.node_cidr.prefixlen))
        ipr.link("set", index=eth0, state="up")
        _nl(f"{node.netns}/cni0", "add bridge", lambda: ipr.link(
            "add", ifname="cni0", kind="bridge", mtu=topo.pod_mtu, address=node.bridge_mac))
        cni0 = _index(ipr, "cni0")
        _nl(f"{node.netns}/cni0", "add address", lambda: ipr.addr(
            "add", index=cni0, address=str(node.gateway), prefixlen=node.pod_subnet.prefixlen))
        ipr.link("set", index=cni0, state="up")
        if topo.network == "vxlan":
            _nl(f"{node.netns}/flannel.1", "add vxlan", lambda: ipr.link(
                "add", ifname="flannel.1", kind="vxlan", vxlan_id=VXLAN_VNI, vxlan_local=str(node.ip),
                vxlan_link=eth0, vxlan_port=VXLAN_PORT, vxlan_learning=0, address=node.vtep_mac,
                mtu=topo.underlay_mtu - 50,
            ))
            vx = _index(ipr, "flannel.1")
            _nl(f"{node.netns}/flannel.1", "add address", lambda: ipr.addr("add", index=vx, address=str(node.vtep_ip), prefixlen=32))
            ipr.link("set", index=vx, state="up")

    # -- pods --------------------------------------------------------------------------
    def _pods(self) -> None:
        topo = self.topo
        cni0 = {n.name: _index(self.node_ipr[n.name], "cni0") for n in topo.nodes}
        for pod in topo.pods:
            self._pod(pod, cni0[pod.node])

    def _pod(self, pod: PodPlan, cni0: int) -> None:
        topo = self.topo
        node = topo.node(pod.node)
        self.w.create(pod.netns)
        try:
            _ipv4_only()
            ipr = IPRoute()
        finally:
            self.w.go_home()
        self.on_step("pod")
        try:
            obj = f"{pod.netns}/eth0"
            _nl(obj, "add veth", lambda: ipr.link(
                "add", ifname="eth0", kind="veth", mtu=topo.pod_mtu, address=pod.mac,
                peer={"ifname": pod.host_veth, "net_ns_fd": self.node_fd[pod.node], "mtu": topo.pod_mtu},
            ))
            ipr.link("set", index=1, state="up")
            eth0 = _index(ipr, "eth0")
            _nl(obj, "add address", lambda: ipr.addr("add", index=eth0, address=str(pod.ip), prefixlen=node.pod_subnet.prefixlen))
            ipr.link("set", index=eth0, state="up")
            _nl(obj, "add gateway neighbour", lambda: ipr.neigh(
                "add", dst=str(node.gateway), lladdr=node.bridge_mac, ifindex=eth0, state=NUD_PERMANENT))
            _nl(obj, "add default route", lambda: ipr.route("add", dst="0.0.0.0/0", gateway=str(node.gateway), oif=eth0))
        finally:
            ipr.close()
        nipr = self.node_ipr[pod.node]
        _nl(f"{node.netns}/{pod.host_veth}", "attach to cni0", lambda: nipr.link(
            "set", index=_index(nipr, pod.host_veth), master=cni0, state="up"))
        _nl(f"{node.netns}/cni0 neighbour {pod.ip}", "add", lambda: nipr.neigh(
            "add", dst=str(pod.ip), lladdr=pod.mac, ifindex=cni0, state=NUD_PERMANENT))

    # -- routes between nodes ------------------------------------------------------------
    def _pod_routes(self) -> None:
        topo = self.topo
        for node in topo.nodes:
            ipr = self.node_ipr[node.name]
            eth0 = _index(ipr, "eth0")
            if topo.network == "vxlan":
                vx = _index(ipr, "flannel.1")
            for peer in topo.nodes:
                if peer is node:
                    continue
                _nl(f"{node.netns}/eth0 neighbour {peer.ip}", "add", lambda: ipr.neigh(
                    "add", dst=str(peer.ip), lladdr=peer.mac, ifindex=eth0, state=NUD_PERMANENT))
                obj = f"{node.netns} route {peer.pod_subnet}"
                if topo.network == "vxlan":
                    # flannel's static wiring: ARP and FDB answered from the plan, no multicast.
                    _nl(obj, "add neighbour", lambda: ipr.neigh(
                        "add", dst=str(peer.vtep_ip), lladdr=peer.vtep_mac, ifindex=vx, state=NUD_PERMANENT))
                    _nl(obj, "add fdb", lambda: ipr.fdb(
                        "append", ifindex=vx, lladdr=peer.vtep_mac, dst=str(peer.ip), state=NUD_PERMANENT, flags=NTF_SELF))
                    _nl(obj, "add", lambda: ipr.route(
                        "add", dst=str(peer.pod_subnet), gateway=str(peer.vtep_ip), oif=vx, flags=4))  # RTNH_F_ONLINK
                else:
                    _nl(obj, "add", lambda: ipr.route("add", dst=str(peer.pod_subnet), gateway=str(peer.ip), oif=eth0))
