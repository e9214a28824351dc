"""Pods and Services to and from JSON, for the lab's state file.

A lab is changed at run time (pods added, deleted, made unready) possibly by another
process than the one that built it, so the live model is stored with the ownership record.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import functools
from typing import Any

from netns_lab.model import (
    ClusterConfig,
    Container,
    ContainerPort,
    DnsConfig,
    Ingress,
    IngressBackend,
    IngressClass,
    Namespace,
    IngressPath,
    IngressRule,
    IngressTLS,
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    Pod,
    Secret,
    Service,
    ServicePort,
)
from netns_lab.store import Objects


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@functools.lru_cache(maxsize=1 << 16)
def dump(obj: Any) -> dict[str, Any]:
    """Cached: objects are immutable, and a sync re-saves every one of them."""
    return _plain(obj)  # type: ignore[no-any-return]


def _pairs(items: list[list[str]] | None) -> tuple[tuple[str, str], ...] | None:
    return None if items is None else tuple((k, v) for k, v in items)


def load_pod(d: dict[str, Any]) -> Pod:
    containers = tuple(
        Container(c["name"], c["image"], tuple(ContainerPort(**p) for p in c["ports"])) for c in d["containers"]
    )
    cfg = d.get("dns_config")
    dns_config = None if cfg is None else DnsConfig(
        tuple(cfg["nameservers"]), tuple(cfg["searches"]), tuple((k, v) for k, v in cfg["options"])
    )
    return Pod(**{**d, "labels": _pairs(d["labels"]) or (), "containers": containers, "dns_config": dns_config,
                  "service_env": _pairs(d.get("service_env")) or ()})


def load_service(d: dict[str, Any]) -> Service:
    lists = {k: tuple(d.get(k) or ()) for k in ("external_ips", "load_balancer_ips", "load_balancer_source_ranges", "cluster_ips", "ip_families")}
    return Service(**{**d, **lists, "labels": _pairs(d["labels"]) or (), "selector": _pairs(d["selector"]),
                      "ports": tuple(ServicePort(**p) for p in d["ports"])})


def _backend(d: dict[str, Any] | None) -> IngressBackend | None:
    return None if d is None else IngressBackend(**d)


def load_ingress(d: dict[str, Any]) -> Ingress:
    rules = tuple(IngressRule(r["host"], tuple(IngressPath(p["path"], p["path_type"], IngressBackend(**p["backend"])) for p in r["paths"]))
                  for r in d["rules"])
    tls = tuple(IngressTLS(tuple(t["hosts"]), t["secret_name"]) for t in d["tls"])
    return Ingress(d["name"], d["namespace"], d["class_name"], _backend(d["default_backend"]), rules, tls, _pairs(d.get("labels")) or (),
                   d.get("load_balance", "round_robin"))


def load_secret(d: dict[str, Any]) -> Secret:
    return Secret(d["name"], d["namespace"], d["type"], _pairs(d["data"]) or (), _pairs(d.get("labels")) or ())


def load_namespace(d: dict[str, Any]) -> Namespace:
    return Namespace(d["name"], _pairs(d["labels"]) or ())


def load_ingress_class(d: dict[str, Any]) -> IngressClass:
    return IngressClass(d["name"], d["controller"], d["default"], _pairs(d.get("labels")) or ())


def _selector(d: dict[str, Any] | None) -> LabelSelector | None:
    if d is None:
        return None
    return LabelSelector(_pairs(d["match_labels"]) or (), tuple((k, op, tuple(v)) for k, op, v in d["match_expressions"]))


def _rule(d: dict[str, Any]) -> PolicyRule:
    peers = tuple(PolicyPeer(_selector(p["pod_selector"]), _selector(p["namespace_selector"]),
                             None if p["ip_block"] is None else IPBlock(p["ip_block"]["cidr"], tuple(p["ip_block"]["excepts"])))
                  for p in d["peers"])
    return PolicyRule(peers, tuple(PolicyPort(**p) for p in d["ports"]))


def load_network_policy(d: dict[str, Any]) -> NetworkPolicy:
    return NetworkPolicy(d["name"], d["namespace"], _selector(d["pod_selector"]) or LabelSelector(), tuple(d["policy_types"]),
                         tuple(map(_rule, d["ingress"])), tuple(map(_rule, d["egress"])), _pairs(d.get("labels")) or ())


def dump_cluster(cluster: ClusterConfig) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)

    return plain(cluster)  # type: ignore[no-any-return]


def load_cluster(d: dict[str, Any]) -> ClusterConfig:
    """The inverse of :func:`dump_cluster`: each field back to its default's type."""

    def typed(cls: type, raw: dict[str, Any]) -> Any:
        out = {}
        default = cls()
        for f in dataclasses.fields(cls):
            if f.name not in raw:
                continue
            value, like = raw[f.name], getattr(default, f.name)
            if dataclasses.is_dataclass(like):
                value = typed(type(like), value)
            elif isinstance(like, tuple):
                value = tuple(value)
            elif value is None:
                pass  # an optional field left unset (the IPv6 ranges of an IPv4 lab)
            elif like is None or isinstance(like, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                value = ipaddress.ip_network(value)  # its family is the text's: an IPv6 lab's primary ranges are IPv6
            elif isinstance(like, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                value = ipaddress.ip_address(value)
            elif not isinstance(like, (str, int, float, bool)):
                value = type(like)(value)
            out[f.name] = value
        return cls(**out)

    return typed(ClusterConfig, d)  # type: ignore[no-any-return]


LOADERS = {"namespaces": load_namespace, "pods": load_pod, "services": load_service, "secrets": load_secret,
           "ingresses": load_ingress, "ingress_classes": load_ingress_class, "network_policies": load_network_policy}


def dump_objects(objects: Objects) -> dict[str, Any]:
    """The lab's objects as JSON (objectlog.py writes them); ``dump`` is cached per object."""
    out: dict[str, Any] = {"cluster": dump_cluster(objects.cluster)}
    for name in LOADERS:
        out[name] = [dump(o) for o in getattr(objects, name)]
    return out


def load_objects(d: dict[str, Any]) -> Objects:
    return Objects(load_cluster(d["cluster"]), **{name: tuple(load(o) for o in d.get(name, ())) for name, load in LOADERS.items()})
