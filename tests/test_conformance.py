"""sig-network's data-path behaviours, one test each, with real packets, in iptables and
nftables mode: what conformance/sig-network.yaml maps to this module.

One lab per proxy mode (scenarios/conformance.yaml: web-1 on node-1, web-2 on node-2, a
client on each node); each test makes its own Services at run time, as the upstream e2e
test does against a cluster, and removes them. Upstream names are in each docstring.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pytest

from netns_lab.lab import Lab
from netns_lab.probes.connect import Probe, run_probes
from tests.conftest import ROOT

pytestmark = pytest.mark.root
CONF = os.path.join(ROOT, "scenarios", "conformance.yaml")
BACKENDS = {"web-1", "web-2"}
TRIES = 20  # one of two backends never chosen in 20 new connections: p = 2 (1/2)^20 < 2e-6
# How long a probe waits. A Service that answers does so within OK_WAIT even when a SYN is
# lost: TCP sends it again after 1 s (the initial RTO), and a 1 s wait would call that lost
# SYN a failure (the product's own checks wait 2 s for an answer, 1 s for a drop). Where no
# answer is the expected outcome, DROP_WAIT keeps those probes short.
OK_WAIT, DROP_WAIT = 2.0, 1.0


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def lab(request: pytest.FixtureRequest, lab_factory: Any) -> Lab:
    return lab_factory(CONF, cluster__proxyMode=request.param)  # type: ignore[no-any-return]


def service(lab: Lab, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> Any:
    """Create or replace Service ``name`` (selector app=web unless the spec says otherwise)."""
    meta: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
    lab.apply({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"selector": {"app": "web"}, **spec}})
    return lab.service(name)


def served(lab: Lab, src: str, dst: str, port: int, protocol: str = "tcp", n: int = TRIES,
           timeout: float = OK_WAIT) -> tuple[set[str | None], set[str]]:
    """Who served ``n`` new connections (or datagrams) from ``src``, and every result seen."""
    probes = [Probe(lab.netns_of(src), lab.ip_of(dst) if "/" in dst else dst, port, protocol) for _ in range(n)]
    rs = run_probes(probes, timeout=timeout, parallel=1)
    for r in rs:  # shown with a failing test's output: what each probe that did not succeed met
        if r.result != "ok":
            print(f"{src} -> {dst}:{port}/{protocol}: {r.result} ({r.detail}) after {r.elapsed:.3f}s")
    if any(r.detail == "no answer to SYN" for r in rs) and src.startswith("pod/"):
        # where the unanswered SYNs went: the client's node's conntrack entries for that address
        node = lab.topology.node(lab.topology.pod(src.split("/")[-1]).node).netns
        print(subprocess.run(["ip", "netns", "exec", node, "conntrack", "-L", "-d", probes[0].dst], capture_output=True, text=True).stdout)
    return {r.served_by for r in rs if r.result == "ok"}, {r.result for r in rs}


def node_ips(lab: Lab) -> list[str]:
    return [str(n.ip) for n in lab.topology.nodes]


def test_the_scenarios_own_checks_pass(lab: Lab) -> None:
    """scenarios/conformance.yaml's checks (what `invoke run-scenario conformance` runs)."""
    from netns_lab.probes.checks import run_checks

    assert lab.scenario is not None
    outcomes = run_checks(lab, lab.scenario.checks)
    assert outcomes and all(o.passed for o in outcomes), [(o.check.name, o.summary) for o in outcomes if not o.passed]


# --- Networking Granular Checks -------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["tcp", "udp", "http"])
@pytest.mark.parametrize("kind", ["pod-to-pod", "node-to-pod"])
def test_pods_and_nodes_reach_pods(lab: Lab, kind: str, protocol: str) -> None:
    """Networking Granular Checks: Pods should function for intra-pod communication (http,
    udp) and for node-pod communication (http, udp): every pod and every node reaches every
    pod, on the same node and across, and the pod sees the source's own address."""
    report = lab.matrix(kind, protocol)
    assert report.ok and len(report.pairs) >= 8, [p.describe() for p in report.failures]


