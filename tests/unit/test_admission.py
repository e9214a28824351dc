"""Admission of run-time changes (pure): what the API server would accept, allocate, carry
over or refuse, and the scenario steps validated at load time."""

from __future__ import annotations

import ipaddress
import os
import textwrap
from typing import Any

import pytest

from netns_lab.controllers.topology import plan, replan
from netns_lab.errors import ScenarioError
from netns_lab.model import NAMESPACE_NAME_LABEL
from netns_lab.scenario import load_scenario
from netns_lab.scenario.admission import Apply, Delete, Label, SetReady, admit
from netns_lab.scenario.yamlsrc import Source
from netns_lab.store import KINDS, Objects

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(HERE, "..", "..", "scenarios")
CLUSTERIP = os.path.join(SCENARIOS, "clusterip.yaml")
INGRESS = os.path.join(SCENARIOS, "ingress.yaml")


@pytest.fixture(scope="module")
def base() -> Objects:
    return Objects.of(load_scenario(CLUSTERIP))


def apply(objects: Objects, *manifests: dict[str, Any]) -> Objects:
    return admit(objects, [Apply(Source("change.yaml", m), "", m) for m in manifests])


def delete(objects: Objects, *refs: str) -> Objects:
    return admit(objects, [Delete(Source("delete", r), "", r) for r in refs])


def label(objects: Objects, ref: str, **labels: str | None) -> Objects:
    return admit(objects, [Label(Source("label", ref), "", ref, tuple(labels.items()))])


def svc(name: str, ns: str = "default", **spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"port": 80, "targetPort": 9376}])
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def pod(name: str, ns: str = "default", labels: dict[str, str] | None = None, port: int = 9376, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {"containers": [{"name": "web", "image": "netexec", "ports": [{"name": "http", "containerPort": port}]}], **spec}}


def get(objects: Objects, kind: str, key: str) -> Any:
    return objects.get(next(k for k in KINDS if k.name == kind), key)


# -- what is accepted ------------------------------------------------------------------------

def test_a_new_service_gets_the_lowest_free_cluster_ip_and_keeps_it_when_replaced(base: Objects) -> None:
    taken = {s.cluster_ip for s in base.services}
    after = apply(base, svc("fresh", selector={"app": "web"}))
    ip = get(after, "Service", "default/fresh").cluster_ip
    assert ip not in taken and ip is not None
    again = apply(after, svc("fresh", selector={"app": "other"}))  # no clusterIP written: kept, as patchAllocatedValues does
    assert get(again, "Service", "default/fresh").cluster_ip == ip
    assert get(again, "Service", "default/fresh").selector == (("app", "other"),)


def test_type_changes_allocate_and_release_node_ports(base: Objects) -> None:
    nodeport = apply(base, svc("my-service", type="NodePort", selector={"app": "web"},
                               ports=[{"name": "http", "port": 80, "targetPort": "http"}]))
    s = get(nodeport, "Service", "default/my-service")
    assert s.type == "NodePort" and s.ports[0].node_port is not None
    assert s.cluster_ip == get(base, "Service", "default/my-service").cluster_ip
    # replaced without nodePort: the allocated one is carried over (by port name)
    again = apply(nodeport, svc("my-service", type="NodePort", selector={"app": "web"},
                                ports=[{"name": "http", "port": 80, "targetPort": "http"}]))
    assert get(again, "Service", "default/my-service").ports[0].node_port == s.ports[0].node_port
    back = apply(nodeport, svc("my-service", selector={"app": "web"}, ports=[{"name": "http", "port": 80, "targetPort": "http"}]))
    assert get(back, "Service", "default/my-service").ports[0].node_port is None


def test_external_name_and_back(base: Objects) -> None:
    ext = apply(base, svc("web-1-only", type="ExternalName", externalName="db.example.org", ports=None))
    s = get(ext, "Service", "default/web-1-only")
    assert s.type == "ExternalName" and s.cluster_ip is None and s.external_name == "db.example.org"
    back = apply(ext, svc("web-1-only", selector={"instance": "web-1"}))
    assert get(back, "Service", "default/web-1-only").cluster_ip is not None


