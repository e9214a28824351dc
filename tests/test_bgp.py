"""The BGP underlay and BGP load balancing, with real BIRDs and real packets.

``scenarios/bgp.yaml`` (3 nodes, ``cluster.network: bgp``, ``cluster.external.loadBalancer:
bgp``): sessions parsed from birdc, the router's table exactly every pod subnet, clients
outside reaching pods with their own address and full-size packets without encapsulation,
pods reaching the outside with theirs, ClusterIPs unreachable from outside, load-balancer IPs
spread by ECMP over the nodes (Cluster) or announced from endpoint nodes only (Local) and
withdrawn when the last local endpoint goes, a node's link going down and a killed BIRD.
The scenario's own checks run in both proxy modes in tests/test_scenarios.py; ipvs in the
VM (tests/test_ipvs.py).
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import signal
import socket
import subprocess
import threading
import time
from ipaddress import IPv4Address, ip_address, ip_network

import pytest

from netns_lab.controllers.bgp import ROUTER
from netns_lab.lab import Lab
from netns_lab.probes.capture import Capture
from netns_lab.probes.connect import probe_one
from netns_lab.probes.mtu import probe_mtu
from netns_lab.realize import bgp as birds
from netns_lab.realize.netns import run_in
from tests.conftest import ROOT

pytestmark = pytest.mark.root
BGP = os.path.join(ROOT, "scenarios", "bgp.yaml")
STEP = 0.05  # a new connection every 50 ms
PROBE_TIMEOUT = 0.3


@pytest.fixture(scope="module")
def lab(lab_factory) -> Lab:  # type: ignore[no-untyped-def]
    """One lab for the checks that change nothing (module-wide)."""
    return lab_factory(BGP)  # type: ignore[no-any-return]


def sessions(lab: Lab, speaker: str) -> list[birds.Session]:
    return birds.sessions(lab.bgp_socket(speaker))


def wait_for(what: str, cond, timeout: float = 20.0) -> float:  # type: ignore[no-untyped-def]
    """Poll ``cond`` every 20 ms; seconds until it held."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - t0


def router_routes(lab: Lab) -> dict[str, frozenset[IPv4Address]]:
    return birds.kernel_routes(lab.topology.router_netns)


def all_established(lab: Lab) -> bool:
    return all(s.established for name in [n.name for n in lab.topology.nodes] + [ROUTER] for s in sessions(lab, name))


# -- the underlay -------------------------------------------------------------------------------
def test_every_session_is_established_on_every_node_and_the_router(lab: Lab) -> None:
    topo = lab.topology
    for node in topo.nodes:
        got = {(s.neighbor, s.name.split("_")[0], s.info.split()[0]) for s in sessions(lab, node.name)}
        want = {(str(topo.router_ip), "Global", "Established")}
        want |= {(str(p.ip), "Mesh", "Established") for p in topo.nodes if p.name != node.name}
        assert got == want, (node.name, got)
    router = sessions(lab, ROUTER)
    assert {(s.neighbor, s.info.split()[0]) for s in router} == {(str(n.ip), "Established") for n in topo.nodes}
    # each node exported its pod subnet to the router (and the LB /32s it announces)
    assert all(s.imported >= 1 for s in router), router


def test_the_router_holds_exactly_every_pod_subnet_learned_by_bgp(lab: Lab) -> None:
    topo = lab.topology
    routes = router_routes(lab)
    pods = {p: hops for p, hops in routes.items() if ip_network(p).subnet_of(topo.pod_cidr)}  # type: ignore[arg-type]
    assert pods == {str(n.pod_subnet): frozenset({n.ip}) for n in topo.nodes}
    # the other prefixes it learned are load-balancer IPs only (the import filter)
    assert all(ip_network(p).subnet_of(topo.lb_pool) and p.endswith("/32") for p in set(routes) - set(pods))  # type: ignore[arg-type]
    assert not any(ip_network(p).overlaps(topo.service_cidr) for p in routes)
    # each node's routes to the others' pods are BIRD's (proto bird), none static
    for node in topo.nodes:
        learned = birds.kernel_routes(node.netns)
        assert {p: h for p, h in learned.items() if p != "0.0.0.0/0"} == {
            str(p.pod_subnet): frozenset({p.ip}) for p in topo.nodes if p.name != node.name}
        static = subprocess.run(["ip", "-n", node.netns, "route", "show", "proto", "static"], capture_output=True, text=True,
                                check=True).stdout
        assert "10.244." not in static, static