def test_cluster_dns_names_over_udp_and_tcp(lab: Lab, cleanup: list[str]) -> None:
    """DNS should provide DNS for the cluster, for services, for pods for Subdomain
    [Conformance], and should resolve DNS of partial qualified names for services: from a
    pod, through the kube-dns ClusterIP (so through kube-proxy's rules), over UDP and TCP:
    a Service by every partial name, kubernetes.default, a named port's SRV record, the
    ClusterIP's PTR, a pod's A record, and hostname.subdomain of a pod behind a headless
    Service."""
    from netns_lab.probes.resolve import resolve

    lab.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sub"},
               "spec": {"clusterIP": "None", "selector": {"dns": "sub"}, "ports": [{"name": "http", "port": 80, "targetPort": 9376}]}},
              {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dns-pod", "labels": {"dns": "sub"}},
               "spec": {"hostname": "h1", "subdomain": "sub", "nodeName": "node-2",
                        "containers": [{"name": "c", "image": "netexec", "ports": [{"containerPort": 9376}]}]}})
    cleanup += ["pod/dns-pod", "service/sub"]
    ns = lab.netns_of("pod/client-1")
    web = lab.service("web").cluster_ip
    kubernetes = lab.service("default/kubernetes").cluster_ip
    pod_ip = lab.ip_of("pod/dns-pod")
    expect = {
        ("web", "A"): {web}, ("web.default", "A"): {web}, ("web.default.svc", "A"): {web},
        ("web.default.svc.cluster.local", "A"): {web}, ("kubernetes.default", "A"): {kubernetes},
        ("h1.sub.default.svc.cluster.local", "A"): {pod_ip}, ("sub.default.svc.cluster.local", "A"): {pod_ip},
        (f"{pod_ip.replace('.', '-')}.default.pod.cluster.local", "A"): {pod_ip},
    }
    for tcp in (False, True):
        for (name, rtype), want in expect.items():
            r = resolve(ns, name, rtype, tcp=tcp)
            assert r.result == "ok" and set(r.answers) == want, (name, tcp, r)
        srv = resolve(ns, "_http._tcp.web.default.svc.cluster.local", "SRV", tcp=tcp)
        assert srv.result == "ok" and any(a.split()[2] == "80" for a in srv.answers), srv
        ptr = resolve(ns, ".".join(reversed(web.split("."))) + ".in-addr.arpa.", "PTR", tcp=tcp)
        assert ptr.result == "ok" and ptr.answers == ("web.default.svc.cluster.local.",), ptr


def test_pods_know_their_own_names_from_etc_hosts(lab: Lab, cleanup: list[str]) -> None:
    """DNS should provide /etc/hosts entries for the cluster, and DNS for pods for Hostname
    [Conformance]: kubelet's managed /etc/hosts gives a pod its own short and full names
    (getent, run in the pod), without asking the DNS server."""
    lab.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hosts-sub"},
               "spec": {"clusterIP": "None", "selector": {"dns": "hosts"}, "ports": [{"port": 80, "targetPort": 9376}]}},
              {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hosts-pod", "labels": {"dns": "hosts"}},
               "spec": {"hostname": "querier-1", "subdomain": "hosts-sub", "nodeName": "node-1",
                        "containers": [{"name": "c", "image": "netexec", "ports": [{"containerPort": 9376}]}]}})
    cleanup += ["pod/hosts-pod", "service/hosts-sub"]
    ip = lab.ip_of("pod/hosts-pod")
    hosts = lab.exec("pod/hosts-pod", ["cat", "/etc/hosts"], check=True).stdout
    assert hosts.startswith("# Kubernetes-managed hosts file.") and hosts.splitlines()[-1] == \
        f"{ip}\tquerier-1.hosts-sub.default.svc.cluster.local\tquerier-1"
    for name in ("querier-1", "querier-1.hosts-sub.default.svc.cluster.local"):
        out = lab.exec("pod/hosts-pod", ["getent", "hosts", name], check=True).stdout.split()
        assert out[0] == ip, (name, out)
    assert lab.exec("pod/client-1", ["getent", "hosts", "client-1"], check=True).stdout.split()[0] == lab.ip_of("pod/client-1")


@pytest.mark.parametrize("protocol", ["tcp", "udp", "http"])
@pytest.mark.parametrize("source", ["pod/client-1", "node/node-1", "pod/web-1"])
def test_service_from_pod_node_and_endpoint(lab: Lab, cleanup: list[str], source: str, protocol: str) -> None:
    """Networking Granular Checks: Services should function for pod-Service, node-Service and
    endpoint-Service (http, udp): the ClusterIP and every node's NodePort reach both backends
    from a pod, from a node and from an endpoint of the Service itself (hairpin)."""
    ip_protocol = "UDP" if protocol == "udp" else "TCP"
    svc = service(lab, f"granular-{protocol}", {"type": "NodePort", "ports": [{"port": 80, "targetPort": 9376, "protocol": ip_protocol}]})
    cleanup.append(f"service/{svc.name}")
    targets = [(svc.cluster_ip, 80)] + [(ip, svc.ports[0].node_port) for ip in node_ips(lab)]
    for ip, port in targets:
        who, results = served(lab, source, ip, port, protocol)
        assert results == {"ok"} and who == BACKENDS, (ip, port, who, results)


