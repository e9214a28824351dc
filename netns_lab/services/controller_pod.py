"""What the two ingress controller supervisors (nginx: services/ingress.py, HAProxy:
services/haproxy.py) do the same way, kept in one place so they cannot drift apart:

* start-up: the arguments, the unprivileged user's directories and certificates, entering
  the pod's namespace, low ports for that user in that namespace only;
* the controller runs as that user and dies with its supervisor (SIGKILL included): the
  parent-death signal is set after Popen drops the ids, since a change of ids clears it;
* the counters the lab waits for (``reloaded``, ``refused``, ...), one file each, written
  atomically; a refusal is printed to the log and counted, never silent;
* signals only set flags (the main loop acts on them), and wake the loop at once;
* the wait for the controller to accept connections, and the stop.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from netns_lab import atomic
from netns_lab.services import setns
from netns_lab.controllers.ingress import CERTS, FAKE_CERT, LOGS, TMP

PR_SET_PDEATHSIG = 1
# nginx's own unprivileged user, as ingress-nginx runs as its own uid 101: labs/provision.sh
# creates it (a system user with no home and no shell), so no other nobody process can read the
# lab's TLS keys or write its logs. Without it (a machine set up by hand): nobody/nogroup.
NGINX_USER = "netns-lab"
FALLBACK_USER, FALLBACK_GROUP = "nobody", "nogroup"  # Debian's unprivileged ids; 65534 where absent
UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


def nginx_ids() -> tuple[int, int]:
    """uid and gid nginx runs as: :data:`NGINX_USER` and its group, else ``nobody``/``nogroup``
    (the overflow ids, 65534, on a system that lacks them); never 0."""
    try:
        pw = pwd.getpwnam(NGINX_USER)
        uid, gid = pw.pw_uid, pw.pw_gid
    except KeyError:
        try:
            uid = pwd.getpwnam(FALLBACK_USER).pw_uid
        except KeyError:
            uid = 65534
        try:
            gid = grp.getgrnam(FALLBACK_GROUP).gr_gid
        except KeyError:
            gid = 65534
    if uid == 0 or gid == 0:
        raise RuntimeError(f"nginx's user resolves to root (uid {uid}, gid {gid}); refusing to run nginx with it")
    return uid, gid


def workers(master: int) -> set[int]:
    try:
        with open(f"/proc/{master}/task/{master}/children") as fh:
            return {int(p) for p in fh.read().split()}
    except OSError:
        return set()


def fake_certificate(certs: str) -> None:
    crt, key = (os.path.join(certs, f"{FAKE_CERT}.{ext}") for ext in ("crt", "key"))
    if not os.path.exists(crt):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-keyout", key, "-out", crt,
                        "-subj", "/O=Acme Co/CN=Kubernetes Ingress Controller Fake Certificate"], check=True, capture_output=True)


def prepare(run_dir: str, uid: int, gid: int, subs: tuple[str, ...] = (LOGS, TMP)) -> None:
    """Directories nginx may write (``logs/``, ``tmp/``: its own, 0700, created afresh when
    they are not) and the certificates it reads (its own, 0600). The ingress directory and
    ``certs/`` stay root's, so nginx cannot replace a file that root writes later; the lab's
    directories above it only need to be searchable."""
    lab_dirs = (run_dir, os.path.dirname(run_dir), os.path.dirname(os.path.dirname(run_dir)))  # ingress/, <lab>/, the state dir
    for d in lab_dirs:
        mode = os.stat(d).st_mode
        if mode & 0o011 != 0o011:  # a restrictive umask made them 0700: nginx could not reach its files
            os.chmod(d, stat.S_IMODE(mode) | 0o011)
    d = os.path.dirname(lab_dirs[-1])
    while True:  # the directories above are not the lab's to change: say which one is in the way
        st = os.stat(d)
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH
        if not st.st_mode & bit:
            raise PermissionError(f"nginx runs as uid {uid} and cannot reach {run_dir}: {d} is mode "
                                  f"{stat.S_IMODE(st.st_mode):04o}; put the lab's state directory (NETNS_LAB_STATE_DIR) elsewhere")
        if d == os.path.dirname(d):
            break
        d = os.path.dirname(d)
    for sub in subs:
        path = os.path.join(run_dir, sub)
        st = os.lstat(path) if os.path.lexists(path) else None
        if st is not None and (not stat.S_ISDIR(st.st_mode) or st.st_uid != uid):
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)  # symlink-safe (fd-based) on Linux
            else:
                os.unlink(path)
            st = None
        if st is None:
            os.mkdir(path, 0o700)
            os.chown(path, uid, gid, follow_symlinks=False)
    certs = os.path.join(run_dir, CERTS)
    os.makedirs(certs, mode=0o755, exist_ok=True)
    fake_certificate(certs)
    own_certificates(certs, uid, gid)


def own_certificates(certs: str, uid: int, gid: int) -> None:
    """Give every certificate and key in ``certs/`` to the nginx user, readable by it alone.
    ``certs/`` is root's: nothing in it can be a link planted by nginx, and O_NOFOLLOW holds anyway."""
    for entry in os.scandir(certs):
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue  # atomic.write's hidden temporary files, anything odd
        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)


