"""Traffic from outside the cluster, with real packets: the emulated cloud load balancer and
its health checks, kube-proxy's healthCheckNodePort, a node going down, externalIPs.

The scenario checks themselves (LB IP, NodePort via the router, source ranges, no ClusterIP
or pod IP from outside) run in tests/test_scenarios.py in both modes.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import time
from dataclasses import dataclass

import pytest

from netns_lab.lab import Lab
from netns_lab.probes.connect import Probe, probe_one, run_probes
from tests.conftest import ROOT

pytestmark = pytest.mark.root
LB = os.path.join(ROOT, "scenarios", "loadbalancer.yaml")
STEP = 0.05  # a new connection every 50 ms: 20 per second
PROBE_TIMEOUT = 0.3


@dataclass
class Attempt:
    start: float
    result: str
    served_by: str | None
    client_ip: str | None


def stream(lab: Lab, target: str, port: int, seconds: float, during: float, action) -> tuple[list[Attempt], float]:  # type: ignore[no-untyped-def]
    """New connections from ``external`` every STEP for ``seconds``; ``action()`` runs at ``during``.
    Returns the attempts and the time the action finished."""
    src, dst = lab.netns_of("external"), lab.ip_of(target)
    out: list[tuple[float, concurrent.futures.Future]] = []  # type: ignore[type-arg]
    acted = 0.0
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        i = 0
        while (now := time.monotonic()) - t0 < seconds:
            if not acted and now - t0 >= during:
                action()
                acted = time.monotonic()
            out.append((time.monotonic(), pool.submit(probe_one, src, dst, port, "tcp", PROBE_TIMEOUT)))
            i += 1
            time.sleep(max(0.0, t0 + i * STEP - time.monotonic()))
        results = [(start, f.result()) for start, f in out]
    return [Attempt(s, r.result, r.served_by, r.client_ip) for s, r in results], acted


def failure_window(attempts: list[Attempt]) -> float:
    failed = [a.start for a in attempts if a.result != "ok"]
    return max(failed) - min(failed) if failed else 0.0


def wait_round(lab: Lab) -> int:
    """Wait for the cloud LB to finish one more health-check round; returns its number."""
    first = lab.balancer_status().get("round", 0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = lab.balancer_status().get("round", 0)
        if now > first:
            return now
        time.sleep(0.05)
    raise AssertionError("the cloud load balancer did not finish a health-check round")


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_a_node_without_local_endpoints_reaches_its_own_local_policy_lb_ip(lab_factory, mode: str) -> None:  # type: ignore[no-untyped-def]
    """kubernetes#131765: node-3 has no endpoint of web-local (externalTrafficPolicy Local); a
    packet it sends itself to the LB IP is treated as Cluster traffic and delivered, as
    kube-proxy does. In nftables mode that needs v1.34's base chains: the endpoint checks at
    filter priority, after DNAT (with the older pre-DNAT check the node dropped it)."""
    lab = lab_factory(LB, cluster__proxyMode=mode)
    local = lab.service("web-local")
    assert not any(p.node_name == "node-3" and dict(p.labels).get("app") == "web" for p in lab.pods)
    served = {lab.connect("node/node-3", local.load_balancer_ips[0], 80, timeout=2.0).served_by for _ in range(6)}
    assert served <= {"web-1", "web-2"} and served, served


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_lb_ips_come_from_the_pool_and_health_follows_local_endpoints(lab_factory, mode: str) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory(LB, cluster__proxyMode=mode)
    topo = lab.topology
    ips = {s.name: s.load_balancer_ips for s in lab.services if s.type == "LoadBalancer"}
    assert ips == {"web": ("198.51.100.1",), "web-local": ("198.51.100.2",), "web-office": ("198.51.100.3",)}
    local = lab.service("web-local")
    assert local.health_check_node_port is not None and lab.service("web").health_check_node_port is None
    # kube-proxy's healthCheckNodePort, asked from the load balancer's namespace
    probes = [Probe(topo.lb_netns, str(n.ip), local.health_check_node_port, "http", "/healthz") for n in topo.nodes]
    answers = {n.name: r for n, r in zip(topo.nodes, run_probes(probes, timeout=2))}
    assert {k: r.status for k, r in answers.items()} == {"node-1": 200, "node-2": 200, "node-3": 503}
    body = json.loads(answers["node-1"].body)
    assert body == {"service": {"namespace": "default", "name": "web-local"}, "localEndpoints": 1, "serviceProxyHealthy": True}
    wait_round(lab)
    status = lab.balancer_status()["services"]
    assert status["default/web-local"]["healthy"] == ["node-1", "node-2"]
    assert status["default/web"]["healthy"] == ["node-1", "node-2", "node-3"]  # kube-proxy healthz on every node
    # The forwarding is the kernel's: nftables in the load balancer's namespace
    table = subprocess.run(["ip", "netns", "exec", topo.lb_netns, "nft", "list", "table", "ip", "cloud-lb"],
                           capture_output=True, text=True, check=True).stdout
    assert "198.51.100.2 . tcp . 80" in table and "jhash ip saddr . th sport" in table
    # `invoke status` shows status.loadBalancer.ingress
    import io

    from netns_lab.cli import status as status_cmd

    out = io.StringIO()
    status_cmd(out=out)
    assert "LoadBalancer default/web-local: 198.51.100.2 (80/TCP)" in out.getvalue()


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_several_source_ranges_admit_their_clients_and_drop_the_rest(lab_factory, mode: str) -> None:  # type: ignore[no-untyped-def]
    """loadBalancerSourceRanges of several ranges (in nftables mode an anonymous interval set,
    written over netlink): a client in any range connects, one outside is dropped; two
    adjacent ranges (merged into one interval) admit both clients."""
    lab = lab_factory(LB, cluster__proxyMode=mode)
    before = list(lab.service("web-office").load_balancer_source_ranges)
    manifest = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-office"},
                "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 8080, "targetPort": 9376}]}}
    vip = lab.service("web-office").load_balancer_ips[0]

    def admitted(ranges: list[str], want: dict[str, str]) -> dict[str, str]:
        """What each client met with these ranges (an answer waited for 2 s, a drop 1 s)."""
        lab.apply({**manifest, "spec": {**manifest["spec"], "loadBalancerSourceRanges": ranges}})
        return {c: lab.connect(c, vip, 8080, timeout=2.0 if w == "ok" else 1.0).result for c, w in want.items()}

    try:
        for ranges, want in ((["192.0.2.0/24", "203.0.113.10/32", "10.0.0.0/8"], {"external": "ok", "external/partner": "timeout"}),
                             (["203.0.113.11/32", "203.0.113.10/32"], {"external": "ok", "external/partner": "ok"}),
                             (["203.0.113.11/32", "192.0.2.0/24"], {"external": "timeout", "external/partner": "ok"})):
            assert admitted(ranges, want) == want, ranges
    finally:
        lab.apply({**manifest, "spec": {**manifest["spec"], "loadBalancerSourceRanges": before}})


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_deleting_a_nodes_only_endpoint_takes_it_out_within_one_interval(mode: str) -> None:
    """Local policy: the LB learns from the health check that node-2 lost its endpoint; new
    connections fail (dropped by kube-proxy on node-2) for at most one check interval."""
    with Lab.from_file(LB, {"name": f"lbdel-{mode[:3]}", "cluster.proxyMode": mode}) as lab:
        interval = lab.topology.health_check_interval
        wait_round(lab)
        attempts, acted = stream(lab, "loadbalancer/web-local", 80, 5.0, 1.5, lambda: lab.delete("pod/web-2"))
        before = [a for a in attempts if a.start < acted]
        after = [a for a in attempts if a.start >= acted]
        assert all(a.result == "ok" for a in before) and {a.served_by for a in before} == {"web-1", "web-2"}
        assert all(a.client_ip == lab.ip_of("external") for a in attempts if a.result == "ok")  # Local: no SNAT
        window = failure_window(after)
        late = [a for a in after if a.start > acted + interval + 0.2]
        print(f"{mode}: {sum(a.result != 'ok' for a in after)} of {len(after)} new connections failed, "
              f"within {window:.2f} s (interval {interval} s)")
        assert window <= interval + 0.2, window
        assert late and all(a.result == "ok" and a.served_by == "web-1" for a in late)
        assert lab.balancer_status()["services"]["default/web-local"]["healthy"] == ["node-1"]


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_a_node_taken_down_is_routed_around(mode: str) -> None:
    """Cluster policy: node-3's link goes down; its health checks time out, the LB stops using
    it, and connections through the other nodes keep working. The source is SNATed."""
    with Lab.from_file(LB, {"name": f"lbdown-{mode[:3]}", "cluster.proxyMode": mode}) as lab:
        interval = lab.topology.health_check_interval
        wait_round(lab)
        down = lambda: lab.exec("node/node-3", ["ip", "link", "set", "eth0", "down"], check=True)  # noqa: E731
        attempts, acted = stream(lab, "loadbalancer/web", 80, 6.0, 1.5, down)
        before = [a for a in attempts if a.start < acted]
        after = [a for a in attempts if a.start >= acted]
        assert all(a.result == "ok" for a in before)
        # Cluster policy: every connection is SNATed by the node that took it (never the client's IP)
        assert not any(a.client_ip == lab.ip_of("external") for a in attempts if a.result == "ok")
        # health check timeout (half the interval) + one interval bounds the outage of new flows
        window = failure_window(after)
        print(f"{mode}: {sum(a.result != 'ok' for a in after)} of {len(after)} failed within {window:.2f} s")
        assert window <= 1.5 * interval + 0.2, window
        late = [a for a in after if a.start > acted + 1.5 * interval + 0.2]
        assert late and all(a.result == "ok" for a in late)
        assert lab.balancer_status()["services"]["default/web"]["healthy"] == ["node-1", "node-2"]
        checks = lab.balancer_status()["checks"]
        assert "node-3:10256" in checks and checks["node-3:10256"] != "HTTP/1.1 200 OK"


def test_external_ips_in_nftables_mode() -> None:
    from netns_lab.probes.checks import run_checks

    with Lab.from_file(os.path.join(ROOT, "scenarios", "external-ips.yaml"), {"name": "extip-nft", "cluster.proxyMode": "nftables"}) as lab:
        assert lab.scenario is not None
        outcomes = run_checks(lab, lab.scenario.checks)
        assert all(o.passed for o in outcomes), [(o.check.name, o.summary) for o in outcomes if not o.passed]


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_a_node_port_answers_on_localhost_in_iptables_mode_only(lab_factory, mode: str) -> None:  # type: ignore[no-untyped-def]
    """kube-proxy's localhostNodePorts (iptables mode, default true): 127.0.0.1:<nodePort> on a
    node reaches the Service (route_localnet=1 lets the kernel route the DNATed packet, the
    masquerade rule gives it the node's address); nftables mode never serves NodePorts on
    localhost, as upstream."""
    lab = lab_factory(LB, cluster__proxyMode=mode)
    node_port = lab.service("web").ports[0].node_port
    results = [lab.connect("node/node-3", "127.0.0.1", node_port, timeout=2.0 if mode == "iptables" else 1.0) for _ in range(4)]
    if mode == "iptables":
        assert all(r.result == "ok" for r in results), results
        assert {r.served_by for r in results} <= {"web-1", "web-2"}
        # masqueraded to an address of node-3 (the interface toward the pod), never 127.0.0.1
        out = subprocess.run(["ip", "-n", lab.topology.node("node-3").netns, "-j", "addr"], capture_output=True, text=True, check=True).stdout
        own = {a["local"] for link in json.loads(out) for a in link.get("addr_info", []) if not a["local"].startswith("127.")}
        assert {r.client_ip for r in results} <= own, (results, own)
    else:
        assert all(r.result != "ok" for r in results), results


def _frame_to_localhost(lab: Lab, pod: str, port: int) -> bytes:
    """A TCP SYN from ``pod`` to 127.0.0.1:``port``, addressed at Ethernet level to its
    node's bridge: what a neighbour would send to reach the node's localhost services."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    plan = lab.topology.pod(pod)
    node = lab.topology.node(plan.node)

    def mac(netns: str, dev: str) -> str:
        out = subprocess.run(["ip", "-n", netns, "-j", "link", "show", dev], capture_output=True, text=True, check=True).stdout
        return str(json.loads(out)[0]["address"])

    frame = Ether(src=mac(plan.netns, "eth0"), dst=mac(node.netns, "cni0")) / IP(src=str(plan.ip), dst="127.0.0.1") / TCP(
        sport=41234, dport=port, flags="S", seq=1000)
    return bytes(frame)


def _localnet_drops(lab: Lab, node: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", lab.topology.node(node).netns, f"iptables-{lab.state.iptables_backend}",
                          "-t", "filter", "-L", "KUBE-FIREWALL", "-v", "-x", "-n"], capture_output=True, text=True, check=True).stdout
    rows = [ln.split() for ln in out.splitlines() if "127.0.0.0/8" in ln and "DROP" in ln]
    assert len(rows) == 1, out
    return int(rows[0][0])