def test_multiple_services_with_the_same_selector(lab: Lab, cleanup: list[str]) -> None:
    """Networking Granular Checks: Services should function for multiple endpoint-Services with
    same selector: two Services, one selector, each answers; deleting one leaves the other."""
    a = service(lab, "same-sel-a", {"ports": [{"port": 80, "targetPort": 9376}]})
    b = service(lab, "same-sel-b", {"ports": [{"port": 81, "targetPort": 9377}]})
    cleanup += ["service/same-sel-a", "service/same-sel-b"]
    assert served(lab, "pod/client-1", a.cluster_ip, 80) == (BACKENDS, {"ok"})
    assert served(lab, "pod/client-1", b.cluster_ip, 81) == (BACKENDS, {"ok"})
    lab.delete("service/same-sel-a")
    assert served(lab, "pod/client-2", b.cluster_ip, 81) == (BACKENDS, {"ok"})
    assert served(lab, "pod/client-2", a.cluster_ip, 80, n=2, timeout=DROP_WAIT)[1] <= {"refused", "timeout"}  # the VIP is gone


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_update_node_port(lab: Lab, cleanup: list[str], protocol: str) -> None:
    """Networking Granular Checks: Services should update nodePort (http, udp) and support basic
    nodePort udp functionality: the new nodePort answers, the old one no longer does."""
    ip_protocol = protocol.upper()
    spec = {"type": "NodePort", "ports": [{"port": 80, "targetPort": 9376, "protocol": ip_protocol, "nodePort": 30111}]}
    service(lab, f"np-update-{protocol}", spec)
    cleanup.append(f"service/np-update-{protocol}")
    node = node_ips(lab)[1]
    assert served(lab, "pod/client-1", node, 30111, protocol) == (BACKENDS, {"ok"})
    spec["ports"][0]["nodePort"] = 30112  # type: ignore[index]
    service(lab, f"np-update-{protocol}", spec)
    assert served(lab, "pod/client-1", node, 30112, protocol) == (BACKENDS, {"ok"})
    old = served(lab, "pod/client-1", node, 30111, protocol, n=3, timeout=DROP_WAIT)
    assert old[0] == set() and "ok" not in old[1], old


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_client_ip_session_affinity(lab: Lab, cleanup: list[str], protocol: str) -> None:
    """Networking Granular Checks: Services should function for client IP based session
    affinity (http, udp): every new connection from one client goes to one backend."""
    svc = service(lab, f"affinity-{protocol}", {"sessionAffinity": "ClientIP",
                                                "ports": [{"port": 80, "targetPort": 9376, "protocol": protocol.upper()}]})
    cleanup.append(f"service/{svc.name}")
    who, results = served(lab, "pod/client-1", svc.cluster_ip, 80, protocol)
    assert results == {"ok"} and len(who) == 1, who


def test_large_requests(lab: Lab, cleanup: list[str]) -> None:
    """Networking Granular Checks: Services should be able to handle large requests (http, udp):
    a 2,000-byte HTTP request and a 2,000-byte UDP datagram (bigger than the overlay MTU: it
    crosses as IP fragments) through a ClusterIP, from the other node, answered whole."""
    svc = service(lab, "large", {"ports": [{"name": "tcp", "port": 80, "targetPort": 9376},
                                           {"name": "udp", "port": 80, "targetPort": 9376, "protocol": "UDP"}]})
    cleanup.append("service/large")
    http, udp = large_requests(lab, "pod/client-2", svc.cluster_ip)
    assert http.startswith(b"HTTP/1.") and b"web-" in http, http[:200]
    assert http.count(b"x") >= 2000, len(http)  # the whole request came through (netexec echoes the path)
    assert udp.split()[0].decode() in BACKENDS


def large_requests(lab: Lab, client: str, ip: str, port: int = 80) -> tuple[bytes, bytes]:
    """A 2,000-byte HTTP request and a 2,000-byte UDP datagram from ``client`` to ``ip``:port
    (IPv4 or IPv6): the two answers."""
    import socket

    from netns_lab.realize.netns import run_in

    body = "x" * 2000

    def http() -> bytes:
        with socket.create_connection((ip, port), timeout=3) as s:
            s.sendall(f"GET /echo?msg={body} HTTP/1.0\r\nHost: large\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return data

    def udp() -> bytes:
        with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(body.encode(), (ip, port))
            return s.recv(65536)

    return run_in(lab.netns_of(client), http), run_in(lab.netns_of(client), udp)


def test_pod_dns_config(lab: Lab, cleanup: list[str]) -> None:
    """DNS should support configurable pod DNS nameservers [Conformance], should support
    configurable pod resolv.conf, and should work with the pod containing more than 6 DNS
    search paths and longer than 256 search list characters: a pod with dnsPolicy None gets
    exactly its dnsConfig in resolv.conf, and resolves through it (glibc, in the pod). The
    nameserver is the cluster DNS (upstream's 1.1.1.1 would be traffic outside the lab)."""
    from netns_lab.probes.resolve import resolve

    dns_ip = lab.service("kube-system/kube-dns").cluster_ip
    searches = ["default.svc.cluster.local"] + [f"{'x' * 40}-{i}.example" for i in range(7)]
    lab.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dns-config"},
               "spec": {"nodeName": "node-1", "dnsPolicy": "None",
                        "dnsConfig": {"nameservers": [dns_ip], "searches": searches, "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]},
                        "containers": [{"name": "c", "image": "netexec", "ports": [{"containerPort": 9376}]}]}})
    cleanup.append("pod/dns-config")
    assert len(" ".join(searches)) > 256 and len(searches) > 6
    lines = [ln for ln in lab.exec("pod/dns-config", ["cat", "/etc/resolv.conf"], check=True).stdout.splitlines() if not ln.startswith("#")]
    assert lines == ["search " + " ".join(searches), f"nameserver {dns_ip}", "options ndots:2 edns0"]
    out = lab.exec("pod/dns-config", ["getent", "hosts", "web"], check=True).stdout.split()
    assert out[0] == lab.service("web").cluster_ip, out  # found through the first search path
    r = resolve(lab.netns_of("pod/dns-config"), "web", "A")
    assert r.result == "ok" and r.qname.rstrip(".") == "web.default.svc.cluster.local", r


