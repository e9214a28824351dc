"""kube-proxy's ipvs mode for real. These tests need IP_VS and dummy interfaces: on a kernel
without them they skip with that reason, and `invoke test-vm` (CI does) runs them as root in
a VM booted from Debian's stock kernel."""

from __future__ import annotations

import os
import re
import time
from collections import Counter

import pytest

from netns_lab.errors import RealizeError
from netns_lab.lab import Lab
from netns_lab.probes.capture import Capture
from netns_lab.probes.checks import run_checks
from netns_lab.realize.ipvs import ipvs_available
from tests.conftest import ROOT

CLUSTERIP = os.path.join(ROOT, "scenarios", "clusterip.yaml")
NODEPORT = os.path.join(ROOT, "scenarios", "nodeport.yaml")
LOADBALANCER = os.path.join(ROOT, "scenarios", "loadbalancer.yaml")
EXTERNAL_IPS = os.path.join(ROOT, "scenarios", "external-ips.yaml")
CHANGES = os.path.join(ROOT, "scenarios", "changes.yaml")  # run-time changes: its steps apply, delete and label
DUAL = os.path.join(ROOT, "scenarios", "dual-stack.yaml")
IPV6 = os.path.join(ROOT, "scenarios", "ipv6.yaml")
BGP = os.path.join(ROOT, "scenarios", "bgp.yaml")


def _ipvsadm(lab: Lab, node: str) -> dict[str, set[str]]:
    """``ipvsadm -Ln`` in the node's namespace, as {"TCP 10.96.0.2:80": {"10.244.0.2:9376", ...}}."""
    out = lab.exec(f"node/{node}", ["ipvsadm", "-Ln"], check=True).stdout
    table: dict[str, set[str]] = {}
    current = ""
    for line in out.splitlines():
        m = re.match(r"^(TCP|UDP)\s+(\S+)\s+(\S+)", line)
        if m:
            current = f"{m.group(1)} {m.group(2)}"
            table[current] = set()
        m = re.match(r"^\s+->\s+(\d+\.\d+\.\d+\.\d+:\d+|\[[0-9a-f:]+\]:\d+)\s+Masq", line)
        if m and current:
            table[current].add(m.group(1))
    return table


@pytest.mark.root
@pytest.mark.skipif(ipvs_available(), reason="this kernel has IP_VS: the refusal cannot be shown here")
def test_ipvs_without_ip_vs_stops_before_building_anything() -> None:
    lab = Lab.from_file(CLUSTERIP, {"name": "no-ipvs", "cluster.proxyMode": "ipvs"})
    with pytest.raises(RealizeError, match="no IP_VS .*invoke test-vm"):
        lab.up()
    assert not any(os.path.exists(f"/run/netns/{n}") for n in lab.topology.namespaces)
    assert not os.path.exists("/run/netns-lab/no-ipvs.json")




@pytest.fixture
def ipvs_lab(lab_factory) -> Lab:  # type: ignore[no-untyped-def]
    return lab_factory(CLUSTERIP, cluster__proxyMode="ipvs")


@pytest.mark.root
@pytest.mark.ipvs
@pytest.mark.parametrize("path", [CLUSTERIP, NODEPORT, LOADBALANCER, EXTERNAL_IPS, CHANGES, IPV6],
                         ids=["clusterip", "nodeport", "loadbalancer", "external-ips", "changes", "ipv6"])
def test_scenario_checks_pass_in_ipvs_mode(lab_factory, path: str) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory(path, cluster__proxyMode="ipvs")
    assert lab.scenario is not None
    outcomes = run_checks(lab, lab.scenario.checks)
    assert all(o.passed for o in outcomes), [(o.check.name, o.summary) for o in outcomes if not o.passed]


@pytest.mark.root
@pytest.mark.ipvs
def test_ipvsadm_shows_exactly_the_model(ipvs_lab: Lab) -> None:
    for node in ipvs_lab.topology.nodes:
        table = _ipvsadm(ipvs_lab, node.name)
        expected = {f"{p.protocol} {p.cluster_ip}:{p.port}": {f"{e.ip}:{e.port}" for e in p.endpoints if e.ready}
                    for p in ipvs_lab.service_ports()}
        assert table == expected
        addrs = ipvs_lab.exec(f"node/{node.name}", ["ip", "-4", "-o", "addr", "show", "dev", "kube-ipvs0"], check=True).stdout
        assert {p.cluster_ip for p in ipvs_lab.service_ports()} == set(re.findall(r"inet (\S+)/32", addrs))


