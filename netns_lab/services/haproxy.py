"""The HAProxy ingress controller pod: real HAProxy (Debian's package) inside the pod's
namespace, in master-worker mode, unprivileged like the nginx controller (services/ingress.py;
the start-up both share is services/controller_pod.py: its own user, ``ip_unprivileged_port_start`` of the pod's
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

import os
import signal
import socket
import subprocess
import sys
import time

from netns_lab import atomic
from netns_lab.controllers.haproxy import ADMIN_SOCKET, CERTS, FAKE, LOGS, MASTER_SOCKET
from netns_lab.services.controller_pod import ControllerPod, own_certificates, workers
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
    pod = ControllerPod("netns_lab.services.haproxy", argv)
    if pod.usage:
        print(pod.usage, file=sys.stderr)
        return 2
    why = pod.enter((LOGS,), lambda uid, gid: fake_pem(pod.run_dir, uid, gid))  # the lab's unprivileged user serves both controllers
    if why is not None:
        print(why, file=sys.stderr)
        return 1
    conf = os.path.join(pod.run_dir, "haproxy.cfg")
    master_cli = os.path.join(pod.run_dir, LOGS, MASTER_SOCKET)
    master = pod.spawn(["haproxy", "-W", "-db", "-S", f"{master_cli},mode,600", "-f", conf], stdout=subprocess.DEVNULL)
    pod.listen((signal.SIGHUP, signal.SIGTERM))
    pod.counters(("reloaded", "refused"))
    if not pod.wait_accepting(master, "haproxy", lambda: _accepting(pod.run_dir), START_TIMEOUT):
        return 1
    say_ready()
    while master.poll() is None:
        if pod.take(signal.SIGTERM):
            return pod.stop(master, signal.SIGUSR1)  # soft stop: finish the connections, then exit
        if pod.take(signal.SIGHUP):
            own_certificates(os.path.join(pod.run_dir, CERTS), pod.uid, pod.gid)
            test = subprocess.run(["haproxy", "-c", "-q", "-f", conf], capture_output=True, text=True, **pod.as_user)
            if test.returncode != 0:
                pod.refuse(f"new configuration refused, keeping the old one: {test.stdout.strip()} {test.stderr.strip()}")
                continue
            before = workers(master.pid)
            master.send_signal(signal.SIGUSR2)
            until = time.monotonic() + 10
            while time.monotonic() < until and not (workers(master.pid) - before):
                time.sleep(0.005)
            while time.monotonic() < until and not _accepting(pod.run_dir):
                time.sleep(0.005)
            if not workers(master.pid) - before:  # no new worker: the lab hears it, not a reload that did not happen
                pod.refuse("haproxy started no new worker within 10 s")
                continue
            pod.bump("reloaded")
        pod.idle(0.01)
    print(f"haproxy exited with {master.returncode}", file=sys.stderr)
    return 1

if __name__ == "__main__":
    sys.exit(main())
