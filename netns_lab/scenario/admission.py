"""Changes to a running lab, admitted as the API server admits them: pure, all or nothing.

``admit(objects, actions)`` returns the snapshot after every action, or raises one
:class:`ScenarioError` naming where the offending action came from (a scenario step, a
file given to ``invoke apply``, an argument of ``invoke delete``) and the rule it breaks;
the lab then reconciles the kernel from the old snapshot to the new one. Nothing here
touches the kernel, so a refused change has changed nothing.

The rules are the API server's: a manifest is validated by its kind's parser (the same as
a scenario's ``objects``), an object lives in a namespace that exists, a Service keeps its
clusterIP (``may not change once set``) and, while its type still needs them, its nodePorts and
load-balancer IP; a pod may change its labels only; deleting a namespace deletes what is
in it. The lab adds two rules of its own: the objects it runs itself (cluster DNS, the
ingress controller, ``default/kubernetes``) cannot be changed, and an object an Ingress
points at cannot be deleted or changed out from under it (ingress-nginx would serve 503s;
the lab refuses instead, so its nginx configuration is always complete).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from netns_lab.controllers.envvars import pod_env
from netns_lab.controllers.system import FAMILIES, cluster_dns, family_of, ingress_controller, stamp_default_class
from netns_lab.controllers.topology import MAX_PODS_PER_NODE
from netns_lab.errors import ScenarioError
from netns_lab.model import BUILTIN_NAMESPACES, Ingress, IngressClass, Namespace, NetworkPolicy, Pod, Secret, Service
from netns_lab.scenario import k8s
from netns_lab.scenario.ingress import check_ingress_refs
from netns_lab.scenario.manifests import parse_object
from netns_lab.scenario.families import update as update_families
from netns_lab.scenario.netpol import refusal
from netns_lab.scenario.services import ParsedService, allocate
from netns_lab.scenario.yamlsrc import Source, join
from netns_lab.store import KINDS, Kind, Objects, kind_named


@dataclass(frozen=True, eq=False)
class Apply:
    """Create the object, or replace the one of the same kind/namespace/name (``kubectl apply``)."""

    src: Source
    path: str
    manifest: Any


@dataclass(frozen=True, eq=False)
class Delete:
    """``KIND/NS/NAME`` or ``KIND/NAME`` (namespace default, or a cluster-scoped object).

    A pod with a grace period (``grace``, else its ``terminationGracePeriodSeconds``) is not
    removed: it becomes terminating until ``now`` + grace (its deletionTimestamp), still
    serving, and the lab's API server removes it then (:class:`Expire`)."""

    src: Source
    path: str
    ref: str
    grace: int | None = None  # seconds; 0: at once (kubectl delete --grace-period 0 --force)
    now: float | None = None  # when the deletion was asked (seconds since the epoch); None: when admitted


@dataclass(frozen=True, eq=False)
class Expire:
    """Remove every terminating pod whose grace period is over at ``now`` (the kubelet, once
    the pod's process is gone). Decided on the objects of the change itself, so a pod made
    again under the same name, or already gone, is left alone."""

    now: float


@dataclass(frozen=True, eq=False)
class Label:
    """Merge labels into an object; a None value removes the label (``kubectl label K-``)."""

    src: Source
    path: str
    ref: str
    labels: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, eq=False)
class SetReady:
    """A pod's readiness (what its readiness probe would report): status, not spec."""

    src: Source
    path: str
    ref: str
    ready: bool


Action = Apply | Delete | Expire | Label | SetReady
FORBIDDEN_POD_UPDATE = ("Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                        "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                        "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)")


def admit(objects: Objects, actions: Sequence[Action]) -> Objects:
    """The snapshot after ``actions``, in order; the first refusal stops everything."""
    for action in actions:
        objects = _ADMIT[type(action)](objects, action)  # type: ignore[operator]
    return objects


