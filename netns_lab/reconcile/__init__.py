"""Reconcilers: each brings one part of the machine in line with the lab's objects.

They all have the same shape (Kubernetes controllers and kube-proxy's change trackers are
the model): ``sync(view)`` computes the desired state from the snapshot (pure code in
:mod:`netns_lab.controllers` and :mod:`netns_lab.proxy`), compares it with what it realised
last, applies only the difference (kernel, files, signals) and returns what it did, as
event messages. An empty difference does nothing and says nothing. ``up`` is a first sync
from an empty machine; a change is a sync from the previous snapshot; ``reconcile`` after a
failure is a full sync (``view.full``), which rebuilds what the failure left behind.

The lab runs them in one order (see :data:`netns_lab.lab.Lab.reconcilers`): pods are made
before anything points at them, and removed after nothing does.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Protocol

from netns_lab.controllers.topology import Topology
from netns_lab.proxy.types import ServicePortInfo
from netns_lab.state import LabState
from netns_lab.store import Objects


@dataclass(frozen=True)
class View:
    """What every reconciler reads: the objects, the address plan, and the Service ports with
    their endpoints (computed once per sync, the most expensive derived view)."""

    objects: Objects
    topology: Topology
    ports: tuple[ServicePortInfo, ...]
    full: bool = False  # rebuild from scratch: after a failure, or the first sync of a process


class Runtime(Protocol):
    """What a reconciler may ask of the lab: its record and its processes."""

    name: str
    state: LabState | None

    def spawn(self, role: str, args: list[str]) -> None: ...

    def signal(self, role: str, sig: int = signal.SIGHUP) -> None: ...

    def running(self, role: str) -> bool: ...


class Reconciler(Protocol):
    name: str

    def sync(self, view: View) -> list[str]: ...


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