def test_kube_firewall_drops_a_neighbours_packet_to_localhost(lab_factory) -> None:  # type: ignore[no-untyped-def]
    """route_localnet=1 (for localhost NodePorts) would let a neighbour reach the node's
    127.0.0.1 services (CVE-2020-8558); KUBE-FIREWALL drops such packets. A pod sends a real
    SYN to 127.0.0.1 at its node's MAC: the rule counts it and nothing answers."""
    import socket

    from netns_lab.probes.capture import Capture
    from netns_lab.realize.netns import run_in

    lab = lab_factory(LB, cluster__proxyMode="iptables")
    plan = lab.topology.pod("web-1")
    frame = _frame_to_localhost(lab, "web-1", 10256)  # kube-proxy's healthz port: a real listener on the node

    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind(("eth0", 0))
            s.send(frame)

    before = _localnet_drops(lab, plan.node)
    with Capture(plan.netns, "eth0") as cap:
        for _ in range(3):
            run_in(plan.netns, send)
            time.sleep(0.2)
    assert _localnet_drops(lab, plan.node) - before >= 3
    from scapy.layers.inet import IP, TCP

    answers = [p for p in cap.packets() if p.haslayer(TCP) and p[IP].src == "127.0.0.1" and p[TCP].dport == 41234]
    assert not answers, answers


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_health_check_fails_on_a_node_whose_endpoints_are_all_terminating(lab_factory, mode: str) -> None:  # type: ignore[no-untyped-def]
    """Services should fail health check node port if there are only terminating endpoints:
    kube-proxy counts ready local endpoints only, so the cloud load balancer stops sending
    new connections to a node whose last pod is shutting down, while that pod still serves."""
    lab = lab_factory(LB, cluster__proxyMode=mode, name=f"lb-terminating-{mode[:3]}")
    local = lab.service("web-local")
    topo = lab.topology

    def health() -> dict[str, int | None]:
        probes = [Probe(topo.lb_netns, str(n.ip), local.health_check_node_port, "http", "/healthz") for n in topo.nodes]
        return {n.name: r.status for n, r in zip(topo.nodes, run_probes(probes, timeout=2))}

    assert health() == {"node-1": 200, "node-2": 200, "node-3": 503}
    lab.delete("pod/web-1", grace_period=120)
    assert health() == {"node-1": 503, "node-2": 200, "node-3": 503}
    node1 = str(topo.node("node-1").ip)
    r = lab.connect("node/node-3", node1, local.ports[0].node_port, timeout=2.0)  # node-1's local fallback still serves
    lab.delete("pod/web-1", grace_period=0)  # nothing left to expire in the background
    assert (r.result, r.served_by) == ("ok", "web-1"), r