def test_load_balancer_keeps_its_ip_while_it_stays_one(base: Objects) -> None:
    lb = apply(base, svc("my-service", type="LoadBalancer", selector={"app": "web"}))
    ip = get(lb, "Service", "default/my-service").load_balancer_ips
    assert len(ip) == 1 and ipaddress.IPv4Address(ip[0]) in base.cluster.external.load_balancer_pool
    again = apply(lb, svc("my-service", type="LoadBalancer", selector={"app": "other"}))
    assert get(again, "Service", "default/my-service").load_balancer_ips == ip


def test_a_new_pod_is_scheduled_on_the_least_loaded_node_and_sees_every_service(base: Objects) -> None:
    after = apply(base, pod("web-4", labels={"app": "web"}))
    p = get(after, "Pod", "default/web-4")
    assert p.node_name == "node-1"  # node-1 holds 2 user pods + coredns = 3, node-2 holds 3: tie -> first
    env = dict(p.service_env)
    assert "MY_SERVICE_SERVICE_HOST" in env and "NOBODY_HOME_SERVICE_HOST" in env


def test_a_pod_may_change_its_labels(base: Objects) -> None:
    after = apply(base, pod("web-2", labels={"app": "moved"}, nodeName="node-2"))
    assert get(after, "Pod", "default/web-2").label_map == {"app": "moved"}
    assert get(after, "Pod", "default/web-2").service_env == get(base, "Pod", "default/web-2").service_env


def test_label_merges_and_removes(base: Objects) -> None:
    after = label(base, "pod/web-1", app="other", instance=None, extra="1")
    assert get(after, "Pod", "default/web-1").label_map == {"app": "other", "extra": "1"}


def test_namespaces_carry_their_name_label_whatever_is_done_to_it(base: Objects) -> None:
    after = apply(base, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "a"}}})
    assert get(after, "Namespace", "shop").labels == ((NAMESPACE_NAME_LABEL, "shop"), ("team", "a"))
    relabelled = label(after, "namespace/shop", **{NAMESPACE_NAME_LABEL: "other"})
    assert dict(get(relabelled, "Namespace", "shop").labels)[NAMESPACE_NAME_LABEL] == "shop"  # the API server sets it back
    assert dict(get(base, "Namespace", "default").labels) == {NAMESPACE_NAME_LABEL: "default"}


def test_deleting_a_namespace_deletes_what_is_in_it(base: Objects) -> None:
    shop = apply(base, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
                 pod("a", "shop", {"app": "a"}), svc("a", "shop", selector={"app": "a"}))
    assert get(shop, "Pod", "shop/a") is not None
    gone = delete(shop, "ns/shop")
    assert get(gone, "Pod", "shop/a") is None and get(gone, "Service", "shop/a") is None and get(gone, "Namespace", "shop") is None
    assert gone.same_as(base)


def test_the_first_ingress_brings_the_ingress_controller(base: Objects) -> None:
    ing = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"},
           "spec": {"defaultBackend": {"service": {"name": "my-service", "port": {"number": 80}}}}}
    after = apply(base, ing)
    assert get(after, "Pod", "ingress-nginx/ingress-nginx-controller") is not None
    assert get(after, "Service", "ingress-nginx/ingress-nginx").load_balancer_ips


def test_readiness_is_status_not_spec(base: Objects) -> None:
    after = admit(base, [SetReady(Source("pod-ready", "x"), "", "pod/web-2", False)])
    assert get(after, "Pod", "default/web-2").ready is False


def test_replan_keeps_every_address_and_never_reuses_one_in_the_same_change(base: Objects) -> None:
    topo = plan(load_scenario(CLUSTERIP))
    after = delete(apply(base, pod("web-4", labels={"app": "web"}, nodeName="node-2")), "pod/web-3")
    new = replan(topo, base, after)
    old_ips = {p.key: p.ip for p in topo.pods}
    assert all(old_ips[p.key] == p.ip for p in new.pods if p.key in old_ips)
    assert new.pod("default/web-4").ip != old_ips["default/web-3"]
    assert "default/web-3" not in {p.key for p in new.pods}


# -- what is refused: one line, file/path/rule, and the snapshot is untouched -------------------

