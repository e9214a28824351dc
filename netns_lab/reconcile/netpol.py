"""NetworkPolicy: every local node's policy rules (iptables + ipset, or an nftables table,
``cluster.networkPolicy``) follow the policies, the pods (their addresses, labels and named
ports) and the namespaces' labels. A node whose rules would not change is not touched."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from netns_lab.controllers.netpol import NodePolicy, plan
from netns_lab.realize.policy import DATAPLANES
from netns_lab.reconcile import View, plural


PARALLEL = 4  # nodes written at once: the work is in ipset / iptables-restore / nft processes


class NetworkPolicies:
    name = "network-policy"

    def __init__(self, iptables_backend: str) -> None:
        self.iptables_backend = iptables_backend
        self.dataplanes: dict[str, object] = {}
        self.applied: dict[str, NodePolicy] | None = None

    def _dataplanes(self, view: View) -> None:
        if not self.dataplanes:
            cls = DATAPLANES[view.objects.cluster.network_policy]
            ipvs = view.objects.cluster.proxy_mode == "ipvs"
            self.dataplanes = {n.name: cls(n.netns, self.iptables_backend, ipvs) for n in view.topology.local_nodes}

    def restore(self, view: View) -> None:
        """A process attaching to a running lab: the kernel holds what the recorded objects render."""
        self._dataplanes(view)
        self.applied = plan(view.objects, view.topology)
        for node, dp in self.dataplanes.items():
            dp.adopt(self.applied[node])  # type: ignore[attr-defined]

    def _untouched(self, view: View) -> bool:
        if view.full or view.before is None or self.applied is None:
            return False
        return not (view.touched("network_policies") or view.touched("pods") or view.touched("namespaces"))

    def sync(self, view: View) -> list[str]:
        if self._untouched(view):
            return []
        self._dataplanes(view)
        full = view.full or self.applied is None
        if full and not view.objects.network_policies and self.applied is None and view.before is None:
            self.applied = {n: NodePolicy(n, (), (), ()) for n in self.dataplanes}  # a lab without policies: nothing to write
            return []
        desired = plan(view.objects, view.topology)
        todo = [(node, dp) for node, dp in self.dataplanes.items()
                if full or self.applied is None or self.applied.get(node) != desired[node]]

        def apply(item: tuple[str, Any]) -> str:
            node, dp = item
            want = desired[node]
            ms = dp.apply(want, full=full) * 1000
            return (f"network policy on {node} ({dp.mode}): {plural(len(want.endpoints), 'pod')} isolated, "
                    f"{plural(len(want.chains), 'policy chain')}, {plural(len(want.sets), 'set')} ({ms:.0f} ms)")

        # the nodes' rules are independent (a node is its own kernel): written side by side, as each
        # node's agent would; the first failure is raised once all are done (the next sync is full)
        with ThreadPoolExecutor(min(PARALLEL, max(1, len(todo)))) as pool:
            events = list(pool.map(apply, todo))
        self.applied = desired
        return events
