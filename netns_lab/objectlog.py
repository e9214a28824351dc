"""The lab's objects on disk: a snapshot and a journal of changes, as etcd keeps its data.

``objects.json`` holds every object at some point and names its journal
(``objects.N.journal``); each change appends one JSON line per object it created, replaced
(``{"k": KIND, "put": OBJECT}``) or deleted (``{"k": KIND, "del": KEY}``), and syncs it to disk
before the lab touches the kernel. Reading replays the journal over the snapshot. A change to
one object among 10,000 writes one line, not the whole record. Past :data:`COMPACT_AFTER`
lines a new snapshot with a new, empty journal replaces both (the old journal is deleted only
once the new snapshot is in place, so a reader always finds a consistent pair).

A line cut short by a kill is not a change that happened (the lab marks a change pending
only after its lines are on disk): reading ignores it, and the next append overwrites it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from netns_lab import atomic, model_io
from netns_lab.store import KINDS, Objects

COMPACT_AFTER = 1000  # journal lines before a new snapshot (reading replays them one by one)
SNAPSHOT = "objects.json"


class ObjectLog:
    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.recorded: Objects | None = None  # what is on disk
        self.journal = ""
        self.size = 0  # bytes of whole lines in the journal
        self.lines = 0

    def _path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def write(self, objects: Objects) -> None:
        """A new snapshot of ``objects`` with a new, empty journal."""
        previous = self.journal
        self.journal = f"objects.{int(previous.split('.')[1]) + 1 if previous else 1}.journal"
        with open(self._path(self.journal), "wb") as fh:
            os.fsync(fh.fileno())
        atomic.write(self._path(SNAPSHOT), json.dumps({"journal": self.journal, **model_io.dump_objects(objects)}, separators=(",", ":")))
        if previous:
            try:
                os.unlink(self._path(previous))
            except FileNotFoundError:
                pass
        self.recorded, self.size, self.lines = objects, 0, 0

    def record(self, objects: Objects) -> None:
        """Make ``objects`` what is on disk: a few journal lines (fsynced), or a new snapshot."""
        if self.recorded is None or not self.journal:
            self.write(objects)
            return
        if objects.cluster is not self.recorded.cluster and objects.cluster != self.recorded.cluster:
            self.write(objects)
            return
        lines = []
        for kind in KINDS:
            for key, (_old, new) in self.recorded.changes(objects, kind).items():
                entry: dict[str, Any] = {"k": kind.field, "put": model_io.dump(new)} if new is not None else {"k": kind.field, "del": key}
                lines.append(json.dumps(entry, separators=(",", ":")))
        if self.lines + len(lines) > COMPACT_AFTER:  # a large change: a snapshot is cheaper to read back
            self.write(objects)
            return
        if lines:
            data = ("\n".join(lines) + "\n").encode()
            with open(self._path(self.journal), "r+b") as fh:
                fh.seek(self.size)
                fh.truncate()  # a line a killed writer left half written
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            self.size += len(data)
            self.lines += len(lines)
        self.recorded = objects

    @classmethod
    def read(cls, workdir: str) -> "ObjectLog":
        """The log as on disk, ``recorded`` being the objects it holds."""
        log = cls(workdir)
        with open(log._path(SNAPSHOT)) as fh:
            data = json.load(fh)
        log.journal = data.pop("journal")
        objects = model_io.load_objects(data)
        try:
            with open(log._path(log.journal), "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raw = b""
        whole = raw[: raw.rfind(b"\n") + 1]
        loaders = model_io.LOADERS
        kinds = {k.field: k for k in KINDS}
        for line in whole.splitlines():
            entry = json.loads(line)
            kind = kinds[entry["k"]]
            if "put" in entry:
                objects = objects.put(loaders[entry["k"]](entry["put"]))
            else:
                objects = objects.remove(kind, entry["del"])
        log.recorded, log.size, log.lines = objects, len(whole), whole.count(b"\n")
        return log
