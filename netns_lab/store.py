"""The lab's objects, as the API server holds them: one immutable snapshot per change.

Every controller reads a snapshot and nothing else, so "what should the kernel look like"
is a pure function of it; a change (``apply``, ``delete``, ``label``, a pod's readiness) makes
a new snapshot (see :mod:`netns_lab.scenario.admission`), and the lab reconciles the kernel
from the old one to the new one. Objects keep their creation order: a pod's Service
environment and the loader's allocation follow it, as in a cluster.
"""

from __future__ import annotations

import socket
import weakref
from dataclasses import dataclass, fields, replace
from typing import Any

from netns_lab.model import ClusterConfig, Ingress, IngressClass, Namespace, NetworkPolicy, Pod, Scenario, Secret, Service


@dataclass(frozen=True)
class Kind:
    """One kind of object: its resource name (``kubectl get PLURAL``), the snapshot field that
    holds it, and whether it lives in a namespace."""

    name: str  # Pod
    plural: str  # pods
    field: str  # Objects.pods
    namespaced: bool
    aliases: tuple[str, ...] = ()


KINDS = (
    Kind("Namespace", "namespaces", "namespaces", False, ("namespace", "ns")),
    Kind("Pod", "pods", "pods", True, ("pod", "po")),
    Kind("Service", "services", "services", True, ("service", "svc")),
    Kind("Secret", "secrets", "secrets", True, ("secret",)),
    Kind("Ingress", "ingresses", "ingresses", True, ("ingress", "ing")),
    Kind("IngressClass", "ingressclasses", "ingress_classes", False, ("ingressclass",)),
    Kind("NetworkPolicy", "networkpolicies", "network_policies", True, ("networkpolicy", "netpol")),
)
BY_CLASS = {Namespace: KINDS[0], Pod: KINDS[1], Service: KINDS[2], Secret: KINDS[3], Ingress: KINDS[4], IngressClass: KINDS[5],
            NetworkPolicy: KINDS[6]}


def kind_named(text: str) -> Kind | None:
    """``pod``, ``pods``, ``po``, ``Pod``...: kubectl's resource names, case-insensitive."""
    low = text.lower()
    return next((k for k in KINDS if low in (k.name.lower(), k.plural, *k.aliases)), None)


@dataclass(frozen=True)
class Allocations:
    """What the Services of a snapshot hold (kube-apiserver's allocator bitmaps): clusterIPs,
    node ports (with health-check ports, as (port, protocol)) and load-balancer IPs. Kept per
    snapshot and handed on by ``put``/``remove`` with one Service's worth of change (a set
    copy), so allocating among 10,000 Services does not re-read them all."""

    ips: frozenset[str] = frozenset()
    ports: frozenset[tuple[int, str]] = frozenset()
    lbs: frozenset[str] = frozenset()
    ip_ints: frozenset[int] = frozenset()  # the clusterIPs as integers: the allocator walks them

    @staticmethod
    def of(services: tuple[Service, ...]) -> "Allocations":
        ips, ports, lbs = _held(services)
        return Allocations(frozenset(ips), frozenset(ports), frozenset(lbs), frozenset(map(_int, ips)))

    def without(self, svc: Service) -> "Allocations":
        ips, ports, lbs = _held((svc,))
        return Allocations(self.ips - ips, self.ports - ports, self.lbs - lbs, self.ip_ints - set(map(_int, ips)))

    def plus(self, svc: Service) -> "Allocations":
        ips, ports, lbs = _held((svc,))
        return Allocations(self.ips | ips, self.ports | ports, self.lbs | lbs, self.ip_ints | set(map(_int, ips)))


def _int(ip: str) -> int:
    if ":" in ip:
        return int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")
    return int.from_bytes(socket.inet_aton(ip), "big")


def _held(services: tuple[Service, ...]) -> tuple[set[str], set[tuple[int, str]], set[str]]:
    ips = {ip for s in services for ip in (s.cluster_ips or ((s.cluster_ip,) if s.cluster_ip else ()))}
    ports = {(p.node_port, p.protocol) for s in services for p in s.ports if p.node_port}
    ports |= {(s.health_check_node_port, "TCP") for s in services if s.health_check_node_port}
    return ips, ports, {ip for s in services for ip in s.load_balancer_ips}  # type: ignore[misc]


