"""Spreading a plan over machines: pure code, no root needed."""

from __future__ import annotations

import os
from ipaddress import IPv4Address

import pytest

from netns_lab.controllers.spread import parse_hosts, spread
from netns_lab.controllers.topology import from_dict, plan, to_dict
from netns_lab.errors import ScenarioError
from netns_lab.scenario import load_scenario
from tests.conftest import ROOT

HOSTS = (IPv4Address("192.168.56.11"), IPv4Address("192.168.56.12"))


def _plan(name: str = "loadbalancer"):  # type: ignore[no-untyped-def]
    return plan(load_scenario(os.path.join(ROOT, "scenarios", f"{name}.yaml")))


def test_nodes_round_robin_and_the_outside_on_the_first_machine() -> None:
    topo = _plan()  # 3 nodes
    first = spread(topo, HOSTS, HOSTS[0], 1500)
    second = spread(topo, HOSTS, HOSTS[1], 1500)
    assert [n.host for n in first.nodes] == [0, 1, 0]
    assert [n.name for n in first.local_nodes] == ["node-1", "node-3"] and [n.name for n in second.local_nodes] == ["node-2"]
    assert first.has_outside and not second.has_outside
    assert {first.router_netns, first.lb_netns, first.wan_netns, first.external_netns} <= set(first.namespaces)
    assert not {second.router_netns, second.lb_netns, second.wan_netns} & set(second.namespaces)
    # each machine owns (and will clean) exactly its share; the node network exists on both
    mine, theirs = set(first.namespaces), set(second.namespaces)
    assert mine & theirs == {topo.underlay_netns}
    assert {p.netns for p in topo.pods} <= mine | theirs
    # the addresses are the plan's, identical on every machine
    assert [(n.ip, n.mac, n.vtep_mac) for n in first.nodes] == [(n.ip, n.mac, n.vtep_mac) for n in second.nodes]


def test_node_network_mtu_leaves_room_for_the_trunk() -> None:
    topo = _plan()
    assert (topo.underlay_mtu, topo.pod_mtu) == (1500, 1450)
    s = spread(topo, HOSTS, HOSTS[0], 1500)
    assert (s.underlay_mtu, s.pod_mtu) == (1450, 1400)
    jumbo = spread(topo, HOSTS, HOSTS[0], 9000)  # a roomy machine network keeps cluster.mtu
    assert (jumbo.underlay_mtu, jumbo.pod_mtu) == (1500, 1450)
    gw = spread(_plan("underlay"), HOSTS, HOSTS[0], 1500)  # host-gw: no flannel overhead
    assert (gw.underlay_mtu, gw.pod_mtu) == (1450, 1450)


def test_a_lab_on_one_machine_is_unchanged() -> None:
    topo = _plan()
    assert not topo.is_spread and topo.local_nodes == topo.nodes and topo.local_pods == topo.pods and topo.has_outside


def test_spread_plan_survives_the_state_file() -> None:
    s = spread(_plan(), HOSTS, HOSTS[1], 1500)
    back = from_dict(to_dict(s))
    assert back == s and back.hosts[1].ip == HOSTS[1]


@pytest.mark.parametrize("text,rule", [
    ("192.168.56.11", "at least two machines"),
    ("192.168.56.11,192.168.56.11", "Duplicate value"),
    ("192.168.56.11,vm2", "expected comma-separated IPv4 addresses"),
    ("192.168.56.11,127.0.0.1", "a machine's address"),
    ("192.168.56.11,,192.168.56.12", "expected comma-separated IPv4 addresses"),
])
def test_bad_host_lists(text: str, rule: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_hosts(text)
    assert str(exc.value).startswith("--spread: ") and rule in str(exc.value)


def test_more_machines_than_nodes_or_a_stranger_is_refused() -> None:
    topo = _plan("clusterip")  # 2 nodes
    three = (*HOSTS, IPv4Address("192.168.56.13"))
    with pytest.raises(ScenarioError, match="3 machines for 2 nodes"):
        spread(topo, three, three[0], 1500)
    with pytest.raises(ScenarioError, match="not in the list"):
        spread(topo, HOSTS, IPv4Address("192.168.56.99"), 1500)
