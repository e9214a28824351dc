"""Load a scenario file into an immutable :class:`~netns_lab.model.Scenario`.

All validation happens here, before anything is built: a bad file exits with code 2 and
one line naming the file, the field path and the rule, and leaves no trace on the machine.
"""

from __future__ import annotations

import copy
import glob
import itertools
import json
import os
from dataclasses import replace
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from netns_lab.errors import ScenarioError
from netns_lab.model import BUILTIN_NAMESPACES, Ingress, IngressClass, Namespace, NetworkPolicy, Pod, Scenario, Secret
from netns_lab.scenario import k8s
from netns_lab.scenario.checks import Refs, parse_checks
from netns_lab.scenario.cluster import parse_cluster
from netns_lab.scenario import ingress, netpol
from netns_lab.scenario.ingress import check_ingress_refs, parse_ingress, parse_ingress_class, parse_secret
from netns_lab.scenario.manifests import ANY_VERSION, PARSERS, parse_object
from netns_lab.scenario.services import ParsedService, allocate, parse_service
from netns_lab.controllers.envvars import pod_env
from netns_lab.store import Objects
from netns_lab.controllers.system import FAMILIES, cluster_dns, family_of, ingress_controller, stamp_default_class
from netns_lab.scenario.schema import ANY, STR, ListOf, Obj, _describe
from netns_lab.scenario.yamlsrc import MAX_DEPTH, MAX_NODES, Budget, FileRefused, Source, join, load_documents

