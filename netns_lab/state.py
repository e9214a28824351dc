"""The ownership record of each lab: ``/run/netns-lab/<lab>.json``.

It is written *before* anything is created and lists everything the lab will own, so a build
killed at any instant (SIGKILL included) leaves a record from which ``clean`` removes exactly
what this lab made, and nothing that merely looks like it.

Next to it, ``<lab>.lock``: the lock that lets one command at a time build or remove the lab.
The lab's name is a path component of both, so it is checked (``check_name``) before any path
is built from it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from dataclasses import dataclass, field, fields
from typing import Any

from netns_lab.errors import BusyError, ScenarioError

STATE_DIR = os.path.abspath(os.environ.get("NETNS_LAB_STATE_DIR", "/run/netns-lab"))  # absolute: the API server works from /
MAX_NAME = 40  # the lab's name prefixes every namespace and interface name it creates


@dataclass
class LabState:
    lab: str
    instance: str  # a fresh token per `up`: processes carry it in their environment
    scenario: str
    phase: str = "building"  # building | up (| corrupt: an unreadable record, never written)
    checked: bool = False  # run-scenario ran this machine's checks (spread labs wait on each other for it)
    namespaces: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)  # role, pid, start
    topology: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    proxy_mode: str = "iptables"
    iptables_backend: str = "nft"
    ipvs_scheduler: str = "rr"
    ipvs_legacy_ping: bool = False
    pending: bool = False  # a change was recorded in ``objects`` and is not yet fully realised
    generation: int = 0  # moves on with every sync: a process whose copy is older reloads the record
    # when the first terminating pod's grace period is over (0: none is terminating): the lab's
    # API server removes it then (it reads this record every second, not the objects' log)
    next_deletion: float = 0.0
    # Who built it: a refused ``up`` names it, and a "building" record whose owner is dead is
    # the remains of a killed build (a PID alone could be recycled: the start time tells).
    owner_pid: int = 0
    owner_start: int = 0
    # ``run-scenario`` without ``--keep``: the lab was meant to go when its owner went, so once
    # that process is dead (SIGKILL, OOM, a CI timeout) it is remains, not a lab a user keeps up.
    temporary: bool = False

    @property
    def path(self) -> str:
        return state_path(self.lab)

    @property
    def workdir(self) -> str:
        return os.path.join(STATE_DIR, check_name(self.lab))

    def save(self) -> None:
        os.makedirs(STATE_DIR, exist_ok=True)
        tmp = f"{self.path}.tmp.{os.getpid()}"
        try:
            with open(tmp, "w") as fh:
                fh.write(json.dumps(self.__dict__, separators=(",", ":")))  # dumps: the C encoder
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)  # atomic: a reader sees the old or the new record, whole
        except BaseException:  # Ctrl-C mid-write: no half file left (SIGKILL's: removed by cleanup)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise


def name_problems(lab: str) -> list[str]:
    """Why ``lab`` is not a lab name, as the scenario's ``name:`` is checked (a DNS-1123 label
    of at most 40 characters, matched whole: a trailing newline is not allowed)."""
    from netns_lab.scenario import k8s  # lazily: the scenario package pulls in the loader

    errs = [e for e in k8s.dns1123_label(lab) if not e.startswith("must be no more than")]
    if len(lab) > MAX_NAME:
        errs.insert(0, f"must be no more than {MAX_NAME} characters (it prefixes every namespace of the lab)")
    return errs


def check_name(lab: str, command: str = "netns-lab") -> str:
    """``lab`` if it is a valid lab name, else a one-line ScenarioError naming ``command``:
    a name is a path component here (``../../tmp/x`` would reach outside the state dir)."""
    errs = name_problems(lab)
    if errs:
        # json.dumps: a newline or other control character in the name stays on this one line
        raise ScenarioError(command, f"lab name {json.dumps(lab)}", "Invalid value: " + "; ".join(errs))
    return lab


def state_path(lab: str) -> str:
    """The record's path; refuses an invalid name, so no path is ever built from one."""
    return os.path.join(STATE_DIR, f"{check_name(lab)}.json")