def system_objects(objects: Objects) -> dict[tuple[str, str], str]:
    """(kind, key) -> what it is, for the objects the lab runs itself."""
    dns_pod, dns_svc = cluster_dns(objects.cluster)
    out = {
        ("Pod", dns_pod.key): "the cluster DNS server", ("Service", dns_svc.key): "the cluster DNS Service",
        ("Service", "default/kubernetes"): "the API server's Service",
    }
    for family in FAMILIES:
        _ns, ing_pod, ing_svc = ingress_controller(objects.cluster, family)
        out.update({("Pod", ing_pod.key): f"the ingress controller ({family.controller})",
                    ("Service", ing_svc.key): f"the ingress controller's Service ({family.controller})",
                    ("Namespace", family.namespace): f"the ingress controller's namespace ({family.controller})"})
    return out


def _not_system(objects: Objects, kind: Kind, key: str, src: Source, path: str) -> None:
    what = system_objects(objects).get((kind.name, key))
    if what is not None:
        raise src.error(path, f'Forbidden: {kind.plural} "{key}" is {what}, which the lab runs itself; it cannot be changed')


def parse_ref(src: Source, path: str, text: str) -> tuple[Kind, str]:
    """``KIND/NS/NAME`` or ``KIND/NAME`` -> (kind, key); names checked as the API server would."""
    kind_text, sep, rest = text.partition("/") if isinstance(text, str) else ("", "", "")
    kind = kind_named(kind_text) if sep else None
    if kind is None:
        known = ", ".join(k.name.lower() for k in KINDS)
        raise src.error(path, f'Invalid value: "{text}": must be KIND/NAME or KIND/NAMESPACE/NAME, KIND one of {known}')
    parts = rest.split("/")
    if len(parts) > 2 or (len(parts) == 2 and not kind.namespaced) or not all(parts):
        form = "NAMESPACE/NAME or NAME" if kind.namespaced else "NAME (it is cluster-scoped)"
        raise src.error(path, f'Invalid value: "{text}": a {kind.name} is named {kind.name.lower()}/{form}')
    ns, name = (parts[0], parts[1]) if len(parts) == 2 else ("default", parts[0])
    errs = k8s.dns1123_subdomain(name) if kind.namespaced else k8s.dns1123_label(name)
    errs += k8s.dns1123_label(ns) if kind.namespaced else []
    if errs:
        raise src.error(path, f'Invalid value: "{text}": {"; ".join(errs)}')
    return kind, (f"{ns}/{name}" if kind.namespaced else name)


def _existing(objects: Objects, src: Source, path: str, text: str) -> tuple[Kind, Any]:
    kind, key = parse_ref(src, path, text)
    obj = objects.get(kind, key)
    if obj is None:
        raise src.error(path, f'Not found: {kind.plural} "{key.rpartition("/")[2]}" not found'
                        + (f' in namespace "{key.partition("/")[0]}"' if kind.namespaced else ""))
    return kind, obj


def _apply(objects: Objects, a: Apply) -> Objects:
    parsed = parse_object(a.src, a.manifest, a.path)
    obj = parsed.service if isinstance(parsed, ParsedService) else parsed
    kind = next(k for k in KINDS if isinstance(obj, _CLASS[k.name]))
    mpath = join(a.path, "metadata")
    _not_system(objects, kind, obj.key, a.src, join(mpath, "name"))
    if kind.namespaced and objects.get(KINDS[0], obj.namespace) is None:
        raise a.src.error(join(mpath, "namespace"), f'Not found: namespaces "{obj.namespace}" not found')
    old = objects.get(kind, obj.key)
    why = refusal(kind.name, objects.cluster.ip_family)
    if why is not None:
        raise a.src.error(join(a.path, "kind"), why)
    if isinstance(parsed, ParsedService):
        return _ingresses_intact(_apply_service(objects, parsed, old), a.src, a.path)
    if isinstance(obj, Pod):
        return _apply_pod(objects, obj, old, a)
    if isinstance(obj, Ingress):
        classes = {c.name: c for c in objects.ingress_classes}
        check_ingress_refs(obj, a.src, a.path, objects.services, {s.key: s for s in objects.secrets}, classes)
        return _with_ingress_controllers(objects.put(stamp_default_class(obj, classes)))
    if isinstance(obj, IngressClass) and isinstance(old, IngressClass) and old.controller != obj.controller:
        raise a.src.error(join(a.path, "spec.controller"), f'Invalid value: "{obj.controller}": field is immutable')
    return _ingresses_intact(objects.put(obj), a.src, a.path)