def test_a_client_outside_reaches_every_pod_with_its_own_address(lab: Lab) -> None:
    external = lab.ip_of("external")
    for pod in lab.topology.workload_pods:
        port = pod.ports[0][0]
        for proto in ("tcp", "udp"):
            r = lab.connect("external", f"pod/{pod.key}", port, proto)
            assert (r.result, r.served_by, r.client_ip) == ("ok", pod.name, external), (pod.key, proto, r)


def test_a_full_size_packet_crosses_unencapsulated_and_unfragmented(lab: Lab) -> None:
    """The pod MTU is the node MTU (1500): a 1500-byte DF datagram from outside reaches a pod
    as one bare IP packet on the node network (no VXLAN), one byte more is refused."""
    topo = lab.topology
    assert topo.pod_mtu == topo.underlay_mtu == 1500
    dst = topo.pod("default/web-2")
    node = topo.node(dst.node)
    with Capture(topo.underlay_netns, node.uplink, limit=200, bpf=f"udp and dst host {dst.ip}") as cap:
        time.sleep(0.1)
        full = probe_mtu(topo.external_netns, str(dst.ip), 9376, 1500)
        time.sleep(0.2)
    assert full.result == "ok", full
    frames = [p for p in cap.packets() if p.haslayer("IP") and p["IP"].dst == str(dst.ip)]
    assert frames and all(p["IP"].len == 1500 and p["IP"].flags.DF and p["IP"].frag == 0 for p in frames), frames
    assert all(p["IP"].src == str(topo.external_ip) and not p.haslayer("VXLAN") for p in frames)
    over = probe_mtu(topo.external_netns, str(dst.ip), 9376, 1501)
    assert over.result == "refused" and over.path_mtu == 1500, over
    across = probe_mtu(topo.pod("default/client").netns, str(topo.pod("default/web-1").ip), 9376, 1500)
    assert across.result == "ok", across


def test_a_pod_reaches_the_outside_with_its_own_address(lab: Lab) -> None:
    """Pods are routable: no masquerade on the way out; the client outside sees the pod IP."""
    topo = lab.topology
    listening, seen = threading.Event(), []

    def serve() -> None:
        with socket.socket() as srv:
            srv.bind((str(topo.external_ip), 8099))
            srv.listen(1)
            srv.settimeout(5)
            listening.set()
            conn, peer = srv.accept()
            seen.append(peer[0])
            conn.close()

    server = threading.Thread(target=lambda: run_in(topo.external_netns, serve), daemon=True)
    server.start()
    assert listening.wait(5)
    for pod in ("default/web-1", "default/client"):
        listening.clear() if seen else None
        r = lab.connect(f"pod/{pod}", "external", 8099, timeout=2.0)
        assert r.result in ("ok", "refused", "failed", "timeout")
        server.join(5)
        assert seen == [str(topo.pod(pod).ip)], seen
        seen.clear()
        listening.clear()
        server = threading.Thread(target=lambda: run_in(topo.external_netns, serve), daemon=True)
        server.start()
        assert listening.wait(5)
    probe_one(topo.pod("default/web-1").netns, str(topo.external_ip), 8099, "tcp", 1.0)  # lets the last server go
    server.join(5)