def lock_path(lab: str) -> str:
    return os.path.join(STATE_DIR, f"{check_name(lab)}.lock")


def load(lab: str) -> LabState | None:
    """The record of ``lab``, None if there is none; an unreadable one has phase "corrupt"
    (the remains of a killed writer, or not ours: never trusted, never a traceback)."""
    try:
        with open(state_path(lab)) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return LabState(lab=lab, instance="", scenario="", phase="corrupt")
    known = {f.name for f in fields(LabState)}
    if not isinstance(data, dict) or data.get("lab") != lab:
        return LabState(lab=lab, instance="", scenario="", phase="corrupt")
    try:
        return LabState(**{k: v for k, v in data.items() if k in known})
    except TypeError:  # a required field missing
        return LabState(lab=lab, instance="", scenario="", phase="corrupt")


def all_labs() -> list[str]:
    """Every lab with a record or a lock file in the state dir. A file whose name is not a lab
    name (a stray ``..json``, or ``rb\\n.json`` written before names were checked whole) is
    not a lab: it is skipped, never turned into a path."""
    if not os.path.isdir(STATE_DIR):
        return []
    names = {f.rsplit(".", 1)[0] for f in os.listdir(STATE_DIR) if f.endswith((".json", ".lock"))}
    names |= {f.split(".json.tmp.", 1)[0] for f in os.listdir(STATE_DIR) if ".json.tmp." in f}  # a save killed mid-write
    return sorted(n for n in names if not name_problems(n))


def owner() -> tuple[int, int]:
    """This process, as a record's or a lock's owner: (PID, start time in clock ticks)."""
    from netns_lab.procs import start_time

    pid = os.getpid()
    return pid, start_time(pid) or 0


def alive(pid: int, start: int) -> bool:
    """Whether process ``pid`` is still the one that started at ``start`` (not a recycled PID)."""
    from netns_lab.procs import start_time

    return pid > 0 and start_time(pid) == start and start > 0


def when(created: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) if created else "an unknown time"


class Lock:
    """An exclusive ``flock`` on ``<lab>.lock`` in the state dir. ``up`` holds it for the whole
    build, ``down`` and ``clean`` while they remove, so two commands never build or remove the
    same lab at once. The kernel drops it when its holder dies (SIGKILL included), so a lock is
    never stale; the file names the holder, for the message of whoever is refused."""

    def __init__(self, lab: str, fd: int) -> None:
        self.lab = lab
        self.fd = fd

    def release(self, remove: bool = False) -> None:
        """Unlock; ``remove`` also deletes the file (the lab is gone). It is unlinked while
        still held: a waiter that then gets the lock on the unlinked file notices and retries."""
        if self.fd < 0:
            return
        if remove:
            try:
                os.unlink(lock_path(self.lab))
            except FileNotFoundError:
                pass
        os.close(self.fd)  # closing the last descriptor drops the flock
        self.fd = -1


def acquire(lab: str, wait: float = 0.0) -> Lock | None:
    """The lock of ``lab``, waiting up to ``wait`` seconds; None if another process holds it."""
    path = lock_path(lab)
    os.makedirs(STATE_DIR, exist_ok=True)
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
            continue
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = -1
        if os.fstat(fd).st_ino != current:  # its holder removed the lab and the file: take the new one
            os.close(fd)
            continue
        pid, start = owner()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{pid} {start}\n".encode(), 0)
        return Lock(lab, fd)


def holder(lab: str) -> int:
    """The PID that holds (or last held) ``lab``'s lock, 0 if unknown."""
    try:
        with open(lock_path(lab)) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def busy_error(lab: str, doing: str = "being built or removed") -> BusyError:
    """The one line for a command refused because another one holds the lab's lock."""
    pid = holder(lab)
    by = f"by process {pid}" if pid else "by another process"
    return BusyError(f"lab {lab} is {doing} {by}: wait for it to finish (or stop it), then retry")