def _apply_pod(objects: Objects, pod: Pod, old: Pod | None, a: Apply) -> Objects:
    spath = join(a.path, "spec")
    nodes = objects.cluster.nodes
    if pod.node_name is not None and pod.node_name not in nodes:
        raise a.src.error(join(spath, "nodeName"), f'Not found: "{pod.node_name}": no such node in the cluster')
    if old is not None:
        kept = replace(pod, labels=old.labels, node_name=old.node_name if pod.node_name is None else pod.node_name,
                       ready=old.ready, service_env=old.service_env, deletion_deadline=old.deletion_deadline,
                       containers=tuple(replace(c, image=o.image) for c, o in zip(pod.containers, old.containers)))
        if kept != old:  # labels (and images, which change nothing here) are all a pod may change
            raise a.src.error(spath, FORBIDDEN_POD_UPDATE)
        return objects.put(replace(old, labels=pod.labels, containers=pod.containers))
    load = {n: 0 for n in nodes}
    for p in objects.pods:
        if p.node_name in load:
            load[p.node_name] += 1
    node = pod.node_name or min(nodes, key=lambda n: (load[n], nodes.index(n)))  # the scheduler: least loaded
    if load[node] >= MAX_PODS_PER_NODE:
        raise a.src.error(join(spath, "nodeName"), f'Too many: node "{node}" holds {MAX_PODS_PER_NODE} pods, all its pod subnet has room for')
    return objects.put(replace(pod, node_name=node, service_env=pod_env(pod, objects.services)))


def _apply_service(objects: Objects, ps: ParsedService, old: Service | None) -> Objects:
    """Allocate a new Service, or carry an existing one's allocations over as the API server's
    ``patchAllocatedValues`` does (clusterIP, nodePorts by port name, health-check port, LB IP)."""
    new = ps.service
    spath = join(ps.path, "spec")
    held = objects.allocations() if old is None else objects.allocations().without(old)
    if old is not None and old.type != "ExternalName" and new.type != "ExternalName":
        was = old.cluster_ips or ("None",)
        if ps.requested_ip is not None and ps.requested_ip != was[0]:
            # v1.34's wording (validateServiceUpdate), headless <-> ClusterIP included
            raise ps.src.error(join(spath, "clusterIPs[0]"), f'Invalid value: ["{ps.requested_ip}"]: may not change once set')
        ps.families = update_families(ps.src, spath, ps.families, was, old.ip_families, old.ip_family_policy)
        ps.requested_ip = was[0]
        if old.type in ("NodePort", "LoadBalancer") and new.type in ("NodePort", "LoadBalancer"):
            used = {p.node_port for p in new.ports if p.node_port}
            by_name = {p.name: p.node_port for p in old.ports}
            ports = tuple(replace(p, node_port=by_name[p.name]) if p.node_port is None and by_name.get(p.name) not in (None, *used) else p
                          for p in new.ports)
            new = replace(new, ports=ports)
        if (old.health_check_node_port and new.health_check_node_port is None and new.type == "LoadBalancer"
                and new.external_traffic_policy == "Local"):
            new = replace(new, health_check_node_port=old.health_check_node_port)
        if old.type == "LoadBalancer" and new.type == "LoadBalancer":  # its load-balancer IPs stay, one per family
            ps.kept_lb_ips = old.load_balancer_ips
    ps.service = new
    (svc,) = allocate([ps], objects.cluster, held=held)
    return objects.put(svc)


def _with_ingress_controllers(objects: Objects) -> Objects:
    """The first Ingress of a controller's classes brings that controller (namespace, pod,
    LoadBalancer Service), as the loader adds it to a scenario that has such Ingresses."""
    classes = {c.name: c for c in objects.ingress_classes}
    in_use = {family_of(i, classes) for i in objects.ingresses}
    for family in (f for f in FAMILIES if f in in_use):  # in a fixed order: the Services' addresses do not depend on a set's
        ns, pod, svc = ingress_controller(objects.cluster, family)
        if objects.get(KINDS[1], pod.key) is not None:
            continue
        objects = objects.put(ns) if objects.get(KINDS[0], ns.name) is None else objects
        src = Source("ingress controller", None)
        (svc,) = allocate([ParsedService(svc, src, "", None)], objects.cluster, held=objects.allocations())
        objects = objects.put(replace(pod, service_env=pod_env(pod, objects.services))).put(svc)
    return objects