API_VERSION = "netns-lab/v1"
MAX_GLOB_MATCHES = 1000  # files one objects: glob may include
PARSERS[("v1", "Service")] = parse_service
PARSERS[("v1", "Secret")] = parse_secret
PARSERS[(ingress.API, "Ingress")] = parse_ingress
PARSERS[(ingress.API, "IngressClass")] = parse_ingress_class
PARSERS[(netpol.API, "NetworkPolicy")] = netpol.parse_network_policy
ANY_VERSION["Ingress"] = parse_ingress
SCENARIO = Obj(
    "netns-lab/v1 Scenario",
    {"apiVersion": STR, "kind": STR, "name": STR, "description": STR, "cluster": ANY, "objects": ListOf(ANY), "checks": ANY},
)


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted paths (``cluster.network``) in a copy of the raw file: tests and benchmarks
    run one scenario file in several modes without copying it.

    A path goes through mappings only (a missing or null one is created): setting a field
    inside a string or a list, or an empty name (``=1``, ``a..b``), is a mistake on the
    command line, reported as ``--set KEY=VALUE: ...`` (exit 2) rather than a TypeError.
    """
    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if not all(parts):
            raise _override_error(dotted, value, "Invalid value: a field path is names separated by single dots, e.g. cluster.network")
        _check_override_value(dotted, value)
        node: Any = data
        for depth, key in enumerate(parts[:-1]):
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                where = ".".join(parts[: depth + 1])
                raise _override_error(dotted, value, f"Invalid value: {where} is {_describe(node)}, not an object: "
                                      f"it has no field {parts[depth + 1]}")
        node[parts[-1]] = value
    return data


def _check_override_value(dotted: str, value: Any) -> None:
    """A ``--set`` value is YAML too, parsed without our reader's limits: the same bounds on
    size, depth and recursion (``&a [*a]`` is a list containing itself) before it joins the data."""
    seen = 0
    todo: list[tuple[Any, int, frozenset[int]]] = [(value, 0, frozenset())]
    while todo:
        item, depth, above = todo.pop()
        seen += 1
        if seen > MAX_NODES or depth > MAX_DEPTH:
            raise _override_error(dotted, "...", f"Too many: the value is larger than {MAX_NODES} YAML nodes or nested "
                                  f"deeper than {MAX_DEPTH} levels, the limits")
        if isinstance(item, (dict, list)):
            if id(item) in above:
                raise _override_error(dotted, "...", "Invalid value: the value contains itself (a recursive alias)")
            children = item.values() if isinstance(item, dict) else item
            todo += [(c, depth + 1, above | {id(item)}) for c in children]


def _override_error(dotted: str, value: Any, message: str) -> ScenarioError:
    """``--set KEY=VALUE: MESSAGE``, the value shown as YAML as the user typed it."""
    shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else value if isinstance(value, str) else (
        json.dumps(value, default=str))
    return ScenarioError(f"--set {dotted}={shown}", "", message)


def _object_sources(src: Source, objects: list[Any], budget: Budget) -> list[tuple[Source, Any, str]]:
    """Expand ``objects:`` into (source, manifest, path) triples, in file order.

    A string item is a path or glob relative to the scenario file; each matched file may hold
    several YAML documents and ``kind: List`` wrappers, as ``kubectl apply -f`` accepts. Only
    regular files are read, within the scenario's ``budget`` of bytes and YAML nodes; a file
    that cannot be read is reported at the scenario's ``objects[i]``, with its line.
    """
    out: list[tuple[Source, Any, str]] = []
    base_dir = os.path.dirname(os.path.abspath(src.file))
    for i, item in enumerate(objects):
        path = join("objects", i)
        if not isinstance(item, str):
            out.append((src, item, path))
            continue
        if not item or "\0" in item:
            raise src.error(path, f'Invalid value: "{item}": must be a path or a glob relative to the scenario file')
        pattern = item if os.path.isabs(item) else os.path.join(base_dir, item)
        if glob.has_magic(pattern):
            matches = sorted(itertools.islice(glob.iglob(pattern), MAX_GLOB_MATCHES + 1))
            if len(matches) > MAX_GLOB_MATCHES:
                raise src.error(path, f'Too many: "{item}": matches more than {MAX_GLOB_MATCHES} files, the limit')
        else:
            matches = [pattern]
        if not matches:
            raise src.error(path, f'Not found: "{item}": no file matches')
        for file in matches:
            rel = os.path.relpath(file)
            rel = file if rel.startswith("..") else rel  # readable, never "../../tmp/..."
            try:
                out += manifests_of(rel, budget)
            except FileRefused as exc:
                shown = item if file == pattern else rel
                where = "" if exc.line is None or exc.line == 1 else f" (line {exc.line})"
                raise src.error(path, f'Invalid value: "{shown}": {exc.reason}{where}') from None
    return out


def manifests_of(file: str, budget: Budget | None = None, text: str | None = None) -> list[tuple[Source, Any, str]]:
    """(source, manifest, path) for every manifest of one file, as ``kubectl apply -f`` reads
    it: several YAML documents, ``kind: List`` wrappers unwrapped; within ``budget``.
    ``text``: the file's text, already read (by the command line, for the lab's API server)."""
    out: list[tuple[Source, Any, str]] = []
    for d, doc in enumerate(load_documents(file, text, budget=budget or Budget())):
        if isinstance(doc.data, dict) and doc.data.get("kind") == "List":
            items = doc.data.get("items")
            if items is not None and not isinstance(items, list):
                ipath = f"[{d}].items" if d else "items"
                raise doc.error(ipath, "Invalid type: expected a list")
            for j, sub in enumerate(items or []):
                out.append((doc, sub, join(f"[{d}].items", j) if d else join("items", j)))
        else:
            out.append((doc, doc.data, f"[{d}]" if d else ""))
    return out


def load_scenario(
    path: str,
    overrides: dict[str, Any] | None = None,
    host_networks: tuple[IPv4Network | IPv6Network, ...] = (),
) -> Scenario:
    """Read, validate and freeze one scenario file; raise :class:`ScenarioError` on bad input."""
    budget = Budget()  # bytes and YAML nodes, for this file and every file it includes
    docs = load_documents(path, budget=budget)
    if len(docs) != 1:
        raise ScenarioError(path, "", f"a scenario file holds exactly one YAML document, found {len(docs)}")
    src = docs[0]
    if not isinstance(src.data, dict):
        raise src.error("", "Invalid type: a scenario must be a mapping with apiVersion, kind, name")
    if overrides:
        src.data = _apply_overrides(src.data, overrides)
    data = src.data
    SCENARIO.check(src, data, "")
    for field, want in (("apiVersion", API_VERSION), ("kind", "Scenario")):
        if data.get(field) is None:
            raise src.error(field, f'Required value: supported values: "{want}"')
        if data[field] != want:
            raise src.error(field, f'Unsupported value: "{data[field]}": supported values: "{want}"')
    name = data.get("name")
    if not name:
        raise src.error("name", "Required value")
    errs = k8s.dns1123_label(name)
    if errs:
        raise src.error("name", f'Invalid value: "{name}": {"; ".join(errs)}')
    if len(name) > 40:
        raise src.error("name", f'Invalid value: "{name}": must be no more than 40 characters (it prefixes every namespace of the lab)')
    cluster = parse_cluster(src, data.get("cluster"), "cluster", host_networks)

    namespaces: dict[str, Namespace] = {n: Namespace(n) for n in BUILTIN_NAMESPACES}
    pods: dict[str, Pod] = {}
    services: dict[str, ParsedService] = {}
    services_before: dict[str, int] = {}  # pod key -> how many Services preceded it (env vars)
    ingresses: dict[str, tuple[Ingress, Source, str]] = {}
    classes: dict[str, IngressClass] = {}
    secrets: dict[str, Secret] = {}
    policies: dict[str, NetworkPolicy] = {}
    for osrc, obj, opath in _object_sources(src, data.get("objects") or [], budget):
        model_obj = parse_object(osrc, obj, opath)
        if isinstance(model_obj, Namespace):
            if model_obj.name in namespaces and model_obj.name not in BUILTIN_NAMESPACES:
                raise osrc.error(join(opath, "metadata.name"), f'namespaces "{model_obj.name}" already exists')
            namespaces[model_obj.name] = model_obj
        elif isinstance(model_obj, Pod):
            if model_obj.namespace not in namespaces:
                raise osrc.error(join(opath, "metadata.namespace"), f'namespaces "{model_obj.namespace}" not found')
            if model_obj.key in pods:
                raise osrc.error(
                    join(opath, "metadata.name"),
                    f'pods "{model_obj.name}" already exists in namespace "{model_obj.namespace}"',
                )
            if model_obj.node_name is not None and model_obj.node_name not in cluster.nodes:
                raise osrc.error(join(opath, "spec.nodeName"), f'Not found: "{model_obj.node_name}": no such node in the cluster')
            pods[model_obj.key] = model_obj
            services_before[model_obj.key] = len(services)
        elif isinstance(model_obj, ParsedService):
            svc = model_obj.service
            if svc.namespace not in namespaces:
                raise osrc.error(join(opath, "metadata.namespace"), f'namespaces "{svc.namespace}" not found')
            if svc.key in services:
                raise osrc.error(join(opath, "metadata.name"), f'services "{svc.name}" already exists in namespace "{svc.namespace}"')
            services[svc.key] = model_obj
        elif isinstance(model_obj, (Ingress, Secret, NetworkPolicy)):
            why = netpol.refusal(type(model_obj).__name__, cluster.ip_family)
            if why is not None:
                raise osrc.error(join(opath, "kind"), why)
            kind, store = {Ingress: ("ingresses", ingresses), Secret: ("secrets", secrets),
                           NetworkPolicy: ("networkpolicies", policies)}[type(model_obj)]  # type: ignore[index]
            if model_obj.namespace not in namespaces:
                raise osrc.error(join(opath, "metadata.namespace"), f'namespaces "{model_obj.namespace}" not found')
            if model_obj.key in store:
                raise osrc.error(join(opath, "metadata.name"), f'{kind} "{model_obj.name}" already exists in namespace "{model_obj.namespace}"')
            store[model_obj.key] = (model_obj, osrc, opath) if isinstance(model_obj, Ingress) else model_obj  # type: ignore[assignment]
        elif isinstance(model_obj, IngressClass):
            if model_obj.name in classes:
                raise osrc.error(join(opath, "metadata.name"), f'ingressclasses "{model_obj.name}" already exists')
            classes[model_obj.name] = model_obj

    ingresses = {k: (stamp_default_class(i, classes), isrc, ipath) for k, (i, isrc, ipath) in ingresses.items()}
    in_use = {family_of(ing, classes) for ing, _s, _p in ingresses.values()}
    for family in FAMILIES:  # the controllers the lab runs for them, after every user object
        if family not in in_use:
            continue
        ing_ns, ing_pod, ing_svc = ingress_controller(cluster, family)
        for key, taken in ((ing_pod.key, pods), (ing_svc.key, services)):
            if key in taken:
                raise src.error("objects", f'Invalid value: "{key}": reserved for the ingress controller the lab runs')
        namespaces.setdefault(ing_ns.name, ing_ns)
        pods[ing_pod.key] = ing_pod
        services_before[ing_pod.key] = len(services)
        services[ing_svc.key] = ParsedService(ing_svc, src, "objects", None)
    service_tuple = allocate(list(services.values()), cluster)
    for ing, isrc, ipath in ingresses.values():
        check_ingress_refs(ing, isrc, ipath, service_tuple, secrets, classes)
    # kubelet's Service environment: the Services that existed when each pod started
    # (``kubernetes`` is allocated first, so it always precedes every pod).
    pod_list = [replace(p, service_env=pod_env(p, service_tuple[: 1 + services_before[p.key]])) for p in pods.values()]
    dns_pod, dns_service = cluster_dns(cluster)
    for key, taken in ((dns_pod.key, pods), (dns_service.key, services)):
        if key in taken:
            raise src.error("objects", f'Invalid value: "{key}": reserved for the cluster DNS the lab runs')
    pod_tuple = tuple(pod_list) + (dns_pod,)
    service_tuple = service_tuple + (dns_service,)
    objects = Objects(cluster, tuple(namespaces.values()), pod_tuple, service_tuple, tuple(secrets.values()),
                      tuple(i for i, _s, _p in ingresses.values()), tuple(classes.values()), tuple(policies.values()))
    checks = parse_checks(src, data.get("checks"), "checks", Refs(cluster, pod_tuple, service_tuple, tuple(secrets)), objects)
    scenario = Scenario(
        name=name,
        path=path,
        cluster=cluster,
        namespaces=objects.namespaces,
        pods=objects.pods,
        checks=checks,
        description=data.get("description") or "",
        services=objects.services,
        ingresses=objects.ingresses,
        ingress_classes=objects.ingress_classes,
        secrets=objects.secrets,
        network_policies=objects.network_policies,
    )
    from netns_lab.controllers.topology import plan  # the address plan is part of validity

    plan(scenario)
    return scenario
