"""The ingress controller pod: real nginx (Debian's package) inside the pod's namespace.

This small supervisor enters the pod's namespace, creates the default server's self-signed
certificate (ingress-nginx's "Fake Certificate"), starts ``nginx -g 'daemon off;'``, says READY
once nginx accepts connections on port 80, and stays nginx's parent:

* SIGHUP: ``nginx -t`` on the new configuration, then a graceful reload (nginx starts new
  workers with the new configuration; old workers finish the requests they have). When the
  new workers are up it bumps a counter in ``reloaded``, which the lab waits for, so a pod
  is only removed after nginx stopped sending it new requests.
* SIGTERM: nginx's graceful stop (QUIT), then exit.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

from netns_lab import atomic
from netns_lab.services import setns
from netns_lab.services.ready import say_ready

PR_SET_PDEATHSIG = 1




def _workers(master: int) -> set[int]:
    try:
        with open(f"/proc/{master}/task/{master}/children") as fh:
            return {int(p) for p in fh.read().split()}
    except OSError:
        return set()


def fake_certificate(certs: str) -> None:
    crt, key = os.path.join(certs, "default-fake.crt"), os.path.join(certs, "default-fake.key")
    if not os.path.exists(crt):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-keyout", key, "-out", crt,
                        "-subj", "/O=Acme Co/CN=Kubernetes Ingress Controller Fake Certificate"], check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m netns_lab.services.ingress NETNS_PATH RUN_DIR", file=sys.stderr)
        return 2
    netns_path, run_dir = argv
    conf = os.path.join(run_dir, "nginx.conf")
    counter = os.path.join(run_dir, "reloaded")
    for sub in ("certs", "tmp"):
        os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
    fake_certificate(os.path.join(run_dir, "certs"))
    setns.enter(netns_path)
    # nginx rewrites its environment area with its process title, so the lab's ownership token
    # cannot be read from it: it dies with this supervisor instead (SIGKILL included).
    libc = ctypes.CDLL(None, use_errno=True)
    nginx = subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"],
                             preexec_fn=lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL))
    reloads = 0
    pending = {"hup": False, "term": False}
    signal.signal(signal.SIGHUP, lambda *_: pending.__setitem__("hup", True))
    signal.signal(signal.SIGTERM, lambda *_: pending.__setitem__("term", True))
    atomic.write(counter, "0")
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
            test = subprocess.run(["nginx", "-t", "-c", conf], capture_output=True, text=True)
            if test.returncode != 0:
                print(f"new configuration refused, keeping the old one: {test.stderr.strip()}", file=sys.stderr, flush=True)
            else:
                before = _workers(nginx.pid)
                nginx.send_signal(signal.SIGHUP)
                until = time.monotonic() + 5
                while time.monotonic() < until and not (_workers(nginx.pid) - before):
                    time.sleep(0.01)
            reloads += 1
            atomic.write(counter, str(reloads))
        time.sleep(0.02)
    print(f"nginx exited with {nginx.returncode}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
