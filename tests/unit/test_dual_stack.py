"""Dual-stack plans and the small pieces the data path relies on: pure code, no root."""

from __future__ import annotations

import os
import textwrap
from ipaddress import IPv6Address, IPv6Network

from netns_lab.controllers.topology import add_pod_plan, from_dict, plan, to_dict
from netns_lab.model import Container, ContainerPort, Pod
from netns_lab.probes.connect import parse_line, split_hostport
from netns_lab.scenario import load_scenario
from netns_lab.services.netexec import hostport, line_reply
from tests.conftest import ROOT


def _load(tmp_path, cluster: str):  # type: ignore[no-untyped-def]
    p = tmp_path / "s.yaml"
    p.write_text("apiVersion: netns-lab/v1\nkind: Scenario\nname: ds\ncluster:\n" + textwrap.indent(textwrap.dedent(cluster), "  "))
    return load_scenario(str(p))


def test_dual_defaults_are_kinds_ipv6_ranges(tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = _load(tmp_path, "ipFamily: dual\n").cluster
    assert (c.ip_family, c.ip_families, c.dual_stack) == ("dual", ("IPv4", "IPv6"), True)
    assert str(c.pod_cidr6) == "fd00:10:244::/56" and str(c.service_cidr6) == "fd00:10:96::/112"
    assert str(c.node_cidr6) == "fd00:10::/64" and str(c.external.cidr6) == "2001:db8:203:113::/64"
    assert str(c.pod_cidr) == "10.244.0.0/16"  # IPv4 stays primary and unchanged


def test_an_ipv4_lab_has_no_ipv6_anywhere(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = load_scenario(os.path.join(ROOT, "scenarios", "basic.yaml"))
    t = plan(s)
    assert s.cluster.ip_families == ("IPv4",) and not t.dual_stack
    assert all(n.ip6 is None and n.pod_subnet6 is None for n in t.nodes)
    assert all(p.ip6 is None and p.ips == (p.ip,) for p in t.pods)
    assert t.router_ip6 is None and all(c.ip6 is None for c in t.clients)


def test_ipv6_addresses_mirror_the_ipv4_host_numbers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = load_scenario(os.path.join(ROOT, "scenarios", "dual-stack.yaml"))
    t = plan(s)
    n1, n2 = t.nodes
    assert (str(n1.ip), str(n1.ip6)) == ("10.0.0.2", "fd00:10::2")
    assert n2.pod_subnet6 == IPv6Network("fd00:10:244:1::/64") and n2.gateway6 == IPv6Address("fd00:10:244:1::1")
    assert n2.vtep_ip6 == IPv6Address("fd00:10:244:1::")  # flannel.1's /128, as its IPv4 one is the subnet's .0
    web2 = t.pod("web-2")
    assert (str(web2.ip), str(web2.ip6)) == ("10.244.1.2", "fd00:10:244:1::2")
    assert web2.ips == (web2.ip, web2.ip6)  # status.podIPs: primary first
    assert (str(t.router_ip6), str(t.lb_ip6)) == ("fd00:10::1", "fd00:10::fe")
    assert str(t.clients[0].ip6) == "2001:db8:203:113::a"  # 203.0.113.10: host number 10
    assert from_dict(to_dict(t)) == t  # the state file keeps every IPv6 field


def test_a_pod_added_at_run_time_gets_both_families(tmp_path) -> None:  # type: ignore[no-untyped-def]
    t = plan(load_scenario(os.path.join(ROOT, "scenarios", "dual-stack.yaml")))
    pod = Pod("late", containers=(Container("c", "netexec", (ContainerPort(80),)),))
    t2, new = add_pod_plan(t, pod, "node-2")
    assert new.ip6 is not None and int(new.ip6) & 0xFFFF == int(new.ip) & 0xFF
    assert new.ip6 in t2.node("node-2").pod_subnet6  # type: ignore[operator]


def test_client_addresses_are_written_as_go_joins_them() -> None:
    assert hostport(("10.244.1.2", 5000)) == "10.244.1.2:5000"
    assert hostport(("fd00:10:244:1::2", 5000, 0, 0)) == "[fd00:10:244:1::2]:5000"
    assert split_hostport("[fd00::2]:80") == ("fd00::2", "80") and split_hostport("10.0.0.1:80") == ("10.0.0.1", "80")
    assert parse_line(line_reply("web", ("fd00:10:244::3", 4242, 0, 0))) == ("web", "fd00:10:244::3", 4242)


def test_the_cluster_record_keeps_the_ipv6_ranges() -> None:
    from netns_lab.model_io import dump_cluster, load_cluster

    for name in ("basic", "dual-stack"):  # a lab's commands read the cluster back from its state
        c = load_scenario(os.path.join(ROOT, "scenarios", f"{name}.yaml")).cluster
        assert load_cluster(dump_cluster(c)) == c


def test_an_ipv6_only_lab_plans_ipv6_everywhere() -> None:
    from netns_lab.model_io import dump_cluster, load_cluster
    from netns_lab.proxy.types import service_ports

    s = load_scenario(os.path.join(ROOT, "scenarios", "ipv6.yaml"))
    c = s.cluster
    assert c.ip_families == ("IPv6",) and str(c.pod_cidr) == "fd00:10:244::/56" and str(c.dns_ip) == "fd00:10:96::a"
    assert load_cluster(dump_cluster(c)) == c
    t = plan(s)
    assert t.families == (6,) and t.pod_mtu == 1500 - 70  # VXLAN over an IPv6 underlay
    n2 = t.nodes[1]
    assert (str(n2.ip), str(n2.pod_subnet), n2.ip6) == ("fd00:10::3", "fd00:10:244:1::/64", None)
    hosts = [*t.nodes, *t.pods, *t.clients]
    macs = [h.mac for h in hosts] + [n.bridge_mac for n in t.nodes]
    assert len(set(macs)) == len(macs)  # hashed from the address: no two hosts share one
    assert {svc.name: svc.cluster_ip for svc in s.services}["kubernetes"] == "fd00:10:96::1"
    ports = service_ports(s.services, s.pods, t)  # the primary (IPv6) family's proxier by default
    assert ports and all(":" in p.cluster_ip for p in ports) and all(":" in e.ip for p in ports for e in p.endpoints)
    assert from_dict(to_dict(t)) == t
