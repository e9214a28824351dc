"""The HAProxy ingress controller on a lab that runs both controllers
(scenarios/ingress-haproxy.yaml): unprivileged, endpoint changes through the runtime API
with no reload and no failed request, rule changes by a seamless reload, each controller
serving only its class. The path table and the scenario's checks run elsewhere
(tests/test_ingress.py, tests/test_scenarios.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from netns_lab.lab import Lab
from netns_lab.probes.http import get
from tests.conftest import ROOT
from tests.test_ingress import _netexec_pod, _nginx_in, _stream, scale_b_under_load

pytestmark = pytest.mark.root
SCENARIO = os.path.join(ROOT, "scenarios", "ingress-haproxy.yaml")
SERVICE = "haproxy-ingress/haproxy-ingress"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.from_file(SCENARIO) as lab:
        yield lab


def _haproxy(lab: Lab) -> dict[int, dict[str, str]]:
    return _nginx_in(lab.netns_of("pod/haproxy-ingress/haproxy-ingress-controller"), "haproxy")


def test_haproxy_runs_unprivileged_master_and_worker(lab: Lab) -> None:
    procs = _haproxy(lab)
    assert len(procs) >= 2, procs  # master and worker
    for pid, status in procs.items():
        assert "0" not in status["Uid"].split() and "0" not in status["Gid"].split(), (pid, status["Uid"])


def test_scaling_under_load_goes_through_the_runtime_api_without_a_reload(lab: Lab) -> None:
    """1 -> 2 -> 4 -> 2 endpoints under 60 requests/s: no failed request, the same HAProxy
    processes (no reload), each change one runtime-API update; new pods serve within a second
    of their change, removed ones serve nothing started after it."""
    pids, reloads, updates = set(_haproxy(lab)), lab.haproxy_reloads(), lab.haproxy_dynamic_updates()
    scale_b_under_load(lab, 26.0, SERVICE)
    print(f"{lab.haproxy_reloads() - reloads} reloads, {lab.haproxy_dynamic_updates() - updates} runtime-API updates")
    assert lab.haproxy_reloads() == reloads and set(_haproxy(lab)) == pids
    assert lab.haproxy_dynamic_updates() - updates == 4


def test_outgrowing_the_slots_and_a_rule_change_reload_seamlessly(lab: Lab) -> None:
    """Six more endpoints than slots (4) and then a new path: each is one counted reload, and
    under load not one request fails (the listening sockets pass to the new worker)."""
    reloads = lab.haproxy_reloads()
    more = [_netexec_pod(f"b-x{i}", "b", f"node-{1 + i % 2}") for i in range(6)]
    changed = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "site-b"}, "spec": {
        "ingressClassName": "haproxy", "defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}},
        "rules": [{"host": "b.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "b", "port": {"name": "http"}}}},
            {"path": "/new", "pathType": "Exact", "backend": {"service": {"name": "a2", "port": {"number": 80}}}}]}}]}}
    results = _stream(lab, "http://b.example.com/load", 8.0, 60.0,
                      [(2.0, lambda: lab.apply(*more)), (5.0, lambda: lab.apply(changed))], None, SERVICE)
    failed = [(round(t, 2), r.result, r.status, r.detail) for t, r in results if r.result != "ok" or r.status != 200]  # type: ignore[attr-defined]
    assert not failed, failed[:5]
    assert lab.haproxy_reloads() == reloads + 2
    ext, lb = lab.netns_of("external"), lab.ip_of(f"loadbalancer/{SERVICE}")
    assert get(ext, "http://b.example.com/new", lb).served_by == "a2-1"
    served = {get(ext, "http://b.example.com/x", lb).served_by for _ in range(24)}
    assert {f"b-x{i}" for i in range(6)} <= served  # every new endpoint in a slot of its own
    lab.delete(*(f"pod/b-x{i}" for i in range(6)))


def test_each_controller_serves_only_its_class(lab: Lab) -> None:
    ext = lab.netns_of("external")
    nginx, haproxy = lab.ip_of("loadbalancer/ingress-nginx/ingress-nginx"), lab.ip_of(f"loadbalancer/{SERVICE}")
    assert get(ext, "http://n.example.com/", nginx).served_by == "a2-1"
    assert get(ext, "http://n.example.com/", haproxy).served_by == "fallback-1"  # not HAProxy's: its default backend
    assert get(ext, "http://b.example.com/", nginx).status == 404