def _ingresses_intact(objects: Objects, src: Source, path: str) -> Objects:
    """Refuse a change that leaves an Ingress pointing at nothing (a Service, a port of it, a
    TLS Secret, its class): the lab keeps its controllers' configurations whole."""
    secrets = {s.key: s for s in objects.secrets}
    classes = {c.name: c for c in objects.ingress_classes}
    for ing in objects.ingresses:
        try:
            check_ingress_refs(ing, Source(f"ingress {ing.key}", None), "", objects.services, secrets, classes)
        except ScenarioError as exc:
            raise src.error(path, f"Forbidden: ingresses \"{ing.key}\" would break ({exc.path}: {exc.message}); "
                            "change or delete that Ingress first") from None
    return _with_ingress_controllers(objects)  # an IngressClass change may hand Ingresses to another controller


def _delete(objects: Objects, d: Delete) -> Objects:
    kind, obj = _existing(objects, d.src, d.path, d.ref)
    _not_system(objects, kind, obj.key, d.src, d.path)
    if isinstance(obj, Pod):
        grace = d.grace if d.grace is not None else obj.termination_grace_period or 0
        if grace > 0:  # terminating: still there, still serving, out of the ready endpoints
            # a scenario step's delete is admitted when the step runs: its clock starts then
            deadline = (time.time() if d.now is None else d.now) + grace
            if obj.deletion_deadline is not None:  # a second delete may only shorten it
                deadline = min(deadline, obj.deletion_deadline)
            return objects.put(replace(obj, deletion_deadline=deadline))
    if kind.name == "Namespace":
        if obj.name in BUILTIN_NAMESPACES:
            raise d.src.error(d.path, f'Forbidden: namespaces "{obj.name}" is forbidden: this namespace may not be deleted')
        for inner_kind, inner in objects.in_namespace(obj.name):
            objects = objects.remove(inner_kind, inner.key)
    return _ingresses_intact(objects.remove(kind, obj.key), d.src, d.path)


def _expire(objects: Objects, e: Expire) -> Objects:
    pod_kind = kind_named("Pod")
    for pod in objects.pods:
        if pod.deletion_deadline is not None and pod.deletion_deadline <= e.now:
            objects = objects.remove(pod_kind, pod.key)
    return objects


def _label(objects: Objects, lab: Label) -> Objects:
    kind, obj = _existing(objects, lab.src, lab.path, lab.ref)
    _not_system(objects, kind, obj.key, lab.src, lab.path)
    labels = dict(obj.labels)
    for key, value in lab.labels:
        where = join(lab.path, key)
        errs = k8s.qualified_name(key)
        if errs:
            raise lab.src.error(where, f'Invalid value: "{key}": {"; ".join(errs)}')
        if value is None:
            labels.pop(key, None)
            continue
        errs = k8s.label_value(value) if isinstance(value, str) else ["must be a string"]
        if errs:
            raise lab.src.error(where, f'Invalid value: "{value}": {"; ".join(errs)}')
        labels[key] = value
    return objects.put(replace(obj, labels=tuple(sorted(labels.items()))))


def _set_ready(objects: Objects, r: SetReady) -> Objects:
    kind, obj = _existing(objects, r.src, r.path, r.ref)
    if kind.name != "Pod":
        raise r.src.error(r.path, f'Invalid value: "{r.ref}": only pods have a readiness')
    return objects.put(replace(obj, ready=r.ready))


_CLASS: dict[str, type] = {"Namespace": Namespace, "Pod": Pod, "Service": Service, "Secret": Secret, "Ingress": Ingress,
                           "IngressClass": IngressClass, "NetworkPolicy": NetworkPolicy}
_ADMIT: dict[type, Callable[[Objects, Any], Objects]] = {Apply: _apply, Delete: _delete, Expire: _expire, Label: _label,
                                                         SetReady: _set_ready}