@pytest.mark.root
@pytest.mark.ipvs
def test_endpoint_change_updates_real_servers_in_place(ipvs_lab: Lab) -> None:
    lab = ipvs_lab  # shared with the module's other tests: web-2 is made ready again at the end
    try:
        vip = lab.ip_of("service/my-service")
        for _ in range(12):
            assert lab.connect("pod/client-1", vip, 80).result == "ok"

        def conns(at_least: int = 0) -> int:
            # the virtual service's connection counter; the kernel's estimator folds the
            # per-CPU counters in every ~2 s, so wait for it
            deadline = time.monotonic() + 15
            while True:
                out = lab.exec("node/node-1", ["ipvsadm", "-Ln", "--stats", "-t", f"{vip}:80"], check=True).stdout
                value = int(out.splitlines()[3].split()[2])
                if value >= at_least or time.monotonic() > deadline:
                    return value
                time.sleep(0.5)

        before = conns(at_least=1)
        assert before >= 1
        lab.set_ready("web-2", False)
        assert _ipvsadm(lab, "node-1")[f"TCP {vip}:80"] == {f"{lab.ip_of('pod/web-1')}:9376", f"{lab.ip_of('pod/web-3')}:9376"}
        assert conns(at_least=before) >= before, "the virtual service was recreated (its counters reset to 0)"
        served = Counter(lab.connect("pod/client-1", vip, 80).served_by for _ in range(20))
        assert set(served) == {"web-1", "web-3"}
    finally:
        lab.set_ready("web-2", True)


@pytest.mark.root
@pytest.mark.ipvs
@pytest.mark.parametrize("legacy", [False, True], ids=["default", "legacy-ping"])
def test_vip_ping_default_and_legacy(lab_factory, legacy: bool) -> None:  # type: ignore[no-untyped-def]
    from scapy.layers.inet import ICMP, IP

    # the default is the module's shared lab; only the legacy behaviour needs a lab of its own
    lab = lab_factory(CLUSTERIP, cluster__proxyMode="ipvs", **({"cluster__ipvsLegacyPing": True} if legacy else {}))
    vip = lab.ip_of("service/my-service")
    with Capture(lab.topology.pod("client-1").netns, "eth0") as cap:
        res = lab.ping("pod/client-1", "service/my-service")
    replies = [p for p in cap.packets() if p.haslayer(ICMP) and p[IP].src == vip and p[ICMP].type == 0]
    if legacy:
        assert res.result == "reply" and replies, "pre-2022 ipvs: the VIP on kube-ipvs0 answered ping"
    else:
        assert res.result == "no-reply" and not replies


@pytest.mark.root
@pytest.mark.ipvs
def test_affinity_is_ipvs_persistence() -> None:
    text = open(CLUSTERIP).read().replace(
        "    spec:\n      selector: {app: web}\n",
        "    spec:\n      selector: {app: web}\n      sessionAffinity: ClientIP\n      sessionAffinityConfig: {clientIP: {timeoutSeconds: 120}}\n",
    )
    path = os.path.join("/tmp", "netns-lab-ipvs-affinity.yaml")
    with open(path, "w") as fh:
        fh.write(text)
    with Lab.from_file(path, {"name": "ipvs-aff", "cluster.proxyMode": "ipvs"}) as lab:
        vip = lab.ip_of("service/my-service")
        out = lab.exec("node/node-1", ["ipvsadm", "-Ln", "-t", f"{vip}:80"], check=True).stdout
        assert "persistent 120" in out
        served = Counter(lab.connect("pod/client-2", vip, 80).served_by for _ in range(15))
        assert len(served) == 1


@pytest.mark.root
@pytest.mark.ipvs
def test_scheduler_from_the_scenario(lab_factory) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory(NODEPORT, cluster__proxyMode="ipvs", cluster__ipvsScheduler="lc")
    out = lab.exec("node/node-1", ["ipvsadm", "-Ln"], check=True).stdout
    assert re.search(r"TCP\s+10\.96\.0\.2:80 lc", out), out
    # NodePort virtual services live on the node's own IP
    assert re.search(rf"TCP\s+{re.escape(lab.ip_of('node/node-1'))}:30080 lc", out), out


