"""What is kept per change instead of recomputed from everything (the objects on disk, the
Service ports and their endpoints, the DNS zone the server reads) must equal what a
computation from scratch gives, after every step of a long sequence of changes."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

import pytest

from netns_lab import model_io
from netns_lab.controllers import dns as dns_records
from netns_lab.controllers.serviceports import ServicePorts
from netns_lab.controllers.topology import plan, replan
from netns_lab.objectlog import ObjectLog
from netns_lab.proxy.types import service_ports
from netns_lab.reconcile import View
from netns_lab.reconcile.dns import ClusterDNS
from netns_lab.scenario import load_scenario
from netns_lab.scenario.admission import Apply, Delete, Label, SetReady, admit
from netns_lab.scenario.yamlsrc import Source
from netns_lab.services.dns import Zone
from netns_lab.store import KINDS, Allocations, Objects

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
HEADLESS = os.path.join(ROOT, "scenarios", "headless.yaml")
CLUSTERIP = os.path.join(ROOT, "scenarios", "clusterip.yaml")


def _svc(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("selector", {"app": "web"})
    spec.setdefault("ports", [{"name": "http", "port": 80, "targetPort": "http"}])
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def _pod(name: str, app: str = "web", port: int = 9376) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": "web", "image": "netexec", "ports": [{"name": "http", "containerPort": port}]}]}}


def _apply(*m: dict[str, Any]) -> list[Any]:
    return [Apply(Source("t", x), "", x) for x in m]


def _delete(*refs: str) -> list[Any]:
    return [Delete(Source("t", r), "", r) for r in refs]


STEPS: list[list[Any]] = [
    _apply(_svc("a")),
    _apply(_pod("w-9", port=8080)),
    [Label(Source("t", None), "", "pod/w-9", (("app", "other"),))],
    _apply(_svc("b", selector={"app": "other"}), _svc("headless-b", clusterIP="None", selector={"app": "other"})),
    [SetReady(Source("t", None), "", "pod/w-9", False)],
    [SetReady(Source("t", None), "", "pod/w-9", True)],
    _apply(_svc("a", type="NodePort")),
    _delete("pod/w-9"),
    _apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"type": "ExternalName", "externalName": "x.example.org"}}),
    _delete("service/b", "service/headless-b"),
    _apply(_svc("a")),
    _apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
           {**_pod("cart", app="cart"), "metadata": {"name": "cart", "namespace": "shop", "labels": {"app": "cart"}}},
           {**_svc("cart", selector={"app": "cart"}), "metadata": {"name": "cart", "namespace": "shop"}}),
    _delete("namespace/shop"),
]


def _sequence(path: str) -> list[tuple[Objects, Any]]:
    scenario = load_scenario(path)
    objects, topo = Objects.of(scenario), plan(scenario)
    out = [(objects, topo)]
    for step in STEPS:
        new = admit(objects, step)
        topo = replan(topo, objects, new)
        objects = new
        out.append((objects, topo))
    return out


@pytest.mark.parametrize("path", [CLUSTERIP, HEADLESS])
def test_service_ports_kept_per_change_equal_a_computation_from_scratch(path: str) -> None:
    cache = ServicePorts()
    previous: tuple[Any, ...] = ()
    for objects, topo in _sequence(path):
        ports = cache.update(objects, topo)
        assert ports == service_ports(objects.services, objects.pods, topo)
        if cache.delta is not None:  # the delta leads from the previous ports to these
            gone, came = cache.delta
            assert set(previous) - set(ports) == set(gone) and set(ports) - set(previous) == set(came)
        previous = ports


def test_changes_finds_exactly_what_differs() -> None:
    seq = _sequence(CLUSTERIP)
    for (a, _), (b, _) in zip(seq, seq[1:]):
        for kind in KINDS:
            found = a.changes(b, kind)
            old, new = {o.key: o for o in a.all(kind)}, {o.key: o for o in b.all(kind)}
            assert set(found) == {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
            assert all(found[k] == (old.get(k), new.get(k)) for k in found)
        assert b.allocations() == Allocations.of(b.services)  # handed on by put/remove, never re-read


def test_the_object_log_replays_to_the_same_objects_and_ignores_a_torn_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    seq = _sequence(CLUSTERIP)
    log = ObjectLog(str(tmp_path))
    log.write(seq[0][0])
    for objects, _ in seq[1:]:
        log.record(objects)
        assert ObjectLog.read(str(tmp_path)).recorded == objects
    assert log.lines > 0  # changes were journal lines, not snapshots
    journal = tmp_path / log.journal
    with open(journal, "ab") as fh:
        fh.write(b'{"k":"services","put":{"name":')  # a writer killed mid-line
    assert ObjectLog.read(str(tmp_path)).recorded == seq[-1][0]
    log.record(seq[1][0])  # the next change overwrites the torn line
    assert ObjectLog.read(str(tmp_path)).recorded == seq[1][0]
    log.write(seq[2][0])  # compaction: a new snapshot and journal; the old journal is gone
    assert not journal.exists() and ObjectLog.read(str(tmp_path)).recorded == seq[2][0]
    assert model_io.dump_objects(seq[2][0]) == model_io.dump_objects(ObjectLog.read(str(tmp_path)).recorded)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", [CLUSTERIP, HEADLESS])
def test_the_zone_the_server_reads_follows_every_change(path: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rt = SimpleNamespace(state=SimpleNamespace(workdir=str(tmp_path)), running=lambda role: True,
                         spawn=lambda *a: None, signal=lambda *a: None, name="t")
    dns = ClusterDNS(rt)  # type: ignore[arg-type]
    server = Zone(os.path.join(str(tmp_path), "dns-zone.json"))
    before = None
    for objects, topo in _sequence(path):
        view = View(objects, topo, lambda: (), before=before)
        dns.sync(view)
        want = dns_records.build(objects.services, objects.pods, topo, topo.cluster_domain)
        got = server.current()
        assert _normal(got.names) == _normal(want.names)
        assert got.namespaces == want.namespaces
        before = objects
    assert dns.lines > 0  # the changes went through the journal


def _normal(names: dict[str, Any]) -> dict[str, Any]:
    """Records as sets: a name with several contributors may list them in another order."""
    return {n: {t: sorted(json.dumps(x) for x in v) for t, v in e.items()} for n, e in names.items()}
