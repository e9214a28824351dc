"""Many TCP/UDP/HTTP probes at once, each from its own source namespace.

A socket belongs to the namespace it was created in, so one worker thread enters each
source namespace only to create that probe's socket, then drives every socket from one
``epoll`` loop. That is how a 100-pod matrix (9,900 connections) runs in seconds.
"""

from __future__ import annotations

import errno
import json

import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from netns_lab.realize.hostinfo import sctp_available
from netns_lab.realize.netns import NetnsThread, in_thread

UDP_RETRY = 0.5
_ERRNO_RESULT = {
    errno.ECONNREFUSED: "refused",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
    errno.ETIMEDOUT: "timeout",
}


@dataclass(frozen=True)
class Probe:
    src_netns: str
    dst: str
    port: int
    protocol: str = "tcp"  # tcp | udp | sctp | http
    path: str = "/netexec"  # for http


@dataclass(frozen=True)
class ProbeResult:
    probe: Probe
    result: str  # ok | refused | timeout | unreachable | failed
    served_by: str | None = None
    client_ip: str | None = None
    client_port: int | None = None
    detail: str = ""
    elapsed: float = 0.0
    status: int | None = None  # HTTP status
    body: str = ""


def parse_line(data: bytes) -> tuple[str, str, int] | None:
    """netexec's plain reply: ``<pod> <ip>:<port>``."""
    try:
        pod, addr = data.decode().strip().split(" ", 1)
        ip, port = split_hostport(addr)
        return pod, ip, int(port)
    except ValueError:
        return None


def split_hostport(text: str) -> tuple[str, str]:
    """``10.244.1.2:5000`` or ``[fd00::2]:5000`` -> (address, port), as Go's SplitHostPort."""
    host, _, port = text.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), port


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def parse_http(data: bytes) -> tuple[int, dict[str, str], str] | None:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        return None
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body.decode("utf-8", "replace")


class _Active:
    __slots__ = ("probe", "sock", "start", "deadline", "buf", "connected", "last_send", "index")

    def __init__(self, index: int, probe: Probe, sock: socket.socket, timeout: float) -> None:
        self.index = index
        self.probe = probe
        self.sock = sock
        self.start = time.monotonic()
        self.deadline = self.start + timeout
        self.buf = bytearray()
        self.connected = False
        self.last_send = 0.0


def _request(probe: Probe) -> bytes:
    if probe.protocol == "http":
        return f"GET {probe.path} HTTP/1.1\r\nHost: {probe.dst}:{probe.port}\r\nUser-Agent: netns-lab\r\nConnection: close\r\n\r\n".encode()
    return b"netns-lab probe\n"


def _finish(act: _Active) -> ProbeResult:
    probe = act.probe
    elapsed = time.monotonic() - act.start
    data = bytes(act.buf)
    if probe.protocol == "http":
        parsed = parse_http(data)
        if parsed is None:
            return ProbeResult(probe, "failed", detail=f"not an HTTP response: {data[:60]!r}", elapsed=elapsed)
        status, headers, body = parsed
        pod = headers.get("x-served-by")
        client = None
        try:
            doc = json.loads(body)
            pod, client = doc.get("pod", pod), doc.get("client")
        except ValueError:
            pass
        ip, port = (split_hostport(client) if client else (None, None))
        return ProbeResult(probe, "ok", pod, ip, int(port) if port else None, f"HTTP {status}", elapsed, status, body)
    parsed_line = parse_line(data)
    if parsed_line is None:
        return ProbeResult(probe, "failed", detail=f"unexpected reply {data[:60]!r}", elapsed=elapsed)
    pod, ip, port = parsed_line
    return ProbeResult(probe, "ok", pod, ip, port, "", elapsed)


def _error(act: _Active, err: int) -> ProbeResult:
    result = _ERRNO_RESULT.get(err, "failed")
    return ProbeResult(act.probe, result, detail=errno.errorcode.get(err, str(err)), elapsed=time.monotonic() - act.start)


def run_probes(probes: Sequence[Probe], timeout: float = 2.0, parallel: int = 512) -> list[ProbeResult]:
    """Run every probe (up to ``parallel`` at once); results in input order."""
    if not probes:
        return []
    return in_thread(lambda w: _Runner(w, probes, timeout, parallel).run())