def test_cluster_ips_stay_unreachable_from_outside(lab: Lab) -> None:
    web = lab.service("web")
    r = lab.connect("external", web.cluster_ips[0], 80, timeout=1.0)
    assert r.result != "ok", r
    got = subprocess.run(["ip", "-n", lab.topology.router_netns, "route", "get", web.cluster_ips[0]], capture_output=True,
                         text=True)
    assert got.returncode != 0 and "unreachable" in got.stderr, got  # nobody announces the Service range


def test_invoke_bgp_shows_sessions_and_the_routers_table(lab: Lab) -> None:
    from netns_lab.cli import bgp

    out = io.StringIO()
    assert bgp(lab.name, out=out) == 0
    text = out.getvalue()
    assert text.count("| Established") == 3 * 3 + 3  # 3 nodes x (router + 2 mesh peers) + the router's 3
    assert "node-to-node mesh" in text and "global" in text
    for node in lab.topology.nodes:
        assert f"{node.pod_subnet}" in text
    lb = lab.service("web-lb").load_balancer_ips[0]
    assert f"{lb}/32" in text and "(ECMP)" in text
    out = io.StringIO()
    bgp(lab.name, as_json=True, out=out)
    data = json.loads(out.getvalue())
    assert sorted(data["speakers"]) == sorted(["node-1", "node-2", "node-3", "router"])
    assert data["router_routes"][f"{lb}/32"] == sorted(str(n.ip) for n in lab.topology.nodes)


def test_trace_from_outside_shows_the_routers_bgp_route(lab: Lab) -> None:
    from netns_lab.probes.trace import render, trace

    t = trace(lab, "external", "pod/web-2:9376")
    assert t.result == "ok" and t.server_saw and t.server_saw.startswith(str(lab.ip_of("external")))
    node = lab.topology.node("node-2")
    assert t.router[1] == f"{node.pod_subnet} via {node.ip} dev eth0 proto bird metric 32", t.router
    assert f"router     table: {node.pod_subnet} via {node.ip}" in render(t)


# -- load-balancer IPs announced by BGP ---------------------------------------------------------
def _ingress_node(lab: Lab, lb_ip: str, sport: int) -> str | None:
    """The node whose conntrack holds the flow from the client's ``sport`` to ``lb_ip``."""
    for node in lab.topology.nodes:
        out = subprocess.run(["ip", "netns", "exec", node.netns, "conntrack", "-L", "-p", "tcp", "--orig-dst", lb_ip,
                              "--sport", str(sport)], capture_output=True, text=True).stdout
        if lb_ip in out:
            return node.name
    return None


def _connect_from(ns: str, src_port: int, dst: str, port: int) -> str:
    def go() -> str:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", src_port))
            s.settimeout(1.0)
            s.connect((dst, port))
            s.sendall(b"hostname\n")
            return s.recv(200).decode()

    return run_in(ns, go)  # type: ignore[no-any-return]


def test_cluster_policy_flows_spread_over_every_node_by_ecmp(lab: Lab) -> None:
    lb = lab.service("web-lb").load_balancer_ips[0]
    assert router_routes(lab)[f"{lb}/32"] == frozenset(n.ip for n in lab.topology.nodes)
    ingress = {}
    for sport in range(41000, 41030):
        _connect_from(lab.topology.external_netns, sport, lb, 80)
        ingress[sport] = _ingress_node(lab, lb, sport)
    counts = {n.name: sum(1 for v in ingress.values() if v == n.name) for n in lab.topology.nodes}
    print(f"30 flows to {lb} entered the cluster at: {counts}")
    assert all(c >= 2 for c in counts.values()), counts  # 30 flows over 3 next hops by an L4 hash


