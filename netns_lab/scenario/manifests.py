"""Kubernetes manifests -> model objects, with the API server's validation and wording.

Each supported ``(apiVersion, kind)`` has one parser. Anything else is refused with the
message ``kubectl apply`` gives for an unknown kind, plus what the lab does support, so a
manifest is never silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
import ipaddress
from typing import Any

from netns_lab.model import MAX_GRACE_PERIOD, PROTOCOLS, Container, ContainerPort, DnsConfig, Namespace, Pod
from netns_lab.scenario import k8s
from netns_lab.scenario import openapi
from netns_lab.scenario.openapi import OBJECT_META
from netns_lab.scenario.schema import STR
from netns_lab.scenario.yamlsrc import Source, join

POD = openapi.kind("io.k8s.api.core.v1.Pod")
NAMESPACE = openapi.kind("io.k8s.api.core.v1.Namespace")

DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")


def _fail(src: Source, path: str, errs: list[str], value: Any) -> None:
    if errs:
        raise src.error(path, f'Invalid value: "{value}": {"; ".join(errs)}')


def _unsupported(src: Source, path: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        supported = ", ".join(f'"{a}"' for a in sorted(allowed))
        raise src.error(path, f'Unsupported value: "{value}": supported values: {supported}')


def metadata(src: Source, obj: dict[str, Any], base: str, namespaced: bool) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """Validate ``metadata``: name, namespace, labels. Returns (name, namespace, labels)."""
    mpath = join(base, "metadata")
    OBJECT_META.check(src, obj.get("metadata") or {}, mpath)  # shape first, for every kind's parser
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise src.error(join(mpath, "name"), "Required value: name or generateName is required")
    _fail(src, join(mpath, "name"), k8s.dns1123_subdomain(name) if namespaced else k8s.dns1123_label(name), name)
    namespace = meta.get("namespace") or "default"
    if namespaced:
        _fail(src, join(mpath, "namespace"), k8s.dns1123_label(namespace), namespace)
    labels = meta.get("labels") or {}
    for key, value in labels.items():
        lpath = join(join(mpath, "labels"), key)
        _fail(src, lpath, k8s.qualified_name(key), key)
        _fail(src, lpath, k8s.label_value(value), value)
    return name, namespace, tuple(sorted(labels.items()))


def parse_namespace(src: Source, obj: dict[str, Any], base: str) -> Namespace:
    NAMESPACE.check(src, obj, base)
    name, _, labels = metadata(src, obj, base, namespaced=False)
    return Namespace(name=name, labels=labels)


def _container_port(src: Source, port: dict[str, Any], path: str) -> ContainerPort:
    number = port.get("containerPort")
    if number is None:
        raise src.error(join(path, "containerPort"), "Required value")
    _fail(src, join(path, "containerPort"), k8s.port_num(number), number)
    protocol = port.get("protocol") or "TCP"
    _unsupported(src, join(path, "protocol"), protocol, PROTOCOLS)
    name = port.get("name")
    if name is not None:
        _fail(src, join(path, "name"), k8s.port_name(name), name)
    if port.get("hostPort") is not None:
        raise src.error(join(path, "hostPort"), "Forbidden: hostPort is not supported by netns-lab")
    return ContainerPort(container_port=number, protocol=protocol, name=name)


def parse_pod(src: Source, obj: dict[str, Any], base: str) -> Pod:
    POD.check(src, obj, base)
    name, namespace, labels = metadata(src, obj, base, namespaced=True)
    spath = join(base, "spec")
    spec = obj.get("spec") or {}
    if spec.get("hostNetwork"):
        raise src.error(join(spath, "hostNetwork"), "Forbidden: hostNetwork pods are not supported by netns-lab")
    containers_raw = spec.get("containers") or []
    if not containers_raw:
        raise src.error(join(spath, "containers"), "Required value")
    containers: list[Container] = []
    seen_names: set[str] = set()
    seen_port_names: set[str] = set()
    seen_ports: set[tuple[int, str]] = set()
    for i, raw in enumerate(containers_raw):
        cpath = join(join(spath, "containers"), i)
        cname = raw.get("name")
        if not cname:
            raise src.error(join(cpath, "name"), "Required value")
        _fail(src, join(cpath, "name"), k8s.dns1123_label(cname), cname)
        if cname in seen_names:
            raise src.error(join(cpath, "name"), f'Duplicate value: "{cname}"')
        seen_names.add(cname)
        image = raw.get("image")
        if not image:
            raise src.error(join(cpath, "image"), "Required value")
        ports: list[ContainerPort] = []
        for j, praw in enumerate(raw.get("ports") or []):
            ppath = join(join(cpath, "ports"), j)
            port = _container_port(src, praw, ppath)
            if port.name is not None:
                if port.name in seen_port_names:
                    raise src.error(join(ppath, "name"), f'Duplicate value: "{port.name}"')
                seen_port_names.add(port.name)
            if (port.container_port, port.protocol) in seen_ports:
                raise src.error(
                    join(ppath, "containerPort"),
                    f'Duplicate value: "{port.container_port}/{port.protocol}": containers of a pod share one network namespace',
                )
            seen_ports.add((port.container_port, port.protocol))
            ports.append(port)
        containers.append(Container(name=cname, image=image, ports=tuple(ports)))
    for field in ("hostname", "subdomain"):
        value = spec.get(field)
        if value is not None:
            _fail(src, join(spath, field), k8s.dns1123_label(value), value)
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    _unsupported(src, join(spath, "dnsPolicy"), policy, DNS_POLICIES)
    dns_config = _dns_config(src, spec.get("dnsConfig"), join(spath, "dnsConfig"), policy)
    return Pod(
        name=name,
        namespace=namespace,
        labels=labels,
        node_name=spec.get("nodeName"),
        containers=tuple(containers),
        hostname=spec.get("hostname"),
        subdomain=spec.get("subdomain"),
        dns_policy=policy,
        dns_config=dns_config,
        enable_service_links=spec.get("enableServiceLinks", True) is not False,
        termination_grace_period=_grace(src, join(spath, "terminationGracePeriodSeconds"), spec.get("terminationGracePeriodSeconds")),
    )


def _grace(src: Source, path: str, value: int | None) -> int | None:
    """A negative grace period is read as 1 s, as the API server does (kubernetes#98866); the
    lab's limit is a day (the pod would stay terminating, serving, that long)."""
    if value is None:
        return None
    if value > MAX_GRACE_PERIOD:
        raise src.error(path, f"Invalid value: {value}: must be at most {MAX_GRACE_PERIOD} seconds in netns-lab")
    return max(int(value), 1) if value < 0 else int(value)


MAX_NAMESERVERS, MAX_SEARCHES = 3, 32


def _dns_config(src: Source, raw: dict[str, Any] | None, path: str, policy: str) -> DnsConfig | None:
    """``spec.dnsConfig`` with the API server's limits (validatePodDNSConfig)."""
    raw = raw or {}
    nameservers = raw.get("nameservers") or []
    if policy == "None" and not nameservers:
        raise src.error(join(path, "nameservers"), "Required value: must provide at least one DNS nameserver when `dnsPolicy` is None")
    if len(nameservers) > MAX_NAMESERVERS:
        raise src.error(join(path, "nameservers"), f'Invalid value: "{",".join(nameservers)}": must not have more than {MAX_NAMESERVERS} nameservers')
    for i, ns in enumerate(nameservers):
        try:
            ipaddress.ip_address(ns)
        except ValueError:
            raise src.error(join(join(path, "nameservers"), i), f'Invalid value: "{ns}": must be a valid IP address') from None
    searches = raw.get("searches") or []
    if len(searches) > MAX_SEARCHES:
        raise src.error(join(path, "searches"), f'Invalid value: "{" ".join(searches)}": must not have more than {MAX_SEARCHES} search paths')
    for i, domain in enumerate(searches):
        errs = k8s.dns1123_subdomain(domain.rstrip("."))
        if errs:
            raise src.error(join(join(path, "searches"), i), f'Invalid value: "{domain}": {"; ".join(errs)}')
    options: list[tuple[str, str | None]] = []
    for i, opt in enumerate(raw.get("options") or []):
        if not opt.get("name"):
            raise src.error(join(join(join(path, "options"), i), "name"), "Required value: Option.Name must not be empty")
        for key in ("name", "value"):  # the API server checks neither; each is one word of the pod's resolv.conf
            word = opt.get(key)
            if isinstance(word, str) and (not word.isprintable() or any(c.isspace() for c in word) or (key == "name" and ":" in word)):
                raise src.error(join(join(join(path, "options"), i), key), f'Invalid value: "{word.encode("unicode_escape").decode()}": '
                                "must be one word of printable characters (it is written to the pod's resolv.conf as "
                                "options NAME:VALUE), without whitespace" + (" or ':'" if key == "name" else ""))
        options.append((opt["name"], opt.get("value")))
    if not raw:
        return None
    return DnsConfig(tuple(nameservers), tuple(s.rstrip(".") for s in searches), tuple(options))


Parser = Callable[[Source, dict[str, Any], str], Any]

PARSERS: dict[tuple[str, str], Parser] = {
    ("v1", "Namespace"): parse_namespace,
    ("v1", "Pod"): parse_pod,
}

# Kinds Kubernetes has that the lab will support later: say so instead of "unknown".
NOT_YET = {
    "Endpoints": "Endpoints are computed by the lab from Services and pods",
    "EndpointSlice": "EndpointSlices are computed by the lab from Services and pods",
}
# Kinds whose parser takes every apiVersion, to explain removed ones (Ingress).
ANY_VERSION: dict[str, Parser] = {}


def parse_object(src: Source, obj: Any, base: str) -> Any:
    """Dispatch one manifest to its kind's parser; refuse anything unknown, clearly."""
    if not isinstance(obj, dict):
        raise src.error(base, "Invalid type: a manifest must be an object with apiVersion and kind")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not kind:
        raise src.error(join(base, "kind"), "Required value: Object 'Kind' is missing")
    if not api_version:
        raise src.error(join(base, "apiVersion"), "Required value: Object 'apiVersion' is missing")
    for field, value in (("apiVersion", api_version), ("kind", kind)):
        STR.check(src, value, join(base, field))  # the API server's decoder: both are strings
    parser = PARSERS.get((api_version, kind))
    if parser is None:
        parser = ANY_VERSION.get(kind)
    if parser is not None:
        return parser(src, obj, base)
    supported = ", ".join(f"{k} {v}" for v, k in PARSERS)
    if kind in NOT_YET:
        raise src.error(join(base, "kind"), f'kind "{kind}": {NOT_YET[kind]} (netns-lab supports {supported})')
    raise src.error(
        join(base, "kind"),
        f'no matches for kind "{kind}" in version "{api_version}" (netns-lab supports {supported})',
    )
