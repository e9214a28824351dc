"""A dual-stack lab (cluster.ipFamily: dual) built for real: both families on the same
links, the promises in each, neighbour discovery, IPv6 over the IPv4 VXLAN underlay, MTU.

One lab per network mode, shared by the module's checks.
"""

from __future__ import annotations

import os

import pytest

from netns_lab.controllers.topology import VXLAN_PORT
from netns_lab.lab import Lab
from netns_lab.probes.capture import Capture
from netns_lab.probes.mtu import probe_mtu
from tests.conftest import ROOT

DUAL = os.path.join(ROOT, "scenarios", "dual-stack.yaml")
pytestmark = pytest.mark.root


@pytest.fixture(params=["vxlan", "host-gw"])
def lab(request, lab_factory) -> Lab:  # type: ignore[no-untyped-def]
    return lab_factory(DUAL, cluster__network=request.param)


def test_every_pod_and_node_has_one_address_per_family(lab: Lab) -> None:
    for pod in lab.topology.pods:
        assert lab.addresses(f"pod/{pod.key}") == [str(pod.ip)]
        assert lab.addresses(f"pod/{pod.key}", 6) == [str(pod.ip6)]  # global scope: link-local aside
    node = lab.topology.nodes[0]
    assert {str(node.ip6), str(node.gateway6)} <= set(lab.addresses(f"node/{node.name}", 6))


@pytest.mark.parametrize("kind", ["pod-to-pod", "node-to-pod", "pod-to-node"])
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_the_promises_hold_in_each_family(lab: Lab, kind: str, protocol: str) -> None:
    from netns_lab.probes.promises import matrix

    for family in (4, 6):
        report = matrix(lab.topology, kind, protocol, family=family)
        assert report.ok, (family, [p.describe() for p in report.failures])
        for pair in report.pairs:  # each server saw an address of the family it was reached on
            assert (":" in str(pair.result.client_ip)) == (family == 6), pair.describe()
        if kind == "pod-to-pod":  # exactly the client pod's own address of that family
            for pair in report.pairs:
                src = lab.topology.pod(pair.src.split("/", 1)[1])
                assert pair.result.client_ip == str(src.ip6 if family == 6 else src.ip)


def test_same_node_pods_find_each_other_by_neighbour_discovery(lab: Lab) -> None:
    """The plan installs neighbours towards gateways and other nodes; between two pods of one
    node nothing is installed, so this answer needs ICMPv6 neighbour solicitation/advert."""
    a, b = lab.topology.pod("client-1"), lab.topology.pod("web-1")
    assert a.node == b.node
    assert lab.ping("pod/client-1", "pod/web-1", family=6).result == "reply"
    neigh = lab.exec("pod/client-1", ["ip", "-6", "neigh", "show", str(b.ip6)], check=True).stdout
    assert "lladdr " + b.mac in neigh and "PERMANENT" not in neigh, neigh


def test_ipv6_crosses_the_ipv4_vxlan_underlay_unchanged(lab_factory) -> None:  # type: ignore[no-untyped-def]
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.vxlan import VXLAN

    lab = lab_factory(DUAL, cluster__network="vxlan")
    src, dst = lab.topology.pod("client-1"), lab.topology.pod("web-2")
    src_node, dst_node = lab.topology.node(src.node), lab.topology.node(dst.node)
    with Capture(lab.topology.underlay_netns, src_node.uplink) as cap:
        r = lab.connect("pod/client-1", "pod/web-2", 9376, "udp", family=6)
    assert r.result == "ok" and r.client_ip == str(src.ip6)
    outer = [p for p in cap.packets() if p.haslayer(VXLAN) and p[VXLAN].payload.haslayer(IPv6)]
    request = next(p for p in outer if p[VXLAN].payload[IPv6].src == str(src.ip6))
    assert (request[IP].src, request[IP].dst) == (str(src_node.ip), str(dst_node.ip))  # IPv4 outside
    assert request[UDP].dport == VXLAN_PORT
    assert request[VXLAN].payload[IPv6].dst == str(dst.ip6)  # the pods' IPv6 addresses inside


def test_host_gw_routes_ipv6_bare(lab_factory) -> None:  # type: ignore[no-untyped-def]
    from scapy.layers.inet6 import IPv6
    from scapy.layers.vxlan import VXLAN

    lab = lab_factory(DUAL, cluster__network="host-gw")
    src, dst = lab.topology.pod("client-1"), lab.topology.pod("web-2")
    with Capture(lab.topology.underlay_netns, lab.topology.node(src.node).uplink) as cap:
        assert lab.connect("pod/client-1", "pod/web-2", 9376, "udp", family=6).result == "ok"
    packets = cap.packets()
    assert not any(p.haslayer(VXLAN) for p in packets)
    assert any(p.haslayer(IPv6) and p[IPv6].src == str(src.ip6) and p[IPv6].dst == str(dst.ip6) for p in packets)


def test_a_full_size_ipv6_packet_crosses_and_one_more_byte_is_refused(lab: Lab) -> None:
    topo = lab.topology
    src, dst = topo.pod("client-1"), topo.pod("web-2")
    full = probe_mtu(src.netns, str(dst.ip6), 9376, topo.pod_mtu)
    assert full.result == "ok" and full.detail.startswith("web-2"), full
    over = probe_mtu(src.netns, str(dst.ip6), 9376, topo.pod_mtu + 1)
    assert over.result == "refused" and over.path_mtu == topo.pod_mtu, over


def test_the_world_outside_has_ipv6_too(lab: Lab) -> None:
    node = lab.topology.nodes[1]
    r = lab.connect("external", f"node/{node.name}", 10250, family=6)
    assert r.result == "ok" and r.client_ip == str(lab.topology.clients[0].ip6)
    # and, as in IPv4, a pod address means nothing outside the cluster
    assert lab.connect("external", "pod/web-1", 9376, timeout=1.0, family=6).result != "ok"
