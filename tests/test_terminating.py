"""Terminating endpoints, with real packets: kube-proxy's fallback to serving-terminating
endpoints (KEP-1669) in iptables and nftables mode.

A pod deleted with a grace period stays, terminating: out of the Service's ready endpoints
(new connections go to the other pods), used again only when no ready endpoint is left
(then every serving terminating one takes new connections), and removed by the lab's API
server when its grace period is over. EndpointSlice conditions say which is which.
"""

from __future__ import annotations

import os
import time

import pytest
import yaml

from netns_lab.lab import Lab
from netns_lab.views import render
from tests.conftest import ROOT

pytestmark = pytest.mark.root
CLUSTERIP = os.path.join(ROOT, "scenarios", "clusterip.yaml")


def served(lab: Lab, n: int = 24) -> tuple[set[str | None], set[str]]:
    """Who served ``n`` new connections from client-1 to my-service:80, and the results."""
    rs = [lab.connect("pod/client-1", "service/my-service", 80, timeout=2.0) for _ in range(n)]
    return {r.served_by for r in rs if r.result == "ok"}, {r.result for r in rs}


def conditions(lab: Lab) -> dict[str, dict[str, bool]]:
    doc = yaml.safe_load(render("endpointslices", lab.pods, lab.services, lab.topology, "default", "yaml"))
    return {e["targetRef"]["name"]: e["conditions"] for sl in doc["items"]
            if sl["metadata"]["labels"]["kubernetes.io/service-name"] == "my-service" for e in sl["endpoints"]}


def wait_gone(name: str, pod: str, seconds: float) -> Lab:
    """The lab as its record says once ``pod`` is gone (removed by the API server) and that
    change is realised (the record is written before the rules: ``pending`` until they are)."""
    from netns_lab import state

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        st = state.load(name)
        if st is not None and not st.pending:
            lab = Lab.attach(name)
            if all(p.name != pod for p in lab.pods) and not lab.state.pending:  # type: ignore[union-attr]
                return lab
        time.sleep(0.2)
    raise AssertionError(f"{pod} still there after {seconds}s")


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_terminating_pods_serve_only_as_the_fallback_then_go(lab_factory, mode: str) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory(CLUSTERIP, name=f"terminating-{mode[:3]}", cluster__proxyMode=mode)
    assert served(lab, 40) == ({"web-1", "web-2", "web-3"}, {"ok"})  # one missing: p = 3 (2/3)^40 < 1e-6

    # one pod terminating: new connections only to the ready ones
    lab.delete("pod/web-1", grace_period=120)
    assert conditions(lab)["web-1"] == {"ready": False, "serving": True, "terminating": True}
    who, results = served(lab)
    assert results == {"ok"} and who == {"web-2", "web-3"}, who

    # every pod terminating: kube-proxy falls back to the serving terminating endpoints
    lab.delete("pod/web-2", "pod/web-3", grace_period=120)
    who, results = served(lab, 40)
    assert results == {"ok"} and who == {"web-1", "web-2", "web-3"}, who

    # a terminating pod that is not ready (its readiness probe fails) is not serving: not used
    lab.set_ready("pod/web-1", False)
    assert conditions(lab)["web-1"] == {"ready": False, "serving": False, "terminating": True}
    who, results = served(lab)
    assert results == {"ok"} and who == {"web-2", "web-3"}, who

    # --grace-period 0 removes at once; a second delete shortens a grace period
    lab.delete("pod/web-2", grace_period=0)
    assert "web-2" not in {p.name for p in lab.pods}
    t0 = time.monotonic()
    lab.delete("pod/web-3", grace_period=6)
    assert served(lab, 4) == ({"web-3"}, {"ok"})
    lab = wait_gone(lab.name, "web-3", 20)
    gone_after = time.monotonic() - t0
    assert gone_after >= 6.0, gone_after
    # no serving endpoint left (web-1 terminating and not ready): the ClusterIP rejects
    assert served(lab, 4) == (set(), {"refused"})
    lab.delete("pod/web-1", grace_period=0)  # nothing left to expire in the background


def test_termination_grace_period_seconds_keeps_a_pod_serving(lab_factory) -> None:  # type: ignore[no-untyped-def]
    """``spec.terminationGracePeriodSeconds`` is the grace period of a plain delete."""
    lab = lab_factory(CLUSTERIP, name="terminating-grace", cluster__proxyMode="nftables")
    lab.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "slow", "labels": {"instance": "web-1"}},
               "spec": {"nodeName": "node-2", "terminationGracePeriodSeconds": 3,
                        "containers": [{"name": "web", "image": "netexec", "ports": [{"containerPort": 9376}]}]}})
    lab.delete("pod/web-1")  # no grace period in its spec: removed at once
    assert "web-1" not in {p.name for p in lab.pods}
    t0 = time.monotonic()
    lab.delete("pod/slow")
    assert [p.terminating for p in lab.pods if p.name == "slow"] == [True]
    r = lab.connect("pod/client-1", "service/web-1-only", 80, timeout=2.0)
    assert (r.result, r.served_by) == ("ok", "slow")  # the only endpoint, terminating and serving
    lab = wait_gone(lab.name, "slow", 15)
    assert time.monotonic() - t0 >= 3.0
    assert lab.connect("pod/client-1", "service/web-1-only", 80, timeout=1.0).result == "refused"
