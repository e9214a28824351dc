"""The Service ports kube-proxy programs, with their endpoints, kept up to date per change.

What the EndpointSlice controller and kube-proxy's change trackers do together: a change
recomputes only the Services it touched (the Service itself, or a pod it selects, before or
after the change), so one new Service among 10,000 costs one Service's work, not 10,000.
"""

from __future__ import annotations

from itertools import chain
from netns_lab.controllers.endpoints import selects
from netns_lab.controllers.topology import Topology
from netns_lab.model import Pod, Service
from netns_lab.proxy.types import ServicePortInfo, service_ports
from netns_lab.store import KINDS, Objects

_SERVICES, _PODS = KINDS[2], KINDS[1]


class ServicePorts:
    def __init__(self) -> None:
        # in the Services' order: a replaced Service keeps its place in both, a new one goes last in both
        self.by_service: dict[str, tuple[Service, tuple[ServicePortInfo, ...]]] = {}
        self.objects: Objects | None = None
        self.ports: tuple[ServicePortInfo, ...] = ()
        # what the last update changed from ``previous``: (ports gone, ports new); None after a rebuild
        self.previous: tuple[ServicePortInfo, ...] = ()
        self.delta: tuple[tuple[ServicePortInfo, ...], tuple[ServicePortInfo, ...]] | None = None

    def update(self, objects: Objects, topo: Topology) -> tuple[ServicePortInfo, ...]:
        """The ports for ``objects``: from scratch the first time, then from the difference."""
        pods = objects.pods
        if self.objects is objects:
            self.previous, self.delta = self.ports, ((), ())
            return self.ports
        self.previous = self.ports
        if self.objects is None or self.objects.cluster is not objects.cluster:
            self.by_service = {s.key: (s, service_ports((s,), pods, topo)) for s in objects.services}
            self.delta = None
        else:
            gone: list[ServicePortInfo] = []
            came: list[ServicePortInfo] = []
            affected = set(self.objects.changes(objects, _SERVICES))
            moved = self.objects.changes(objects, _PODS)
            if moved:
                affected |= _selecting(objects.services, [p for pair in moved.values() for p in pair if p is not None])
                affected |= _selecting(self.objects.services, [p for pair in moved.values() for p in pair if p is not None])
            for key in affected:
                before = self.by_service.get(key, (None, ()))[1]
                svc = objects.get(_SERVICES, key)
                if svc is None:
                    self.by_service.pop(key, None)
                    after: tuple[ServicePortInfo, ...] = ()
                else:
                    self.by_service[key] = (svc, after := service_ports((svc,), pods, topo))
                gone += [p for p in before if p not in after]
                came += [p for p in after if p not in before]
            self.delta = (tuple(gone), tuple(came))
        self.objects = objects
        self.ports = tuple(chain.from_iterable(v[1] for v in self.by_service.values()))
        return self.ports


def _selecting(services: tuple[Service, ...], pods: list[Pod]) -> set[str]:
    namespaces = {p.namespace for p in pods}
    return {s.key for s in services if s.selector is not None and s.namespace in namespaces and any(selects(s, p) for p in pods)}
