"""The world outside the cluster: external network, router, clients, cloud load balancer.

Layout (every namespace lab-owned; see :class:`~netns_lab.controllers.topology.Topology`):

* ``<lab>__wan``: the external network, a bridge ``br0`` (``cluster.external.cidr``).
* ``<lab>__router``: ``eth0`` on the node network (its first address: the nodes' default
  gateway) and ``eth1`` on the external network (the clients' gateway). It routes the
  load-balancer pool to the cloud load balancer and each Service externalIP to the nodes
  (ECMP, L4 hash), as a datacenter router configured by the cluster admin would. It has no
  route to pod or Service ranges, so a client outside never reaches a pod or ClusterIP.
* ``<lab>__ext`` (and ``<lab>__ext-NAME``): clients on the external network.
* ``<lab>__lb``: the cloud load balancer, on the node network like a cloud's LB in its VPC.
  It forwards a packet for a load-balancer IP, unchanged, to one healthy node: nftables
  (written by :mod:`netns_lab.services.cloudlb`) marks it by a hash of the flow, and one
  policy-routing rule per node sends each mark to that node. The node's kube-proxy rules for
  the LB IP do the rest, which is how GCP-style passthrough load balancers deliver traffic
  and why ``externalTrafficPolicy: Local`` keeps the client's address.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from netns_lab.controllers.loadbalancer import node_mark
from netns_lab.controllers.topology import Topology, address_of, mac_for
from netns_lab.realize import netns
from netns_lab.realize.rtnl import Rtnl, veth_peer

ETH0, ETH1 = 2, 3
ROUTER_UPLINK, LB_UPLINK = 9, 8  # their ports on the node network's bridge
WAN_BRIDGE, WAN_ROUTER_PORT, WAN_CLIENT_BASE = 2, 10, 11
TABLE_BASE = 100  # node i's mark (node_mark) is routed by table TABLE_BASE + i (rule priority likewise)
FORWARDER_SYSCTLS = {
    "net/ipv4/ip_forward": 1,
    "net/ipv4/conf/all/rp_filter": 0,
    "net/ipv4/conf/default/rp_filter": 0,
    "net/ipv4/conf/all/send_redirects": 0,  # the LB sends packets out the port they came in on
    "net/ipv4/conf/default/send_redirects": 0,
}
IPV6_FORWARDING = {"net/ipv6/conf/all/forwarding": 1}  # a lab with IPv6: nodes, the router, the cloud LB
ROUTER_SYSCTLS = {**FORWARDER_SYSCTLS, "net/ipv4/fib_multipath_hash_policy": 1}  # ECMP per flow (L4)

NewNamespace = Callable[[str, "dict[str, int] | None"], Rtnl]


def _veth(parent: Rtnl, what: str, index: int, ifname: str, master: int, peer_ns: str, peer_index: int,
          peer_mac: str, mtu: int) -> None:
    """A veth whose one end is a port of ``parent``'s bridge and the other ``eth`` in ``peer_ns``."""
    fd = netns.open_fd(peer_ns)
    try:
        parent.link_add(what, index=index, ifname=ifname, kind="veth", mtu=mtu, master=master, up=True,
                        data=veth_peer(ifname=f"eth{peer_index - ETH0}", index=peer_index, net_ns_fd=fd,
                                       address=peer_mac, mtu=mtu))
        parent.commit()
    finally:
        os.close(fd)