# --- Services -------------------------------------------------------------------------------


def test_functioning_node_port_from_a_pod(lab: Lab, cleanup: list[str]) -> None:
    """Services should be able to create a functioning NodePort service [Conformance]: a pod
    reaches the Service on each node's IP at its nodePort."""
    svc = service(lab, "functioning-np", {"type": "NodePort", "ports": [{"port": 80, "targetPort": 9376}]})
    cleanup.append("service/functioning-np")
    for ip in node_ips(lab):
        assert served(lab, "pod/client-1", ip, svc.ports[0].node_port) == (BACKENDS, {"ok"})


@pytest.mark.parametrize("kind", ["ClusterIP", "NodePort"])
def test_switch_session_affinity(lab: Lab, cleanup: list[str], kind: str) -> None:
    """Services should be able to switch session affinity for service with type clusterIP /
    for NodePort service [Conformance], and should have session affinity work for NodePort
    service [Conformance]: None spreads, ClientIP sticks, None spreads again."""
    name = f"switch-{kind.lower()}"
    spec: dict[str, Any] = {"type": kind, "ports": [{"port": 80, "targetPort": 9376}]}
    svc = service(lab, name, spec)
    cleanup.append(f"service/{name}")
    dst, port = (svc.cluster_ip, 80) if kind == "ClusterIP" else (node_ips(lab)[0], svc.ports[0].node_port)
    assert served(lab, "pod/client-2", dst, port) == (BACKENDS, {"ok"})
    service(lab, name, {**spec, "sessionAffinity": "ClientIP"})
    who, results = served(lab, "pod/client-2", dst, port)
    assert results == {"ok"} and len(who) == 1, who
    service(lab, name, {**spec, "sessionAffinity": "None"})
    assert served(lab, "pod/client-2", dst, port) == (BACKENDS, {"ok"})


@pytest.mark.parametrize("kind", ["ClusterIP", "NodePort"])
def test_session_affinity_timeout(lab: Lab, cleanup: list[str], kind: str) -> None:
    """Services should have session affinity timeout work for service with type clusterIP /
    for NodePort service: sticky while the client keeps coming back within the timeout;
    after timeoutSeconds of silence the next connection is balanced afresh."""
    name = f"affinity-timeout-{kind.lower()}"
    svc = service(lab, name, {"type": kind, "sessionAffinity": "ClientIP",
                              "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 2}},
                              "ports": [{"port": 80, "targetPort": 9376}]})
    cleanup.append(f"service/{name}")
    dst, port = (svc.cluster_ip, 80) if kind == "ClusterIP" else (node_ips(lab)[1], svc.ports[0].node_port)
    seen: list[str | None] = []
    for _ in range(TRIES):  # each round: a sticky run, then silence past the timeout
        who, results = served(lab, "pod/client-1", dst, port, n=4)
        assert results == {"ok"} and len(who) == 1, who
        seen += who
        if set(seen) == BACKENDS:
            break
        time.sleep(2.5)
    assert set(seen) == BACKENDS, seen


def test_same_port_different_protocols(lab: Lab, cleanup: list[str]) -> None:
    """Services should serve endpoints on same port and different protocols [Conformance],
    should be able to update service type to NodePort listening on same port number but
    different protocols, and should serve endpoints on same port and different protocol for
    internal traffic on Type LoadBalancer: TCP 80 and UDP 80 both answer, on the ClusterIP,
    then the nodePorts, then the ClusterIP of the LoadBalancer; removing the UDP port leaves
    TCP and ends UDP."""
    ports = [{"name": "tcp", "port": 80, "targetPort": 9376, "protocol": "TCP"},
             {"name": "udp", "port": 80, "targetPort": 9376, "protocol": "UDP"}]
    svc = service(lab, "dual-proto", {"ports": ports})
    cleanup.append("service/dual-proto")
    for proto in ("tcp", "udp"):
        assert served(lab, "pod/client-1", svc.cluster_ip, 80, proto) == (BACKENDS, {"ok"})
    svc = service(lab, "dual-proto", {"type": "NodePort", "ports": ports})
    node_ports = {p.protocol: p.node_port for p in svc.ports}
    for proto in ("tcp", "udp"):
        assert served(lab, "pod/client-2", node_ips(lab)[0], node_ports[proto.upper()], proto) == (BACKENDS, {"ok"})
    svc = service(lab, "dual-proto", {"type": "LoadBalancer", "ports": ports})  # internal traffic to a LoadBalancer
    for proto in ("tcp", "udp"):
        assert served(lab, "pod/client-2", svc.cluster_ip, 80, proto) == (BACKENDS, {"ok"})
    svc = service(lab, "dual-proto", {"ports": ports[:1]})
    assert served(lab, "pod/client-1", svc.cluster_ip, 80, "tcp") == (BACKENDS, {"ok"})
    who, results = served(lab, "pod/client-1", svc.cluster_ip, 80, "udp", n=3, timeout=DROP_WAIT)
    assert who == set() and "ok" not in results, results