def test_local_policy_is_announced_only_by_nodes_with_a_ready_endpoint(lab: Lab) -> None:
    topo = lab.topology
    local = lab.service("web-local").load_balancer_ips[0]
    with_endpoint = {p.node for p in topo.workload_pods if p.name.startswith("web-")}
    assert router_routes(lab)[f"{local}/32"] == frozenset(topo.node(n).ip for n in with_endpoint)
    exported = {n.name: next(s.exported for s in sessions(lab, n.name) if s.name.startswith("Global")) for n in topo.nodes}
    assert exported == {"node-1": 3, "node-2": 3, "node-3": 2}, exported  # pod subnet + web-lb (+ web-local)
    results = [lab.connect("external", "loadbalancer/web-local", 80) for _ in range(10)]
    assert all(r.result == "ok" and r.client_ip == lab.ip_of("external") for r in results), results


@pytest.fixture(scope="module")
def failing() -> Lab:
    """A lab of its own for the tests that take things away (they put them back)."""
    with Lab.from_file(BGP, {"name": "bgp-fail"}) as lab:
        yield lab


def stream(lab: Lab, target: str, port: int, seconds: float, during: float, action):  # type: ignore[no-untyped-def]
    """New connections from ``external`` every STEP for ``seconds``; ``action()`` starts at
    ``during`` in a thread of its own, so connections keep starting while it runs. Returns
    [(start, result)], when the action started and when it returned."""
    src, dst = lab.netns_of("external"), lab.ip_of(target)
    out = []
    acting: threading.Thread | None = None
    times: dict[str, float] = {}

    def act() -> None:
        times["start"] = time.monotonic()
        action()
        times["end"] = time.monotonic()

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        i = 0
        while (now := time.monotonic()) - t0 < seconds:
            if acting is None and now - t0 >= during:
                acting = threading.Thread(target=act)
                acting.start()
            out.append((time.monotonic(), pool.submit(probe_one, src, dst, port, "tcp", PROBE_TIMEOUT)))
            i += 1
            time.sleep(max(0.0, t0 + i * STEP - time.monotonic()))
        assert acting is not None
        acting.join(30)
        return [(s, f.result()) for s, f in out], times["start"], times["end"]


def report(what: str, attempts, acted: float) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    after = [(s, r) for s, r in attempts if s >= acted]
    failed = [s for s, r in after if r.result != "ok"]
    window = (max(failed) - min(failed)) if failed else 0.0
    print(f"{what}: {len(failed)} of {len(after)} new connections failed, within {window:.2f} s")
    return len(failed), window


def test_the_last_local_endpoint_going_withdraws_the_announcement(failing: Lab) -> None:
    lab = failing
    local = lab.service("web-local").load_balancer_ips[0]
    node2 = lab.topology.node("node-2").ip
    attempts, acted, done = stream(lab, "loadbalancer/web-local", 80, 4.0, 1.0, lambda: lab.delete("pod/web-2"))
    assert node2 not in router_routes(lab)[f"{local}/32"]
    before = [r for s, r in attempts if s < acted]
    assert before and all(r.result == "ok" for r in before)
    failed, window = report("Local LB, node-2's last endpoint deleted", attempts, acted)
    print(f"the change (withdrawal, then kube-proxy's rules, then the pod) took {done - acted:.2f} s")
    assert done - acted <= 1.0, done - acted  # withdrawn within a second of the last endpoint going
    # node-2 withdrew before its kube-proxy rules for web-local went: no flow reached it without them
    assert failed == 0, [(s - acted, r) for s, r in attempts if r.result != "ok"]
    late = [r for s, r in attempts if s > done]
    assert late and all(r.result == "ok" and r.served_by == "web-1" and r.client_ip == lab.ip_of("external") for r in late)
    events = lab.apply(WEB_2)  # back: node-2 announces again, as part of the change
    assert any("BGP: node-2 announces" in e for e in events), events
    assert node2 in router_routes(lab)[f"{local}/32"]


WEB_2 = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-2", "labels": {"app": "web"}},
         "spec": {"nodeName": "node-2", "containers": [{"name": "web", "image": "netexec", "ports": [{"containerPort": 9376}]}]}}


