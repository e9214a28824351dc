"""The ingress controller pod: real nginx (Debian's package) inside the pod's namespace.

This small supervisor enters the pod's namespace, creates the default server's self-signed
certificate (ingress-nginx's "Fake Certificate"), starts ``nginx -g 'daemon off;'``, says READY
once nginx accepts connections on port 80, and stays nginx's parent:

* SIGHUP: ``nginx -t`` on the new configuration, then a graceful reload (nginx starts new
  workers with the new configuration; old workers finish the requests they have). When the
  new workers are up it bumps a counter in ``reloaded``, which the lab waits for, so a pod
  is only removed after nginx stopped sending it new requests.
* SIGUSR1: the endpoints changed: POST ``backends.json`` to nginx's configuration endpoint
  (``127.0.0.1:10246/configuration/backends``, the pod's loopback), as ingress-nginx's
  controller does; the Lua balancer uses them from the next request on, without a reload.
  Bumps ``dynamic`` once nginx accepted them. The backends are also posted once nginx
  starts (before READY) and after every reload.
* SIGTERM: nginx's graceful stop (QUIT), then exit.

nginx, master and workers, never runs as root (ingress-nginx's controller image runs as
``www-data`` for the same reason: a configuration bug must not be a root bug). The supervisor
stays root only for what needs it: entering the namespace, allowing unprivileged processes of
*that namespace* to bind ports 80 and 443 (``net.ipv4.ip_unprivileged_port_start``, a
per-namespace sysctl; the host's is never touched), and handing nginx its files. nginx and
``nginx -t`` run as :data:`NGINX_USER`. Layout of the lab's ingress directory (owned by root):

* ``nginx.conf``, ``backends.json``, ``reloaded``, ``dynamic``: written by root (the lab, this
  supervisor); nginx reads the first only;
* ``lua/``: the balancer (services/lua/), copied in by root, readable by nginx;
* ``certs/``: a root directory; each certificate and key in it is given to the nginx user,
  mode 0600, before nginx reads it (at start and before every ``nginx -t``);
* ``logs/`` (pid file, error and access logs) and ``tmp/`` (nginx's temporary files):
  directories of the nginx user, mode 0700, the only places nginx writes.
"""

from __future__ import annotations

import ctypes
import grp
import http.client
import json
import os
import pwd
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from typing import Any

from netns_lab import atomic
from netns_lab.controllers.ingress import BALANCER, CERTS, CONFIG_PORT, FAKE_CERT, LOGS, LUA, TMP
from netns_lab.services import setns
from netns_lab.services.ready import say_ready

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


def _workers(master: int) -> set[int]:
    try:
        with open(f"/proc/{master}/task/{master}/children") as fh:
            return {int(p) for p in fh.read().split()}
    except OSError:
        return set()


def _shutting_down(pid: int) -> bool:
    """An old worker that closed its listening sockets: gone, or titled "... is shutting down"."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"shutting down" in fh.read()
    except OSError:
        return True


def install_lua(run_dir: str) -> None:
    """Copy the Lua balancer into ``lua/`` (root's, readable by nginx): nginx reads it from the
    lab's directory, not from wherever this package was installed (which nginx's user may not
    reach)."""
    lua = os.path.join(run_dir, LUA)
    os.makedirs(lua, mode=0o755, exist_ok=True)
    os.chmod(lua, 0o755)
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lua", f"{BALANCER}.lua")
    with open(src) as fh:
        atomic.write(os.path.join(lua, f"{BALANCER}.lua"), fh.read(), 0o644)


def read_backends(run_dir: str) -> list[dict[str, Any]]:
    try:
        with open(os.path.join(run_dir, "backends.json"), "rb") as fh:
            return list(json.load(fh))
    except FileNotFoundError:
        return []


def union(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Both lists, ``new`` winning by name: what to post before a reload, so that the old
    workers keep the backends their rules name and the new ones find theirs at once."""
    merged = {b["name"]: b for b in old}
    merged.update({b["name"]: b for b in new})
    return list(merged.values())


