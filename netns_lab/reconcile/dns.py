"""Cluster DNS: the zone the lab's DNS server answers from follows the Services and pods.

The zone is a snapshot (``dns-zone.json``) plus a journal of changed names next to it (the
snapshot names its journal): a change appends one line per name it changed, and the server
applies new lines before its next answer, so a new Service among 10,000 costs a few lines,
not the whole zone rewritten and re-read. Past :data:`COMPACT_AFTER` lines, or on a full
sync, a new snapshot with a new, empty journal replaces both.

Only what a change touched is recomputed: the Services it created, replaced or deleted, and
the headless Services whose pods it changed (their records list those pods).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from netns_lab import atomic
from netns_lab.controllers import dns as dns_records
from netns_lab.controllers.endpoints import selects
from netns_lab.model import Service
from netns_lab.reconcile import Runtime, View
from netns_lab.store import KINDS

SHOWN = 3  # names listed in one event; the rest are counted
COMPACT_AFTER = 20_000  # journal lines before a new snapshot
VERSION_OWNER = ""  # the dns-version TXT record belongs to no Service
_SERVICES = KINDS[2]


class ClusterDNS:
    name = "dns"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.names: dict[str, dict[str, list[Any]]] | None = None  # the zone as the server has it
        self.contrib: dict[str, list[tuple[str, str, Any]]] = {}  # Service key -> its records
        self.owners: dict[str, list[str]] = {}  # name -> the Services that contribute to it, in order
        self.namespaces: list[str] = []
        self.journal = ""  # file name of the journal the snapshot names
        self.lines = 0

    @property
    def path(self) -> str:
        assert self.rt.state is not None
        return os.path.join(self.rt.state.workdir, "dns-zone.json")

    def restore(self, view: View) -> None:
        """Another process wrote the zone: rebuild the table from the objects (what it wrote)
        and continue its journal."""
        self._rebuild(view)
        try:
            with open(self.path) as fh:
                m = re.search(r'"journal":"([^"]+)"', fh.read(512))
        except FileNotFoundError:
            m = None
        self.journal = m.group(1) if m else ""
        try:
            with open(os.path.join(os.path.dirname(self.path), self.journal)) as fh:
                self.lines = sum(1 for _ in fh)
        except (FileNotFoundError, IsADirectoryError):
            self.lines = 0

    def _rebuild(self, view: View) -> None:
        o, topo = view.objects, view.topology
        z = _zone(topo.cluster_domain)
        self.contrib = {VERSION_OWNER: [(f"dns-version.{z}", "TXT", dns_records.SCHEMA_VERSION)]}
        self.contrib.update({s.key: dns_records.service_records(s, o.pods, topo, z) for s in o.services})
        self.owners = {}
        for key, records in self.contrib.items():
            for name, _t, _d in records:
                owners = self.owners.setdefault(name.lower(), [])
                if key not in owners:
                    owners.append(key)
        self.names = {name: self._entry(name) for name in self.owners}
        self.namespaces = sorted(dns_records.namespaces_of(o.services, o.pods))

    def _entry(self, name: str) -> dict[str, list[Any]]:
        entry: dict[str, list[Any]] = {}
        for key in self.owners.get(name, ()):
            for n, rtype, data in self.contrib[key]:
                if n.lower() == name:
                    entry.setdefault(rtype, []).append(list(data) if isinstance(data, tuple) else data)
        return entry

    def _affected(self, view: View) -> set[str]:
        assert view.before is not None
        keys = set(view.before.changes(view.objects, _SERVICES))
        moved = view.touched("pods")
        if moved:
            headless = [s for s in (*view.objects.services, *view.before.services) if s.headless and s.type != "ExternalName"]
            keys |= {s.key for s in headless if any(selects(s, p) for p in moved)}
        return keys

    def sync(self, view: View) -> list[str]:
        if self.names is None or view.before is None or view.full:
            old = self.names or {}
            self._rebuild(view)
            self._snapshot(view)
            events = changes(old, self.names or {})
        else:
            events = self._update(view)
        dns_pod = view.topology.local_pod("kube-system/coredns")
        if dns_pod is not None and not self.rt.running("dns"):
            self.rt.spawn("dns", ["-m", "netns_lab.services.dns", "--supervise", f"/run/netns/{dns_pod.netns}", self.path])
            events.append(f"DNS server started in {dns_pod.key}")
        return events

    def _update(self, view: View) -> list[str]:
        assert self.names is not None
        o, topo = view.objects, view.topology
        z = _zone(topo.cluster_domain)
        affected = self._affected(view)
        dirty: set[str] = set()
        for key in affected:
            for name, _t, _d in self.contrib.pop(key, ()):
                dirty.add(name.lower())
                owners = self.owners.get(name.lower(), [])
                if key in owners:
                    owners.remove(key)
            svc: Service | None = o.get(_SERVICES, key)
            if svc is None:
                continue
            self.contrib[key] = records = dns_records.service_records(svc, o.pods, topo, z)
            for name, _t, _d in records:
                dirty.add(name.lower())
                owners = self.owners.setdefault(name.lower(), [])
                if key not in owners:
                    owners.append(key)
        lines, old = [], {}
        for name in sorted(dirty):
            entry = self._entry(name) if self.owners.get(name) else None
            if not entry:
                self.owners.pop(name, None)
            if entry != self.names.get(name):
                old[name] = self.names.get(name)
                if entry:
                    self.names[name] = entry
                else:
                    self.names.pop(name, None)
                lines.append(json.dumps({"n": name, "e": entry}, separators=(",", ":")))
        if view.touched("pods") or any(o.get(_SERVICES, k) is None for k in affected):  # something may have left
            namespaces = sorted(dns_records.namespaces_of(o.services, o.pods))
        else:  # only Services created or replaced: their namespaces join
            namespaces = sorted(set(self.namespaces) | {o.get(_SERVICES, k).namespace for k in affected})
        if namespaces != self.namespaces:
            self.namespaces = namespaces
            lines.append(json.dumps({"ns": namespaces}, separators=(",", ":")))
        if not lines:
            return []
        if self.lines + len(lines) > COMPACT_AFTER or not self.journal:
            self._snapshot(view)
        else:
            with open(os.path.join(os.path.dirname(self.path), self.journal), "a") as fh:
                fh.write("\n".join(lines) + "\n")
            self.lines += len(lines)
        return changes({n: e for n, e in old.items() if e}, {n: self.names[n] for n in old if n in self.names})

    def _snapshot(self, view: View) -> None:
        """A whole new zone with a new, empty journal; the old journal goes after the switch."""
        assert self.names is not None
        workdir = os.path.dirname(self.path)
        previous = self.journal
        self.journal = f"dns-zone.{(int(previous.split('.')[1]) + 1) if previous else 1}.journal"
        open(os.path.join(workdir, self.journal), "w").close()
        topo = view.topology
        data = {"journal": self.journal, "zone": _zone(topo.cluster_domain), "names": self.names, "namespaces": self.namespaces,
                "reverse_nets": dns_records.reverse_nets(topo)}
        atomic.write(self.path, json.dumps(data, separators=(",", ":")))
        self.lines = 0
        if previous:
            try:
                os.unlink(os.path.join(workdir, previous))
            except FileNotFoundError:
                pass


def _zone(domain: str) -> str:
    return domain.lower().rstrip(".") + "."


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