def test_adding_and_deleting_ports(lab: Lab, cleanup: list[str]) -> None:
    """Services should be updated after adding or deleting ports."""
    svc = service(lab, "ports-change", {"ports": [{"name": "a", "port": 80, "targetPort": 9376}]})
    cleanup.append("service/ports-change")
    assert served(lab, "pod/client-1", svc.cluster_ip, 80) == (BACKENDS, {"ok"})
    assert "ok" not in served(lab, "pod/client-1", svc.cluster_ip, 81, n=2, timeout=DROP_WAIT)[1]
    service(lab, "ports-change", {"ports": [{"name": "a", "port": 80, "targetPort": 9376}, {"name": "b", "port": 81, "targetPort": 9377}]})
    assert served(lab, "pod/client-1", svc.cluster_ip, 81) == (BACKENDS, {"ok"})
    service(lab, "ports-change", {"ports": [{"name": "b", "port": 81, "targetPort": 9377}]})
    assert served(lab, "pod/client-1", svc.cluster_ip, 81) == (BACKENDS, {"ok"})
    assert "ok" not in served(lab, "pod/client-1", svc.cluster_ip, 80, n=2, timeout=DROP_WAIT)[1]


def test_recreated_service(lab: Lab, cleanup: list[str]) -> None:
    """Services should work after the service has been recreated."""
    spec = {"ports": [{"port": 80, "targetPort": 9376}]}
    svc = service(lab, "recreated", spec)
    cleanup.append("service/recreated")
    assert served(lab, "pod/client-1", svc.cluster_ip, 80) == (BACKENDS, {"ok"})
    lab.delete("service/recreated")
    again = service(lab, "recreated", spec)
    assert served(lab, "pod/client-2", again.cluster_ip, 80) == (BACKENDS, {"ok"})


def test_type_changes_to_and_from_external_name(lab: Lab, cleanup: list[str]) -> None:
    """Services should be able to change the type from ClusterIP to ExternalName, from
    ExternalName to NodePort and from NodePort to ExternalName [Conformance]: DNS gives the
    CNAME while ExternalName; the ClusterIP and nodePort answer while NodePort; once
    ExternalName again, neither does."""
    cleanup.append("service/type-change")
    svc = service(lab, "type-change", {"ports": [{"port": 80, "targetPort": 9376}]})
    assert served(lab, "pod/client-1", svc.cluster_ip, 80) == (BACKENDS, {"ok"})
    lab.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "type-change"},
               "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}})
    answer = lab.exec("pod/client-1", ["getent", "hosts", "type-change"]).stdout
    assert lab.service("web").cluster_ip in answer, answer  # the CNAME, followed to web's ClusterIP
    assert "ok" not in served(lab, "pod/client-1", svc.cluster_ip, 80, n=2, timeout=DROP_WAIT)[1]
    svc = service(lab, "type-change", {"type": "NodePort", "ports": [{"port": 80, "targetPort": 9376}]})
    assert served(lab, "pod/client-2", svc.cluster_ip, 80) == (BACKENDS, {"ok"})
    node_port = svc.ports[0].node_port
    assert served(lab, "pod/client-2", node_ips(lab)[0], node_port) == (BACKENDS, {"ok"})
    lab.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "type-change"},
               "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}})
    assert "ok" not in served(lab, "pod/client-2", node_ips(lab)[0], node_port, n=2, timeout=DROP_WAIT)[1]
    assert "ok" not in served(lab, "pod/client-2", svc.cluster_ip, 80, n=2, timeout=DROP_WAIT)[1]


@pytest.mark.parametrize("label", ["service.kubernetes.io/service-proxy-name", "service.kubernetes.io/headless"])
def test_services_kube_proxy_must_ignore(lab: Lab, cleanup: list[str], label: str) -> None:
    """Services should implement service.kubernetes.io/service-proxy-name and
    service.kubernetes.io/headless: kube-proxy does not see a Service with either label, so its
    ClusterIP has no rules (not even a reject); without the label it is served; putting the
    label back stops it again."""
    name = "ignored-" + label.split("/")[1]
    spec = {"ports": [{"port": 80, "targetPort": 9376}]}
    svc = service(lab, name, spec, labels={label: "foo-bar"})
    cleanup.append(f"service/{name}")
    who, results = served(lab, "pod/client-1", svc.cluster_ip, 80, n=3, timeout=DROP_WAIT)
    assert who == set() and results <= {"timeout", "unreachable"}, results  # no rules at all: not even a reject
    service(lab, name, spec)
    assert served(lab, "pod/client-1", svc.cluster_ip, 80) == (BACKENDS, {"ok"})
    service(lab, name, spec, labels={label: "foo-bar"})
    who, results = served(lab, "pod/client-1", svc.cluster_ip, 80, n=3, timeout=DROP_WAIT)
    assert who == set() and results <= {"timeout", "unreachable"}, results


