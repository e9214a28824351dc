"""Pods and Services to and from JSON, for the lab's state file.

A lab is changed at run time (pods added, deleted, made unready) possibly by another
process than the one that built it, so the live model is stored with the ownership record.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from netns_lab.model import (
    Container,
    ContainerPort,
    DnsConfig,
    Ingress,
    IngressBackend,
    IngressPath,
    IngressRule,
    IngressTLS,
    Pod,
    Secret,
    Service,
    ServicePort,
)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@functools.lru_cache(maxsize=1 << 16)
def dump(obj: Pod | Service | Ingress | Secret) -> dict[str, Any]:
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
    lists = {k: tuple(d.get(k) or ()) for k in ("external_ips", "load_balancer_ips", "load_balancer_source_ranges")}
    return Service(**{**d, **lists, "labels": _pairs(d["labels"]) or (), "selector": _pairs(d["selector"]),
                      "ports": tuple(ServicePort(**p) for p in d["ports"])})


def _backend(d: dict[str, Any] | None) -> IngressBackend | None:
    return None if d is None else IngressBackend(**d)


def load_ingress(d: dict[str, Any]) -> Ingress:
    rules = tuple(IngressRule(r["host"], tuple(IngressPath(p["path"], p["path_type"], IngressBackend(**p["backend"])) for p in r["paths"]))
                  for r in d["rules"])
    tls = tuple(IngressTLS(tuple(t["hosts"]), t["secret_name"]) for t in d["tls"])
    return Ingress(d["name"], d["namespace"], d["class_name"], _backend(d["default_backend"]), rules, tls)


def load_secret(d: dict[str, Any]) -> Secret:
    return Secret(d["name"], d["namespace"], d["type"], _pairs(d["data"]) or ())
