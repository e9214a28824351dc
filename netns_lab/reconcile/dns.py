"""Cluster DNS: the zone the lab's DNS server answers from follows the Services and pods.

The server reads ``dns-zone.json`` again when it changes (its next query sees it)."""

from __future__ import annotations

import json
import os
from typing import Any

from netns_lab import atomic
from netns_lab.controllers import dns as dns_records
from netns_lab.reconcile import Runtime, View

SHOWN = 3  # names listed in one event; the rest are counted


class ClusterDNS:
    name = "dns"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.names: dict[str, Any] | None = None  # as last written

    @property
    def path(self) -> str:
        assert self.rt.state is not None
        return os.path.join(self.rt.state.workdir, "dns-zone.json")

    def restore(self, view: View) -> None:
        self.names = self._records(view).names

    def _records(self, view: View) -> dns_records.Records:
        topo = view.topology
        return dns_records.build(view.objects.services, view.objects.pods, topo, topo.cluster_domain)

    def sync(self, view: View) -> list[str]:
        records = self._records(view)
        if records.names == self.names and not view.full:
            return []
        atomic.write(self.path, json.dumps(records.to_json(), separators=(",", ":")))
        old, self.names = self.names or {}, records.names
        events = changes(old, records.names)
        dns_pod = view.topology.local_pod("kube-system/coredns")
        if dns_pod is not None and not self.rt.running("dns"):
            self.rt.spawn("dns", ["-m", "netns_lab.services.dns", "--supervise", f"/run/netns/{dns_pod.netns}", self.path])
            events.append(f"DNS server started in {dns_pod.key}")
        return events


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``DNS: web.shop.svc.cluster.local. -> 10.96.0.12`` for the names that changed (A first)."""
    changed = sorted(n for n in new.keys() | old.keys() if new.get(n) != old.get(n) and not n.startswith("dns-version."))
    out = []
    for name in changed[:SHOWN]:
        answers = new.get(name)
        if not answers:
            out.append(f"DNS: {name} removed")
            continue
        rtype = "A" if "A" in answers else sorted(answers)[0]
        values = ", ".join(str(v) for v in answers[rtype])
        out.append(f"DNS: {name} -> {values}" if rtype == "A" else f"DNS: {name} {rtype} {values}")
    if len(changed) > SHOWN:
        out.append(f"DNS: {len(changed) - SHOWN} more names changed")
    return out
