"""Enter a network namespace for the rest of a process (the in-lab servers' first step).

The servers are single processes that live in one lab namespace (or reach into many, like
netexec); they call this before starting threads, which then inherit the namespace.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter(path: str) -> None:
    """setns(2) into the network namespace at ``path`` (e.g. ``/run/netns/NAME``)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_fd(fd, path)
    finally:
        os.close(fd)


def enter_fd(fd: int, what: str = "namespace") -> None:
    """setns(2) into the network namespace open as ``fd`` (e.g. the process's own, to go home)."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), f"setns {what}")