def test_internal_traffic_policy_local(lab: Lab, cleanup: list[str]) -> None:
    """Services should respect internalTrafficPolicy=Local Pod to Pod, and Pod (hostNetwork:
    true) to Pod: each client, pod or node, reaches only the backend on its own node; a node
    with none drops the traffic."""
    svc = service(lab, "itp-local", {"internalTrafficPolicy": "Local", "ports": [{"port": 80, "targetPort": 9376}]})
    cleanup.append("service/itp-local")
    for node in ("1", "2"):  # from pods, and from the nodes (upstream's hostNetwork clients)
        assert served(lab, f"pod/client-{node}", svc.cluster_ip, 80) == ({f"web-{node}"}, {"ok"})
        assert served(lab, f"node/node-{node}", svc.cluster_ip, 80) == ({f"web-{node}"}, {"ok"})
    lab.label("pod/web-2", app=None)
    try:
        who, results = served(lab, "pod/client-2", svc.cluster_ip, 80, n=2, timeout=DROP_WAIT)
        assert who == set() and results == {"timeout"}, results  # dropped, not rejected: web-1 exists
        assert served(lab, "pod/client-1", svc.cluster_ip, 80) == ({"web-1"}, {"ok"})
    finally:
        lab.label("pod/web-2", app="web")


def test_publish_not_ready_addresses(lab: Lab, cleanup: list[str]) -> None:
    """Services should create endpoints for unready pods, and should be able to connect to
    terminating and unready endpoints if PublishNotReadyAddresses is true (and not if it is
    false): the same not-ready, then terminating, pod behind two Services."""
    lab.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pnra", "labels": {"pnra": "x"}},
               "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "netexec", "ports": [{"containerPort": 9376}]}]}})
    cleanup += ["service/pnra-yes", "service/pnra-no", "pod/pnra"]
    lab.set_ready("pod/pnra", False)
    port = [{"port": 80, "targetPort": 9376}]
    yes = service(lab, "pnra-yes", {"selector": {"pnra": "x"}, "publishNotReadyAddresses": True, "ports": port})
    no = service(lab, "pnra-no", {"selector": {"pnra": "x"}, "ports": port})
    assert served(lab, "pod/client-1", yes.cluster_ip, 80, n=4) == ({"pnra"}, {"ok"})
    assert served(lab, "pod/client-1", no.cluster_ip, 80, n=2) == (set(), {"refused"})
    lab.delete("pod/pnra", grace_period=120)  # terminating and not ready
    assert served(lab, "pod/client-2", yes.cluster_ip, 80, n=4) == ({"pnra"}, {"ok"})
    assert served(lab, "pod/client-2", no.cluster_ip, 80, n=2) == (set(), {"refused"})


def test_services_survive_a_kube_proxy_restart(lab: Lab, cleanup: list[str]) -> None:
    """Services should work after restarting kube-proxy [Disruptive]: a new process that
    knows nothing of the rules makes a full sync from the recorded objects (as a restarted
    kube-proxy does from the API), and the Services answer throughout and after."""
    svc = service(lab, "restart", {"ports": [{"port": 80, "targetPort": 9376}]})
    cleanup.append("service/restart")
    fresh = Lab.attach(lab.name)
    fresh.reconcile()
    assert served(lab, "pod/client-1", svc.cluster_ip, 80) == (BACKENDS, {"ok"})
    assert served(lab, "pod/client-2", lab.service("web").cluster_ip, 80) == (BACKENDS, {"ok"})


def test_services_survive_an_api_server_restart(lab: Lab, cleanup: list[str]) -> None:
    """Services should work after restarting apiserver [Disruptive]: the lab's API server is
    killed (SIGKILL); the next command starts a new one, which serves the change, and the
    Services answer."""
    import signal

    from netns_lab import cli, state
    from netns_lab.apiserver import ROLE

    cli.reconcile(lab.name, out=open(os.devnull, "w"))  # make sure one runs
    st = state.load(lab.name)
    assert st is not None
    [server] = [p["pid"] for p in st.processes if p["role"] == ROLE]
    os.kill(server, signal.SIGKILL)
    time.sleep(0.2)
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        fh.write("apiVersion: v1\nkind: Service\nmetadata: {name: after-restart}\n"
                 "spec: {selector: {app: web}, ports: [{port: 80, targetPort: 9376}]}\n")
    cleanup.append("service/after-restart")
    try:
        assert cli.apply(lab.name, [fh.name], out=open(os.devnull, "w")) in (None, 0)
    finally:
        os.unlink(fh.name)
    st = state.load(lab.name)
    assert st is not None and server not in [p["pid"] for p in st.processes if p["role"] == ROLE]
    fresh = Lab.attach(lab.name)
    assert served(fresh, "pod/client-1", fresh.service("after-restart").cluster_ip, 80) == (BACKENDS, {"ok"})
    assert served(fresh, "pod/client-2", fresh.service("web").cluster_ip, 80) == (BACKENDS, {"ok"})


