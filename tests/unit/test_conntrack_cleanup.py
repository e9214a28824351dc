"""kube-proxy's stale UDP conntrack cleanup, the pure filter (pkg/proxy/conntrack/cleanup.go)."""

from __future__ import annotations

from netns_lab.proxy import conntrack
from tests.unit.test_proxy_render import ep, sp

LISTING = """\
udp      17 29 src=10.244.0.5 dst=10.96.0.10 sport=41234 dport=53 src=10.244.1.3 dst=10.244.0.5 sport=53 dport=41234 [ASSURED] mark=0 use=1
udp      17 25 src=10.244.0.5 dst=10.96.0.10 sport=41235 dport=53 src=10.244.1.9 dst=10.244.0.5 sport=53 dport=41235 mark=0 use=1
udp      17 28 src=10.244.0.5 dst=10.96.0.20 sport=5000 dport=80 [UNREPLIED] src=10.96.0.20 dst=10.244.0.5 sport=80 dport=5000 mark=0 use=1
udp      17 28 src=10.0.0.9 dst=10.0.0.2 sport=6000 dport=30053 src=10.244.1.9 dst=10.0.0.2 sport=53 dport=6000 mark=0 use=1
udp      17 28 src=10.244.0.5 dst=10.244.1.9 sport=7000 dport=53 src=10.244.1.9 dst=10.244.0.5 sport=53 dport=7000 mark=0 use=1
"""


def test_entries_no_serving_endpoint_explains_are_stale() -> None:
    entries = conntrack.parse(LISTING)
    assert entries[0] == conntrack.Entry("10.96.0.10", 53, "10.244.1.3")
    assert entries[2] == conntrack.Entry("10.96.0.20", 80, "10.96.0.20")  # never DNATed: no endpoint then
    dns = sp("dns", "10.96.0.10", 53, (ep("d1", "10.244.1.3", "node-2", 53),), protocol="UDP", node_port=30053)
    late = sp("late", "10.96.0.20", 80, (ep("l1", "10.244.0.7", "node-1", 80),), protocol="UDP")
    tcp = sp("web", "10.96.0.30", 80, ())
    assert conntrack.stale(entries, (dns, late, tcp)) == [
        ("ip", "10.96.0.10", "10.244.1.9"),   # DNATed to an endpoint that is gone
        ("ip", "10.96.0.20", "10.96.0.20"),   # sent while the Service had no endpoint: blackholed until deleted
        ("port", "30053", "10.244.1.9"),      # the NodePort flow to the gone endpoint
    ]  # the pod-to-pod flow (not a Service IP) and the live endpoint's flow stay


def test_a_terminating_but_serving_endpoint_keeps_its_flows() -> None:
    from dataclasses import replace

    entries = conntrack.parse(LISTING)
    serving = replace(ep("d1", "10.244.1.9", "node-2", 53), ready=False, terminating=True)
    dns = sp("dns", "10.96.0.10", 53, (ep("d0", "10.244.1.3", "node-2", 53), serving), protocol="UDP")
    assert conntrack.stale(entries, (dns,)) == []


def test_a_removed_udp_port_takes_its_flows_with_it() -> None:
    """kube-proxy's DeletedUDPClusterIPs: the Service IP lost its UDP port (its TCP port stays):
    every UDP entry to that IP goes, even one its old endpoint answered."""
    entries = conntrack.parse(LISTING)
    tcp_only = sp("dns", "10.96.0.10", 53, (ep("d1", "10.244.1.3", "node-2", 53),))
    assert conntrack.stale(entries, (tcp_only,)) == []
    assert conntrack.stale(entries, (tcp_only,), frozenset({"10.96.0.10"})) == [
        ("ip", "10.96.0.10", "10.244.1.3"), ("ip", "10.96.0.10", "10.244.1.9")]
