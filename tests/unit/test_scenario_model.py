"""Loading, defaults and the address plan: pure code, no root needed."""

from __future__ import annotations

import os
import textwrap
from ipaddress import IPv4Address, IPv4Network

import pytest

from netns_lab.controllers.topology import from_dict, plan, schedule, to_dict
from netns_lab.errors import ScenarioError
from netns_lab.model import ClusterConfig
from netns_lab.scenario import load_scenario
from tests.conftest import ROOT


def write(tmp_path, text: str, name: str = "s.yaml") -> str:  # type: ignore[no-untyped-def]
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_defaults_match_design(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = load_scenario(write(tmp_path, "apiVersion: netns-lab/v1\nkind: Scenario\nname: x\n"))
    c = s.cluster
    assert c == ClusterConfig()
    assert c.nodes == ("node-1", "node-2")
    assert (c.network, c.proxy_mode) == ("vxlan", "iptables")
    assert c.node_cidr == IPv4Network("10.0.0.0/24")
    assert c.pod_cidr == IPv4Network("10.244.0.0/16")
    assert c.service_cidr == IPv4Network("10.96.0.0/12")
    assert (c.cluster_domain, c.dns_ip, c.node_port_range) == ("cluster.local", IPv4Address("10.96.0.10"), (30000, 32767))


def test_basic_scenario_plan() -> None:
    s = load_scenario(os.path.join(ROOT, "scenarios", "basic.yaml"))
    t = plan(s)
    assert [n.name for n in t.nodes] == ["node-1", "node-2"]
    assert [str(n.ip) for n in t.nodes] == ["10.0.0.2", "10.0.0.3"]
    assert [str(n.pod_subnet) for n in t.nodes] == ["10.244.0.0/24", "10.244.1.0/24"]
    assert [str(n.gateway) for n in t.nodes] == ["10.244.0.1", "10.244.1.1"]
    assert t.pod_mtu == 1450  # underlay 1500 - VXLAN 50
    ips = {p.name: str(p.ip) for p in t.workload_pods}
    assert ips == {"web-1": "10.244.0.2", "web-2": "10.244.1.2", "client-1": "10.244.0.3", "client-2": "10.244.1.3"}
    dns = t.pod("kube-system/coredns")  # the cluster DNS pod comes last: users' addresses never shift
    assert not dns.netexec and dns.node == "node-1" and str(dns.ip) == "10.244.0.4"
    assert all(len(p.host_veth) <= 15 for p in t.pods)
    assert from_dict(to_dict(t)) == t


def test_round_robin_and_node_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pods = "".join(
        f"""
          - apiVersion: v1
            kind: Pod
            metadata: {{name: p{i}}}
            spec: {{containers: [{{name: c, image: netexec}}]{', nodeName: b' if i == 4 else ''}}}
        """
        for i in range(5)
    )
    path = write(tmp_path, f"""
        apiVersion: netns-lab/v1
        kind: Scenario
        name: rr
        cluster: {{nodes: [a, b, c], network: host-gw}}
        objects:{pods}
    """)
    s = load_scenario(path)
    assert schedule(s) == {"default/p0": "a", "default/p1": "b", "default/p2": "c", "default/p3": "a", "default/p4": "b",
                           "kube-system/coredns": "a"}
    t = plan(s)
    assert t.pod_mtu == 1500
    assert t.node("c").netns == "rr_c"
    assert t.pod("p0").netns == "rr_default_p0"


def test_host_network_clash_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, "apiVersion: netns-lab/v1\nkind: Scenario\nname: x\n")
    with pytest.raises(ScenarioError, match=r"cluster.nodeCIDR: Invalid value: \"10.0.0.0/24\": overlaps the host network 10.0.0.0/16"):
        load_scenario(path, host_networks=(IPv4Network("10.0.0.0/16"),))


def test_too_many_pods_on_one_node(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pods = "".join(
        f"\n  - {{apiVersion: v1, kind: Pod, metadata: {{name: p{i}}}, spec: {{nodeName: node-1, containers: [{{name: c, image: x}}]}}}}"
        for i in range(254)
    )
    path = write(tmp_path, f"apiVersion: netns-lab/v1\nkind: Scenario\nname: x\nobjects:{pods}\n")
    with pytest.raises(ScenarioError, match='node "node-1" would hold more than 253 pods'):
        load_scenario(path)


def test_objects_from_included_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "m").mkdir()
    write(tmp_path, """
        apiVersion: v1
        kind: Namespace
        metadata: {name: shop}
        ---
        apiVersion: v1
        kind: List
        items:
          - {apiVersion: v1, kind: Pod, metadata: {name: a, namespace: shop}, spec: {containers: [{name: c, image: x}]}}
    """, "m/1.yaml")
    write(tmp_path, """
        apiVersion: v1
        kind: Pod
        metadata: {name: b, namespace: shop}
        spec: {containers: [{name: c, image: x, ports: [{containerPort: 70000}]}]}
    """, "m/2.yaml")
    path = write(tmp_path, "apiVersion: netns-lab/v1\nkind: Scenario\nname: x\nobjects: [m/*.yaml]\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    # the error names the included file, its line and the field path inside it
    assert "m/2.yaml:5: spec.containers[0].ports[0].containerPort" in str(err.value)
    (tmp_path / "m" / "2.yaml").unlink()
    s = load_scenario(path)
    assert [p.key for p in s.pods] == ["shop/a", "kube-system/coredns"]


def test_overrides_switch_mode_without_copying_the_file() -> None:
    s = load_scenario(os.path.join(ROOT, "scenarios", "basic.yaml"), {"cluster.network": "host-gw", "cluster.nodes": 3, "name": "b2"})
    assert (s.name, s.cluster.network, len(s.cluster.nodes)) == ("b2", "host-gw", 3)