@pytest.mark.root
@pytest.mark.ipvs
def test_trace_names_the_ipvs_virtual_and_real_server(ipvs_lab: Lab) -> None:
    from netns_lab.probes.trace import trace

    t = trace(ipvs_lab, "pod/client-1", "my-service:80")
    assert t.result == "ok"
    node = ipvs_lab.topology.pod("client-1").node
    conn = t.ipvs[node]  # e.g. "TCP SYN_RECV 10.244.0.3:45678 10.96.0.2:80 -> 10.244.1.2:9376"
    assert f" {ipvs_lab.ip_of('service/my-service')}:80 -> " in conn
    assert t.dnat == conn.split()[-1] == f"{ipvs_lab.ip_of('pod/' + t.served_by)}:9376"  # type: ignore[operator]


@pytest.mark.root
@pytest.mark.ipvs
def test_dual_stack_in_ipvs_mode(lab_factory) -> None:  # type: ignore[no-untyped-def]
    """A dual-stack lab in ipvs mode: one proxier per family (IPv6 virtual servers, KUBE-6-
    ipsets, ip6tables glue, IPv6 VIPs on kube-ipvs0 next to the IPv4 ones); every check of
    scenarios/dual-stack.yaml passes (both families' ClusterIPs, NodePort and LB over IPv6
    from outside, ping6 to a VIP unanswered), and ipvsadm shows each family's model."""
    lab = lab_factory(DUAL, cluster__proxyMode="ipvs")
    assert lab.scenario is not None
    outcomes = run_checks(lab, lab.scenario.checks)
    assert all(o.passed for o in outcomes), [(o.check.name, o.summary) for o in outcomes if not o.passed]
    from netns_lab.model import hostport
    from netns_lab.proxy.types import service_ports

    six = service_ports(lab.services, lab.pods, lab.topology, family=6)
    expected = {f"{p.protocol} {hostport(p.cluster_ip, p.port)}": {hostport(e.ip, e.port) for e in p.endpoints if e.ready} for p in six}
    table = _ipvsadm(lab, "node-1")
    assert expected and all(table.get(k) == v for k, v in expected.items()), (expected, table)
    four = {f"{p.protocol} {p.cluster_ip}:{p.port}" for p in lab.service_ports()}
    assert four <= set(table)  # the IPv4 proxier's virtual servers are still there
    addrs = lab.exec("node/node-1", ["ip", "-o", "addr", "show", "dev", "kube-ipvs0"], check=True).stdout
    assert {p.cluster_ip for p in six} <= set(re.findall(r"inet6 (\S+)/128", addrs))
    assert {p.cluster_ip for p in lab.service_ports()} <= set(re.findall(r"inet (\S+)/32", addrs))
    sets = lab.exec("node/node-1", ["ipset", "list", "-n"], check=True).stdout.split()
    assert "KUBE-6-CLUSTER-IP" in sets and "KUBE-CLUSTER-IP" in sets


@pytest.mark.root
@pytest.mark.ipvs
def test_bgp_underlay_and_load_balancing_in_ipvs_mode(lab_factory) -> None:  # type: ignore[no-untyped-def]
    """scenarios/bgp.yaml in ipvs mode: the three promises over BIRD's routes, pods reached
    from outside without NAT, ClusterIPs not, LB IPs announced by BGP and served by IPVS
    (virtual servers for them on every node; Local ones only where an endpoint is)."""
    from netns_lab.realize import bgp as birds

    lab = lab_factory(BGP, cluster__proxyMode="ipvs")
    assert lab.scenario is not None
    outcomes = run_checks(lab, lab.scenario.checks)
    assert all(o.passed for o in outcomes), [(o.check.name, o.summary) for o in outcomes if not o.passed]
    routes = birds.kernel_routes(lab.topology.router_netns)
    lb, local = lab.service("web-lb").load_balancer_ips[0], lab.service("web-local").load_balancer_ips[0]
    assert routes[f"{lb}/32"] == frozenset(n.ip for n in lab.topology.nodes)
    assert routes[f"{local}/32"] == frozenset(lab.topology.node(n).ip for n in ("node-1", "node-2"))
    table = _ipvsadm(lab, "node-3")
    assert f"TCP {lb}:80" in table and f"TCP {local}:80" in table, table