def build(topo: Topology, under: Rtnl, under_bridge: int, new_namespace: NewNamespace) -> None:
    """Create the external network, the router, the clients and the cloud load balancer."""
    mtu = topo.underlay_mtu
    node_prefix, ext_prefix = topo.node_cidr.prefixlen, topo.external_cidr.prefixlen
    router_mac, router_ext_mac, lb_mac = mac_for(topo.router_ip), mac_for(topo.router_ext_ip), mac_for(topo.lb_ip)
    v6 = IPV6_FORWARDING if topo.uses_ipv6 else {}
    v6_ecmp = {"net/ipv6/fib_multipath_hash_policy": 1} if topo.uses_ipv6 else {}  # IPv6 flows spread per flow too
    with new_namespace(topo.wan_netns, {"net/bridge/bridge-nf-call-iptables": 0}) as wan, \
            new_namespace(topo.router_netns, {**ROUTER_SYSCTLS, **v6, **v6_ecmp}) as router, \
            new_namespace(topo.lb_netns, {**FORWARDER_SYSCTLS, **v6}) as lb:
        wan.link_add(f"{topo.wan_netns}/br0", index=WAN_BRIDGE, ifname="br0", kind="bridge", mtu=mtu, up=True)
        wan.commit()
        _veth(under, f"{topo.router_netns}/eth0", ROUTER_UPLINK, "uplink-rtr", under_bridge, topo.router_netns, ETH0, router_mac, mtu)
        _veth(wan, f"{topo.router_netns}/eth1", WAN_ROUTER_PORT, "rtr", WAN_BRIDGE, topo.router_netns, ETH1, router_ext_mac, mtu)
        _veth(under, f"{topo.lb_netns}/eth0", LB_UPLINK, "uplink-lb", under_bridge, topo.lb_netns, ETH0, lb_mac, mtu)

        r = topo.router_netns
        router.link_set(f"{r}/eth0", index=ETH0, up=True)
        router.link_set(f"{r}/eth1", index=ETH1, up=True)
        router.addr_add(f"{r}/eth0 {topo.router_ip}", ETH0, str(topo.router_ip), node_prefix)
        router.addr_add(f"{r}/eth1 {topo.router_ext_ip}", ETH1, str(topo.router_ext_ip), ext_prefix)
        for node in topo.nodes:
            router.neigh_add(f"{r}/eth0 neighbour {node.ip}", ETH0, str(node.ip), node.mac)
        router.neigh_add(f"{r}/eth0 neighbour {topo.lb_ip}", ETH0, str(topo.lb_ip), lb_mac)
        for c in topo.clients:
            router.neigh_add(f"{r}/eth1 neighbour {c.ip}", ETH1, str(c.ip), c.mac)
        if topo.router_ip6 is not None and topo.router_ext_ip6 is not None and topo.lb_ip6 is not None:
            router.addr_add(f"{r}/eth0 {topo.router_ip6}", ETH0, str(topo.router_ip6), _prefix(topo.node_cidr6))
            router.addr_add(f"{r}/eth1 {topo.router_ext_ip6}", ETH1, str(topo.router_ext_ip6), _prefix(topo.external_cidr6))
            for node in topo.nodes:
                router.neigh_add(f"{r}/eth0 neighbour {node.ip6}", ETH0, str(node.ip6), node.mac)
            router.neigh_add(f"{r}/eth0 neighbour {topo.lb_ip6}", ETH0, str(topo.lb_ip6), lb_mac)
            for c in topo.clients:
                router.neigh_add(f"{r}/eth1 neighbour {c.ip6}", ETH1, str(c.ip6), c.mac)
        pool = topo.lb_pool
        if topo.load_balancer != "bgp":  # with bgp the pool's /32s are learned from the nodes' speakers
            router.route_add(f"{r} route {pool} via the cloud load balancer", str(pool.network_address), pool.prefixlen, str(topo.lb_ip), ETH0)
        if topo.lb_pool6 is not None and topo.lb_ip6 is not None and topo.load_balancer != "bgp":
            pool6 = topo.lb_pool6
            router.route_add(f"{r} route {pool6} via the cloud load balancer", str(pool6.network_address), pool6.prefixlen,
                             str(topo.lb_ip6), ETH0)
        router.commit()

        b = topo.lb_netns
        lb.link_set(f"{b}/eth0", index=ETH0, up=True)
        lb.addr_add(f"{b}/eth0 {topo.lb_ip}", ETH0, str(topo.lb_ip), node_prefix)
        lb.neigh_add(f"{b}/eth0 neighbour {topo.router_ip}", ETH0, str(topo.router_ip), router_mac)
        lb.route_add(f"{b} default route", "0.0.0.0", 0, str(topo.router_ip), ETH0)
        if topo.lb_ip6 is not None and topo.router_ip6 is not None:
            lb.addr_add(f"{b}/eth0 {topo.lb_ip6}", ETH0, str(topo.lb_ip6), _prefix(topo.node_cidr6))
            lb.neigh_add(f"{b}/eth0 neighbour {topo.router_ip6}", ETH0, str(topo.router_ip6), router_mac)
            lb.route_add(f"{b} default route (IPv6)", "::", 0, str(topo.router_ip6), ETH0)
        for node in topo.nodes:
            lb.neigh_add(f"{b}/eth0 neighbour {node.ip}", ETH0, str(node.ip), node.mac)
            table = TABLE_BASE + node.index
            lb.route_add(f"{b} table {table}: to {node.name}", "0.0.0.0", 0, str(node.ip), ETH0, table=table)
            lb.rule_add(f"{b} rule fwmark {node_mark(node.index):#x} -> table {table}", node_mark(node.index), table, table,
                        socket.AF_INET6 if node.ip.version == 6 else socket.AF_INET)
            if node.ip6 is not None:  # the same mark sends an IPv6 flow to the node's IPv6 address
                lb.neigh_add(f"{b}/eth0 neighbour {node.ip6}", ETH0, str(node.ip6), node.mac)
                lb.route_add(f"{b} table {table}: to {node.name} (IPv6)", "::", 0, str(node.ip6), ETH0, table=table)
                lb.rule_add(f"{b} rule fwmark {node_mark(node.index):#x} -> table {table} (IPv6)", node_mark(node.index), table,
                            table, socket.AF_INET6)
        lb.commit()

        for i, c in enumerate(topo.clients):
            with new_namespace(c.netns, None) as cl:
                _veth(wan, f"{c.netns}/eth0", WAN_CLIENT_BASE + i, f"client{i}", WAN_BRIDGE, c.netns, ETH0, c.mac, mtu)
                cl.link_set(f"{c.netns}/eth0", index=ETH0, up=True)
                cl.addr_add(f"{c.netns}/eth0 {c.ip}", ETH0, str(c.ip), ext_prefix)
                cl.neigh_add(f"{c.netns}/eth0 gateway neighbour", ETH0, str(topo.router_ext_ip), router_ext_mac)
                cl.route_add(f"{c.netns} default route", "0.0.0.0", 0, str(topo.router_ext_ip), ETH0)
                if c.ip6 is not None and topo.router_ext_ip6 is not None:
                    cl.addr_add(f"{c.netns}/eth0 {c.ip6}", ETH0, str(c.ip6), _prefix(topo.external_cidr6))
                    cl.neigh_add(f"{c.netns}/eth0 gateway neighbour (IPv6)", ETH0, str(topo.router_ext_ip6), router_ext_mac)
                    cl.route_add(f"{c.netns} default route (IPv6)", "::", 0, str(topo.router_ext_ip6), ETH0)
                cl.commit()


