"""BGP's pure parts: MetalLB's announcement choice, the BIRD configurations (each accepted by
``bird -p``, BIRD's own parser), the routes the router must end up with, ``cluster.bgp``
defaults, and the birdc output parser."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from ipaddress import IPv4Address

import pytest

from netns_lab.controllers import bgp, topology
from netns_lab.model import BfdConfig, BgpConfig
from netns_lab.proxy.types import service_ports
from netns_lab.realize import bgp as birds
from netns_lab.scenario.loader import load_scenario
from tests.conftest import ROOT

BGP = os.path.join(ROOT, "scenarios", "bgp.yaml")
LB = {"default/web-lb": ("198.51.100.1",), "default/web-local": ("198.51.100.2",)}


def _lab(**overrides: object):  # type: ignore[no-untyped-def]
    scenario = load_scenario(BGP, overrides or None)
    topo = topology.plan(scenario)
    services = tuple(dataclasses.replace(s, load_balancer_ips=LB.get(s.key, ())) for s in scenario.services)
    return scenario, topo, services


def _announced(scenario, topo, services, pods=None):  # type: ignore[no-untyped-def]
    pods = scenario.pods if pods is None else pods
    return bgp.announcements(services, service_ports(services, pods, topo), topo)


def test_cluster_policy_is_announced_by_every_node_local_only_by_endpoint_nodes() -> None:
    scenario, topo, services = _lab()
    assert _announced(scenario, topo, services) == {
        "node-1": ("198.51.100.1", "198.51.100.2"), "node-2": ("198.51.100.1", "198.51.100.2"), "node-3": ("198.51.100.1",)}


def test_an_endpoint_that_is_not_ready_is_not_announced_and_none_at_all_withdraws_everywhere() -> None:
    scenario, topo, services = _lab()
    web2_unready = tuple(dataclasses.replace(p, ready=False) if p.name == "web-2" else p for p in scenario.pods)
    got = _announced(scenario, topo, services, web2_unready)
    assert got["node-2"] == ("198.51.100.1",) and got["node-1"] == ("198.51.100.1", "198.51.100.2")
    no_web = tuple(p for p in scenario.pods if not p.name.startswith("web-"))
    assert _announced(scenario, topo, services, no_web) == {"node-1": (), "node-2": (), "node-3": ()}  # MetalLB's noEndpoints


def test_nothing_is_announced_with_the_cloud_load_balancer() -> None:
    scenario, topo, services = _lab(**{"cluster.external.loadBalancer": "cloud"})
    assert set(_announced(scenario, topo, services).values()) == {()}


def test_node_configuration_follows_calicos_layout() -> None:
    scenario, topo, services = _lab()
    announced = _announced(scenario, topo, services)
    speakers = bgp.speakers(topo, announced)
    assert [s.name for s in speakers] == ["node-1", "node-2", "node-3", "router"]
    n1 = speakers[0].config
    assert "protocol static pods { ipv4; route 10.244.0.0/24 blackhole; }" in n1
    assert "protocol static lbs { ipv4; route 198.51.100.1/32 blackhole; route 198.51.100.2/32 blackhole; }" in n1
    assert n1.count("protocol bgp Mesh_") == 2 and "protocol bgp Global_10_0_0_1" in n1
    assert n1.count("passive on;") == 2  # node-1 has the lowest address: both peers connect to it
    assert "passive on;" not in speakers[2].config  # node-3 has the highest: it connects
    assert "local 10.0.0.2 as 64512; neighbor 10.0.0.1 as 65000; direct;" in n1
    assert n1.count("bfd on;") == 1  # BFD with the router only (the mesh: hold timer and graceful restart)
    assert n1.count("graceful restart on;") == 3  # the kernel protocol and both mesh sessions
    router = speakers[3].config
    assert router.count("protocol bgp Node_") == 3 and "merge paths on limit 16;" in router
    assert "if net ~ [ 10.244.0.0/16{24,24} ] then accept; if net ~ [ 198.51.100.0/24{32,32} ] then accept; reject;" in router


@pytest.mark.parametrize("overrides", [
    {},
    {"cluster.bgp": {"nodeToNodeMesh": False, "bfd": False, "holdTime": 0}},
    {"cluster.network": "vxlan"},
    {"cluster.external.loadBalancer": "cloud"},
    {"cluster.bgp": {"asNumber": 4200000000, "routerAsNumber": 65001, "bfd": {"transmitInterval": 300, "detectMultiplier": 5}}},
], ids=["default", "no-mesh", "lb-only", "network-only", "4-byte-as"])
def test_bird_accepts_every_configuration(tmp_path, overrides: dict) -> None:  # type: ignore[no-untyped-def,type-arg]
    if shutil.which("bird") is None:
        pytest.fail("bird (Debian bird2) is not installed: labs/provision.sh installs it")
    scenario, topo, services = _lab(**overrides)
    for s in bgp.speakers(topo, _announced(scenario, topo, services)):
        conf = tmp_path / f"{s.name}.conf"
        conf.write_text(s.config)
        proc = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True)
        assert proc.returncode == 0, (overrides, s.name, proc.stderr, s.config)


def test_variants_say_what_they_should() -> None:
    _, topo, _ = _lab(**{"cluster.bgp": {"nodeToNodeMesh": False, "bfd": False}})
    n1, router = bgp.node_config(topo, topo.nodes[0], ()), bgp.router_config(topo)
    assert "Mesh_" not in n1 and "allow local as;" in n1 and "protocol bfd" not in n1 and "bfd on" not in router
    assert "if net ~ [ 10.244.0.0/16{24,24} ] then accept; reject;" in router  # the router passes subnets on
    _, topo, _ = _lab(**{"cluster.network": "vxlan"})
    n1 = bgp.node_config(topo, topo.nodes[0], ("198.51.100.1",))
    assert "protocol static pods" not in n1 and "Mesh_" not in n1 and 'if proto = "lbs" then accept' in n1


def test_expected_routes() -> None:
    scenario, topo, services = _lab()
    want = bgp.expected_routes(topo, _announced(scenario, topo, services))
    assert want == {
        "10.244.0.0/24": frozenset({IPv4Address("10.0.0.2")}), "10.244.1.0/24": frozenset({IPv4Address("10.0.0.3")}),
        "10.244.2.0/24": frozenset({IPv4Address("10.0.0.4")}),
        "198.51.100.1/32": frozenset({IPv4Address("10.0.0.2"), IPv4Address("10.0.0.3"), IPv4Address("10.0.0.4")}),
        "198.51.100.2/32": frozenset({IPv4Address("10.0.0.2"), IPv4Address("10.0.0.3")}),
    }


def test_cluster_bgp_defaults_and_bfd_forms() -> None:
    assert load_scenario(BGP).cluster.bgp == BgpConfig()
    off = load_scenario(BGP, {"cluster.bgp": {"bfd": False}}).cluster.bgp.bfd
    assert off == BfdConfig(enabled=False)
    custom = load_scenario(BGP, {"cluster.bgp": {"bfd": {"receiveInterval": 300, "detectMultiplier": 5}}}).cluster.bgp.bfd
    assert custom == BfdConfig(receive_interval=300, detect_multiplier=5)
    _, topo, _ = _lab(**{"cluster.bgp": {"bfd": False}})
    assert (topo.bfd_rx_ms, topo.bfd_multiplier) == (0, 0)


SHOW_PROTOCOLS_ALL = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     2026-12-01 19:25:43

kernel1    Kernel     master4    up     2026-12-01 19:25:43
  Channel ipv4
    State:          UP
    Routes:         0 imported, 2 exported, 0 preferred

Global_10_0_0_1 BGP        ---        up     2026-12-01 19:25:43  Established
  BGP state:          Established
    Neighbor address: 10.0.0.1
    Neighbor AS:      65000
    Hold timer:       7.123/9
  Channel ipv4
    State:          UP
    Routes:         1 imported, 3 exported, 1 preferred

Mesh_10_0_0_3 BGP        ---        start  2026-12-01 19:26:01  Active        Socket: Connection refused
  BGP state:          Active
    Neighbor address: 10.0.0.3
  Channel ipv4
    State:          DOWN
"""


