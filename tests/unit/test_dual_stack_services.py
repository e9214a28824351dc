"""Dual-stack Services: the API server's family decisions, allocation from both ranges,
updates, EndpointSlices per family, and each family's kube-proxy rules (pure code)."""

from __future__ import annotations

import os
import textwrap
from ipaddress import IPv6Network

import pytest

from netns_lab.controllers.endpoints import Endpoint
from netns_lab.controllers.topology import plan
from netns_lab.proxy import iptables as ipt
from netns_lab.proxy import nftables as nft
from netns_lab.proxy.types import NodeContext, ServicePortInfo, service_ports
from netns_lab.scenario import load_scenario
from netns_lab.scenario.families import FamilyRequest, decide
from netns_lab.scenario.yamlsrc import Source
from netns_lab.errors import ScenarioError
from netns_lab.views import endpoint_slices
from tests.conftest import ROOT

DUAL, SINGLE = ("IPv4", "IPv6"), ("IPv4",)
SRC = Source("s.yaml", None)


def _decide(families: tuple[str, ...] = (), policy: str | None = None, ips: tuple[str, ...] = (), cluster=DUAL,  # type: ignore[no-untyped-def]
            selectorless: bool = False):
    return decide(SRC, "spec", FamilyRequest(ips, families, policy), cluster, selectorless)


@pytest.mark.parametrize("families, policy, ips, cluster, want", [
    ((), None, (), DUAL, ("SingleStack", ("IPv4",))),  # nothing said: the primary family only
    (("IPv6",), None, (), DUAL, ("SingleStack", ("IPv6",))),
    ((), "PreferDualStack", (), DUAL, ("PreferDualStack", ("IPv4", "IPv6"))),
    ((), "PreferDualStack", (), SINGLE, ("PreferDualStack", ("IPv4",))),  # a single-stack cluster: one, no error
    (("IPv6", "IPv4"), "RequireDualStack", (), DUAL, ("RequireDualStack", ("IPv6", "IPv4"))),
    ((), "RequireDualStack", ("fd00:10:96::9",), DUAL, ("RequireDualStack", ("IPv6", "IPv4"))),  # inferred from the IP
    ((), None, ("None",), SINGLE, ("RequireDualStack", ("IPv4", "IPv6"))),  # headless, no selector: both, even here
])
def test_the_allocator_decides_policy_and_families(families, policy, ips, cluster, want) -> None:  # type: ignore[no-untyped-def]
    got = _decide(families, policy, ips, cluster, selectorless=ips == ("None",))
    assert (got.policy, got.families) == want


@pytest.mark.parametrize("kw, message", [
    (dict(policy="RequireDualStack", cluster=SINGLE), "this cluster is not configured for dual-stack services"),
    (dict(families=("IPv6",), cluster=SINGLE), 'spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster'),
    (dict(families=("IPv4", "IPv6")), "when multiple IP families are specified"),
    (dict(ips=("10.96.0.5", "fd00:10:96::5")), "when multiple cluster IPs are specified"),
])
def test_the_allocator_refuses_as_the_api_server(kw, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScenarioError) as err:
        _decide(**kw)
    assert message in str(err.value)


def _scenario(tmp_path, objects: str):  # type: ignore[no-untyped-def]
    p = tmp_path / "s.yaml"
    p.write_text("apiVersion: netns-lab/v1\nkind: Scenario\nname: ds\ncluster: {ipFamily: dual}\nobjects:\n"
                 + textwrap.indent(textwrap.dedent(objects), "  "))
    return load_scenario(str(p))


OBJECTS = """\
- apiVersion: v1
  kind: Pod
  metadata: {name: a, labels: {app: a}}
  spec: {nodeName: node-1, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
- {apiVersion: v1, kind: Service, metadata: {name: v4}, spec: {selector: {app: a}, ports: [{port: 80, targetPort: 8080}]}}
- {apiVersion: v1, kind: Service, metadata: {name: v6}, spec: {ipFamilies: [IPv6], selector: {app: a}, ports: [{port: 80, targetPort: 8080}]}}
- apiVersion: v1
  kind: Service
  metadata: {name: both}
  spec: {type: NodePort, ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv6, IPv4], selector: {app: a}, ports: [{port: 80, targetPort: 8080}]}
"""