class _Runner:
    def __init__(self, worker: NetnsThread, probes: Sequence[Probe], timeout: float, parallel: int) -> None:
        self.w = worker
        self.probes = probes
        self.timeout = timeout
        self.parallel = parallel
        self.sel = selectors.DefaultSelector()
        self.results: list[ProbeResult | None] = [None] * len(probes)
        self.active: dict[int, _Active] = {}
        self.current_ns: str | None = None

    def run(self) -> list[ProbeResult]:
        next_i = 0
        try:
            while next_i < len(self.probes) or self.active:
                while next_i < len(self.probes) and len(self.active) < self.parallel:
                    self._start(next_i)
                    next_i += 1
                self._poll()
        finally:
            for act in list(self.active.values()):
                act.sock.close()
            self.sel.close()
        return [r for r in self.results if r is not None]

    def _start(self, i: int) -> None:
        probe = self.probes[i]
        if probe.src_netns != self.current_ns:
            self.w.enter(probe.src_netns)
            self.current_ns = probe.src_netns
        udp = probe.protocol == "udp"
        if probe.protocol == "sctp" and not sctp_available():  # never make the kernel load it
            self.results[i] = ProbeResult(probe, "failed", detail="this kernel has no SCTP")
            return
        try:  # SCTP: a one-to-one socket, connected and read as TCP is
            sock = socket.socket(family_of(probe.dst), socket.SOCK_DGRAM if udp else socket.SOCK_STREAM,
                                 socket.IPPROTO_SCTP if probe.protocol == "sctp" else 0)
        except OSError as exc:  # no SCTP in this kernel
            self.results[i] = ProbeResult(probe, "failed", detail=f"socket: {exc.strerror}")
            return
        sock.setblocking(False)
        act = _Active(i, probe, sock, self.timeout)
        rc = sock.connect_ex((probe.dst, probe.port))
        if rc not in (0, errno.EINPROGRESS):
            self._done(act, _error(act, rc), registered=False)
            return
        self.active[i] = act
        if udp:
            act.connected = True
            self._udp_send(act)
            self.sel.register(sock, selectors.EVENT_READ, act)
        else:
            self.sel.register(sock, selectors.EVENT_WRITE, act)

    def _udp_send(self, act: _Active) -> None:
        act.last_send = time.monotonic()
        try:
            act.sock.send(_request(act.probe))
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNREFUSED):
                self._done(act, _error(act, exc.errno or 0))

    def _done(self, act: _Active, result: ProbeResult, registered: bool = True) -> None:
        self.results[act.index] = result
        self.active.pop(act.index, None)
        if registered:
            try:
                self.sel.unregister(act.sock)
            except (KeyError, ValueError):
                pass
        act.sock.close()

    def _poll(self) -> None:
        now = time.monotonic()
        wait = min((a.deadline for a in self.active.values()), default=now) - now
        for key, _mask in self.sel.select(max(0.0, min(wait, UDP_RETRY / 2))):
            act: _Active = key.data
            if act.index not in self.active:
                continue
            if not act.connected:
                err = act.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._done(act, _error(act, err))
                    continue
                act.connected = True
                try:
                    act.sock.sendall(_request(act.probe))
                except OSError as exc:
                    self._done(act, _error(act, exc.errno or 0))
                    continue
                self.sel.modify(act.sock, selectors.EVENT_READ, act)
                continue
            try:
                data = act.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                self._done(act, _error(act, exc.errno or 0))
                continue
            if act.probe.protocol == "udp":
                act.buf += data
                self._done(act, _finish(act))
            elif data:
                act.buf += data
            else:
                self._done(act, _finish(act))
        now = time.monotonic()
        for act in list(self.active.values()):
            if now >= act.deadline:
                if act.connected and act.buf and act.probe.protocol != "udp":
                    self._done(act, _finish(act))
                else:
                    what = "no reply" if act.connected else "no answer to SYN"
                    self._done(act, ProbeResult(act.probe, "timeout", detail=what, elapsed=now - act.start))
            elif act.probe.protocol == "udp" and now - act.last_send >= UDP_RETRY:
                self._udp_send(act)


def probe_one(src_netns: str, dst: str, port: int, protocol: str = "tcp", timeout: float = 2.0) -> ProbeResult:
    return run_probes([Probe(src_netns, dst, port, protocol)], timeout)[0]


