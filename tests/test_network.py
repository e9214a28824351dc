"""The pod network, built for real, in both modes: reachability, no NAT, encapsulation, MTU.

Every assertion here is about packets that crossed real namespaces: the server's view of
the client comes from netexec's socket, the encapsulation from an AF_PACKET capture on
the node network.
"""

from __future__ import annotations

import os

import pytest

from netns_lab.controllers.topology import VXLAN_PORT
from netns_lab.lab import Lab
from netns_lab.probes.capture import Capture
from netns_lab.probes.mtu import probe_mtu
from tests.conftest import ROOT

THREE = os.path.join(ROOT, "tests", "scenarios", "three-nodes.yaml")
MODES = ["vxlan", "host-gw"]
pytestmark = pytest.mark.root


@pytest.fixture(params=MODES)
def lab3(request, lab_factory) -> Lab:  # type: ignore[no-untyped-def]
    """3 nodes, 6 pods spread round-robin, in each network mode."""
    return lab_factory(THREE, cluster__network=request.param)


def test_full_pod_matrix_across_three_nodes_without_nat(lab3: Lab) -> None:
    assert {p.node for p in lab3.topology.pods} == {"node-1", "node-2", "node-3"}
    for protocol in ("tcp", "udp"):
        report = lab3.matrix("pod-to-pod", protocol)
        assert len(report.pairs) == 6 * 5
        assert report.ok, [p.describe() for p in report.failures]
        for pair in report.pairs:  # the server saw exactly the client pod's own IP
            src = lab3.topology.pod(pair.src.split("/", 1)[1])
            assert pair.result.client_ip == str(src.ip)
            assert pair.result.served_by == pair.dst.rsplit("/", 1)[1]
    same = [p for p in report.pairs if lab3.topology.pod(p.src[4:]).node == lab3.topology.pod(p.dst[4:]).node]
    assert same and len(same) < len(report.pairs)  # both same-node and cross-node pairs ran


def test_nodes_and_pods_reach_each_other_without_nat(lab3: Lab) -> None:
    for kind in ("node-to-pod", "pod-to-node"):
        report = lab3.matrix(kind)
        assert len(report.pairs) == 3 * 6
        assert report.ok, [p.describe() for p in report.failures]


def test_pod_sees_its_own_ip_as_peers_do(lab3: Lab) -> None:
    for pod in lab3.topology.pods:
        assert lab3.addresses(f"pod/{pod.key}") == [str(pod.ip)]
    r = lab3.connect("pod/pod-0", "pod/pod-1", 8001)
    assert r.result == "ok" and [r.client_ip] == lab3.addresses("pod/pod-0")


def _cross_node_pair(lab: Lab):  # type: ignore[no-untyped-def]
    pods = lab.topology.pods
    src = pods[0]
    dst = next(p for p in pods if p.node != src.node)
    return src, dst


def test_vxlan_encapsulation_on_the_underlay(lab_factory) -> None:  # type: ignore[no-untyped-def]
    from scapy.layers.inet import IP, UDP
    from scapy.layers.vxlan import VXLAN

    lab = lab_factory(THREE, cluster__network="vxlan")
    src, dst = _cross_node_pair(lab)
    src_node, dst_node = lab.topology.node(src.node), lab.topology.node(dst.node)
    with Capture(lab.topology.underlay_netns, src_node.uplink) as cap:
        r = lab.connect(f"pod/{src.key}", f"pod/{dst.key}", dst.ports[0][0], "udp")
    assert r.result == "ok"
    outer = [p for p in cap.packets() if p.haslayer(VXLAN)]
    assert outer, f"no VXLAN packets among {len(cap.frames)} frames"
    request = next(p for p in outer if p[VXLAN].payload[IP].src == str(src.ip))
    assert request[IP].src == str(src_node.ip) and request[IP].dst == str(dst_node.ip)
    assert request[UDP].dport == VXLAN_PORT and request[VXLAN].vni == 1
    inner = request[VXLAN].payload[IP]
    assert (inner.src, inner.dst) == (str(src.ip), str(dst.ip))  # pod IPs unchanged inside
    reply = next(p for p in outer if p[VXLAN].payload[IP].src == str(dst.ip))
    assert (reply[IP].src, reply[IP].dst) == (str(dst_node.ip), str(src_node.ip))