@dataclass(frozen=True)
class Objects:
    """A snapshot of the cluster's objects (the lab's "etcd"), each tuple in creation order."""

    cluster: ClusterConfig
    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    services: tuple[Service, ...] = ()
    secrets: tuple[Secret, ...] = ()
    ingresses: tuple[Ingress, ...] = ()
    ingress_classes: tuple[IngressClass, ...] = ()
    network_policies: tuple[NetworkPolicy, ...] = ()

    @classmethod
    def of(cls, scenario: Scenario) -> "Objects":
        return cls(scenario.cluster, scenario.namespaces, scenario.pods, scenario.services, scenario.secrets,
                   scenario.ingresses, scenario.ingress_classes, scenario.network_policies)

    def all(self, kind: Kind) -> tuple[Any, ...]:
        return getattr(self, kind.field)  # type: ignore[no-any-return]

    def _index(self, kind: Kind) -> dict[str, int]:
        """key -> position, built once per snapshot and kind (or handed on by ``put``)."""
        cache = self.__dict__.setdefault("_indexes", {})
        if kind.field not in cache:
            cache[kind.field] = {o.key: i for i, o in enumerate(self.all(kind))}
        return cache[kind.field]  # type: ignore[no-any-return]

    def get(self, kind: Kind, key: str) -> Any | None:
        i = self._index(kind).get(key)
        return None if i is None else self.all(kind)[i]

    def put(self, obj: Any) -> "Objects":
        """Create ``obj`` (at the end) or replace the object with its key (in place)."""
        kind = BY_CLASS[type(obj)]
        items, index = self.all(kind), self._index(kind)
        at = index.get(obj.key)
        if at is None:
            new = replace(self, **{kind.field: (*items, obj)})
            new.__dict__["_indexes"] = {kind.field: {**index, obj.key: len(items)}}
        else:
            new = replace(self, **{kind.field: (*items[:at], obj, *items[at + 1:])})
            new.__dict__["_indexes"] = {kind.field: index}  # same keys, same places (never mutated)
        held = self.__dict__.get("_allocations")
        if isinstance(obj, Service) and held is not None:
            new.__dict__["_allocations"] = (held if at is None else held.without(items[at])).plus(obj)
        elif held is not None:
            new.__dict__["_allocations"] = held
        return new

    def allocations(self) -> Allocations:
        """What this snapshot's Services hold (built once, then handed on by ``put``)."""
        if "_allocations" not in self.__dict__:
            self.__dict__["_allocations"] = Allocations.of(self.services)
        return self.__dict__["_allocations"]  # type: ignore[no-any-return]

    def remove(self, kind: Kind, key: str) -> "Objects":
        return replace(self, **{kind.field: tuple(o for o in self.all(kind) if o.key != key)})

    def in_namespace(self, namespace: str) -> list[tuple[Kind, Any]]:
        """Every namespaced object of ``namespace``: what deleting it deletes."""
        return [(k, o) for k in KINDS if k.namespaced for o in self.all(k) if o.namespace == namespace]

    def same_as(self, other: "Objects") -> bool:
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self))

    def changes(self, newer: "Objects", kind: Kind) -> dict[str, tuple[Any | None, Any | None]]:
        """key -> (old, new) for every object of ``kind`` that ``newer`` created, replaced or
        deleted. A change touches a few objects of thousands: the usual cases (nothing, in
        place, appended) are found by identity in one pass, without hashing anything."""
        a, b = self.all(kind), newer.all(kind)
        if a is b:
            return {}
        # Every reconciler asks the same question of one change: answered once. A weak
        # reference, or each snapshot would keep every older one alive.
        memo = newer.__dict__.setdefault("_memo_changes", {})
        hit = memo.get(kind.name)
        if hit is not None and hit[0]() is self:
            return dict(hit[1])
        out = self._changes(a, b)
        memo[kind.name] = (weakref.ref(self), out)
        return dict(out)

    @staticmethod
    def _changes(a: tuple[Any, ...], b: tuple[Any, ...]) -> dict[str, tuple[Any | None, Any | None]]:
        if len(b) >= len(a):
            head = [i for i, (x, y) in enumerate(zip(a, b)) if x is not y]
            if len(b) == len(a) or not head:  # replaced in place, or appended
                out = {b[i].key: (a[i], b[i]) for i in head if a[i].key == b[i].key}
                if len(out) == len(head):
                    out.update({o.key: (None, o) for o in b[len(a):]})
                    return out
        old, new = {o.key: o for o in a}, {o.key: o for o in b}
        return {k: (old.get(k), new.get(k)) for k in old.keys() | new.keys() if old.get(k) is not new.get(k)}