def test_rules_deleted_by_hand_come_back(lab: Lab) -> None:
    """Networking should recreate its iptables rules if they are deleted [Disruptive]: every
    Service rule of node-1 is removed (iptables: the nat table's KUBE chains and jumps;
    nftables: the kube-proxy table); the ClusterIP stops working from that node's client; a
    resync (`invoke reconcile`, kube-proxy's periodic full sync) brings it back."""
    ns = lab.topology.node("node-1").netns
    web = lab.service("web").cluster_ip
    if lab.state.proxy_mode == "nftables":
        subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "ip", "kube-proxy"], check=True)
    else:  # the nat table without a KUBE- chain or a jump to one; everything else kept
        tool = f"iptables-{lab.state.iptables_backend}"
        saved = subprocess.run(["ip", "netns", "exec", ns, f"{tool}-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout
        kept = "\n".join(ln for ln in saved.splitlines() if "KUBE-" not in ln) + "\n"
        subprocess.run(["ip", "netns", "exec", ns, f"{tool}-restore", "-T", "nat"], input=kept, text=True, check=True)
    subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-F"], capture_output=True)
    assert served(lab, "pod/client-1", web, 80, n=2, timeout=DROP_WAIT)[0] == set()
    Lab.attach(lab.name).reconcile()
    assert served(lab, "pod/client-1", web, 80) == (BACKENDS, {"ok"})


# --- Conntrack ------------------------------------------------------------------------------


def _udp_stream(lab: Lab, src: str, dst: str, port: int) -> Any:
    """A client that sends one datagram every 100 ms from one source port (one conntrack
    flow, as the upstream test's `nc -u` loop) and collects who answered (IPv4 or IPv6, as
    ``dst`` is; tests/test_dual_stack_services.py uses it too)."""
    import socket
    import threading

    from netns_lab.realize.netns import NetnsThread

    answers: list[str] = []
    errors: list[int | None] = []
    stop = threading.Event()

    def run() -> None:
        w = NetnsThread()
        try:
            w.enter(lab.netns_of(src))
            v6 = ":" in dst
            with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("::" if v6 else "0.0.0.0", 42424))
                s.settimeout(0.1)
                while not stop.is_set():
                    try:  # refused or dropped while the Service has no endpoint: the flow goes on
                        s.sendto(b"hostname\n", (dst, port))
                        answers.append(s.recv(4096).split()[0].decode())
                    except OSError as exc:
                        errors.append(exc.errno)
                    time.sleep(0.1)
        finally:
            w.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return answers, stop, t


def _answered_by(answers: list[str], who: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers[-3:] == [who] * 3:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("kind,client", [("ClusterIP", "pod/client-1"), ("NodePort", "pod/client-1"),
                                         ("ClusterIP-Local", "pod/client-2"), ("ClusterIP", "node/node-1")])
def test_udp_flow_survives_its_server_pod_cycling(lab: Lab, cleanup: list[str], kind: str, client: str) -> None:
    """Conntrack should be able to preserve UDP traffic when server pod cycles for a ClusterIP
    service, a NodePort service, a ClusterIP service with InternalTrafficPolicy set to Local,
    and a ClusterIP service with the client on the node (hostNetwork): one UDP flow; its
    backend is replaced by another pod; the same flow (same source port) reaches the new
    backend, because kube-proxy deletes the stale conntrack entry."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "udp-a", "labels": {"udp": "cycle"}},
           "spec": {"nodeName": "node-2", "containers": [{"name": "s", "image": "netexec", "ports": [{"containerPort": 9376, "protocol": "UDP"}]}]}}
    lab.apply(pod)
    name = f"udp-{kind.lower()}"
    cleanup += ["pod/udp-a", "pod/udp-b", f"service/{name}"]
    spec: dict[str, Any] = {"type": "NodePort" if kind == "NodePort" else "ClusterIP", "selector": {"udp": "cycle"},
                            "ports": [{"port": 80, "targetPort": 9376, "protocol": "UDP"}]}
    if kind == "ClusterIP-Local":
        spec["internalTrafficPolicy"] = "Local"  # client-2 and both servers on node-2
    svc = service(lab, name, spec)
    dst, port = (node_ips(lab)[1], svc.ports[0].node_port) if kind == "NodePort" else (svc.cluster_ip, 80)
    flow_follows_backend_swap(lab, client, dst, port, pod, "udp-b")


def flow_follows_backend_swap(lab: Lab, client: str, dst: str, port: int, pod: dict[str, Any], second: str) -> None:
    """A UDP flow answered by ``pod`` (the only backend) is answered by pod ``second`` (same
    labels) once ``second`` is created and ``pod`` deleted: the stale conntrack entry went.
    ``second`` comes first, so it has another address than ``pod`` (a pod made after the
    deletion could take the freed address, and a stale entry would still reach it)."""
    first, labels = pod["metadata"]["name"], pod["metadata"]["labels"]
    answers, stop, t = _udp_stream(lab, client, dst, port)
    try:
        assert _answered_by(answers, first, 5), answers[-5:]
        lab.apply({**pod, "metadata": {"name": second, "labels": labels}})
        assert _answered_by(answers, first, 1), answers[-5:]  # the flow stays with its backend meanwhile
        lab.delete(f"pod/{first}", grace_period=0)
        assert _answered_by(answers, second, 5), answers[-5:]
    finally:
        stop.set()
        t.join()


def test_udp_flow_reaches_the_first_endpoint_once_ready(lab: Lab, cleanup: list[str]) -> None:
    """Conntrack should be able to preserve UDP traffic when initial unready endpoints get
    ready: a UDP flow to a Service without endpoints (its conntrack entry is never DNATed)
    reaches the backend once it is ready, because that entry is deleted."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "udp-late", "labels": {"udp": "late"}},
           "spec": {"nodeName": "node-2", "containers": [{"name": "s", "image": "netexec", "ports": [{"containerPort": 9376, "protocol": "UDP"}]}]}}
    lab.apply(pod)
    lab.set_ready("pod/udp-late", False)
    cleanup += ["pod/udp-late", "service/udp-late"]
    svc = service(lab, "udp-late", {"selector": {"udp": "late"}, "ports": [{"port": 80, "targetPort": 9376, "protocol": "UDP"}]})
    answers, stop, t = _udp_stream(lab, "pod/client-1", svc.cluster_ip, 80)
    try:
        time.sleep(1.0)
        assert not answers
        lab.set_ready("pod/udp-late", True)
        assert _answered_by(answers, "udp-late", 5), answers[-5:]
    finally:
        stop.set()
        t.join()


# --- Terminating endpoints ------------------------------------------------------------------


def test_traffic_policies_fall_back_to_terminating_endpoints(lab: Lab, cleanup: list[str]) -> None:
    """Services should fallback to local terminating endpoints when there are no ready
    endpoints with internalTrafficPolicy=Local / externalTrafficPolicy=Local, and to
    terminating endpoints with externalTrafficPolicy=Cluster: kube-proxy decides per node
    and per policy, falling back to serving terminating endpoints only where no ready one is
    usable. (The ClusterIP case is tests/test_terminating.py.)"""
    for name, node in (("term-1", "node-1"), ("term-2", "node-2")):
        lab.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"term": "x"}},
                   "spec": {"nodeName": node, "containers": [{"name": "c", "image": "netexec", "ports": [{"containerPort": 9376}]}]}})
    cleanup += ["service/term-itp", "service/term-etp", "service/term-cluster", "pod/term-1", "pod/term-2"]
    port = [{"port": 80, "targetPort": 9376}]
    itp = service(lab, "term-itp", {"selector": {"term": "x"}, "internalTrafficPolicy": "Local", "ports": port})
    etp = service(lab, "term-etp", {"type": "NodePort", "selector": {"term": "x"}, "externalTrafficPolicy": "Local", "ports": port})
    cluster = service(lab, "term-cluster", {"type": "NodePort", "selector": {"term": "x"}, "ports": port})
    node1 = node_ips(lab)[0]
    lab.delete("pod/term-1", grace_period=120)  # node-1's only endpoint is terminating; node-2's is ready
    assert served(lab, "pod/client-1", itp.cluster_ip, 80) == ({"term-1"}, {"ok"})  # local fallback
    assert served(lab, "pod/client-2", itp.cluster_ip, 80) == ({"term-2"}, {"ok"})  # ready local one
    # from node-2 (not a pod of node-1, not node-1 itself): external traffic for node-1's policy
    assert served(lab, "node/node-2", node1, etp.ports[0].node_port) == ({"term-1"}, {"ok"})
    assert served(lab, "node/node-2", node1, cluster.ports[0].node_port) == ({"term-2"}, {"ok"})  # a ready one exists
    lab.delete("pod/term-2", grace_period=120)  # no ready endpoint anywhere
    assert served(lab, "node/node-2", node1, cluster.ports[0].node_port) == ({"term-1", "term-2"}, {"ok"})
    assert served(lab, "pod/client-2", itp.cluster_ip, 80) == ({"term-2"}, {"ok"})


def test_kube_proxy_urls(lab: Lab) -> None:
    """Networking should check kube-proxy urls: on a node, :10256/healthz answers 200 with
    kube-proxy's JSON (lastUpdated), :10249/proxyMode names the mode."""
    import json

    for node in ("node/node-1", "node/node-2"):
        ns, ip = lab.netns_of(node), lab.ip_of(node)
        [health, mode] = run_probes([Probe(ns, ip, 10256, "http", "/healthz"), Probe(ns, "127.0.0.1", 10249, "http", "/proxyMode")])
        assert health.status == 200 and "lastUpdated" in json.loads(health.body), health
        assert mode.status == 200 and mode.body == lab.state.proxy_mode, mode
