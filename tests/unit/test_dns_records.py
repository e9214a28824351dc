"""Cluster DNS naming rules, kubelet's resolv.conf and Service environment (pure code)."""

from __future__ import annotations

import os

from netns_lab.controllers import dns
from netns_lab.controllers.envvars import pod_env
from netns_lab.controllers.topology import plan
from netns_lab.model import DnsConfig, Pod
from netns_lab.probes.resolve import candidates, parse_resolv_conf
from netns_lab.realize.resolvconf import resolv_conf
from netns_lab.scenario import load_scenario
from tests.conftest import ROOT


def _records(name: str) -> tuple[dns.Records, object]:
    s = load_scenario(os.path.join(ROOT, "scenarios", f"{name}.yaml"))
    return dns.build(s.services, s.pods, plan(s), s.cluster.cluster_domain), s


def test_clusterip_records() -> None:
    rec, _ = _records("dns")
    assert dns.answer(rec, "my-service.my-namespace.svc.cluster.local.", "A") == (0, [("my-service.my-namespace.svc.cluster.local.", "A", "10.96.0.2")])
    code, ans = dns.answer(rec, "_http._tcp.my-service.my-namespace.svc.cluster.local", "SRV")
    assert code == 0 and list(ans[0][2]) == [0, 100, 80, "my-service.my-namespace.svc.cluster.local."]
    assert dns.answer(rec, "2.0.96.10.in-addr.arpa.", "PTR")[1][0][2] == "my-service.my-namespace.svc.cluster.local."
    assert dns.answer(rec, "kube-dns.kube-system.svc.cluster.local.", "A")[1][0][2] == "10.96.0.10"
    assert dns.answer(rec, "kubernetes.default.svc.cluster.local.", "A")[1][0][2] == "10.96.0.1"


def test_rcodes() -> None:
    rec, _ = _records("dns")
    assert dns.answer(rec, "nope.my-namespace.svc.cluster.local.", "A") == (dns.NXDOMAIN, [])
    assert dns.answer(rec, "example.com.", "A") == (dns.REFUSED, [])
    assert dns.answer(rec, "my-service.my-namespace.svc.cluster.local.", "AAAA") == (dns.NOERROR, [])  # NODATA
    assert dns.answer(rec, "9.9.96.10.in-addr.arpa.", "PTR") == (dns.NXDOMAIN, [])  # in serviceCIDR
    assert dns.answer(rec, "8.8.8.8.in-addr.arpa.", "PTR") == (dns.REFUSED, [])
    assert dns.answer(rec, "dns-version.cluster.local.", "TXT")[1][0][2] == "1.1.0"


def test_pod_records_pods_insecure() -> None:
    rec, _ = _records("dns")
    assert dns.answer(rec, "10-244-3-7.my-namespace.pod.cluster.local.", "A")[1][0][2] == "10.244.3.7"
    assert dns.answer(rec, "10-244-3-7.no-such-ns.pod.cluster.local.", "A")[0] == dns.NXDOMAIN
    assert dns.answer(rec, "10-244-3-700.my-namespace.pod.cluster.local.", "A")[0] == dns.NXDOMAIN


def test_headless_and_externalname() -> None:
    rec, _ = _records("headless")
    assert sorted(a[2] for a in dns.answer(rec, "db.default.svc.cluster.local.", "A")[1]) == ["10.244.0.2", "10.244.1.2"]
    assert dns.answer(rec, "db-1.db.default.svc.cluster.local.", "A")[1][0][2] == "10.244.1.2"
    rec, _ = _records("externalname")
    assert dns.answer(rec, "my-database.default.svc.cluster.local.", "A") == (0, [("my-database.default.svc.cluster.local.", "CNAME", "db.example.com.")])


def test_kubelet_resolv_conf_policies() -> None:
    pod = Pod("p", "shop", dns_config=DnsConfig(("1.2.3.4",), ("corp.example",), (("ndots", "2"), ("edns0", None))))
    text = resolv_conf(pod, "10.96.0.10", "cluster.local")
    assert "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example" in text
    assert "nameserver 10.96.0.10\nnameserver 1.2.3.4" in text and "options ndots:2 edns0" in text
    none = resolv_conf(Pod("p", dns_policy="None", dns_config=DnsConfig(("9.9.9.9",), ("a.example",))), "10.96.0.10", "cluster.local")
    assert "nameserver 9.9.9.9" in none and "10.96.0.10" not in none and "search a.example" in none
    default = resolv_conf(Pod("p", dns_policy="Default"), "10.96.0.10", "cluster.local")
    assert "nameserver" not in default


def test_stub_resolver_candidates() -> None:
    ns, search, ndots = parse_resolv_conf("search a.svc.z svc.z z\nnameserver 10.96.0.10\noptions ndots:5\n")
    assert (ns, ndots) == (["10.96.0.10"], 5)
    assert candidates("web", search, ndots) == ["web.a.svc.z.", "web.svc.z.", "web.z.", "web."]
    assert candidates("a.b.c.d.e.f", search, ndots)[0] == "a.b.c.d.e.f."
    assert candidates("fq.", search, ndots) == ["fq."]


def test_env_only_for_services_created_before_the_pod() -> None:
    s = load_scenario(os.path.join(ROOT, "scenarios", "dns.yaml"))
    env = dict(s.pod("my-namespace/client").service_env)
    assert "MY_SERVICE_SERVICE_HOST" in env and not any(k.startswith("LATER_") for k in env)
    assert not any(k.startswith("MY_SERVICE") for k in dict(s.pod("my-namespace/web-1").service_env))
    no_links = Pod("x", "my-namespace", enable_service_links=False)
    keys = {k for k, _ in pod_env(no_links, s.services)}
    assert keys and all(k.startswith("KUBERNETES_") for k in keys)


def test_an_in_zone_cname_carries_its_target_records_and_loops_stop() -> None:
    from netns_lab.controllers.dns import NOERROR, Records, answer

    rec = Records("cluster.local.", {"docs.default.svc.cluster.local.": {"CNAME": ["web.default.svc.cluster.local."]},
                                     "web.default.svc.cluster.local.": {"A": ["10.96.0.2"]},
                                     "a.default.svc.cluster.local.": {"CNAME": ["b.default.svc.cluster.local."]},
                                     "b.default.svc.cluster.local.": {"CNAME": ["a.default.svc.cluster.local."]}}, {"default"})
    code, rrs = answer(rec, "docs.default.svc.cluster.local.", "A")
    assert code == NOERROR and rrs == [("docs.default.svc.cluster.local.", "CNAME", "web.default.svc.cluster.local."),
                                       ("web.default.svc.cluster.local.", "A", "10.96.0.2")]
    code, rrs = answer(rec, "a.default.svc.cluster.local.", "A")
    assert code == NOERROR and len(rrs) < 20
