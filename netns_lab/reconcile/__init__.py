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

import functools
import os
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

from netns_lab.controllers.topology import Topology
from netns_lab.errors import RealizeError
from netns_lab.proxy.types import ServicePortInfo, service_ports
from netns_lab.state import LabState
from netns_lab.store import Objects


class View:
    """What every reconciler reads: the objects, the address plan, what changed since the
    last sync (``before``: the objects then, None for everything), and the Service ports with
    their endpoints (computed on first use, once per sync: DNS answers without waiting for
    them). ``full``: rebuild from scratch, after a failure or in a process's first sync."""

    def __init__(self, objects: Objects, topology: Topology, ports: Callable[[], tuple[ServicePortInfo, ...]],
                 full: bool = False, before: Objects | None = None,
                 delta: Callable[[], Any] = lambda: None) -> None:
        self.objects, self.topology, self.full, self.before = objects, topology, full, before
        self._ports, self._delta = ports, delta

    @functools.cached_property
    def ports(self) -> tuple[ServicePortInfo, ...]:
        return self._ports()

    @functools.cached_property
    def ports6(self) -> tuple[ServicePortInfo, ...]:
        """A dual-stack lab's IPv6 half of every Service port (its second proxier's view, and
        what its health checks count), computed once per change for every reconciler."""
        if not self.topology.dual_stack:
            return ()
        return service_ports(self.objects.services, self.objects.pods, self.topology, family=6)

    def port_changes(self, since: tuple[ServicePortInfo, ...]) -> tuple[tuple[ServicePortInfo, ...], tuple[ServicePortInfo, ...]] | None:
        """(ports gone, ports new) from ``since`` (what the caller synced last) to ``ports``;
        None when not known that way (then compare everything)."""
        _ = self.ports
        known = None if self.before is None else self._delta()
        return known[1] if known is not None and known[0] is since else None

    def touched(self, kind: str) -> list[Any]:
        """The objects of ``kind`` (``services``, ``pods``) this change created, replaced or
        deleted, old and new versions both; None when unknown (everything may have changed)."""
        if self.before is None:
            return None  # type: ignore[return-value]
        cache = self.__dict__.setdefault("_touched", {})
        if kind not in cache:
            from netns_lab.store import KINDS

            k = next(k for k in KINDS if k.field == kind)
            cache[kind] = [o for pair in self.before.changes(self.objects, k).values() for o in pair if o is not None]
        return cache[kind]  # type: ignore[no-any-return]

    def untouched(self, relevant: Callable[[Any], bool], pods: bool = False) -> bool:
        """True when nothing this change touched is ``relevant`` to a reconciler (and, with
        ``pods``, no pod changed): it may skip its work, as a controller whose watch saw nothing."""
        if self.full or self.before is None:
            return False
        return not any(relevant(s) for s in self.touched("services")) and not (pods and self.touched("pods"))

    def but_full(self) -> "View":
        return View(self.objects, self.topology, lambda: self.ports, True, None)


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


def count(run_dir: str, name: str) -> int:
    """A counter a supervisor keeps in a file of ``run_dir`` (0 when it has not written one)."""
    try:
        with open(os.path.join(run_dir, name)) as fh:
            return int(fh.read() or 0)
    except (OSError, ValueError):
        return 0


def signal_and_wait(rt: Runtime, role: str, sig: int, run_dir: str, counter: str, *, refused: str,
                    timeout: float, what: tuple[str, str], refusal: str, log: str) -> None:
    """Signal a controller's supervisor and return once it bumped ``counter`` (it did what it
    was told); raise if it bumped ``refused`` first (the controller kept what it had: an error
    here, never a silent success: ``refusal`` says so) or said nothing within ``timeout``.
    ``what``: (the object, the action) the error names; ``log``: where the supervisor explains."""
    before, refusals = count(run_dir, counter), count(run_dir, refused)
    rt.signal(role, sig)
    deadline = time.monotonic() + timeout
    while count(run_dir, counter) <= before:
        if count(run_dir, refused) > refusals:
            raise RealizeError(what[0], what[1], None, f"{refusal} (see {log})")
        if time.monotonic() > deadline:
            raise RealizeError(what[0], what[1], None, f"the controller did not confirm within {timeout:.0f} s (see {log})")
        time.sleep(0.005)
