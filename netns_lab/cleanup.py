"""Remove a lab's remains by its ownership record, never by a name pattern.

Order matters: processes first (their sockets keep namespaces alive), then namespaces
(deleting a namespace destroys every link in it, and the peer end of each veth with it),
then lab directories, and the record itself last, so a cleanup that is itself interrupted
can simply be run again.
"""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass, field

from netns_lab import procs, state
from netns_lab.realize import netns


@dataclass
class Leftovers:
    lab: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    record: bool = True

    @property
    def empty(self) -> bool:
        return not (self.namespaces or self.processes or self.dirs or self.record)

    def describe(self) -> list[str]:
        out = [f"{self.lab}: netns {n}" for n in self.namespaces]
        out += [f"{self.lab}: process {p}" for p in self.processes]
        out += [f"{self.lab}: directory {d}" for d in self.dirs]
        if self.record:
            out.append(f"{self.lab}: state file {state.state_path(self.lab)}")
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
    if st is None:
        return Leftovers(lab, record=False)
    dirs = [d for d in (*st.dirs, st.workdir) if os.path.exists(d)]
    return Leftovers(
        lab,
        namespaces=[n for n in st.namespaces if os.path.lexists(netns.path(n))],
        processes=_processes(st),
        dirs=dirs,
    )


def remove_lab(lab: str) -> Leftovers:
    """Delete everything ``lab``'s record lists. Returns what was found (and removed)."""
    found = leftovers(lab)
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
    for leftover in glob.glob(glob.escape(st.path) + ".tmp.*"):  # a save killed mid-write
        os.unlink(leftover)
    try:
        os.unlink(st.path)
    except FileNotFoundError:
        pass
    return found


def all_leftovers() -> list[Leftovers]:
    return [lo for lo in (leftovers(lab) for lab in state.all_labs()) if not lo.empty]


def clean_all() -> list[Leftovers]:
    return [remove_lab(lab) for lab in state.all_labs()]