class Watch:
    """Polls the router's table from the moment a failure is caused: when the node's next hop
    left the load-balancer route and when it came back (monotonic times, or None)."""

    def __init__(self, lab: Lab, prefix: str, hop: IPv4Address) -> None:
        self.lab, self.prefix, self.hop = lab, prefix, hop
        self.start = self.gone = self.back = None  # type: float | None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def begin(self) -> None:
        self.start = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.back is None:
            present = self.hop in router_routes(self.lab).get(self.prefix, frozenset())
            now = time.monotonic()
            if self.gone is None and not present:
                self.gone = now
            elif self.gone is not None and present:
                self.back = now
            time.sleep(0.02)

    def join(self) -> None:
        self._thread.join(35)


def test_a_node_whose_link_goes_down_is_withdrawn_by_bfd(failing: Lab) -> None:
    lab = failing
    topo = lab.topology
    lb = lab.service("web-lb").load_balancer_ips[0]
    node3 = topo.node("node-3")
    watch = Watch(lab, f"{lb}/32", node3.ip)

    def down() -> None:
        watch.begin()
        lab.exec("node/node-3", ["ip", "link", "set", "eth0", "down"], check=True)

    try:
        attempts, acted, _ = stream(lab, "loadbalancer/web-lb", 80, 4.0, 1.0, down)
        assert watch.gone is not None and watch.start is not None
        withdrawn = watch.gone - watch.start
        print(f"BFD ({topo.bfd_tx_ms} ms x {topo.bfd_multiplier}): the router withdrew node-3 in {withdrawn * 1000:.0f} ms")
        assert withdrawn < 1.0
        assert str(node3.pod_subnet) not in router_routes(lab)
        report("Cluster LB, node-3's link down", attempts, acted)
        late = [r for s, r in attempts if s > watch.gone + 0.3]
        assert late and all(r.result == "ok" for r in late), late
    finally:
        lab.exec("node/node-3", ["ip", "link", "set", "eth0", "up"], check=True)
        link_up = time.monotonic()
    watch.join()
    assert watch.back is not None
    wait_for("node-3's pod subnet back", lambda: str(node3.pod_subnet) in router_routes(lab), 20)
    print(f"node-3's link up: its routes back at the router {watch.back - link_up:.2f} s later")
    wait_for("every session established", lambda: all_established(lab), 20)
    assert "0.0.0.0/0" in birds.kernel_routes(node3.netns)  # the default route came back with the session
    assert all(lab.connect("external", "pod/client", 8080).result == "ok" for _ in range(3))


def test_a_killed_bird_is_restarted_and_its_sessions_come_back(failing: Lab) -> None:
    lab = failing
    topo = lab.topology
    node2 = topo.node("node-2")
    lb = lab.service("web-lb").load_balancer_ips[0]
    pid_file = os.path.join(lab.bgp_run_dir, "node-2.pid")
    with open(pid_file) as fh:
        pid = int(fh.read())
    from netns_lab import procs

    assert procs.owned_by(pid, lab.state.instance)  # type: ignore[union-attr]  # ours: it carries the lab's token
    watch = Watch(lab, f"{lb}/32", node2.ip)

    def kill() -> None:
        watch.begin()
        os.kill(pid, signal.SIGKILL)

    attempts, acted, _ = stream(lab, "loadbalancer/web-lb", 80, 5.0, 1.0, kill)
    watch.join()
    assert watch.start is not None and watch.gone is not None and watch.back is not None
    print(f"BIRD of node-2 killed: withdrawn in {(watch.gone - watch.start) * 1000:.0f} ms (its TCP sessions closed), "
          f"announced again {watch.back - watch.gone:.2f} s later (restarted, sessions up)")
    assert watch.gone - watch.start < 1.0
    failed, _ = report("Cluster LB, node-2's BIRD killed", attempts, acted)
    # the other nodes kept node-2's pod subnet (graceful restart): flows they send to web-2 go on
    assert failed <= 2, failed
    with open(os.path.join(lab.bgp_run_dir, "restarts.json")) as fh:
        assert json.load(fh)["node-2"] >= 1
    with open(pid_file) as fh:
        assert int(fh.read()) != pid
    wait_for("every session established", lambda: all_established(lab), 20)
    assert str(node2.pod_subnet) in router_routes(lab)
    late = [r for s, r in attempts if s > watch.back + 0.3]
    assert all(r.result == "ok" for r in late), late
    assert all(lab.connect("external", "pod/web-2", 9376).result == "ok" for _ in range(3))