REFUSED = [
    ("clusterIP is immutable", lambda o: apply(o, svc("my-service", clusterIP="10.96.0.99", selector={"app": "web"})),
     'spec.clusterIPs[0]: Invalid value: ["10.96.0.99"]: may not change once set'),
    ("unknown kind", lambda o: apply(o, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}),
     'kind: no matches for kind "Deployment" in version "apps/v1"'),
    ("bad label value", lambda o: label(o, "pod/web-1", app="not ok!"), 'app: Invalid value: "not ok!"'),
    ("bad label key", lambda o: label(o, "pod/web-1", **{"-bad": "x"}), 'Invalid value: "-bad"'),
    ("delete of something absent", lambda o: delete(o, "pod/web-9"), 'Not found: pods "web-9" not found in namespace "default"'),
    ("apply into a namespace that does not exist", lambda o: apply(o, pod("p", "nowhere")),
     'metadata.namespace: Not found: namespaces "nowhere" not found'),
    ("service port out of range", lambda o: apply(o, svc("s", ports=[{"port": 70000}])), "spec.ports[0].port: Invalid value: \"70000\": must be between 1 and 65535"),
    ("pod containers are immutable", lambda o: apply(o, pod("web-1", labels={"app": "web"}, port=8080, nodeName="node-1")),
     "spec: Forbidden: pod updates may not change fields other than"),
    ("pod nodeName is immutable", lambda o: apply(o, pod("web-1", labels={"app": "web"}, nodeName="node-2")),
     "spec: Forbidden: pod updates may not change fields other than"),
    ("the default namespace stays", lambda o: delete(o, "namespace/default"),
     'namespaces "default" is forbidden: this namespace may not be deleted'),
    ("the lab's DNS stays", lambda o: delete(o, "pod/kube-system/coredns"), "the cluster DNS server, which the lab runs itself"),
    ("a ref with too many parts", lambda o: delete(o, "pod/a/b/c"), "a Pod is named pod/NAMESPACE/NAME or NAME"),
    ("a cluster-scoped kind with a namespace", lambda o: delete(o, "namespace/a/b"), "it is cluster-scoped"),
    ("an unknown resource", lambda o: delete(o, "deployment/web"), "KIND one of namespace, pod"),
    ("a nodePort already allocated", lambda o: apply(o, svc("a", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]),
                                                      svc("b", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])),
     "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"),
    ("nodePort on a ClusterIP Service", lambda o: apply(o, svc("a", ports=[{"port": 80, "nodePort": 30080}])),
     "may not be used when `type` is 'ClusterIP'"),
    ("an unknown field", lambda o: apply(o, svc("a", selectr={"app": "web"})), 'unknown field "selectr"'),
    ("a pod on a node that does not exist", lambda o: apply(o, pod("p", nodeName="node-9")), 'spec.nodeName: Not found: "node-9"'),
    ("readiness of a Service", lambda o: admit(o, [SetReady(Source("pod-ready", "x"), "", "service/my-service", False)]),
     "only pods have a readiness"),
    ("an externalIP that is a lab machine", lambda o: apply(o, svc("a", externalIPs=["10.0.0.1"])), "is the address of the lab's router"),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_invalid_changes_are_refused_in_one_line(base: Objects, case: tuple[str, Any, str]) -> None:
    _name, change, expected = case
    before = repr(base)
    with pytest.raises(ScenarioError) as exc:
        change(base)
    assert expected in str(exc.value)
    assert "\n" not in str(exc.value)
    assert repr(base) == before  # snapshots are immutable: a refusal has nothing to undo


def test_deleting_what_an_ingress_uses_is_refused() -> None:
    objects = Objects.of(load_scenario(INGRESS))
    ing = objects.ingresses[0]
    backend = ing.rules[0].paths[0].backend.service if ing.rules else ing.default_backend.service  # type: ignore[union-attr]
    with pytest.raises(ScenarioError, match=f'Forbidden: ingresses "{ing.key}" would break'):
        delete(objects, f"service/{ing.namespace}/{backend}")


def test_a_change_is_all_or_nothing(base: Objects) -> None:
    with pytest.raises(ScenarioError, match="web-9"):
        admit(base, [Apply(Source("a", None), "", svc("fine")), Delete(Source("d", None), "", "pod/web-9")])