def test_health_check_node_port_is_open_on_a_node_that_drops_input(lab_factory) -> None:  # type: ignore[no-untyped-def]
    """iptables mode: kube-proxy accepts its health-check node ports in the filter table
    (KUBE-NODEPORTS, jumped to from INPUT), so the cloud load balancer still gets its answer
    from a node whose INPUT policy drops everything else (a locked-down node)."""
    lab = lab_factory(LB, cluster__proxyMode="iptables", name="lb-input-drop")
    local = lab.service("web-local")
    topo = lab.topology
    node = topo.node("node-1")
    tool = f"iptables-{lab.state.iptables_backend}"
    subprocess.run(["ip", "netns", "exec", node.netns, tool, "-w", "5", "-P", "INPUT", "DROP"], check=True)
    try:
        health, agent = run_probes([Probe(topo.lb_netns, str(node.ip), local.health_check_node_port, "http", "/healthz"),
                                    Probe(topo.lb_netns, str(node.ip), 10250, "tcp")], timeout=1.5)
    finally:
        subprocess.run(["ip", "netns", "exec", node.netns, tool, "-w", "5", "-P", "INPUT", "ACCEPT"], check=True)
    assert health.status == 200, health  # accepted by kube-proxy's rule
    assert agent.result == "timeout", agent  # the node's other ports are dropped: the policy is in force