def test_cluster_ips_come_from_each_familys_range_in_family_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = _scenario(tmp_path, OBJECTS)
    by = {svc.name: svc for svc in s.services}
    assert by["v4"].cluster_ips == ("10.96.0.2",) and by["v4"].ip_families == ("IPv4",)
    assert by["v6"].cluster_ips == ("fd00:10:96::1",) and by["v6"].cluster_ip == "fd00:10:96::1"
    assert by["both"].cluster_ips == ("fd00:10:96::2", "10.96.0.3")  # IPv6 first, as its ipFamilies say
    assert by["kubernetes"].ip_families == ("IPv4",)  # the API server's own Service follows the primary range


def test_each_family_proxier_sees_its_half_of_every_service(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = _scenario(tmp_path, OBJECTS)
    topo = plan(s)
    v4 = {p.name: p for p in service_ports(s.services, s.pods, topo)}
    v6 = {p.name: p for p in service_ports(s.services, s.pods, topo, family=6)}
    assert set(v4) == {"kubernetes", "kube-dns", "v4", "both"} and set(v6) == {"v6", "both"}
    assert v6["both"].cluster_ip == "fd00:10:96::2" and v4["both"].cluster_ip == "10.96.0.3"
    assert [e.ip for e in v6["both"].endpoints] == [str(topo.pod("a").ip6)]
    assert [e.ip for e in v4["both"].endpoints] == [str(topo.pod("a").ip)]


def test_endpoint_slices_are_per_address_family(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = _scenario(tmp_path, OBJECTS)
    topo = plan(s)
    slices = [sl for sl in endpoint_slices(s.services, s.pods, topo, "default") if sl["metadata"]["labels"]["kubernetes.io/service-name"] == "both"]
    assert sorted(sl["addressType"] for sl in slices) == ["IPv4", "IPv6"]
    six = next(sl for sl in slices if sl["addressType"] == "IPv6")
    assert six["endpoints"][0]["addresses"] == [str(topo.pod("a").ip6)]
    assert len({sl["metadata"]["name"] for sl in slices}) == 2


# kube-proxy's own IPv6 case (pkg/proxy/nftables/proxier_test.go TestNodePorts "ipv6")
CTX6 = NodeContext("node-1", IPv6Network("fd00:10::/64"), IPv6Network("fd00:10:96::/112"), ("2001:db8::1",),
                   localhost_node_ports=False, family=6)
SVC6 = ServicePortInfo("ns1", "svc1", "p80", "TCP", "fd00:172:30::41", 80, 3001, None, False, False,
                       (Endpoint("ns1/a", "fd00:10:180::1", 80, "node-2"), Endpoint("ns1/b", "fd00:10:180::2:1", 80, "node-1")))


def test_nftables_ipv6_rules_live_in_the_ip6_table() -> None:
    text = nft.full_text(CTX6, (SVC6,))
    assert "add table ip6 kube-proxy" in text and " ip kube-proxy" not in text
    assert "type ipv6_addr" in text and "ipv4_addr" not in text
    assert "add rule ip6 kube-proxy services ip6 daddr . meta l4proto . th dport vmap @service-ips" in text
    assert "ip6 daddr { fd00:10:96::/112 } drop" in text
    assert "meta l4proto tcp dnat to [fd00:10:180::1]:80" in text
    assert "ip6 daddr fd00:172:30::41 ip6 saddr != fd00:10::/64 jump mark-for-masquerade" in text
    # chain names: the endpoint's colons become dots, as kube-proxy writes them
    assert nft.endpoint_chain(SVC6, "fd00:10:180::1", 80).endswith("-ns1/svc1/tcp/p80__fd00.10.180..1/80")
    assert "add element ip6 kube-proxy nodeport-ips { 2001:db8::1 }" in text


def test_iptables_ipv6_rules_are_ip6tables_input() -> None:
    text = ipt.IptablesSync(CTX6).restore_input((SVC6,), True, None, [])
    assert "-j DNAT --to-destination [fd00:10:180::1]:80" in text
    assert "-m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS" in text  # never on ::1
    assert "127.0.0.0/8" not in text and "KUBE-FIREWALL" not in text  # the localnet guard is IPv4's
    assert '"ns1/svc1:p80 -> [fd00:10:180::1]:80"' in text




def test_dns_answers_aaaa_and_ip6_arpa_for_the_ipv6_family(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from netns_lab.controllers import dns

    s = _scenario(tmp_path, OBJECTS + """\
- {apiVersion: v1, kind: Service, metadata: {name: hl}, spec: {clusterIP: None, ipFamilyPolicy: PreferDualStack, selector: {app: a}, ports: [{port: 80, targetPort: 8080}]}}
""")
    topo = plan(s)
    rec = dns.build(s.services, s.pods, topo, "cluster.local")
    a6 = str(topo.pod("a").ip6)

    def ask(name: str, qtype: str) -> list[object]:
        code, answers = dns.answer(rec, name, qtype)
        assert code == dns.NOERROR, (name, qtype, code)
        return [d for _n, _t, d in answers]

    assert ask("both.default.svc.cluster.local", "AAAA") == ["fd00:10:96::2"]
    assert ask("both.default.svc.cluster.local", "A") == ["10.96.0.3"]
    assert ask("v6.default.svc.cluster.local", "A") == []  # NODATA: the name exists, IPv6 only
    assert ask("hl.default.svc.cluster.local", "AAAA") == [a6] and ask("hl.default.svc.cluster.local", "A") == [str(topo.pod("a").ip)]
    dashed = a6.replace(":", "-")
    assert ask(f"{dashed}.hl.default.svc.cluster.local", "AAAA") == [a6]
    assert ask(f"{dashed}.default.pod.cluster.local", "AAAA") == [a6]  # fd00-10-244--2: CoreDNS's pod name
    ptr = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa"
    assert ask(ptr, "PTR") == ["both.default.svc.cluster.local."]
    assert dns.answer(rec, "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa", "PTR")[0] == dns.NXDOMAIN  # in the range, unallocated
    assert dns.answer(rec, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR")[0] == dns.REFUSED


def test_a_dual_stack_load_balancer_gets_an_ip_from_each_pool_and_both_cloud_lb_tables() -> None:
    from netns_lab.controllers import loadbalancer
    from netns_lab.services.cloudlb import render

    s = load_scenario(os.path.join(ROOT, "scenarios", "dual-stack.yaml"))
    lb = next(svc for svc in s.services if svc.name == "web-lb")
    assert lb.load_balancer_ips == ("198.51.100.1", "2001:db8:198:51::1")  # primary first, each from its family's pool
    topo = plan(s)
    cfg = loadbalancer.balancer_config(s.services, topo, "/tmp/status.json")
    healthy = {"default/web-lb": {"node-1", "node-2"}}
    text = render(cfg, healthy)
    assert "table ip cloud-lb {" in text and "table ip6 cloud-lb {" in text
    assert "2001:db8:198:51::1 . tcp . 80 : jump svc-0" in text and "jhash ip6 saddr . th sport" in text
    four = text.split("table ip6 cloud-lb")[0]
    assert "2001:db8" not in four and "198.51.100.1 . tcp . 80 : jump svc-0" in four
    v6 = {p.name: p for p in service_ports(s.services, s.pods, topo, family=6)}
    assert v6["web-lb"].lb_ips == ("2001:db8:198:51::1",)  # the IPv6 proxier serves the IPv6 LB IP


def test_ipv6_external_ips_are_routed_to_the_nodes_ipv6_addresses(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from netns_lab.realize.outside import on_node_network

    topo = plan(load_scenario(os.path.join(ROOT, "scenarios", "dual-stack.yaml")))
    assert on_node_network(topo, "fd00:10::40") and on_node_network(topo, "10.0.0.40")
    assert not on_node_network(topo, "2001:db8:5::1") and not on_node_network(topo, "192.0.2.1")


def test_ipvs_ipv6_proxier_has_its_own_sets_and_glue() -> None:
    """kube-proxy's ipvs mode per family: KUBE-6- sets (cut to ipset's 31 characters, as
    upstream's NewIPSet), IPv6 virtual servers, ip6tables glue without the IPv4 localhost rule."""
    from netns_lab.proxy import ipvs

    assert ipvs.set_name("KUBE-CLUSTER-IP", 6) == "KUBE-6-CLUSTER-IP" and ipvs.set_name("KUBE-CLUSTER-IP") == "KUBE-CLUSTER-IP"
    assert ipvs.set_name("KUBE-LOAD-BALANCER-SOURCE-CIDR", 6) == "KUBE-6-LOAD-BALANCER-SOURCE-CID"
    plan6 = ipvs.render(CTX6, (SVC6,))
    assert ("fd00:172:30::41", 80, "TCP") in plan6.services and ("2001:db8::1", 3001, "TCP") in plan6.services
    assert plan6.services[("fd00:172:30::41", 80, "TCP")].reals == (("fd00:10:180::1", 80), ("fd00:10:180::2:1", 80))
    assert "fd00:172:30::41,tcp:80" in plan6.sets["KUBE-CLUSTER-IP"]
    glue = ipvs.iptables_glue(CTX6, plan6)
    assert "--match-set KUBE-6-CLUSTER-IP dst,dst ! -s fd00:10::/64 -j KUBE-MARK-MASQ" in glue
    assert "127.0.0.0/8" not in glue and "--match-set KUBE-CLUSTER-IP " not in glue


# -- updates (the API server's rules on update) ------------------------------------------------

def _dual_objects():  # type: ignore[no-untyped-def]
    from netns_lab.store import Objects

    return Objects.of(load_scenario(os.path.join(ROOT, "scenarios", "dual-stack.yaml")))


def _apply(objects, name: str, **spec: object):  # type: ignore[no-untyped-def]
    from netns_lab.scenario.admission import Apply, admit

    spec.setdefault("ports", [{"port": 80, "targetPort": 9376}])
    spec.setdefault("selector", {"app": "web"})
    m = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}
    objects = admit(objects, [Apply(Source("change.yaml", m), "", m)])
    return objects, next(s for s in objects.services if s.name == name)


def test_an_update_keeps_what_it_does_not_say() -> None:
    o, first = _apply(_dual_objects(), "grow", ipFamilyPolicy="PreferDualStack")
    assert len(first.cluster_ips) == 2
    o, again = _apply(o, "grow", clusterIP=first.cluster_ip)  # an old client writes clusterIP only
    assert again.cluster_ips == first.cluster_ips and again.ip_family_policy == "PreferDualStack"
    o, lb = _apply(o, "lb2", type="LoadBalancer", ipFamilyPolicy="RequireDualStack")
    o, lb_again = _apply(o, "lb2", type="LoadBalancer", ports=[{"port": 81, "targetPort": 9376}])
    assert lb_again.load_balancer_ips == lb.load_balancer_ips  # both families' LB IPs stay
    o, shrunk = _apply(o, "grow", ipFamilyPolicy="SingleStack")
    assert shrunk.cluster_ips == first.cluster_ips[:1] and shrunk.ip_families == ("IPv4",)


@pytest.mark.parametrize("spec, message", [
    ({"ipFamilies": ["IPv6", "IPv4"]}, 'spec.ipFamilies[0]: Invalid value: "IPv6": may not change once set'),
    ({"ipFamilies": ["IPv4"]}, "must be 'SingleStack' to release the secondary IP family"),
    ({"clusterIP": "__v4__", "clusterIPs": ["__v4__"]}, "must be 'SingleStack' to release the secondary cluster IP"),
    ({"clusterIP": "__v4__", "clusterIPs": ["__v4__", "fd00:10:96::99"]}, 'spec.clusterIPs[1]: Invalid value: "fd00:10:96::99": may not change once set'),
])
def test_an_update_may_not_change_a_family_or_drop_one_silently(spec: dict[str, object], message: str) -> None:
    o, first = _apply(_dual_objects(), "fixed", ipFamilyPolicy="RequireDualStack")
    spec = {k: ([first.cluster_ip if x == "__v4__" else x for x in v] if isinstance(v, list) else first.cluster_ip if v == "__v4__" else v)
            for k, v in spec.items()}
    with pytest.raises(ScenarioError) as err:
        _apply(o, "fixed", ipFamilyPolicy="RequireDualStack", **spec)
    assert message in str(err.value)


def test_an_ipv6_external_ip_in_an_ipv4_lab_is_ignored_as_kube_proxy_ignores_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The API server accepts any address; kube-proxy (and so the router's routes) use only
    the lab's families: an IPv4 lab routes its IPv4 externalIPs, nothing for an IPv6 one."""
    from netns_lab.reconcile import View
    from netns_lab.reconcile.routes import ExternalIPRoutes
    from netns_lab.store import Objects

    p = tmp_path / "s.yaml"
    p.write_text("apiVersion: netns-lab/v1\nkind: Scenario\nname: v4\nobjects:\n"
                 "- {apiVersion: v1, kind: Service, metadata: {name: e}, spec: {externalIPs: ['192.0.2.7', '2001:db8:5::7'], "
                 "ports: [{port: 80}]}}\n")
    s = load_scenario(str(p))
    topo = plan(s)
    view = View(Objects.of(s), topo, lambda: service_ports(s.services, s.pods, topo), True, None)
    assert ExternalIPRoutes().desired(view) == frozenset({"192.0.2.7"})
    assert [p.external_ips for p in service_ports(s.services, s.pods, topo) if p.name == "e"] == [("192.0.2.7",)]