# -- steps in a scenario ------------------------------------------------------------------------

def _scenario(tmp_path: Any, checks: str) -> str:
    text = open(CLUSTERIP).read().split("checks:")[0] + "checks:\n" + textwrap.indent(textwrap.dedent(checks), "  ")
    path = tmp_path / "steps.yaml"
    path.write_text(text)
    return str(path)


def test_steps_are_admitted_at_load_time_and_later_checks_see_their_objects(tmp_path: Any) -> None:
    path = _scenario(tmp_path, """\
        - apply:
            - {apiVersion: v1, kind: Service, metadata: {name: late}, spec: {selector: {app: web}, ports: [{port: 81, targetPort: 9376}]}}
        - {from: pod/client-1, connect: service/late:81, expect: {result: ok}}
        - delete: [service/late]
        - label: {pod/web-1: {app: gone, instance: null}}
        """)
    s = load_scenario(path)
    assert [c.action for c in s.checks] == ["apply", "connect", "delete", "label"]
    assert s.checks[0].name == "apply Service default/late"


@pytest.mark.parametrize("steps, expected", [
    ("- apply: [{apiVersion: v1, kind: Pod, metadata: {name: p, namespace: nowhere}, spec: {containers: [{name: c, image: i}]}}]",
     'checks[0].apply[0].metadata.namespace: Not found: namespaces "nowhere" not found'),
    ("- delete: [service/late]\n- {from: pod/client-1, connect: service/late:81}", 'checks[0].delete[0]: Not found: services "late"'),
    ("- delete: [service/my-service]\n- {from: pod/client-1, connect: service/my-service:80}",
     'checks[1].connect: Not found: "service/my-service"'),
    ("- label: {pod/web-1: {app: 5}}", "checks[0].label.pod/web-1.app: Invalid type: expected a string"),
    ("- {apply: [], name: x}", "checks[0].apply: Required value"),
    ("- {delete: [pod/web-1], from: pod/client-1}", "checks[0].from: Forbidden: a step is exactly one of apply, delete, label"),
])
def test_bad_steps_are_load_time_errors(tmp_path: Any, steps: str, expected: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        load_scenario(_scenario(tmp_path, steps))
    assert expected in str(exc.value), str(exc.value)


# -- IngressClass: which controller serves an Ingress --------------------------------------------
def _ingress(name: str, cls: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"defaultBackend": {"service": {"name": "my-service", "port": {"number": 80}}}}
    if cls:
        spec["ingressClassName"] = cls
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name}, "spec": spec}


def _class(name: str, controller: str, default: bool = False) -> dict[str, Any]:
    annotations = {"ingressclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": name, "annotations": annotations},
            "spec": {"controller": controller}}


HAPROXY_CONTROLLER = "haproxy-ingress.github.io/controller"


def test_the_default_class_is_stamped_once_and_brings_its_controller(base: Objects) -> None:
    o = apply(base, _class("haproxy", HAPROXY_CONTROLLER, default=True), _ingress("web"))
    assert get(o, "Ingress", "default/web").class_name == "haproxy"  # DefaultIngressClass, at creation
    assert get(o, "Pod", "haproxy-ingress/haproxy-ingress-controller") is not None
    assert get(o, "Pod", "ingress-nginx/ingress-nginx-controller") is None
    o = apply(o, _class("haproxy", HAPROXY_CONTROLLER), _class("nginx", "k8s.io/ingress-nginx", default=True))
    assert get(o, "Ingress", "default/web").class_name == "haproxy"  # a later default moves nothing


def test_an_ingress_class_controller_is_immutable_and_must_be_served(base: Objects) -> None:
    o = apply(base, _class("haproxy", HAPROXY_CONTROLLER))
    with pytest.raises(ScenarioError, match=r'spec.controller: Invalid value: "k8s.io/ingress-nginx": field is immutable'):
        apply(o, _class("haproxy", "k8s.io/ingress-nginx"))
    o = apply(o, _class("traefik", "traefik.io/ingress-controller"))
    with pytest.raises(ScenarioError, match=r'Not found: "traefik": this IngressClass belongs to controller traefik.io'):
        apply(o, _ingress("web", "traefik"))
