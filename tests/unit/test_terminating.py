"""Terminating endpoints, the pure parts: kube-proxy's CategorizeEndpoints (which endpoints
serve which traffic on a node) and the API's delete with a grace period."""

from __future__ import annotations

from netns_lab.controllers.endpoints import Endpoint
from netns_lab.proxy.types import traffic_policy
from netns_lab.scenario.admission import Delete, Expire, admit
from netns_lab.scenario.yamlsrc import Source
from tests.unit.test_proxy_render import sp


def ep(name: str, node: str, ready: bool = True, serving: bool = True, terminating: bool = False) -> Endpoint:
    return Endpoint(f"default/{name}", f"10.244.0.{len(name) + ord(name[-1])}", 80, node, ready, serving, terminating)


A = ep("a", "node-1")
B = ep("b", "node-2")
A_T = ep("a", "node-1", ready=False, terminating=True)
B_T = ep("b", "node-2", ready=False, terminating=True)
B_GONE = ep("b", "node-2", ready=False, serving=False, terminating=True)


def test_ready_endpoints_serve_and_terminating_ones_wait() -> None:
    tp = traffic_policy(sp("s", "10.96.0.9", 80, (A_T, B)), "node-1")
    assert tp.cluster == (B,) and tp.reachable == (B,) and tp.has_any


def test_with_no_ready_endpoint_the_serving_terminating_ones_take_over() -> None:
    tp = traffic_policy(sp("s", "10.96.0.9", 80, (A_T, B_T)), "node-1")
    assert tp.cluster == (A_T, B_T) and tp.has_any
    tp = traffic_policy(sp("s", "10.96.0.9", 80, (A_T, B_GONE)), "node-1")
    assert tp.cluster == (A_T,)
    tp = traffic_policy(sp("s", "10.96.0.9", 80, (B_GONE,)), "node-1")
    assert tp.cluster == () and not tp.has_any and not tp.uses_cluster_chain


def test_local_policy_falls_back_per_node() -> None:
    """externalTrafficPolicy Local: node-1 has only a terminating endpoint while node-2 has a
    ready one: node-1 serves external traffic with its terminating one (kube-proxy decides
    per node), and its endpoint chains cover the cluster endpoint plus that local one."""
    svc = sp("s", "10.96.0.9", 80, (A_T, B), node_port=30001, external_local=True)
    tp = traffic_policy(svc, "node-1")
    assert tp.local == (A_T,) and tp.cluster == (B,)
    assert tp.external == (A_T,) and tp.internal == (B,)
    assert tp.reachable == (B, A_T)
    tp2 = traffic_policy(svc, "node-2")
    assert tp2.local == (B,) and tp2.reachable == (B,)


def test_internal_local_with_nothing_local_has_no_internal_endpoints() -> None:
    tp = traffic_policy(sp("s", "10.96.0.9", 80, (B,), internal_local=True), "node-1")
    assert tp.internal == () and tp.has_any and tp.reachable == ()


def _objects():  # type: ignore[no-untyped-def]
    import os

    from netns_lab.scenario import load_scenario
    from netns_lab.store import Objects
    from tests.conftest import ROOT

    return Objects.of(load_scenario(os.path.join(ROOT, "scenarios", "clusterip.yaml")))


def _delete(objects, ref: str, grace: int | None, now: float):  # type: ignore[no-untyped-def]
    return admit(objects, [Delete(Source("t", ref), "", ref, grace=grace, now=now)])


def test_delete_with_a_grace_period_marks_the_pod_then_expire_removes_it() -> None:
    objects = _objects()
    after = _delete(objects, "pod/web-1", 30, now=1000.0)
    pod = next(p for p in after.pods if p.name == "web-1")
    assert pod.terminating and pod.deletion_deadline == 1030.0
    longer = next(p for p in _delete(after, "pod/web-1", 60, now=1001.0).pods if p.name == "web-1")
    assert longer.deletion_deadline == 1030.0  # a second delete never lengthens it
    shorter = next(p for p in _delete(after, "pod/web-1", 5, now=1001.0).pods if p.name == "web-1")
    assert shorter.deletion_deadline == 1006.0
    assert any(p.name == "web-1" for p in admit(after, [Expire(1029.9)]).pods)
    assert not any(p.name == "web-1" for p in admit(after, [Expire(1030.0)]).pods)
    assert not any(p.name == "web-1" for p in _delete(objects, "pod/web-1", 0, now=1000.0).pods)
    assert not any(p.name == "web-1" for p in _delete(objects, "pod/web-1", None, now=1000.0).pods)  # no grace in its spec


def test_a_scenario_steps_delete_starts_its_clock_when_admitted() -> None:
    """A step's Delete carries no time (it is built when the file is loaded): its grace period
    starts when the change is admitted, not at the epoch."""
    import time

    from netns_lab.scenario.admission import Delete as D

    before = time.time()
    after = admit(_objects(), [D(Source("t", "pod/web-1"), "", "pod/web-1", grace=30)])
    deadline = next(p for p in after.pods if p.name == "web-1").deletion_deadline
    assert deadline is not None and before + 30 <= deadline <= time.time() + 30


def test_a_pod_made_again_under_the_same_name_is_not_expired() -> None:
    objects = _objects()
    after = _delete(_delete(objects, "pod/web-1", 30, now=1000.0), "pod/web-1", 0, now=1001.0)
    again = admit(after, _apply_web1())
    assert not next(p for p in admit(again, [Expire(2000.0)]).pods if p.name == "web-1").terminating


def _apply_web1():  # type: ignore[no-untyped-def]
    from netns_lab.scenario.admission import Apply

    m = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "labels": {"app": "web"}},
         "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "netexec"}]}}
    return [Apply(Source("t", m), "", m)]


def test_negative_grace_in_a_spec_is_one_second() -> None:
    import pytest

    from netns_lab.errors import ScenarioError
    from netns_lab.scenario.manifests import _grace

    src = Source("pod.yaml", {})
    assert [_grace(src, "spec.terminationGracePeriodSeconds", v) for v in (-5, 0, None, 7)] == [1, 0, None, 7]
    with pytest.raises(ScenarioError, match="must be at most 86400 seconds"):
        _grace(src, "spec.terminationGracePeriodSeconds", 10**12)


def test_a_bad_grace_period_is_one_line_and_exit_2() -> None:
    import pytest

    from netns_lab.errors import ScenarioError
    from netns_lab.scenario.verbs import check

    for bad in (-1, 86401, "soon", True):
        with pytest.raises(ScenarioError) as e:
            check({"verb": "delete", "refs": ["pod/web-1"], "gracePeriod": bad})
        assert "--grace-period" in str(e.value) and "must be a number of seconds from 0 to 86400" in str(e.value)
    check({"verb": "delete", "refs": ["pod/web-1"], "gracePeriod": 30})
