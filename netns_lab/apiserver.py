"""The lab's API server: one long-lived process per running lab that keeps the lab's objects
and its reconcilers (what each knows the kernel holds) in memory, and makes every change the
command line asks for, one at a time.

Why a process: a command that changes the lab on its own must first read every recorded
object and learn what the kernel holds (render every node's rules again): at 10,000
Services that is seconds, for a change that costs milliseconds. kube-apiserver and
kube-proxy are long-lived for the same reason. The change itself still goes through
``Lab.change`` (the lock, the record, the reconcilers), so an in-process ``Lab`` (tests,
``run-scenario``) and this server may change one lab in turn: whichever comes second sees
the record moved on and starts again from it.

It is started by the first change from the command line (:mod:`netns_lab.apiclient`),
recorded in the lab's ownership record like the lab's other servers (``down`` stops it by
PID, ``clean`` finds it by the lab's token), and listens on ``api.sock`` in the lab's
working directory: a unix socket that only root may open, and whose peer must be root too.
It touches no network namespace of its own: the host's stays as it is.

Protocol: the client sends one JSON request and shuts down its writing side; the server
answers one JSON object ``{"rc": EXIT_CODE, "out": STDOUT, "err": STDERR}`` (exactly what
the command would have printed) and closes the connection.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import struct
import sys
import time
import traceback
from typing import Any

from netns_lab import state
from netns_lab.errors import BusyError, LabError, ScenarioError
from netns_lab.faults import ENV as FAULT_ENV

SOCKET = "api.sock"
LOG = "apiserver.log"
ROLE = "apiserver"
MAX_REQUEST = 64 * 1024 * 1024  # JSON of a few files, each within the 4 MiB a scenario may read
IDLE_CHECK = 1.0  # seconds between looks at the record while nobody asks anything: is the lab up, is a pod's grace over
MAX_BACKOFF = 60.0  # seconds: the longest wait before trying a failed expiry again
REQUEST_TIMEOUT = 30.0  # seconds a client may take to send its request


def socket_path(workdir: str) -> str:
    return os.path.join(workdir, SOCKET)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _read_request(conn: socket.socket) -> dict[str, Any]:
    conn.settimeout(REQUEST_TIMEOUT)  # a client that stalls does not hold the lab's one server
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = conn.recv(1 << 20)
        except TimeoutError:
            raise ScenarioError("request", "", f"Incomplete: nothing more came for {REQUEST_TIMEOUT:.0f} s") from None
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_REQUEST:
            raise ScenarioError("request", "", f"Too long: more than {MAX_REQUEST} bytes")
        chunks.append(chunk)
    conn.settimeout(None)
    try:
        request = json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as exc:
        raise ScenarioError("request", "", f"Invalid value: not JSON ({type(exc).__name__})") from None
    if not isinstance(request, dict):
        raise ScenarioError("request", "", "Invalid type: expected a JSON object")
    return request


@contextlib.contextmanager
def _fault_point(step: object) -> Any:
    """Tests name a fault point (faults.py) in the request: this request, and only this one,
    dies there, as a command making the change itself would."""
    if not isinstance(step, str) or not step.isprintable():
        yield
        return
    os.environ[FAULT_ENV] = step
    try:
        yield
    finally:
        os.environ.pop(FAULT_ENV, None)


class Server:
    """One lab's API server (see the module's docstring)."""

    def __init__(self, lab_name: str, instance: str) -> None:
        self.name = lab_name
        self.instance = instance  # the lab's token when we started: another `up` of the name is another lab
        self.lab: Any = None  # netns_lab.lab.Lab, read on the first request (and again after a failure)
        self.backoff = 0.0  # seconds between tries of a grace-period expiry that failed
        self.retry_at = 0.0

    def warm(self) -> None:
        """Read the lab and learn what the kernel holds, under the lab's lock (the process that
        started us held it until we were in the record, so we read a record that lists us)."""
        from netns_lab.lab import CHANGE_LOCK_WAIT, Lab

        lock = state.acquire(self.name, wait=CHANGE_LOCK_WAIT)
        if lock is None:
            raise state.busy_error(self.name, "being changed, built or removed")
        try:
            lab = Lab.attach(self.name)
            assert lab.state is not None
            if lab.state.instance != self.instance:
                raise LabError(f"lab {self.name} is not up any more (see `invoke status`)")
            _ = lab.reconcilers
            self.lab = lab
        finally:
            lock.release()

    def tick(self) -> bool:
        """Between requests: False once the lab is gone (the server stops); otherwise removes
        the terminating pods whose grace period is over (the record names the first deadline)."""
        st = state.load(self.name)
        if st is None or st.phase != "up" or st.instance != self.instance:
            return False
        now = time.time()
        if st.next_deletion and st.next_deletion <= now and now >= self.retry_at:
            self.expire()
        return True

    def expire(self) -> None:
        """Remove the terminating pods whose grace period is over: one change, as the kubelet
        and the API server do once the pod's process has gone. The lab busy with another
        change: tried again a second later; any other failure is logged and tried again
        later and later (up to a minute apart), so a lab that cannot change does not fill the
        log once a second."""
        from netns_lab.scenario.admission import Expire

        try:
            if self.lab is None:
                self.warm()
            self.lab.change([Expire(time.time())], why="grace periods over")
            self.backoff = 0.0
        except BusyError:
            pass
        except Exception:  # noqa: BLE001 - logged; the server goes on serving requests
            traceback.print_exc(file=sys.__stderr__)
            self.lab = None
            self.backoff = min(max(2 * self.backoff, IDLE_CHECK), MAX_BACKOFF)
            self.retry_at = time.time() + self.backoff

    def execute(self, request: dict[str, Any]) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of one request, as the command line would print them.
        After anything but success or a refusal, the lab is read again on the next request:
        a change that failed half way may have left this copy ahead of the record."""
        from netns_lab.cli import EXIT_BUILD, EXIT_INVALID, EXIT_OK, guarded
        from netns_lab.scenario import verbs

        verb = request.get("verb")
        out, err = io.StringIO(), io.StringIO()

        def run() -> int:
            actions = verbs.actions(request)
            if self.lab is None:
                self.warm()
            events = self.lab.reconcile() if verb == "reconcile" else self.lab.change(actions) or ["unchanged"]
            for e in events:
                print(e, file=out)
            return EXIT_OK

        with contextlib.redirect_stderr(err), _fault_point(request.get("fault")):
            try:
                rc = guarded(run, verb if verb in verbs.VERBS else "request")()
            except Exception as exc:  # a bug: said in one line, the traceback in our log, and we go on
                traceback.print_exc(file=sys.__stderr__)
                print(f"error: {verb}: internal error ({type(exc).__name__}: {exc}); see {LOG} in the lab's state directory",
                      file=err)
                rc = EXIT_BUILD
        if rc not in (EXIT_OK, EXIT_INVALID):
            self.lab = None
        return rc, out.getvalue(), err.getvalue()

    def handle(self, conn: socket.socket) -> None:
        from netns_lab.cli import EXIT_INVALID

        if _peer_uid(conn) != os.geteuid():
            return
        try:
            request = _read_request(conn)
        except ScenarioError as exc:
            reply: tuple[int, str, str] = (EXIT_INVALID, "", f"error: {exc}\n")
        else:
            reply = self.execute(request)
        rc, out, err = reply
        conn.sendall(json.dumps({"rc": rc, "out": out, "err": err}, ensure_ascii=False).encode())

    def serve(self, sock: socket.socket) -> None:
        sock.settimeout(IDLE_CHECK)
        while True:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                if not self.tick():
                    return
                continue
            with conn:
                try:
                    self.handle(conn)
                except OSError:  # the client went away: its change is made all the same
                    pass
            if not self.tick():
                return


def listen(path: str) -> socket.socket:
    """A unix socket at ``path`` that only root may connect to (a stale one, left by a killed
    server of this lab, is replaced)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


def main(argv: list[str]) -> int:
    from netns_lab.services.ready import say_ready

    if len(argv) != 1:
        print("usage: python -m netns_lab.apiserver LAB", file=sys.stderr)
        return 2
    name = state.check_name(argv[0], "apiserver")
    st = state.load(name)
    if st is None or st.phase != "up":
        print(f"lab {name} is not up", file=sys.stderr)
        return 1
    os.chdir("/")  # files come as text in the requests: nothing here reads a path relative to a user's directory
    sock = listen(socket_path(st.workdir))
    say_ready()  # bound: a request waits in the backlog until we serve
    Server(name, st.instance).serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