def test_sessions_are_parsed_from_birdc(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(birds, "birdc", lambda sock, *cmd: SHOW_PROTOCOLS_ALL)
    got = birds.sessions("x.ctl")
    assert got == [
        birds.Session("Global_10_0_0_1", "up", "2026-12-01 19:25:43", "Established", "10.0.0.1", 1, 3),
        birds.Session("Mesh_10_0_0_3", "start", "2026-12-01 19:26:01", "Active        Socket: Connection refused", "10.0.0.3", 0, 0),
    ]
    assert [s.established for s in got] == [True, False]


def test_a_bgp_lab_is_not_spread_over_machines() -> None:
    from netns_lab.controllers.spread import spread
    from netns_lab.errors import ScenarioError

    _, topo, _ = _lab()
    hosts = (IPv4Address("192.0.2.10"), IPv4Address("192.0.2.11"))
    with pytest.raises(ScenarioError, match="Forbidden: a lab with BGP"):
        spread(topo, hosts, hosts[0], 1500)
    _, plain, _ = _lab(**{"cluster.network": "vxlan", "cluster.external.loadBalancer": "cloud", "cluster.bgp": None})
    assert spread(plain, hosts, hosts[0], 1500).is_spread


def test_announced_in_reads_back_a_configuration() -> None:
    scenario, topo, services = _lab()
    announced = _announced(scenario, topo, services)
    for s in bgp.speakers(topo, announced)[:-1]:
        assert bgp.announced_in(s.config) == announced[s.name]


def test_a_large_cluster_keeps_every_next_hop_and_short_file_names() -> None:
    """BIRD merges at most 16 next hops unless told more: a 20-node Cluster LB IP needs 20.
    Node names too long for a socket path, or the router's, get short unique file names."""
    _, topo, _ = _lab(**{"cluster.nodes": 20})
    assert "merge paths on limit 20;" in bgp.router_config(topo)
    names = ["node-1", "node-2", "node-3", "router", "n" * 63]
    _, topo, _ = _lab(**{"cluster.nodes": names})
    stems = [s.stem for s in bgp.speakers(topo, {})]
    assert stems[:3] == ["node-1", "node-2", "node-3"] and stems[-1] == "router"
    assert stems[3].startswith("node3-") and stems[4].startswith("node4-") and len(set(stems)) == 6
    assert all(len(x) <= bgp.MAX_STEM for x in stems)
