"""The cloud load balancer's pure parts: slot ownership, its nftables table, its config, and
kube-proxy's health answers, from the shipped loadbalancer scenario."""

from __future__ import annotations

import os

from netns_lab.controllers import loadbalancer
from netns_lab.controllers.topology import plan
from netns_lab.proxy.types import service_ports
from netns_lab.scenario import load_scenario
from netns_lab.services.cloudlb import SLOTS, render, slot_owners
from tests.conftest import ROOT

NODES = [{"name": f"node-{i}", "ip": f"10.0.0.{i + 1}", "mark": 0x100 + i - 1} for i in (1, 2, 3)]


def test_slots_of_healthy_nodes_never_move() -> None:
    every = slot_owners(NODES, {"node-1", "node-2", "node-3"})
    assert every is not None and [n["name"] for n in every[:3]] == ["node-1", "node-2", "node-3"]
    without3 = slot_owners(NODES, {"node-1", "node-2"})
    assert without3 is not None and len(without3) == SLOTS
    for before, after in zip(every, without3):
        if before["name"] != "node-3":
            assert after is before  # a flow hashed to a healthy node keeps its node
        else:
            assert after["name"] in ("node-1", "node-2")
    moved = {after["name"] for before, after in zip(every, without3) if before["name"] == "node-3"}
    assert moved == {"node-1", "node-2"}  # node-3's share is spread, not dumped on one node
    assert slot_owners(NODES, set()) is None


def _scenario():  # type: ignore[no-untyped-def]
    s = load_scenario(os.path.join(ROOT, "scenarios", "loadbalancer.yaml"))
    return s, plan(s)


def test_config_and_table() -> None:
    s, t = _scenario()
    cfg = loadbalancer.balancer_config(s.services, t, "/tmp/status.json")
    by_key = {c["key"]: c for c in cfg["services"]}
    assert set(by_key) == {"default/web", "default/web-local", "default/web-office"}
    assert by_key["default/web"]["check_port"] == loadbalancer.KUBE_PROXY_HEALTHZ_PORT
    assert by_key["default/web-local"]["check_port"] == s.service("web-local").health_check_node_port
    assert cfg["netns"] == f"/run/netns/{t.lb_netns}" and cfg["interval"] == 1.0
    text = render(cfg, {"default/web": {"node-1", "node-2", "node-3"}, "default/web-local": set()})
    assert "198.51.100.1 . tcp . 80 : jump svc-0" in text and "198.51.100.3 . tcp . 8080 : jump svc-2" in text
    assert 'chain svc-1 { counter drop comment "default/web-local: no node in service" ; }' in text
    assert text.startswith("table ip cloud-lb\ndelete table ip cloud-lb\n")  # one atomic replace


def test_health_answers_count_local_ready_endpoints() -> None:
    s, t = _scenario()
    answers = loadbalancer.health_answers(s.services, service_ports(s.services, s.pods, t), t)
    port = str(s.service("web-local").health_check_node_port)
    assert {n: a[port]["localEndpoints"] for n, a in answers.items()} == {"node-1": 1, "node-2": 1, "node-3": 0}
    assert all(len(a) == 1 for a in answers.values())  # only the Local-policy LoadBalancer has one


def test_long_service_keys_fit_nft_comments() -> None:
    """A Service key may be 127 characters (two 63-character names); nft refuses comments over
    128, so the table must still load: the comment keeps the key's start."""
    import re

    s, t = _scenario()
    cfg = loadbalancer.balancer_config(s.services, t, "/tmp/status.json")
    key = "n" * 63 + "/" + "s" * 63
    for svc in cfg["services"]:
        svc["key"] = key
    text = render(cfg, {key: {"node-1"}}) + render(cfg, {})
    comments = re.findall(r'comment "([^"]*)"', text)
    assert comments and all(len(c) <= 128 for c in comments)
    assert any(c.startswith(key[:100]) for c in comments)