def post_backends(backends: list[dict[str, Any]], timeout: float = 5.0) -> str | None:
    """POST ``backends`` to nginx's configuration endpoint on the pod's loopback (we are in
    the pod's namespace). Returns None once nginx took them, else why not."""
    body = json.dumps(backends).encode()
    deadline = time.monotonic() + timeout
    why = "not tried"
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", CONFIG_PORT, timeout=2)
        try:
            conn.request("POST", "/configuration/backends", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            text = r.read().decode(errors="replace").strip()
            if r.status == 201:
                return None
            return f"nginx refused the backends: {r.status} {text}"
        except OSError as exc:  # a worker just starting: try again
            why = str(exc)
            time.sleep(0.02)
        finally:
            conn.close()
    return f"nginx's configuration endpoint did not answer: {why}"


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m netns_lab.services.ingress NETNS_PATH RUN_DIR", file=sys.stderr)
        return 2
    netns_path, run_dir = argv
    conf = os.path.join(run_dir, "nginx.conf")
    counter = os.path.join(run_dir, "reloaded")
    dynamic = os.path.join(run_dir, "dynamic")
    uid, gid = nginx_ids()
    try:
        prepare(run_dir, uid, gid)
        install_lua(run_dir)
    except PermissionError as exc:
        print(exc, file=sys.stderr)
        return 1
    started_in = os.stat("/proc/self/ns/net")  # the lab's supervisors start in the host's namespace
    setns.enter(netns_path)
    allow_low_ports(netns_path, started_in)
    # nginx opens its compiled-in error log (/var/log/nginx) before reading the configuration
    # unless -e names one: its own, under logs/.
    base = ["nginx", "-e", os.path.join(run_dir, LOGS, "error.log"), "-c", conf]
    as_nginx: dict[str, Any] = {"user": uid, "group": gid, "extra_groups": [], "umask": 0o077}
    # nginx rewrites its environment area with its process title, so the lab's ownership token
    # cannot be read from it: it dies with this supervisor instead (SIGKILL included). Popen
    # drops the ids before preexec_fn runs, and a change of ids clears the parent-death signal,
    # so it is set there, after the drop.
    libc = ctypes.CDLL(None, use_errno=True)
    nginx = subprocess.Popen([*base, "-g", "daemon off;"], **as_nginx,
                             preexec_fn=lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL))
    reloads = updates = refusals = 0
    pending = {"hup": False, "usr1": False, "term": False}
    signal.signal(signal.SIGHUP, lambda *_: pending.__setitem__("hup", True))
    signal.signal(signal.SIGUSR1, lambda *_: pending.__setitem__("usr1", True))
    signal.signal(signal.SIGTERM, lambda *_: pending.__setitem__("term", True))
    atomic.write(counter, "0")
    atomic.write(dynamic, "0")
    refused = os.path.join(run_dir, "refused")
    atomic.write(refused, "0")
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)  # a signal wakes the loop below at once
    signal.set_wakeup_fd(wake_w)
    deadline = time.monotonic() + 20
    while True:
        if nginx.poll() is not None:
            print(f"nginx exited with {nginx.returncode}", file=sys.stderr)
            return 1
        try:
            socket.create_connection(("127.0.0.1", 80), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                print("nginx does not accept connections on port 80", file=sys.stderr)
                return 1
            time.sleep(0.02)
    posted = read_backends(run_dir)
    why = post_backends(posted)
    if why is not None:
        print(why, file=sys.stderr)
        return 1
    say_ready()
    while nginx.poll() is None:
        if pending["term"]:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx.kill()
            return 0
        if pending["hup"]:
            pending["hup"] = False
            own_certificates(os.path.join(run_dir, CERTS), uid, gid)  # new or rewritten by the lab
            test = subprocess.run([*base, "-t"], capture_output=True, text=True, **as_nginx)
            wanted = read_backends(run_dir)
            if test.returncode != 0:
                print(f"new configuration refused, keeping the old one: {test.stderr.strip()}", file=sys.stderr, flush=True)
                refusals += 1
                atomic.write(refused, str(refusals))
                continue
            why = post_backends(union(posted, wanted))  # shared by old and new workers: both find theirs
            if why is None:
                before = _workers(nginx.pid)
                nginx.send_signal(signal.SIGHUP)
                until = time.monotonic() + 5
                while time.monotonic() < until and not (_workers(nginx.pid) - before):
                    time.sleep(0.01)
                # and the old workers have stopped accepting (they close their listening
                # sockets as they start shutting down): from now on every new connection
                # meets the new configuration
                while time.monotonic() < until and not all(_shutting_down(pid) for pid in before):
                    time.sleep(0.01)
                why = post_backends(wanted)  # the old workers are done choosing: the backends of now only
            if why is not None:  # the lab waits for the counters and reports the refusal
                print(why, file=sys.stderr, flush=True)
                refusals += 1
                atomic.write(refused, str(refusals))
                continue
            posted = wanted
            reloads += 1
            atomic.write(counter, str(reloads))
        if pending["usr1"]:
            pending["usr1"] = False
            wanted = read_backends(run_dir)
            why = post_backends(wanted)
            if why is not None:
                print(why, file=sys.stderr, flush=True)
                refusals += 1
                atomic.write(refused, str(refusals))
            else:
                posted = wanted
                updates += 1
                atomic.write(dynamic, str(updates))
        if not any(pending.values()) and select.select([wake_r], [], [], 0.5)[0]:
            while True:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    break
    print(f"nginx exited with {nginx.returncode}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