def allow_low_ports(netns_path: str, started_in: os.stat_result) -> None:
    """``net.ipv4.ip_unprivileged_port_start = 0`` in the pod's namespace (it covers IPv6
    too), so the unprivileged nginx binds 80 and 443. /proc/sys/net is the namespace of the
    process that opens it: this runs after setns, and checks it is not in the host's."""
    here, there = os.stat("/proc/self/ns/net"), os.stat(netns_path)
    if (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino):
        raise RuntimeError(f"not in {netns_path}: refusing to change a sysctl of another network namespace")
    if (here.st_dev, here.st_ino) == (started_in.st_dev, started_in.st_ino):  # e.g. the host's path passed in
        raise RuntimeError(f"{netns_path} is the namespace this process started in: refusing to change its sysctl")
    with open(UNPRIVILEGED_PORT_START, "w") as fh:
        fh.write("0")


class ControllerPod:
    """One supervisor's state: its run directory, the controller's user, counters, signal flags."""

    def __init__(self, module: str, argv: list[str] | None) -> None:
        args = sys.argv[1:] if argv is None else argv
        self.usage = None if len(args) == 2 else f"usage: python -m {module} NETNS_PATH RUN_DIR"
        self.netns_path, self.run_dir = args if len(args) == 2 else ("", "")
        self.counts: dict[str, int] = {}
        self.pending: dict[int, bool] = {}
        self._wake: int | None = None

    def enter(self, subs: tuple[str, ...] | None, extra: Callable[[int, int], None] = lambda uid, gid: None) -> str | None:
        """Prepare the user's directories (``subs``, or prepare's default) and ``extra`` files,
        then enter the pod's namespace and let the user bind low ports there. Returns why the
        user cannot reach the run directory, or None."""
        self.uid, self.gid = nginx_ids()
        try:
            prepare(self.run_dir, self.uid, self.gid, **({} if subs is None else {"subs": subs}))
            extra(self.uid, self.gid)
        except PermissionError as exc:
            return str(exc)
        started_in = os.stat("/proc/self/ns/net")  # the lab's supervisors start in the host's namespace
        setns.enter(self.netns_path)
        allow_low_ports(self.netns_path, started_in)
        return None

    @property
    def as_user(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "umask": 0o077}

    def spawn(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        libc = ctypes.CDLL(None, use_errno=True)
        return subprocess.Popen(cmd, **self.as_user, **kwargs,
                                preexec_fn=lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL))

    def counters(self, names: Iterable[str]) -> None:
        for name in names:
            self.counts[name] = 0
            atomic.write(os.path.join(self.run_dir, name), "0")

    def bump(self, name: str) -> None:
        self.counts[name] += 1
        atomic.write(os.path.join(self.run_dir, name), str(self.counts[name]))

    def refuse(self, why: str) -> None:
        """The controller kept what it had: say why in the log, and count it for the lab."""
        print(why, file=sys.stderr, flush=True)
        self.bump("refused")

    def listen(self, signals: Iterable[int], wake: bool = False) -> None:
        """Signals set flags; with ``wake``, they also end :meth:`idle` at once."""
        for sig in signals:
            self.pending[sig] = False
            signal.signal(sig, lambda s, _frame: self.pending.__setitem__(s, True))
        if wake:
            wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            signal.set_wakeup_fd(wake_w)
            self._wake = wake_r

    def take(self, sig: int) -> bool:
        """Whether ``sig`` came since the last take (and forget it)."""
        came, self.pending[sig] = self.pending[sig], False
        return came

    def idle(self, seconds: float) -> None:
        """Sleep until a signal comes or ``seconds`` pass."""
        if self._wake is None:
            time.sleep(seconds)
        elif not any(self.pending.values()) and select.select([self._wake], [], [], seconds)[0]:
            while True:
                try:
                    os.read(self._wake, 512)
                except BlockingIOError:
                    break

    @staticmethod
    def wait_accepting(proc: subprocess.Popen[bytes], name: str, accepting: Callable[[], bool], timeout: float) -> bool:
        """Until the controller accepts connections (True), or it exits or ``timeout`` passes:
        then say so on stderr (False)."""
        deadline = time.monotonic() + timeout
        while not accepting():
            if proc.poll() is not None:
                print(f"{name} exited with {proc.returncode}", file=sys.stderr)
                return False
            if time.monotonic() > deadline:
                print(f"{name} does not accept connections on port 80", file=sys.stderr)
                return False
            time.sleep(0.02)
        return True

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], sig: int) -> int:
        """A graceful stop (``sig``: the controller's own), a kill after 10 s."""
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0
