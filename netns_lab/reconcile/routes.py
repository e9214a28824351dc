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
        """Every Service externalIP outside the node network (those inside it need no route)."""
        topo = view.topology
        families = topo.families  # kube-proxy ignores an address of a family the lab lacks
        return frozenset(ip for s in view.objects.services for ip in s.external_ips
                         if (6 if ":" in ip else 4) in families and not outside.on_node_network(topo, ip))

    def sync(self, view: View) -> list[str]:
        if not view.topology.has_outside or (self.routed is not None and not view.full and view.untouched(lambda s: bool(s.external_ips))):
            return []
        wanted = self.desired(view)
        if view.full:  # after a failure: what the kernel has, whatever this process believes
            self.routed = frozenset(outside.routed_external_ips(view.topology))
        old = self.routed or frozenset()
        if wanted == old and self.routed is not None:
            return []
        add, gone = wanted - old, old - wanted
        outside.route_external_ips(view.topology, tuple(sorted(add)), tuple(sorted(gone)))
        self.routed = wanted
        return [f"router: externalIP {ip} routed to the nodes" for ip in sorted(add)] + [
            f"router: externalIP {ip} no longer routed" for ip in sorted(gone)]
