"""The HAProxy ingress controller pod: real HAProxy (Debian's package) inside the pod's
namespace, in master-worker mode, unprivileged like the nginx controller (services/ingress.py,
whose preparation it shares: its own user, ``ip_unprivileged_port_start`` of the pod's
namespace only, certificates given to that user, mode 0600).

This supervisor enters the namespace, starts ``haproxy -W -db -f haproxy.cfg`` (the master
stays its child), says READY once HAProxy accepts on port 80 and its runtime API socket
exists, and then (the master's CLI, ``logs/master.sock``, is where the lab sends runtime
commands, ``@1`` addressing the current worker):

* SIGHUP: ``haproxy -c`` on the new configuration, then a seamless reload: SIGUSR2 to the
  master, which starts a new worker with the new configuration; the listening sockets pass
  to it through the runtime API socket (``expose-fd listeners``), so no connection is
  refused meanwhile, and the old worker finishes what it has. Bumps ``reloaded`` once the
  new worker runs.
* SIGTERM: a soft stop (SIGUSR1 to the master), then exit.

Endpoint changes never come here: the lab sends them to the runtime API socket itself
(``set server ... addr ... port ...``, ``state ready|maint``), as haproxy-ingress does.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from netns_lab import atomic
from netns_lab.controllers.haproxy import ADMIN_SOCKET, CERTS, FAKE, LOGS, MASTER_SOCKET
from netns_lab.services import setns
from netns_lab.services.ingress import PR_SET_PDEATHSIG, _workers, allow_low_ports, nginx_ids, own_certificates, prepare
from netns_lab.services.ready import say_ready

START_TIMEOUT = 20.0


def fake_pem(run_dir: str, uid: int, gid: int) -> None:
    """HAProxy reads a certificate and its key from one file: the fake certificate's, joined."""
    certs = os.path.join(run_dir, CERTS)
    parts = []
    for ext in ("crt", "key"):
        with open(os.path.join(certs, f"{FAKE}.{ext}")) as fh:
            parts.append(fh.read().strip() + "\n")
    atomic.write(os.path.join(certs, f"{FAKE}.pem"), "".join(parts), 0o600)
    own_certificates(certs, uid, gid)


def _accepting(run_dir: str) -> bool:
    try:
        socket.create_connection(("127.0.0.1", 80), timeout=0.2).close()
    except OSError:
        return False
    return all(os.path.exists(os.path.join(run_dir, LOGS, f)) for f in (ADMIN_SOCKET, MASTER_SOCKET))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m netns_lab.services.haproxy NETNS_PATH RUN_DIR", file=sys.stderr)
        return 2
    netns_path, run_dir = argv
    conf = os.path.join(run_dir, "haproxy.cfg")
    counter = os.path.join(run_dir, "reloaded")
    refused = os.path.join(run_dir, "refused")
    uid, gid = nginx_ids()  # the lab's unprivileged user serves both controllers
    try:
        prepare(run_dir, uid, gid, subs=(LOGS,))
        fake_pem(run_dir, uid, gid)
    except PermissionError as exc:
        print(exc, file=sys.stderr)
        return 1
    started_in = os.stat("/proc/self/ns/net")
    setns.enter(netns_path)
    allow_low_ports(netns_path, started_in)
    as_user: dict[str, Any] = {"user": uid, "group": gid, "extra_groups": [], "umask": 0o077}
    libc = ctypes.CDLL(None, use_errno=True)
    master_cli = os.path.join(run_dir, LOGS, MASTER_SOCKET)
    master = subprocess.Popen(["haproxy", "-W", "-db", "-S", f"{master_cli},mode,600", "-f", conf], **as_user, stdout=subprocess.DEVNULL,
                              preexec_fn=lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL))
    reloads = refusals = 0
    pending = {"hup": False, "term": False}
    signal.signal(signal.SIGHUP, lambda *_: pending.__setitem__("hup", True))
    signal.signal(signal.SIGTERM, lambda *_: pending.__setitem__("term", True))
    atomic.write(counter, "0")
    atomic.write(refused, "0")
    deadline = time.monotonic() + START_TIMEOUT
    while not _accepting(run_dir):
        if master.poll() is not None:
            print(f"haproxy exited with {master.returncode}", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            print("haproxy does not accept connections on port 80", file=sys.stderr)
            return 1
        time.sleep(0.02)
    say_ready()
    while master.poll() is None:
        if pending["term"]:
            master.send_signal(signal.SIGUSR1)  # soft stop: finish the connections, then exit
            try:
                master.wait(timeout=10)
            except subprocess.TimeoutExpired:
                master.kill()
            return 0
        if pending["hup"]:
            pending["hup"] = False
            own_certificates(os.path.join(run_dir, CERTS), uid, gid)
            test = subprocess.run(["haproxy", "-c", "-q", "-f", conf], capture_output=True, text=True, **as_user)
            if test.returncode != 0:
                print(f"new configuration refused, keeping the old one: {test.stdout.strip()} {test.stderr.strip()}",
                      file=sys.stderr, flush=True)
                refusals += 1
                atomic.write(refused, str(refusals))
                continue
            before = _workers(master.pid)
            master.send_signal(signal.SIGUSR2)
            until = time.monotonic() + 10
            while time.monotonic() < until and not (_workers(master.pid) - before):
                time.sleep(0.005)
            while time.monotonic() < until and not _accepting(run_dir):
                time.sleep(0.005)
            if not _workers(master.pid) - before:  # no new worker: the lab hears it, not a reload that did not happen
                print("haproxy started no new worker within 10 s", file=sys.stderr, flush=True)
                refusals += 1
                atomic.write(refused, str(refusals))
                continue
            reloads += 1
            atomic.write(counter, str(reloads))
        time.sleep(0.01)
    print(f"haproxy exited with {master.returncode}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
