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
``nginx -t`` run as :data:`netns_lab.services.controller_pod.NGINX_USER`. Layout of the lab's ingress directory (owned by root):

* ``nginx.conf``, ``backends.json``, ``reloaded``, ``dynamic``: written by root (the lab, this
  supervisor); nginx reads the first only;
* ``lua/``: the balancer (services/lua/), copied in by root, readable by nginx;
* ``certs/``: a root directory; each certificate and key in it is given to the nginx user,
  mode 0600, before nginx reads it (at start and before every ``nginx -t``);
* ``logs/`` (pid file, error and access logs) and ``tmp/`` (nginx's temporary files):
  directories of the nginx user, mode 0700, the only places nginx writes.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from netns_lab import atomic
from netns_lab.controllers.ingress import BALANCER, CERTS, CONFIG_PORT, LOGS, LUA
from netns_lab.services.controller_pod import ControllerPod, own_certificates, workers
from netns_lab.services.ready import say_ready

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


def main(argv: list[str] | None = None) -> int:
    pod = ControllerPod("netns_lab.services.ingress", argv)
    if pod.usage:
        print(pod.usage, file=sys.stderr)
        return 2
    why = pod.enter(None, lambda uid, gid: install_lua(pod.run_dir))
    if why is not None:
        print(why, file=sys.stderr)
        return 1
    conf = os.path.join(pod.run_dir, "nginx.conf")
    # nginx opens its compiled-in error log (/var/log/nginx) before reading the configuration
    # unless -e names one: its own, under logs/.
    base = ["nginx", "-e", os.path.join(pod.run_dir, LOGS, "error.log"), "-c", conf]
    # nginx rewrites its environment area with its process title, so the lab's ownership token
    # cannot be read from it: it dies with this supervisor instead (SIGKILL included).
    nginx = pod.spawn([*base, "-g", "daemon off;"])
    pod.listen((signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM), wake=True)
    pod.counters(("reloaded", "dynamic", "refused"))

    def accepting() -> bool:
        try:
            socket.create_connection(("127.0.0.1", 80), timeout=0.2).close()
        except OSError:
            return False
        return True

    if not pod.wait_accepting(nginx, "nginx", accepting, 20):
        return 1
    posted = read_backends(pod.run_dir)
    why = post_backends(posted)
    if why is not None:
        print(why, file=sys.stderr)
        return 1
    say_ready()
    while nginx.poll() is None:
        if pod.take(signal.SIGTERM):
            return pod.stop(nginx, signal.SIGQUIT)
        if pod.take(signal.SIGHUP):
            own_certificates(os.path.join(pod.run_dir, CERTS), pod.uid, pod.gid)  # new or rewritten by the lab
            test = subprocess.run([*base, "-t"], capture_output=True, text=True, **pod.as_user)
            wanted = read_backends(pod.run_dir)
            if test.returncode != 0:
                pod.refuse(f"new configuration refused, keeping the old one: {test.stderr.strip()}")
                continue
            why = post_backends(union(posted, wanted))  # shared by old and new workers: both find theirs
            if why is None:
                before = workers(nginx.pid)
                nginx.send_signal(signal.SIGHUP)
                until = time.monotonic() + 5
                while time.monotonic() < until and not (workers(nginx.pid) - before):
                    time.sleep(0.01)
                # and the old workers have stopped accepting (they close their listening
                # sockets as they start shutting down): from now on every new connection
                # meets the new configuration
                while time.monotonic() < until and not all(_shutting_down(pid) for pid in before):
                    time.sleep(0.01)
                why = post_backends(wanted)  # the old workers are done choosing: the backends of now only
            if why is not None:  # the lab waits for the counters and reports the refusal
                pod.refuse(why)
                continue
            posted = wanted
            pod.bump("reloaded")
        if pod.take(signal.SIGUSR1):
            wanted = read_backends(pod.run_dir)
            why = post_backends(wanted)
            if why is not None:
                pod.refuse(why)
            else:
                posted = wanted
                pod.bump("dynamic")
        pod.idle(0.5)
    print(f"nginx exited with {nginx.returncode}", file=sys.stderr)
    return 1

if __name__ == "__main__":
    sys.exit(main())
