"""The command line's side of a change to a running lab: send the request to the lab's API
server (:mod:`netns_lab.apiserver`), starting it first if the lab has none, and hand back
what it answered.

Starting happens under the lab's lock, so two commands never start two servers, and the
server is in the lab's ownership record before the lock is let go (a server that died, or
that stopped answering, is stopped by PID and replaced).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from netns_lab import procs, state
from netns_lab.apiserver import LOG, MAX_REQUEST, ROLE, socket_path
from netns_lab.errors import LabError, ScenarioError
from netns_lab.faults import ENV as FAULT_ENV

START_TIMEOUT = 600.0  # the server says READY once bound, before it reads the lab


def _record(lab: str) -> state.LabState:
    st = state.load(lab)
    if st is None or st.phase != "up":
        raise LabError(f"lab {lab!r} is not up (see `invoke status`)")
    return st


def _connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    return sock


def start(lab: str) -> None:
    """Start the lab's API server unless one answers already (another command started it)."""
    from netns_lab.lab import CHANGE_LOCK_WAIT

    lock = state.acquire(lab, wait=CHANGE_LOCK_WAIT)
    if lock is None:
        raise state.busy_error(lab, "being changed, built or removed")
    try:
        st = _record(lab)
        probe = _connect(socket_path(st.workdir))
        if probe is not None:
            probe.close()
            return
        for p in st.processes:  # recorded but not answering: ours (by token) or nothing
            if p["role"] == ROLE:
                procs.stop(p["pid"], st.instance)
        st.processes = [p for p in st.processes if p["role"] != ROLE]
        log = os.path.join(st.workdir, LOG)
        proc = procs.spawn([sys.executable, "-m", "netns_lab.apiserver", lab], lab, st.instance, log)
        st.processes.append({"role": ROLE, "pid": proc.pid, "start": procs.start_time(proc.pid)})
        st.generation += 1  # whoever holds an older copy of the record reads it again before saving it
        st.save()
        why = procs.wait_ready(proc, log, START_TIMEOUT)
        if why is not None:
            raise LabError(f"lab {lab}: its API server did not start: {why}")
    finally:
        lock.release()


def call(lab: str, request: dict[str, Any]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``request`` made by ``lab``'s API server."""
    st = _record(lab)
    path = socket_path(st.workdir)
    fault = os.environ.get(FAULT_ENV)
    data = json.dumps({**request, "fault": fault} if fault else request, ensure_ascii=False).encode()
    if len(data) > MAX_REQUEST:
        raise ScenarioError(request["verb"], "", f"Too long: the request is {len(data)} bytes, the limit is {MAX_REQUEST} bytes")
    sock = _connect(path)
    if sock is None:
        start(lab)
        sock = _connect(path)
        if sock is None:
            raise LabError(f"lab {lab}: its API server does not answer on {path} (its log: {os.path.join(st.workdir, LOG)})")
    chunks: list[bytes] = []
    with sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(1 << 20):
                chunks.append(chunk)
        except (BrokenPipeError, ConnectionResetError):
            chunks = []
        except KeyboardInterrupt:
            print(f"the lab's API server goes on with the change: `invoke events {lab}` says what it did", file=sys.stderr)
            raise
    try:
        reply = json.loads(b"".join(chunks))
        return int(reply["rc"]), str(reply["out"]), str(reply["err"])
    except (ValueError, KeyError, TypeError):
        raise _no_answer(lab, st) from None


def _no_answer(lab: str, before: state.LabState) -> LabError:
    """What to tell a user whose change got no answer (the server was killed, or died): what
    the record says now, and the end of the server's log."""
    log = os.path.join(before.workdir, LOG)
    try:
        with open(log, errors="replace") as fh:
            tail = fh.read()[-300:].strip().splitlines()
    except OSError:
        tail = []
    why = f" (its log: {log}{': ' + tail[-1] if tail else ''})"
    now = state.load(lab)
    if now is None or now.phase != "up" or now.instance != before.instance:
        return LabError(f"lab {lab} is not up any more (see `invoke status`)")
    if now.pending:
        return LabError(f"lab {lab}: its API server stopped before it answered{why}; the change is recorded and unfinished: "
                        f"`invoke reconcile {lab}` (or the next change) finishes it")
    return LabError(f"lab {lab}: its API server stopped before it answered{why}; nothing is pending: "
                    f"`invoke events {lab}` says whether the change was made")