def test_a_full_sync_puts_back_what_a_speaker_was_not_told(failing: Lab) -> None:
    """A change that died half way leaves a BIRD with an older configuration: `reconcile` (a
    full sync) writes and reloads every speaker, and the router has every announcement again."""
    lab = failing
    lb = lab.service("web-lb").load_balancer_ips[0]
    node2 = lab.topology.node("node-2")
    conf = os.path.join(lab.bgp_run_dir, "node-2.conf")
    with open(conf) as fh:
        good = fh.read()
    stale = "\n".join("protocol static lbs { ipv4; }" if l.startswith("protocol static lbs ") else l for l in good.splitlines())
    with open(conf, "w") as fh:
        fh.write(stale + "\n")
    birds.configure(lab.bgp_socket("node-2"))
    wait_for("node-2's announcements gone", lambda: node2.ip not in router_routes(lab).get(f"{lb}/32", frozenset()), 5)
    events = Lab.attach(lab.name).sync(full=True)  # a new process's view: what `invoke reconcile` does
    assert any("speakers reconfigured" in e for e in events), events
    assert node2.ip in router_routes(lab)[f"{lb}/32"]
    with open(conf) as fh:
        assert fh.read() == good


def test_birds_whose_supervisor_died_are_replaced_not_doubled(failing: Lab) -> None:
    """The supervisor SIGKILLed, its BIRDs run on; the next full sync stops them (by the PIDs
    they wrote, with the lab's token) before starting a new supervisor and new BIRDs."""
    from netns_lab import procs

    lab = failing
    st = lab.state
    assert st is not None
    supervisor = next(p["pid"] for p in st.processes if p["role"] == "bgp")
    old = {}
    for name in ("node-1", "node-2", "node-3", ROUTER):
        with open(os.path.join(lab.bgp_run_dir, f"{name}.pid")) as fh:
            old[name] = int(fh.read())
    os.kill(supervisor, signal.SIGKILL)
    wait_for("the supervisor gone", lambda: procs._zombie(supervisor), 5)
    events = Lab.attach(lab.name).sync(full=True)
    assert any("4 speakers started" in e for e in events), events
    wait_for("the old BIRDs gone", lambda: all(procs._zombie(p) for p in old.values()), 5)
    birds_now = [p for p in procs.find_owned(st.instance) if open(f"/proc/{p}/comm").read().strip() == "bird"]
    assert len(birds_now) == 4 and not set(birds_now) & set(old.values()), (birds_now, old)
    wait_for("every session established", lambda: all_established(lab), 20)
    assert all(lab.connect("external", "pod/web-2", 9376).result == "ok" for _ in range(3))


