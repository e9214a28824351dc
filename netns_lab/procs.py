"""Processes the lab starts, and how it proves they are its own before stopping them.

Every process gets ``NETNS_LAB=<lab>`` and ``NETNS_LAB_INSTANCE=<token>`` in its environment.
We stop a PID only if its ``/proc/PID/environ`` carries our token (a recycled PID never
does), and ``clean`` can also find a process whose PID was never recorded (the builder
was killed between ``fork`` and writing the state file) by that same token.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

ENV_LAB = "NETNS_LAB"
ENV_INSTANCE = "NETNS_LAB_INSTANCE"


def lab_env(lab: str, instance: str) -> dict[str, str]:
    """Our environment with the lab's name and token; without a test's fault point
    (faults.py), which belongs to the process that was told it, never to what it starts."""
    env = {k: v for k, v in os.environ.items() if k != "NETNS_LAB_FAULT"}
    env[ENV_LAB] = lab
    env[ENV_INSTANCE] = instance
    return env


def spawn(cmd: list[str], lab: str, instance: str, log: str) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (it outlives the CLI that built the lab)."""
    with open(log, "ab") as err:
        return subprocess.Popen(
            cmd,
            env=lab_env(lab, instance),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
            close_fds=True,
        )


def wait_ready(proc: subprocess.Popen[bytes], log: str, timeout: float) -> str | None:
    """Wait for a server's READY line (services/ready.py) and let go of its stdout. Returns
    None once it is ready, else why not: the end of its log (or "no READY line")."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().decode(errors="replace").strip() if ready else ""
    proc.stdout.close()
    if line.startswith("READY"):
        return None
    try:
        with open(log, errors="replace") as fh:
            tail = fh.read()[-500:].strip().replace("\n", " | ")
    except OSError:
        tail = ""
    return tail or "no READY line"


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def owned_by(pid: int, instance: str) -> bool:
    if not instance:
        return False
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return f"{ENV_INSTANCE}={instance}".encode() in env


def netns_inode(pid: int) -> int | None:
    """The inode of ``pid``'s network namespace, or None if it is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def find_in_namespaces(inodes: set[int]) -> list[int]:
    """Every live process inside one of these network namespaces.

    Nothing but the lab lives in a lab's namespaces, so these are the lab's even when their
    environment no longer shows its token (nginx overwrites its environment with its process
    title, and its workers outlive a killed master)."""
    if not inodes:
        return []
    me = os.getpid()
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) != me and netns_inode(int(e)) in inodes]


def find_owned(instance: str) -> list[int]:
    """Every live process carrying ``instance`` in its environment."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and owned_by(int(entry), instance):
            pids.append(int(entry))
    return pids


def stop(pid: int, instance: str, timeout: float = 3.0, inodes: frozenset[int] = frozenset()) -> bool:
    """SIGTERM then SIGKILL ``pid``, only if it is ours: it carries the lab's token, or it
    runs inside one of the lab's namespaces (``inodes``). Returns whether it was running."""

    def ours() -> bool:
        return owned_by(pid, instance) or netns_inode(pid) in inodes

    if not ours():
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not ours() or _zombie(pid):
            return True
        time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