def test_host_gw_has_no_encapsulation(lab_factory) -> None:  # type: ignore[no-untyped-def]
    from scapy.layers.inet import IP, UDP
    from scapy.layers.vxlan import VXLAN

    lab = lab_factory(THREE, cluster__network="host-gw")
    src, dst = _cross_node_pair(lab)
    src_node = lab.topology.node(src.node)
    with Capture(lab.topology.underlay_netns, src_node.uplink) as cap:
        r = lab.connect(f"pod/{src.key}", f"pod/{dst.key}", dst.ports[0][0], "udp")
    assert r.result == "ok"
    packets = [p for p in cap.packets() if p.haslayer(IP)]
    assert not any(p.haslayer(VXLAN) or (p.haslayer(UDP) and p[UDP].dport == VXLAN_PORT) for p in packets)
    direct = [p for p in packets if p[IP].src == str(src.ip) and p[IP].dst == str(dst.ip)]
    assert direct, "the pod's packet should cross the underlay as is"


def test_full_size_packet_crosses_and_one_more_byte_is_refused(lab_factory) -> None:  # type: ignore[no-untyped-def]
    from scapy.layers.inet import IP
    from scapy.layers.vxlan import VXLAN

    lab = lab_factory(THREE, cluster__network="vxlan")
    topo = lab.topology
    assert topo.pod_mtu == topo.underlay_mtu - 50
    src, dst = _cross_node_pair(lab)
    port = dst.ports[0][0]
    with Capture(topo.underlay_netns, topo.node(src.node).uplink) as cap:
        full = probe_mtu(src.netns, str(dst.ip), port, topo.pod_mtu)
    assert full.result == "ok", full
    assert full.detail.startswith(dst.name)  # netexec on the other node answered
    big = [p for p in cap.packets() if p.haslayer(VXLAN) and p[VXLAN].payload[IP].len == topo.pod_mtu]
    assert big and big[0][IP].len == topo.underlay_mtu  # exactly fills the underlay
    assert big[0][IP].flags.MF == 0 and big[0][IP].frag == 0  # not fragmented
    over = probe_mtu(src.netns, str(dst.ip), port, topo.pod_mtu + 1)
    assert over.result == "refused" and "EMSGSIZE" in over.detail + "fragmentation", over
    # From a node (1500-byte eth0) towards a remote pod the overlay still refuses, not drops.
    node_over = probe_mtu(topo.node(src.node).netns, str(dst.ip), port, topo.pod_mtu + 1)
    assert node_over.result == "refused", node_over
    node_full = probe_mtu(topo.node(src.node).netns, str(dst.ip), port, topo.pod_mtu)
    assert node_full.result == "ok", node_full


def test_ping_and_refused_port(lab3: Lab) -> None:
    assert lab3.ping("pod/pod-0", "pod/pod-5").result == "reply"
    assert lab3.ping("pod/pod-0", "10.244.200.9").result == "no-reply"
    r = lab3.connect("pod/pod-0", "pod/pod-5", 9)
    assert r.result == "refused" and r.elapsed < 1.0


def test_exec_runs_a_real_command_in_a_pod(lab3: Lab) -> None:
    out = lab3.exec("pod/pod-2", ["ip", "-4", "-o", "addr", "show", "dev", "eth0"], check=True).stdout
    assert str(lab3.topology.pod("pod-2").ip) in out
    mtu = lab3.exec("pod/pod-2", ["cat", "/sys/class/net/eth0/mtu"], check=True).stdout.strip()
    assert int(mtu) == lab3.topology.pod_mtu


def test_invoke_capture_writes_a_pcap_scapy_reads(lab_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys
    import threading

    from scapy.layers.vxlan import VXLAN
    from scapy.utils import rdpcap

    lab = lab_factory(THREE, cluster__network="vxlan")
    src, dst = _cross_node_pair(lab)
    node = lab.topology.node(src.node)
    out = tmp_path / "cap.pcap"

    def traffic() -> None:
        import time

        time.sleep(1.0)
        for _ in range(5):
            lab.connect(f"pod/{src.key}", f"pod/{dst.key}", dst.ports[0][0], "udp")

    t = threading.Thread(target=traffic)
    t.start()
    invoke = os.path.join(os.path.dirname(sys.executable), "invoke")
    proc = subprocess.run([invoke, "capture", lab.name, f"underlay:{node.uplink}", "--filter", "udp port 8472",
                           "--count", "4", "--seconds", "8", "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    t.join()
    assert proc.returncode == 0, proc.stderr
    assert "VXLAN" in proc.stdout  # the decoded summary
    packets = rdpcap(str(out))
    assert len(packets) == 4 and all(p.haslayer(VXLAN) for p in packets)  # the BPF filter kept only VXLAN
