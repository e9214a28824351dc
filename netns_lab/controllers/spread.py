"""Spread one lab over several machines (two or three Vagrant VMs), so the underlay crosses a
real network between them.

Every machine plans the same whole cluster from the same scenario and the same host list, then
builds only its share: node ``i`` goes to host ``i mod N`` (round-robin, as the nodes are
listed), and the world outside the cluster (external network, router, clients, cloud load
balancer) to the first host. Nothing else has to be agreed at run time, because every address
and MAC comes from the plan.

The node network is one L2 segment stretched across the machines: each machine's
``<lab>__net`` bridge gets a VXLAN port, ``trunk0`` (VNI :data:`TRUNK_VNI`, UDP
:data:`TRUNK_PORT`), whose socket lives on the machine's own network and floods to the
other hosts (head-end replication), the way containerlab joins multi-host labs. A packet
from a pod to a pod on another machine is therefore VXLAN twice: flannel's (node to node,
8472) inside the trunk's (host to host, 4789). The trunk costs 50 bytes, so the node
network's MTU is the machines' link MTU minus 50 when that is smaller than ``cluster.mtu``
(flannel derives the pod MTU from the node's interface MTU the same way).

Pure: unit tested without root; the realizer (:mod:`netns_lab.realize.network`) follows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from ipaddress import IPv4Address

from netns_lab.controllers.topology import VXLAN_OVERHEAD, HostPlan, Topology, pod_mtu
from netns_lab.errors import ScenarioError

TRUNK_VNI = 2
TRUNK_PORT = 4789  # IANA's VXLAN port; flannel's node-to-node tunnel uses 8472, so captures tell them apart
OPTION = "--spread"


def parse_hosts(text: str) -> tuple[IPv4Address, ...]:
    """``192.168.56.11,192.168.56.12``: the machines' addresses, in order."""
    hosts: list[IPv4Address] = []
    for item in (x.strip() for x in text.split(",")):
        try:
            ip = IPv4Address(item)
        except ValueError:
            raise ScenarioError(OPTION, item or "(empty)", "Invalid value: expected comma-separated IPv4 addresses of the machines") from None
        if ip in hosts:
            raise ScenarioError(OPTION, str(ip), "Duplicate value: each machine once")
        if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
            raise ScenarioError(OPTION, str(ip), "Invalid value: a machine's address on the network between the machines")
        hosts.append(ip)
    if len(hosts) < 2:
        raise ScenarioError(OPTION, text, "Invalid value: a spread lab needs at least two machines")
    return tuple(hosts)


def spread(topo: Topology, hosts: Sequence[IPv4Address], here: IPv4Address, link_mtu: int) -> Topology:
    """``topo`` with its nodes placed on ``hosts`` and this process's host set to ``here``."""
    if here not in hosts:
        raise ScenarioError(OPTION, ",".join(map(str, hosts)), f"Invalid value: this machine ({here}) is not in the list")
    if topo.uses_bgp:  # one supervisor runs every BIRD of the lab; its sessions would cross the trunk
        raise ScenarioError(OPTION, ",".join(map(str, hosts)), "Forbidden: a lab with BGP (cluster.network or "
                                                               "cluster.external.loadBalancer bgp) runs on one machine")
    if len(hosts) > len(topo.nodes):
        raise ScenarioError(
            OPTION, ",".join(map(str, hosts)),
            f"Invalid value: {len(hosts)} machines for {len(topo.nodes)} nodes; every machine needs a node (cluster.nodes)",
        )
    mtu = min(topo.underlay_mtu, link_mtu - VXLAN_OVERHEAD)
    nodes = tuple(dataclasses.replace(n, host=n.index % len(hosts)) for n in topo.nodes)
    return dataclasses.replace(
        topo,
        nodes=nodes,
        hosts=tuple(HostPlan(f"host-{i + 1}", ip) for i, ip in enumerate(hosts)),
        host=list(hosts).index(here),
        underlay_mtu=mtu,
        pod_mtu=pod_mtu(topo.network, mtu, topo.node_cidr.version),
    )


def host_of(topo: Topology, node: str) -> HostPlan:
    return topo.hosts[topo.node(node).host]


__all__ = ["TRUNK_PORT", "TRUNK_VNI", "parse_hosts", "spread", "host_of"]
