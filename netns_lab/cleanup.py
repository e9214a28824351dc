"""Remove a lab's remains by its ownership record, never by a name pattern.

Order matters: processes first (their sockets keep namespaces alive), then namespaces
(deleting a namespace destroys every link in it, and the peer end of each veth with it),
then lab directories, and the record itself last, so a cleanup that is itself interrupted
can simply be run again. All of it under the lab's lock (state.acquire), so a removal never
races a build or another removal of the same lab; the lock file goes with the lab.
"""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass, field

from netns_lab import procs, state
from netns_lab.errors import LabError
from netns_lab.realize import netns


@dataclass
class Leftovers:
    lab: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    record: bool = True
    lock: bool = False  # <lab>.lock is still there
    busy: str = ""  # not removed: another process holds the lab's lock (the reason, one line)

    @property
    def empty(self) -> bool:
        return not (self.namespaces or self.processes or self.dirs or self.record or self.lock)

    def describe(self) -> list[str]:
        out = [f"{self.lab}: netns {n}" for n in self.namespaces]
        out += [f"{self.lab}: process {p}" for p in self.processes]
        out += [f"{self.lab}: directory {d}" for d in self.dirs]
        if self.record:
            out.append(f"{self.lab}: state file {state.state_path(self.lab)}")
        if self.lock:
            out.append(f"{self.lab}: lock file {state.lock_path(self.lab)}")
        return out


def _namespace_inodes(st: state.LabState) -> frozenset[int]:
    out = set()
    for name in st.namespaces:
        try:
            out.add(os.stat(netns.path(name)).st_ino)
        except OSError:
            pass
    return frozenset(out)


def _processes(st: state.LabState) -> list[int]:
    pids = {p["pid"] for p in st.processes if procs.owned_by(p["pid"], st.instance)}
    if st.instance:
        pids.update(procs.find_owned(st.instance))
    pids.update(procs.find_in_namespaces(set(_namespace_inodes(st))))
    return sorted(pids)


def leftovers(lab: str) -> Leftovers:
    st = state.load(lab)
    lock = os.path.exists(state.lock_path(lab))
    if st is None:  # a first save killed mid-write leaves only its temporary file
        return Leftovers(lab, record=bool(glob.glob(glob.escape(state.state_path(lab)) + ".tmp.*")), lock=lock)
    dirs = [d for d in (*st.dirs, st.workdir) if os.path.exists(d)]
    return Leftovers(
        lab,
        namespaces=[n for n in st.namespaces if os.path.lexists(netns.path(n))],
        processes=_processes(st),
        dirs=dirs,
        lock=lock,
    )


DOWN_WAIT = 10.0  # how long down waits for another command that holds the lab (a concurrent down)


def remove_lab(lab: str, wait: float = DOWN_WAIT) -> Leftovers:
    """Delete everything ``lab``'s record lists, and its lock file, holding the lab's lock.
    Returns what was found (and removed). Raises LabError if another process (a build under
    way) still holds the lock after ``wait`` seconds: a lab being built is not pulled from
    under its builder; stopping the builder (Ctrl-C, kill) makes it remove its own work."""
    had_lock = os.path.exists(state.lock_path(lab))
    lock = state.acquire(lab, wait)
    if lock is None:
        raise state.busy_error(lab)
    try:
        found = remove_unlocked(lab)
    finally:
        lock.release(remove=state.load(lab) is None)
    found.lock = had_lock
    return found


def remove_unlocked(lab: str) -> Leftovers:
    """``remove_lab`` for a caller that already holds the lab's lock (``Lab.up`` clearing the
    remains of a killed build, or its own failed one). Leaves the lock file to that caller."""
    found = leftovers(lab)
    found.lock = False  # the caller's own
    for leftover in glob.glob(glob.escape(state.state_path(lab)) + ".tmp.*"):  # a save killed mid-write
        os.unlink(leftover)
    st = state.load(lab)
    if st is None:
        return found
    inodes = _namespace_inodes(st)
    for pid in found.processes:
        procs.stop(pid, st.instance, inodes=inodes)
    for name in reversed(st.namespaces):  # pods before nodes before the node network
        netns.delete(name)
    for d in found.dirs:
        shutil.rmtree(d, ignore_errors=True)
    try:
        os.unlink(st.path)
    except FileNotFoundError:
        pass
    return found


def all_leftovers() -> list[Leftovers]:
    return [lo for lo in (leftovers(lab) for lab in state.all_labs()) if not lo.empty]


def clean_all() -> list[Leftovers]:
    """Remove every lab. A lab another process holds (a build under way) is left alone and
    reported with ``busy`` set: clean never pulls a lab from under its builder."""
    out = []
    for lab in state.all_labs():
        try:
            out.append(remove_lab(lab, wait=1.0))
        except LabError as exc:
            out.append(Leftovers(lab, busy=str(exc)))
    return out
