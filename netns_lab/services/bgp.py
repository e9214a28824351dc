"""The BGP speakers' supervisor: one BIRD per node and one in the router, kept running.

``python -m netns_lab.services.bgp SPEAKERS.json`` starts, for each speaker the file lists
(``name``, ``netns``, ``conf``, ``sock``, ``pid``, ``log``: every path under the lab's state
directory), ``bird -f -c CONF -s SOCK -P PID`` inside its namespace (``ip netns exec``), and
restarts one that dies after a short back-off, as calico-node's runit restarts its BIRD: a
killed BIRD is a failure the lab survives, and its peers see its sessions come back. The
number of restarts per speaker is kept in ``restarts.json`` beside the file.

It says READY once every speaker's control socket answers. The BIRDs inherit the lab's
environment token (:mod:`netns_lab.procs`), so ``clean`` finds them even when this
supervisor was SIGKILLed; SIGTERM stops them with it. Configuration changes do not pass
through here: the lab rewrites a speaker's file and asks that BIRD to reload it
(``birdc configure``), which keeps its sessions up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from netns_lab import atomic
from netns_lab.services.ready import say_ready

BACKOFF = 0.3  # seconds before a dead BIRD is started again
READY_TIMEOUT = 15.0
POKE_S = 0.5


def _start(sp: dict[str, Any], recovery: bool = False) -> subprocess.Popen[bytes]:
    """``recovery``: a restart, with BIRD's graceful-restart recovery (``-R``, as calico-node
    starts its BIRD): the routes the dead BIRD installed stay in the kernel, and its peers'
    copies stay in theirs, until its sessions are back and the tables were exchanged again."""
    for stale in (sp["sock"], sp["pid"]):  # a killed BIRD leaves its socket behind: bind would fail
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    with open(sp["log"], "ab") as log:
        return subprocess.Popen(["ip", "netns", "exec", sp["netns"], "bird", "-f", "-c", sp["conf"], "-s", sp["sock"],
                                 "-P", sp["pid"], *(["-R"] if recovery else [])], stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True)


def answers(sock: str) -> bool:
    """BIRD's control socket greets a client with ``0001 BIRD <version> ready.``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(sock)
            return s.recv(64).startswith(b"0001 ")
    except OSError:
        return False


def supervise(path: str) -> None:
    with open(path) as fh:
        speakers: list[dict[str, Any]] = json.load(fh)["speakers"]
    restarts_path = os.path.join(os.path.dirname(path), "restarts.json")
    restarts = {sp["name"]: 0 for sp in speakers}
    atomic.write(restarts_path, json.dumps(restarts))
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 2
        for child in children.values():
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        sys.exit(0)

    def start(sp: dict[str, Any], recovery: bool) -> None:
        """Start one BIRD and record it with SIGTERM held: a stop never misses a child."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            if not stopping:
                children[sp["name"]] = _start(sp, recovery)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

    signal.signal(signal.SIGTERM, stop)
    for sp in speakers:
        start(sp, recovery=False)
    deadline = time.monotonic() + READY_TIMEOUT
    while not all(answers(sp["sock"]) for sp in speakers):
        dead = [n for n, c in children.items() if c.poll() is not None]
        if dead or time.monotonic() > deadline:
            say_ready(f"FAILED: BIRD of {', '.join(dead) or 'some speaker'} did not start (see {speakers[0]['log']} and the others)")
            stop()
        time.sleep(0.02)
    say_ready()
    by_name = {sp["name"]: sp for sp in speakers}
    last_poke = time.monotonic()
    while True:
        time.sleep(0.05)
        for name, child in list(children.items()):
            if child.poll() is None:
                continue
            time.sleep(BACKOFF)
            start(by_name[name], recovery=True)
            restarts[name] += 1
            atomic.write(restarts_path, json.dumps(restarts))
        if time.monotonic() - last_poke > POKE_S:  # see reconcile.bgp.BgpSpeakers.poke: BIRD 2.0.12 can idle on
            for sp in speakers:                     # a new session's updates until something wakes its loop
                answers(sp["sock"])
            last_poke = time.monotonic()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m netns_lab.services.bgp SPEAKERS.json", file=sys.stderr)
        return 2
    supervise(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
