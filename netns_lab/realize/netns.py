"""Create, enter and delete named network namespaces without touching the host's.

``ip netns add`` is a bind mount of a task's ``/proc/.../ns/net`` onto ``/run/netns/NAME``;
we do the same with ``unshare``/``mount`` from ctypes, in a worker thread, because
namespaces are per thread: the calling thread (the test process's main thread above all)
never changes namespace. Forking one helper per namespace (what pyroute2's ``netns.create``
does) costs ~10x more, which matters at 1,000 pods.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from netns_lab import interrupts
from netns_lab.errors import RealizeError

NETNS_RUN_DIR = "/run/netns"
CANCEL_WAIT = 30.0  # seconds an interrupted caller waits for its worker to stop
CLONE_NEWNET = 0x40000000
MS_REC = 16384
MS_BIND = 4096
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def _check(rc: int, obj: str, action: str) -> None:
    if rc != 0:
        raise RealizeError(obj, action, ctypes.get_errno())


def _ensure_run_dir() -> None:
    """Make /run/netns a shared mount point, exactly as iproute2 does, so namespaces we
    create are visible to ``ip netns`` in every mount namespace."""
    os.makedirs(NETNS_RUN_DIR, exist_ok=True)
    if _libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    _check(_libc.mount(NETNS_RUN_DIR.encode(), NETNS_RUN_DIR.encode(), b"none", MS_BIND | MS_REC, None), NETNS_RUN_DIR, "bind mount")
    _check(_libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None), NETNS_RUN_DIR, "make shared")


class NetnsThread:
    """Helpers valid only inside a worker thread (see :func:`in_thread`).

    ``home`` is the namespace the thread started in; :meth:`go_home` returns to it so one
    worker can visit many namespaces in a row.
    """

    def __init__(self, cancelled: threading.Event | None = None) -> None:
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.cancelled = cancelled or threading.Event()  # set when the caller was interrupted (in_thread)

    def close(self) -> None:
        os.close(self.home)

    def create(self, name: str) -> None:
        """Create namespace ``name`` and leave this thread inside it."""
        if self.cancelled.is_set():  # the caller was interrupted: create nothing more
            raise RealizeError(f"netns {name}", "create", errno.ECANCELED)
        p = path(name)
        try:
            fd = os.open(p, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0)
        except OSError as exc:  # EEXIST; ENAMETOOLONG cannot happen with planned names (kernelnames)
            raise RealizeError(f"netns {name}", "create", exc.errno or errno.EIO) from None
        os.close(fd)
        _check(_libc.unshare(CLONE_NEWNET), f"netns {name}", "unshare")
        src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        if _libc.mount(src, p.encode(), b"none", MS_BIND, None) != 0:
            err = ctypes.get_errno()
            self.go_home()
            raise RealizeError(f"netns {name}", "bind mount", err)

    def enter(self, name: str) -> None:
        if self.cancelled.is_set():
            raise RealizeError(f"netns {name}", "enter", errno.ECANCELED)
        fd = open_fd(name)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), f"netns {name}", "setns")
        finally:
            os.close(fd)

    def go_home(self) -> None:
        if _libc.setns(self.home, CLONE_NEWNET) != 0:  # cannot happen short of a kernel bug
            raise RealizeError("home netns", "setns", ctypes.get_errno())


def in_thread(fn: Callable[[NetnsThread], T]) -> T:
    """Run ``fn(worker)`` in a fresh thread that may enter namespaces; return its result.

    The thread dies afterwards, so whatever namespace it ended in cannot leak to anyone.
    """
    box: dict[str, object] = {}
    cancelled, done = threading.Event(), threading.Event()

    def run() -> None:
        worker = NetnsThread(cancelled)
        try:
            box["result"] = fn(worker)
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc
        finally:
            worker.close()
            done.set()

    _ensure_run_dir()
    t = threading.Thread(target=run, name="netns-worker", daemon=True)
    started = False
    try:
        with interrupts.deferred():  # Ctrl-C must not cut start() short with the worker already running
            t.start()
            started = True
        done.wait()  # not t.join(): in 3.11 a join cut short by Ctrl-C marks a running thread stopped
    except BaseException:  # the caller was interrupted: the worker stops at its next namespace and
        if started:  # is waited for, so the cleanup that follows never races a thread still creating
            cancelled.set()  # namespaces (they would outlive the record that lists them)
            done.wait(CANCEL_WAIT)  # bounded: a worker stuck in the kernel must not hang Ctrl-C for good
        raise
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def run_in(name: str, fn: Callable[[], T]) -> T:
    """Run ``fn()`` inside namespace ``name`` (in a short-lived thread)."""

    def job(w: NetnsThread) -> T:
        w.enter(name)
        return fn()

    return in_thread(job)


def open_fd(name: str) -> int:
    try:
        return os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RealizeError(f"netns {name}", "open", errno.ENOENT) from None


def delete(name: str) -> bool:
    """Unmount and remove ``/run/netns/NAME``; the kernel frees the namespace once no
    process or socket holds it. Returns whether there was anything to delete."""
    p = path(name)
    if not os.path.lexists(p):
        return False
    _libc.umount2(p.encode(), MNT_DETACH)  # EINVAL if a kill left it unmounted: fine
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
    return True


def write_sysctl(key: str, value: str | int) -> None:
    """Write ``net/ipv4/ip_forward``-style keys for the *current thread's* namespace.

    /proc/sys/net resolves against the calling task's namespace, so this must run inside a
    worker thread that entered the lab namespace; it never reaches the host's settings.
    """
    with open("/proc/sys/" + key, "w") as fh:
        fh.write(str(value))


def read_sysctl(key: str) -> str:
    with open("/proc/sys/" + key) as fh:
        return fh.read().strip()


def addresses(name: str, family: int = 4) -> list[str]:
    """The addresses of IP version ``family`` namespace ``name`` shows for itself (``ip
    addr``: loopback and, for IPv6, link-local aside)."""

    def read() -> list[str]:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            if family == 6:  # RT_SCOPE_UNIVERSE only: not ::1, not fe80::
                return [m.get_attr("IFA_ADDRESS") for m in ipr.get_addr(family=10) if m["scope"] == 0]
            return [m.get_attr("IFA_ADDRESS") for m in ipr.get_addr(family=2) if m.get_attr("IFA_LABEL") != "lo"]

    return run_in(name, read)