def _prefix(net: object) -> int:
    assert net is not None  # a dual-stack plan has every IPv6 range
    return net.prefixlen  # type: ignore[attr-defined]


def route_external_ips(topo: Topology, ips: tuple[str, ...], gone: tuple[str, ...] = ()) -> None:
    """Route each Service externalIP (outside the node network) from the router to the nodes;
    remove the routes of ``gone`` ones (no Service has them any more)."""
    wanted = sorted({ip for ip in ips if not on_node_network(topo, ip)})
    unwanted = sorted({ip for ip in gone if not on_node_network(topo, ip)})
    if not wanted and not unwanted:
        return

    def job(w: netns.NetnsThread) -> None:
        w.enter(topo.router_netns)
        with Rtnl(topo.router_netns) as nl:
            w.go_home()
            for ip in unwanted:
                nl.route_del(f"{topo.router_netns} route externalIP {ip}", ip, 128 if ":" in ip else 32)
            for ip in wanted:  # to every node's address of the IP's family
                v6 = ":" in ip
                hops = [(str(address_of(n, 6 if v6 else 4)), ETH0) for n in topo.nodes if address_of(n, 6 if v6 else 4) is not None]
                if not hops:
                    continue  # an IPv6 externalIP in an IPv4 lab: no node has a route for it
                prefix = 128 if v6 else 32
                if len(hops) == 1:
                    nl.route_add(f"{topo.router_netns} route externalIP {ip}", ip, prefix, hops[0][0], ETH0)
                else:
                    nl.route_add_multipath(f"{topo.router_netns} route externalIP {ip}", ip, prefix, hops)
            nl.commit()

    netns.in_thread(job)


def on_node_network(topo: Topology, ip: str) -> bool:
    """An externalIP on the node network needs no route: the nodes answer for it there."""
    from ipaddress import ip_address

    addr = ip_address(ip)
    return any(addr in net for net in (topo.node_cidr, topo.node_cidr6) if net is not None)  # False across families


def routed_external_ips(topo: Topology) -> set[str]:
    """The externalIPs the router routes now (its static /32 routes), read from the kernel:
    a full sync compares with these, not with what a process believes it did."""

    def read() -> set[str]:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            return {r.get_attr("RTA_DST") for family, host in ((2, 32), (10, 128)) for r in ipr.get_routes(family=family, table=254)
                    if r["dst_len"] == host and r["proto"] == 4 and r.get_attr("RTA_DST")}

    return netns.run_in(topo.router_netns, read)
