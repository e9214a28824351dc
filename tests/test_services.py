"""Services for real, in both kube-proxy modes: rules in every node, packets through them."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections import Counter

import pytest

from netns_lab.lab import Lab
from netns_lab.probes.capture import Capture
from netns_lab.probes.connect import Probe, run_probes
from netns_lab.proxy import iptables as ipt
from netns_lab.proxy import nftables as nft
from netns_lab.realize.netns import run_in
from tests import nftref
from tests.conftest import ROOT

pytestmark = pytest.mark.root
CLUSTERIP = os.path.join(ROOT, "scenarios", "clusterip.yaml")
NODEPORT = os.path.join(ROOT, "scenarios", "nodeport.yaml")
MODES = ["iptables", "nftables"]
BACKENDS = {"web-1", "web-2", "web-3"}


@pytest.fixture(params=MODES)
def mode(request) -> str:  # type: ignore[no-untyped-def]
    return request.param


@pytest.fixture
def svc_lab(mode, lab_factory) -> Lab:  # type: ignore[no-untyped-def]
    return lab_factory(CLUSTERIP, cluster__proxyMode=mode)


@pytest.fixture
def np_lab(mode, lab_factory) -> Lab:  # type: ignore[no-untyped-def]
    return lab_factory(NODEPORT, cluster__proxyMode=mode)


def test_rules_are_installed_in_every_node(svc_lab: Lab, mode: str) -> None:
    port = next(p for p in svc_lab.service_ports() if p.name == "my-service" and p.protocol == "TCP")
    for node in svc_lab.topology.nodes:
        if mode == "iptables":
            out = svc_lab.exec(f"node/{node.name}", ["iptables-save", "-t", "nat"], check=True).stdout
            assert f"-j {ipt.svc_chain(port)}" in out and "-j KUBE-NODEPORTS" in out
            assert sum(f"-j {ipt.sep_chain(port, e.ip, e.port)}" in out for e in port.endpoints if e.ready) == 3
        else:
            out = svc_lab.exec(f"node/{node.name}", ["nft", "list", "table", "ip", "kube-proxy"], check=True).stdout
            assert f"chain {nft.service_chain(port)}" in out and "numgen random mod 3" in out
            assert "map service-ips" in out and f"{port.cluster_ip} . tcp . 80 : goto {nft.service_chain(port)}" in out


def test_clusterip_from_a_pod_on_every_node_and_from_every_node(svc_lab: Lab) -> None:
    sources = [f"pod/{p.name}" for p in svc_lab.topology.pods if p.name.startswith("client")]
    sources += [f"node/{n.name}" for n in svc_lab.topology.nodes]
    for src in sources:
        for proto, port in (("tcp", 80), ("udp", 53), ("http", 80)):
            r = svc_lab.connect(src, "service/my-service", port, proto)
            assert r.result == "ok" and r.served_by in BACKENDS, (src, proto, r)


def test_new_connections_spread_over_all_backends(svc_lab: Lab) -> None:
    ip = svc_lab.ip_of("service/my-service")
    src = svc_lab.netns_of("pod/client-1")
    results = run_probes([Probe(src, ip, 80)] * 300, timeout=3, parallel=50)
    assert all(r.result == "ok" for r in results)
    shares = Counter(r.served_by for r in results)
    assert set(shares) == BACKENDS
    assert min(shares.values()) >= 0.15 * 300, shares


def test_backend_sees_the_client_pod_ip_no_nat(svc_lab: Lab) -> None:
    for client in ("client-1", "client-2"):
        for _ in range(6):
            r = svc_lab.connect(f"pod/{client}", "service/my-service", 80)
            assert r.client_ip == svc_lab.ip_of(f"pod/{client}") == svc_lab.addresses(f"pod/{client}")[0]


def test_hairpin_pod_reaches_itself_through_its_service(svc_lab: Lab) -> None:
    for _ in range(3):
        r = svc_lab.connect("pod/web-1", "service/web-1-only", 80)
        assert r.result == "ok" and r.served_by == "web-1"


def test_no_endpoints_is_refused_promptly(svc_lab: Lab) -> None:
    for src in ("pod/client-2", "node/node-1"):
        r = svc_lab.connect(src, "service/nobody-home", 80)
        assert r.result == "refused" and r.elapsed < 0.5, r


def test_clusterip_answers_no_ping_scapy_evidence(svc_lab: Lab) -> None:
    from scapy.layers.inet import ICMP, IP

    vip = svc_lab.ip_of("service/my-service")
    pod = svc_lab.topology.pod("client-1")
    with Capture(pod.netns, "eth0") as cap:
        res = svc_lab.ping("pod/client-1", "service/my-service")
    assert res.result == "no-reply"
    pkts = [p for p in cap.packets() if p.haslayer(ICMP)]
    assert any(p[IP].dst == vip and p[ICMP].type == 8 for p in pkts), "the echo request left the pod"
    assert not any(p[IP].src == vip and p[ICMP].type == 0 for p in pkts), "the ClusterIP must not echo"
    # and a pod IP does answer, through the same capture path
    assert svc_lab.ping("pod/client-1", "pod/web-2").result == "reply"


def test_clusterip_answers_nothing_on_undeclared_ports(svc_lab: Lab) -> None:
    for port, proto in ((8080, "tcp"), (81, "tcp"), (54, "udp")):
        r = svc_lab.connect("pod/client-1", "service/my-service", port, proto, timeout=1.0)
        assert r.result != "ok", r


def test_client_ip_affinity_pins_a_client(mode: str) -> None:
    text = open(CLUSTERIP).read().replace(
        "    spec:\n      selector: {app: web}\n",
        "    spec:\n      selector: {app: web}\n      sessionAffinity: ClientIP\n      sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n",
    )
    path = os.path.join(ROOT, "tests", "scenarios", f".affinity-{mode}.yaml")
    with open(path, "w") as fh:
        fh.write(text)
    try:
        with Lab.from_file(path, {"name": f"aff-{mode[:3]}", "cluster.proxyMode": mode}) as lab:
            for client in ("client-1", "client-2"):
                served = Counter(lab.connect(f"pod/{client}", "service/my-service", 80).served_by for _ in range(20))
                assert len(served) == 1, served  # one backend for all 20 new connections
    finally:
        os.unlink(path)


def test_nodeport_from_outside_on_every_node_cluster_policy_snat(np_lab: Lab) -> None:
    for node in np_lab.topology.nodes:
        r = np_lab.connect("external", f"node/{node.name}", 30080)
        assert r.result == "ok" and r.served_by in {"web-1", "web-2"}
        assert r.client_ip in np_lab.addresses(f"node/{node.name}"), "Cluster policy SNATs to the node"
        assert r.client_ip != np_lab.ip_of("external")


def test_nodeport_local_policy_keeps_client_ip_and_skips_nodes_without_endpoints(np_lab: Lab) -> None:
    r = np_lab.connect("external", "node/node-1", 30081)
    assert r.result == "ok" and r.client_ip == np_lab.ip_of("external")
    r = np_lab.connect("external", "node/node-2", 30081, timeout=1.0)
    assert r.result == "timeout", r  # dropped: no local endpoint on node-2


def test_external_client_cannot_reach_clusterip_or_pods(np_lab: Lab) -> None:
    assert np_lab.connect("external", "service/web-cluster", 80, timeout=1.0).result != "ok"
    assert np_lab.connect("external", "pod/web-1", 9376, timeout=1.0).result != "ok"


def test_endpoint_changes_follow_within_one_sync(mode: str) -> None:
    with Lab.from_file(CLUSTERIP, {"name": f"churn-{mode[:3]}", "cluster.proxyMode": mode}) as lab:
        ip = lab.ip_of("service/my-service")
        src = lab.netns_of("pod/client-1")
        lab.set_ready("web-2", False)
        served = Counter(r.served_by for r in run_probes([Probe(src, ip, 80)] * 60, timeout=2, parallel=20))
        assert set(served) == {"web-1", "web-3"}, served
        lab.set_ready("web-2", True)
        served = Counter(r.served_by for r in run_probes([Probe(src, ip, 80)] * 60, timeout=2, parallel=20))
        assert set(served) == BACKENDS

        # Delete a backend under a steady stream of new connections.
        stop = threading.Event()
        seen: list[tuple[float, str | None, str]] = []

        def stream() -> None:
            while not stop.is_set():
                for r in run_probes([Probe(src, ip, 80)] * 5, timeout=1, parallel=5):
                    seen.append((time.monotonic(), r.served_by, r.result))

        t = threading.Thread(target=stream)
        t.start()
        time.sleep(0.3)
        lab.delete("pod/web-3")
        synced = time.monotonic()
        time.sleep(0.5)
        stop.set()
        t.join()
        after = [s for s in seen if s[0] > synced + 0.05]
        assert after and all(s[2] == "ok" and s[1] != "web-3" for s in after), after[:5]
        assert not os.path.exists(f"/run/netns/{lab.name}_default_web-3")

        # A pod added at run time joins the Service.
        lab.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-4", "labels": {"app": "web"}},
                   "spec": {"containers": [{"name": "web", "image": "netexec", "ports": [{"name": "http", "containerPort": 9376}]}]}})
        served = Counter(r.served_by for r in run_probes([Probe(src, ip, 80)] * 90, timeout=2, parallel=30))
        assert set(served) == {"web-1", "web-2", "web-4"}, served


def test_udp_client_with_fixed_port_moves_off_a_deleted_backend(mode: str) -> None:
    """The classic stale-UDP-conntrack bug: without kube-proxy's cleanup, a client that keeps
    its source port keeps being DNATed to the dead pod until the entry expires."""
    with Lab.from_file(CLUSTERIP, {"name": f"udp-{mode[:3]}", "cluster.proxyMode": mode}) as lab:
        ip = lab.ip_of("service/my-service")

        def open_client() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", 40000))
            s.connect((ip, 53))
            s.settimeout(1.0)
            return s

        sock = run_in(lab.netns_of("pod/client-1"), open_client)
        try:
            def ask() -> str | None:
                for _ in range(3):
                    sock.send(b"who\n")
                    try:
                        return sock.recv(200).decode().split()[0]
                    except (TimeoutError, ConnectionRefusedError):
                        continue
                return None

            first = ask()
            assert first in BACKENDS
            assert {ask() for _ in range(5)} == {first}  # conntrack keeps the flow on one backend
            lab.delete(f"pod/{first}")
            after = ask()
            assert after in BACKENDS - {first}, after
        finally:
            sock.close()


def test_partial_sync_rewrites_only_the_changed_service(mode: str) -> None:
    with Lab.from_file(CLUSTERIP, {"name": f"part-{mode[:3]}", "cluster.proxyMode": mode}) as lab:
        lab.sync(full=True)
        changed = next(p for p in lab.service_ports() if p.name == "my-service" and p.protocol == "TCP")
        untouched = next(p for p in lab.service_ports() if p.name == "web-1-only")
        lab.set_ready("web-3", False)
        for proxier in lab.proxiers.values():
            assert proxier.last_stats is not None and not proxier.last_stats.full
            text = proxier.last_input
            if mode == "iptables":
                assert f":{ipt.svc_chain(changed)} - [0:0]" in text and f"-X {ipt.sep_chain(changed, lab.ip_of('pod/web-3'), 9376)}" in text
                assert ipt.svc_chain(untouched) not in text.split("*nat", 1)[1].split("-A KUBE-SERVICES", 1)[0]
            else:
                assert f"flush chain ip kube-proxy {nft.service_chain(changed)}" in text
                assert nft.service_chain(untouched) not in text and "add table" not in text
                # sent over netlink, and the node's table is what `nft -f` makes of its rules
                assert proxier.writer == "netlink"
                got = nftref.listing(proxier.netns, "ip kube-proxy")
                want = nftref.by_nft("ip kube-proxy", nft.full_text(proxier.ctx, tuple(proxier.plan.fragments)))
                assert got[1] == want[1] and sorted(got[0].splitlines()) == sorted(want[0].splitlines())
        r = lab.connect("pod/client-1", "service/my-service", 80)
        assert r.result == "ok" and r.served_by != "web-3"


def test_invoke_pod_ready_from_another_process(mode: str) -> None:
    name = f"inv-{mode[:3]}"
    with Lab.from_file(CLUSTERIP, {"name": name, "cluster.proxyMode": mode}) as lab:
        invoke = os.path.join(os.path.dirname(os.sys.executable), "invoke")
        out = subprocess.run([invoke, "pod-ready", name, "web-1", "--not-ready"], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        served = {lab.connect("pod/client-2", "service/my-service", 80).served_by for _ in range(30)}
        assert served == {"web-2", "web-3"}
        out = subprocess.run([invoke, "pod-ready", name, "web-1"], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        served = {lab.connect("pod/client-2", "service/my-service", 80).served_by for _ in range(40)}
        assert served == BACKENDS


def test_invoke_get_services_matches_the_running_lab(np_lab: Lab) -> None:
    invoke = os.path.join(os.path.dirname(os.sys.executable), "invoke")
    out = subprocess.run([invoke, "get", np_lab.name, "services", "--all-namespaces"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    cells = {tuple(l.split()[:2]): l.split() for l in lines[1:]}
    for svc in np_lab.services:
        row = cells[(svc.namespace, svc.name)]
        assert row[2] == svc.type and row[3] == svc.cluster_ip
    assert cells[("default", "web-cluster")][5] == "80:30080/TCP"
