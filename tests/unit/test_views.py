"""``get`` output: kubectl's columns, values taken from the model (pure formatting)."""

from __future__ import annotations

import os

import yaml

from netns_lab.controllers.topology import plan
from netns_lab.scenario import load_scenario
from netns_lab.views import age, render, rows
from tests.conftest import ROOT


def _load(name: str):  # type: ignore[no-untyped-def]
    s = load_scenario(os.path.join(ROOT, "scenarios", f"{name}.yaml"))
    return s, plan(s)


def test_services_all_namespaces_match_the_model() -> None:
    for name in ("nodeport", "headless", "externalname", "dns", "loadbalancer", "external-ips"):
        s, t = _load(name)
        data = rows("svc", s.pods, s.services, t, None, False, "5m")
        assert data[0] == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
        by_name = {(r[0], r[1]): r for r in data[1:]}
        assert len(by_name) == len(s.services)
        for svc in s.services:
            r = by_name[(svc.namespace, svc.name)]
            assert r[2] == svc.type and r[6] == "5m"
            if svc.type == "ExternalName":
                assert r[3:5] == ["<none>", svc.external_name]
            else:
                external = ",".join((*svc.load_balancer_ips, *svc.external_ips)) or "<none>"
                assert r[3] == (svc.cluster_ip or "None") and r[4] == external
                assert r[5] == ",".join(f"{p.port}:{p.node_port}/{p.protocol}" if p.node_port else f"{p.port}/{p.protocol}" for p in svc.ports) or "<none>"


def test_nodeport_and_headless_cells() -> None:
    s, t = _load("nodeport")
    text = render("services", s.pods, s.services, t, "default")
    assert "web-cluster   NodePort    10.96.0.2    <none>        80:30080/TCP" in text
    s, t = _load("headless")
    row = next(r for r in rows("services", s.pods, s.services, t, "default", True, "1s") if r[0] == "db")
    assert row == ["db", "ClusterIP", "None", "<none>", "5432/TCP", "1s", "app=db"]


def test_pods_wide_and_endpoints() -> None:
    s, t = _load("clusterip")
    data = rows("pods", s.pods, s.services, t, "default", True, "1s")
    assert data[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert ["web-1", "1/1", "Running", "0", "1s", "10.244.0.2", "node-1"] in data
    assert all(r[0] != "coredns" for r in data)  # kube-system is not in -n default
    eps = {r[0]: r[1] for r in rows("endpoints", s.pods, s.services, t, "default", False, "1s")[1:]}
    assert eps["my-service"] == "10.244.0.2:9376,10.244.1.2:9376,10.244.1.3:9376"
    assert eps["nobody-home"] == "<none>"


def test_yaml_output_is_a_kubernetes_list() -> None:
    s, t = _load("dns")
    doc = yaml.safe_load(render("pods", s.pods, s.services, t, "my-namespace", "yaml"))
    assert doc["kind"] == "List" and {i["metadata"]["name"] for i in doc["items"]} == {"web-1", "web-2", "client"}
    assert all(i["status"]["podIP"].startswith("10.244.") for i in doc["items"])


def test_age() -> None:
    assert [age(x) for x in (5, 300, 4000, 200000)] == ["5s", "5m", "66m", "2d"]


def test_loadbalancer_and_external_ip_cells() -> None:
    s, t = _load("loadbalancer")
    text = render("services", s.pods, s.services, t, "default")
    assert "web          LoadBalancer   10.96.0.2    198.51.100.1   80:30080/TCP" in text
    doc = yaml.safe_load(render("svc", s.pods, s.services, t, "default", "yaml"))
    local = next(i for i in doc["items"] if i["metadata"]["name"] == "web-local")
    assert local["status"]["loadBalancer"]["ingress"] == [{"ip": "198.51.100.2", "ipMode": "VIP"}]
    assert local["spec"]["externalTrafficPolicy"] == "Local" and 30000 <= local["spec"]["healthCheckNodePort"] <= 32767
    office = next(i for i in doc["items"] if i["metadata"]["name"] == "web-office")
    assert office["spec"]["loadBalancerSourceRanges"] == ["203.0.113.10/32"]
    s, t = _load("external-ips")
    assert "web          ClusterIP   10.96.0.2    192.0.2.10    80/TCP" in render("services", s.pods, s.services, t, "default")


def test_get_ingress_columns() -> None:
    s, t = _load("ingress")
    data = rows("ing", s.pods, s.services, t, None, False, "1m", s.ingresses)
    assert data[0] == ["NAMESPACE", "NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    lb = s.service("ingress-nginx/ingress-nginx").load_balancer_ips[0]
    assert data[1:] == [["default", "site-a", "nginx", "a.example.com", lb, "80, 443", "1m"],
                        ["default", "site-b", "<none>", "b.example.com", lb, "80", "1m"]]
    doc = yaml.safe_load(render("ingress", s.pods, s.services, t, "default", "yaml", ingresses=s.ingresses))
    a = doc["items"][0]
    assert a["spec"]["tls"] == [{"hosts": ["a.example.com"], "secretName": "a-tls"}]
    assert a["spec"]["rules"][0]["http"]["paths"][2] == {"path": "/a2/exact", "pathType": "Exact",
                                                        "backend": {"service": {"name": "a1", "port": {"number": 80}}}}


def test_endpointslices_show_each_endpoints_conditions() -> None:
    """A terminating pod stays in the slice: ready false, serving as its readiness says,
    terminating true (what kube-proxy's fallback reads); a not-ready pod is listed not ready."""
    from dataclasses import replace

    s, t = _load("clusterip")
    web = [p for p in s.pods if dict(p.labels).get("app") == "web"]
    assert len(web) >= 2
    pods = tuple(replace(p, deletion_deadline=1.0e9) if p.key == web[0].key else replace(p, ready=False) if p.key == web[1].key
                 else p for p in s.pods)
    doc = yaml.safe_load(render("endpointslices", pods, s.services, t, "default", "yaml"))
    [sl] = [i for i in doc["items"] if i["metadata"]["labels"]["kubernetes.io/service-name"] == "my-service"]
    conds = {e["targetRef"]["name"]: e["conditions"] for e in sl["endpoints"]}
    assert conds[web[0].name] == {"ready": False, "serving": True, "terminating": True}
    assert conds[web[1].name] == {"ready": False, "serving": False, "terminating": False}
    assert all(c == {"ready": True, "serving": True, "terminating": False} for n, c in conds.items() if n not in (web[0].name, web[1].name))
    table = rows("endpointslices", pods, s.services, t, "default", False, "1s")
    assert table[0] == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    pod_rows = rows("pods", pods, s.services, t, "default", False, "1s")
    assert next(r for r in pod_rows if r[0] == web[0].name)[1:3] == ["1/1", "Terminating"]  # still ready, as kubectl shows
