"""The router outside the cluster sends each Service externalIP to the nodes (as a network
admin routes an externalIP to a cluster); routes follow the Services' ``spec.externalIPs``."""

from __future__ import annotations

from netns_lab.realize import outside
from netns_lab.reconcile import View


class ExternalIPRoutes:
    name = "router"

    def __init__(self) -> None:
        self.routed: frozenset[str] | None = None

    def restore(self, view: View) -> None:
        self.routed = self.desired(view)

    def desired(self, view: View) -> frozenset[str]:
        return frozenset(ip for s in view.objects.services for ip in s.external_ips)

    def sync(self, view: View) -> list[str]:
        if not view.topology.has_outside or (self.routed is not None and view.untouched(lambda s: bool(s.external_ips))):
            return []
        wanted = self.desired(view)
        old = self.routed or frozenset()
        if wanted == old and self.routed is not None:
            return []
        add, gone = wanted - old, old - wanted
        outside.route_external_ips(view.topology, tuple(sorted(add)), tuple(sorted(gone)))
        self.routed = wanted
        return [f"router: externalIP {ip} routed to the nodes" for ip in sorted(add)] + [
            f"router: externalIP {ip} no longer routed" for ip in sorted(gone)]
