"""An IPv6-only lab (cluster.ipFamily: ipv6) built for real: the promises, Services of every
type, DNS and the world outside in IPv6 only, and VXLAN over an IPv6 underlay (70 bytes of
headers: a full-size pod packet crosses whole, one byte more is refused)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from netns_lab.controllers.topology import VXLAN_PORT
from netns_lab.lab import Lab
from netns_lab.probes.capture import Capture
from netns_lab.probes.mtu import probe_mtu
from tests.conftest import ROOT

IPV6 = os.path.join(ROOT, "scenarios", "ipv6.yaml")
pytestmark = pytest.mark.root


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
@pytest.mark.parametrize("network", ["vxlan", "host-gw"])
def test_the_ipv6_scenario_passes(network: str, mode: str) -> None:
    """Its 14 checks: the three promises, ClusterIP over TCP and UDP, NodePort and
    LoadBalancer from outside, no ping6 answer from a ClusterIP, AAAA, a pod IP useless outside."""
    invoke = os.path.join(os.path.dirname(sys.executable), "invoke")
    proc = subprocess.run([invoke, "run-scenario", "ipv6", "--set", f"cluster.network={network}", "--set", f"cluster.proxyMode={mode}",
                           "--set", f"name=v6-{network[:4]}-{mode[:3]}"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pod-to-pod matrix: 12/12 pairs connected, source IP preserved in 12/12" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].endswith("(all passed)")


def test_vxlan_over_an_ipv6_underlay(lab_factory) -> None:  # type: ignore[no-untyped-def]
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.vxlan import VXLAN

    lab: Lab = lab_factory(IPV6)
    topo = lab.topology
    src, dst = topo.pod("client-1"), topo.pod("web-2")
    src_node, dst_node = topo.node(src.node), topo.node(dst.node)
    assert lab.addresses("pod/client-1") == [str(src.ip)] and src.ip.version == 6
    with Capture(topo.underlay_netns, src_node.uplink) as cap:
        assert lab.connect("pod/client-1", "pod/web-2", 9376, "udp").result == "ok"
    outer = [p for p in cap.packets() if p.haslayer(VXLAN)]
    request = next(p for p in outer if p[VXLAN].payload[IPv6].src == str(src.ip))
    assert isinstance(request.payload, IPv6)  # the underlay itself is IPv6
    assert (request.payload.src, request.payload.dst) == (str(src_node.ip), str(dst_node.ip))
    assert request[UDP].dport == VXLAN_PORT and request[VXLAN].payload[IPv6].dst == str(dst.ip)
    assert topo.pod_mtu == topo.underlay_mtu - 70
    full = probe_mtu(src.netns, str(dst.ip), 9376, topo.pod_mtu)
    assert full.result == "ok" and full.detail.startswith("web-2"), full
    over = probe_mtu(src.netns, str(dst.ip), 9376, topo.pod_mtu + 1)
    assert over.result == "refused" and over.path_mtu == topo.pod_mtu, over


def test_a_full_sync_keeps_every_pod_and_cluster_dns(lab_factory) -> None:  # type: ignore[no-untyped-def]
    """`invoke reconcile` on an IPv6 lab finds every sandbox made (its IPv6 address is there)
    and remakes nothing: pods keep running and cluster DNS keeps answering."""
    from netns_lab.probes.resolve import resolve

    lab: Lab = lab_factory(IPV6)
    invoke = os.path.join(os.path.dirname(sys.executable), "invoke")
    proc = subprocess.run([invoke, "reconcile", lab.name], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sandbox on" not in proc.stdout, proc.stdout  # no pod made again
    answer = resolve(lab.netns_of("pod/client-1"), "web.default.svc.cluster.local", "AAAA")
    assert answer.result == "ok" and answer.answers == (lab.ip_of("service/web"),), answer


def test_udp_over_ipv6_survives_a_backend_swap_in_an_ipv6_lab(lab_factory) -> None:  # type: ignore[no-untyped-def]
    """The primary (IPv6) proxier deletes the stale IPv6 conntrack entry of a UDP flow whose
    only backend was replaced: the same flow reaches the new pod."""
    from tests.test_conformance import flow_follows_backend_swap

    lab: Lab = lab_factory(IPV6)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "swap-a", "labels": {"swap": "v6"}},
           "spec": {"nodeName": "node-2", "containers": [{"name": "s", "image": "netexec", "ports": [{"containerPort": 9376, "protocol": "UDP"}]}]}}
    lab.apply(pod)
    lab.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "swap"},
               "spec": {"selector": {"swap": "v6"}, "ports": [{"port": 80, "targetPort": 9376, "protocol": "UDP"}]}})
    try:
        flow_follows_backend_swap(lab, "pod/client-1", lab.ip_of("service/swap"), 80, pod, "swap-b")
    finally:
        lab.delete("pod/swap-b", "service/swap", grace_period=0)
