"""Services in a dual-stack lab, with packets: the upstream dual_stack.go e2e cases (a
Service per family choice, pods and nodes with both families) and its "Granular Checks:
Services Secondary IP Family" (pod, node and endpoint clients over the secondary, IPv6,
cluster IP and node IP; endpoint updates; session affinity; large requests), plus a UDP
flow over IPv6 that survives a backend swap (kube-proxy's IPv6 conntrack cleanup).

One lab per proxy mode (scenarios/dual-stack.yaml), changed at run time and put back.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from typing import Any

import pytest
import yaml

from netns_lab.errors import LabError
from netns_lab.lab import Lab
from netns_lab.probes.connect import Probe, run_probes
from tests.conftest import ROOT
from tests.test_conformance import flow_follows_backend_swap, large_requests

DUAL = os.path.join(ROOT, "scenarios", "dual-stack.yaml")
WEB = {"web-1", "web-2"}
pytestmark = pytest.mark.root


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def lab(request: pytest.FixtureRequest, lab_factory: Any) -> Lab:
    return lab_factory(DUAL, cluster__proxyMode=request.param)  # type: ignore[no-any-return]


def served(lab: Lab, src: str, dst: str, port: int, protocol: str = "tcp", n: int = 12,
           timeout: float = 2.0) -> tuple[set[str | None], set[str]]:
    """Who served ``n`` new connections, and every result seen. 2 s: a lost SYN is sent again
    after 1 s, and a Service that answers it has answered; a drop is probed with 1 s."""
    rs = run_probes([Probe(lab.netns_of(src), dst, port, protocol) for _ in range(n)], timeout=timeout, parallel=1)
    return {r.served_by for r in rs if r.result == "ok"}, {r.result for r in rs}


def service(lab: Lab, name: str, spec: dict[str, Any]) -> Any:
    lab.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 9376},
                                                              {"name": "udp", "port": 80, "targetPort": 9376, "protocol": "UDP"}], **spec}})
    return lab.service(name)


def _get(lab: Lab, kind: str) -> dict[str, Any]:
    invoke = os.path.join(os.path.dirname(sys.executable), "invoke")
    out = subprocess.run([invoke, "get", lab.name, kind, "-o", "yaml"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return yaml.safe_load(out)  # type: ignore[no-any-return]


def test_pods_and_nodes_have_both_families_primary_first(lab: Lab) -> None:
    """should create pod, add ipv6 and ipv4 ip to pod ips / host ips; should have ipv4 and
    ipv6 internal node ip (the API's view, from `invoke get pods -o yaml`)."""
    for item in _get(lab, "pods")["items"]:
        status = item["status"]
        ips = [x["ip"] for x in status["podIPs"]]
        assert len(ips) == 2 and ":" not in ips[0] and ":" in ips[1] and status["podIP"] == ips[0], status
        hosts = [x["ip"] for x in status["hostIPs"]]
        assert len(hosts) == 2 and ":" in hosts[1] and status["hostIP"] == hosts[0], status
        assert lab.addresses(f"pod/{item['metadata']['namespace']}/{item['metadata']['name']}", 6) == [ips[1]]


def test_pods_reach_pods_on_each_family(lab: Lab) -> None:
    """should be able to reach pod on ipv4 and ipv6 ip: every pod reaches every pod on both
    of its addresses, and is seen with its own address of that family."""
    from netns_lab.probes.promises import matrix

    for family in (4, 6):
        report = matrix(lab.topology, "pod-to-pod", "tcp", family=family)
        assert report.ok, (family, [p.describe() for p in report.failures])


@pytest.mark.parametrize("spec, families", [
    ({}, ["IPv4"]),  # should create a single stack service with cluster ip from primary service range
    ({"ipFamilies": ["IPv4"]}, ["IPv4"]),  # should create service with ipv4 cluster ip
    ({"ipFamilies": ["IPv6"]}, ["IPv6"]),  # should create service with ipv6 cluster ip
    ({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}, ["IPv4", "IPv6"]),  # ... ipv4,v6 cluster ip
    ({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"]}, ["IPv6", "IPv4"]),  # ... ipv6,v4 cluster ip
])
def test_dual_stack_go_service_cases(lab: Lab, cleanup: list[str], spec: dict[str, Any], families: list[str]) -> None:
    """Each Service gets one cluster IP per family, in its order, from that family's range;
    one EndpointSlice per family; every cluster IP answers, from the pods of its family."""
    cleanup.append("service/fam")
    svc = service(lab, "fam", {"type": "NodePort", **spec})
    item = next(i for i in _get(lab, "services")["items"] if i["metadata"]["name"] == "fam")
    assert item["spec"]["ipFamilies"] == families
    assert item["spec"]["ipFamilyPolicy"] == ("RequireDualStack" if len(families) == 2 else "SingleStack")
    ips = item["spec"]["clusterIPs"]
    assert item["spec"]["clusterIP"] == ips[0] and len(ips) == len(families)
    ranges = {"IPv4": lab.topology.service_cidr, "IPv6": lab.topology.service_cidr6}
    for ip, family in zip(ips, families):
        assert ipaddress.ip_address(ip) in ranges[family]  # type: ignore[operator]
    slices = [s for s in _get(lab, "endpointslices")["items"] if s["metadata"]["labels"]["kubernetes.io/service-name"] == "fam"]
    assert sorted(s["addressType"] for s in slices) == sorted(families)
    for ip in ips:
        who, results = served(lab, "pod/client-1", ip, 80)
        assert results == {"ok"} and who == WEB, (ip, who, results)
    for port in svc.ports:  # the NodePort on each family's node address, from outside
        for family in families:
            node_ip = lab.ip_of("node/node-2", 6 if family == "IPv6" else 4)
            who, results = served(lab, "external", node_ip, port.node_port, port.protocol.lower(), n=8)
            assert results == {"ok"} and who <= WEB and who, (family, port, who, results)
    for family in {"IPv4", "IPv6"} - set(families):  # a family the Service lacks: no cluster IP, no rule
        with pytest.raises(LabError):
            lab.ip_of("service/fam", 6 if family == "IPv6" else 4)


@pytest.fixture
def dual(lab: Lab, cleanup: list[str]) -> Any:
    cleanup.append("service/secondary")
    svc = service(lab, "secondary", {"type": "NodePort", "ipFamilyPolicy": "RequireDualStack"})
    assert svc.ip_families == ("IPv4", "IPv6")
    return svc


@pytest.mark.parametrize("protocol", ["http", "udp"])
@pytest.mark.parametrize("client", ["pod/client-1", "node/node-2", "pod/web-1"])  # pod-Service, node-Service, endpoint-Service
def test_granular_checks_secondary_ip_family(lab: Lab, dual: Any, client: str, protocol: str) -> None:
    """Granular Checks: Services Secondary IP Family: a client pod, a node and an endpoint pod
    (its own Service: hairpin) reach every endpoint over the secondary cluster IP and over the
    secondary node IP's NodePort."""
    secondary = dual.cluster_ips[1]
    node_port = next(p.node_port for p in dual.ports if p.protocol == ("UDP" if protocol == "udp" else "TCP"))
    who, results = served(lab, client, secondary, 80, protocol, n=16)
    assert results == {"ok"} and who == WEB, (who, results)
    who, results = served(lab, client, lab.ip_of("node/node-1", 6), node_port, protocol, n=16)
    assert results == {"ok"} and who == WEB, (who, results)


def test_secondary_family_update_endpoints(lab: Lab, dual: Any, cleanup: list[str]) -> None:
    """Granular Checks (secondary family): update endpoints: a third backend answers, then
    after its deletion only the live ones do."""
    extra = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-3", "labels": {"app": "web"}},
             "spec": {"nodeName": "node-1", "containers": [{"name": "w", "image": "netexec", "ports": [{"containerPort": 9376}]}]}}
    cleanup.append("pod/web-3")
    lab.apply(extra)
    who, _ = served(lab, "pod/client-2", dual.cluster_ips[1], 80, "udp", n=30)
    assert who == WEB | {"web-3"}, who
    lab.delete("pod/web-3", grace_period=0)
    who, results = served(lab, "pod/client-2", dual.cluster_ips[1], 80, "udp", n=16)
    assert results == {"ok"} and who == WEB, (who, results)


@pytest.mark.parametrize("protocol", ["http", "udp"])
def test_secondary_family_session_affinity(lab: Lab, cleanup: list[str], protocol: str) -> None:
    """Granular Checks (secondary family): client IP based session affinity: ClusterIPs[1]
    answers from exactly one endpoint."""
    cleanup.append("service/sticky6")
    svc = service(lab, "sticky6", {"ipFamilyPolicy": "PreferDualStack", "sessionAffinity": "ClientIP"})
    who, results = served(lab, "pod/client-1", svc.cluster_ips[1], 80, protocol, n=12)
    assert results == {"ok"} and len(who) == 1, who


def test_secondary_family_large_requests(lab: Lab, dual: Any) -> None:
    """Granular Checks (secondary family): large requests: 2,000 bytes over HTTP and in one
    UDP datagram (IPv6 fragments across the overlay) through the IPv6 cluster IP."""
    http, udp = large_requests(lab, "pod/client-2", dual.cluster_ips[1])
    assert http.startswith(b"HTTP/1.") and http.count(b"x") >= 2000, http[:200]
    assert udp.split()[0].decode() in WEB


def test_udp_over_ipv6_survives_a_backend_swap(lab: Lab, cleanup: list[str]) -> None:
    """One IPv6 UDP flow (one source port) to a Service whose only backend is replaced: the
    same flow reaches the new pod, because kube-proxy deleted the stale IPv6 conntrack entry."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "udp6-a", "labels": {"udp6": "swap"}},
           "spec": {"nodeName": "node-2", "containers": [{"name": "s", "image": "netexec", "ports": [{"containerPort": 9376, "protocol": "UDP"}]}]}}
    cleanup += ["pod/udp6-a", "pod/udp6-b", "service/udp6"]
    lab.apply(pod)
    lab.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "udp6"},
               "spec": {"ipFamilies": ["IPv6"], "selector": {"udp6": "swap"}, "ports": [{"port": 80, "targetPort": 9376, "protocol": "UDP"}]}})
    ip = lab.service("udp6").cluster_ip
    assert ip is not None and ":" in ip
    flow_follows_backend_swap(lab, "pod/client-1", ip, 80, pod, "udp6-b")


def test_single_stack_to_dual_and_back(lab: Lab, cleanup: list[str]) -> None:
    """An update keeps the primary cluster IP; PreferDualStack adds the IPv6 one (served at
    once), SingleStack releases it (no longer proxied), as the API server and kube-proxy do."""
    cleanup.append("service/grow")
    first = service(lab, "grow", {})
    assert first.ip_families == ("IPv4",)
    grown = service(lab, "grow", {"ipFamilyPolicy": "PreferDualStack"})
    assert grown.cluster_ips[0] == first.cluster_ip and len(grown.cluster_ips) == 2
    assert served(lab, "pod/client-1", grown.cluster_ips[1], 80)[1] == {"ok"}
    shrunk = service(lab, "grow", {"ipFamilyPolicy": "SingleStack"})
    assert shrunk.cluster_ips == (first.cluster_ip,)
    assert "ok" not in served(lab, "pod/client-1", grown.cluster_ips[1], 80, n=2, timeout=1.0)[1]


def test_load_balancer_and_external_ips_over_ipv6_from_outside(lab: Lab, cleanup: list[str]) -> None:
    """A dual-stack LoadBalancer: an LB IP from each pool, both served from outside through
    the cloud load balancer (externalTrafficPolicy Local keeps the client's IPv6 address); an
    IPv6 externalIP routed by the router to the nodes' IPv6 addresses."""
    cleanup += ["service/lb6", "service/ext6"]
    lb = service(lab, "lb6", {"type": "LoadBalancer", "ipFamilyPolicy": "RequireDualStack", "externalTrafficPolicy": "Local"})
    assert len(lb.load_balancer_ips) == 2 and ":" in lb.load_balancer_ips[1]
    import time

    deadline = time.monotonic() + 10  # the cloud LB's health checks put the nodes in service
    while time.monotonic() < deadline and served(lab, "external", lb.load_balancer_ips[1], 80, n=1)[1] != {"ok"}:
        time.sleep(0.3)
    for ip in lb.load_balancer_ips:
        rs = run_probes([Probe(lab.netns_of("external"), ip, 80, "tcp") for _ in range(10)], timeout=2.0, parallel=1)
        assert {r.result for r in rs} == {"ok"} and {r.served_by for r in rs} <= WEB, (ip, rs[:2])
        assert {r.client_ip for r in rs} == {lab.ip_of("external", 6 if ":" in ip else 4)}  # Local: the client's own address
    cleanup.append("service/lb6only")  # an IPv6-only Local LoadBalancer: its health check counts IPv6 endpoints
    only = service(lab, "lb6only", {"type": "LoadBalancer", "ipFamilies": ["IPv6"], "externalTrafficPolicy": "Local"})
    assert len(only.load_balancer_ips) == 1 and ":" in only.load_balancer_ips[0]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and served(lab, "external", only.load_balancer_ips[0], 80, n=1)[1] != {"ok"}:
        time.sleep(0.3)
    who, results = served(lab, "external", only.load_balancer_ips[0], 80, n=10)
    assert results == {"ok"} and who <= WEB, (who, results)
    ext = "2001:db8:5::10"
    service(lab, "ext6", {"ipFamilyPolicy": "PreferDualStack", "externalIPs": [ext]})
    who, results = served(lab, "external", ext, 80, n=10)
    assert results == {"ok"} and who == WEB, (who, results)


def test_trace_follows_an_ipv6_packet(lab: Lab) -> None:
    """`invoke trace --family ipv6`: the IPv6 packet's way through the ip6 rules (nftables'
    ip6 kube-proxy table, or ip6tables-nft's chains) to a DNAT to a pod's IPv6 address."""
    from netns_lab.probes.trace import trace

    t = trace(lab, "pod/client-1", "web:80", family=6)
    assert t.result == "ok", t
    assert t.source_addr.startswith(f"[{lab.ip_of('pod/client-1', 6)}]:")
    assert t.dnat is not None and t.dnat.startswith("[fd00:10:244:"), t.dnat
    assert t.served_by in WEB and t.server_saw is not None and t.server_saw.startswith(f"[{lab.ip_of('pod/client-1', 6)}]")
    assert any(s.table.startswith("ip6 ") for s in t.steps), [s.table for s in t.steps][:5]