# -- variants -------------------------------------------------------------------------------------
def test_without_the_mesh_nodes_learn_each_other_through_the_router(lab_factory) -> None:  # type: ignore[no-untyped-def]
    """nodeToNodeMesh false (Calico with a ToR peering only): each node's only session is the
    router's; the other nodes' subnets come from it (allow local as), and pods still reach pods."""
    lab = lab_factory(BGP, cluster__bgp={"nodeToNodeMesh": False, "bfd": False}, cluster__proxyMode="nftables")
    topo = lab.topology
    for node in topo.nodes:
        s = sessions(lab, node.name)
        assert [(x.name.split("_")[0], x.established) for x in s] == [("Global", True)], s
        learned = birds.kernel_routes(node.netns)
        assert {p for p in learned if p != "0.0.0.0/0"} == {str(p.pod_subnet) for p in topo.nodes if p.name != node.name}
    assert "bfd1" not in birds.birdc(lab.bgp_socket(ROUTER), "show", "protocols")
    for a in ("default/client", "default/web-1"):
        for b in ("default/web-1", "default/web-2"):
            if a != b:
                r = lab.connect(f"pod/{a}", f"pod/{b}", 9376)
                assert r.result == "ok" and r.client_ip == str(topo.pod(a).ip), (a, b, r)


@pytest.mark.parametrize("network", ["vxlan", "host-gw"])
def test_bgp_load_balancing_over_an_overlay(network: str) -> None:
    """loadBalancer bgp with the other pod networks: the nodes speak BGP to the router only
    (no mesh, no pod subnets announced), LB IPs are /32s with every node as next hop, pods
    stay unreachable from outside."""
    from netns_lab.probes.checks import run_checks

    with Lab.from_file(os.path.join(ROOT, "scenarios", "loadbalancer.yaml"),
                       {"name": f"bgplb-{network}", "cluster.network": network, "cluster.external.loadBalancer": "bgp"}) as lab:
        routes = router_routes(lab)
        assert routes and all(p.endswith("/32") and ip_address(p[:-3]) in lab.topology.lb_pool for p in routes), routes
        for node in lab.topology.nodes:
            assert [x.name.split("_")[0] for x in sessions(lab, node.name)] == ["Global"]
        assert lab.scenario is not None
        outcomes = run_checks(lab, lab.scenario.checks)
        assert all(o.passed for o in outcomes), [(o.check.name, o.summary) for o in outcomes if not o.passed]
        assert not lab.running("cloudlb")  # no cloud load balancer: BGP announces the pool


def test_a_killed_lab_leaves_no_bird_behind_after_clean(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The builder SIGKILLed with every BIRD running, then their supervisor SIGKILLed too: the
    BIRDs are orphans in the lab's namespaces, still carrying its token; `clean` stops them
    (by that token, by PID) and removes everything."""
    import sys

    from netns_lab import procs
    from netns_lab.realize import netns

    state_dir = str(tmp_path / "state")
    env = dict(os.environ, NETNS_LAB_STATE_DIR=state_dir, NETNS_LAB_FAULT="bgp")
    run = lambda *a, **kw: subprocess.run([sys.executable, "-m", "netns_lab", *a], capture_output=True, text=True,  # noqa: E731
                                          cwd=ROOT, timeout=120, **kw)
    up = run("up", BGP, "--set", "name=bgp-kill", env=env)
    assert up.returncode == -signal.SIGKILL, up.stderr
    with open(os.path.join(state_dir, "bgp-kill.json")) as fh:
        record = json.load(fh)
    owned = procs.find_owned(record["instance"])
    birds_running = [p for p in owned if open(f"/proc/{p}/comm").read().strip() == "bird"]
    assert len(birds_running) == 4, owned  # three nodes and the router
    supervisor = next(p["pid"] for p in record["processes"] if p["role"] == "bgp")
    os.kill(supervisor, signal.SIGKILL)
    time.sleep(0.2)
    assert all(os.path.exists(f"/proc/{p}") for p in birds_running)  # orphans, still running
    env.pop("NETNS_LAB_FAULT")
    clean = run("clean", env=env)
    assert clean.returncode == 0, clean.stderr
    assert not procs.find_owned(record["instance"])
    wait_for("every BIRD gone (or a zombie awaiting init)", lambda: all(procs._zombie(p) for p in birds_running), 5)
    assert not [n for n in record["namespaces"] if netns.exists(n)]
    assert not os.listdir(state_dir)
