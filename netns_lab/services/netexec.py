"""netexec: the server every pod runs, one process for the whole lab.

A socket stays in the network namespace it was created in, so a single process can listen
in every pod: it enters each namespace just long enough to bind, then serves them all from
one ``epoll`` loop. Memory grows by a few sockets per pod instead of a Python interpreter per
pod (~15 MiB each), which is what lets a 1,000-pod lab run on a laptop.

Protocol, on every declared containerPort, TCP and UDP (as Kubernetes' agnhost netexec), and
SCTP where a port is declared SCTP (one-to-one sockets, the plain TCP line protocol; a kernel
without SCTP refuses such a lab before it is built):

* HTTP ``GET /hostname`` -> the pod name; ``GET /clientip`` -> ``ip:port`` the server saw;
  ``/healthz`` -> ``ok``; any other path -> JSON naming pod, client, method, path, Host and
  headers (that is how ``servedBy`` is read through proxies and Ingress).
* Plain TCP: after the client's first line (or 1 s of silence) one line
  ``<pod> <client-ip>:<port>``; plain UDP: the same line for each datagram.

A node target marked ``agent`` also answers ``GET /netns-lab/phase`` with the lab's phase on
this machine (``building``, ``up``, ``checked``): the machines of a spread lab read it from
each other's nodes to wait for one another (see ``cli.run_scenario``).

Node targets may also list ``health`` ports: kube-proxy's ``healthCheckNodePort`` server for
a LoadBalancer Service with ``externalTrafficPolicy: Local`` (200 and the number of local
endpoints when the node has a ready one, 503 when not: what a cloud load balancer checks).

SIGHUP re-reads the config file: new targets are opened, removed ones closed, health
answers updated in place.
"""

from __future__ import annotations

import errno
import json
import os
import re
import selectors
import signal
import socket
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from netns_lab.services import setns
from netns_lab.services.ready import say_ready

SILENCE_TIMEOUT = 1.0
MAX_REQUEST = 64 * 1024
PHASE_PATH = b"/netns-lab/phase"
PROXY_HEALTHZ_PORT, PROXY_STATUS_PORT = 10256, 10249  # kube-proxy's /healthz and /proxyMode, on every node
_HTTP_START = re.compile(rb"^[A-Z]{3,10} \S+ HTTP/1\.[01]\r?\n")


def _inode(ns: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return None


@dataclass
class Conn:
    sock: socket.socket
    pod: str
    peer: tuple[str, int]
    accepted: float
    where: tuple[str, int]  # (netns, port) of the listening socket
    buf: bytearray = field(default_factory=bytearray)
    out: bytes = b""
    done: bool = False


def hostport(peer: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """``10.244.1.2:5000`` or ``[fd00:10:244:1::2]:5000``, as Go's net.JoinHostPort (what
    agnhost's /clientip returns)."""
    return f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"


def line_reply(pod: str, peer: tuple[str, int]) -> bytes:
    return f"{pod} {hostport(peer)}\n".encode()


def health_reply(info: dict[str, object]) -> bytes:
    """kube-proxy's service health check answer (pkg/proxy/healthcheck)."""
    count = int(info.get("localEndpoints", 0))  # type: ignore[arg-type]
    body = json.dumps({"service": {"namespace": info["namespace"], "name": info["name"]},
                       "localEndpoints": count, "serviceProxyHealthy": True}).encode()
    status = "200 OK" if count > 0 else "503 Service Unavailable"
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def kube_proxy_reply(port: int, request: bytes, mode: str, node: str) -> bytes:
    """kube-proxy's own URLs on a node: ``:10256/healthz`` (its JSON: when the rules were
    last synced) and ``:10249/proxyMode`` (the mode it runs); the rest is 404, as there."""
    path = request.split(b" ", 2)[1].split(b"?", 1)[0]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if port == PROXY_HEALTHZ_PORT and path in (b"/healthz", b"/livez"):
        body = json.dumps({"lastUpdated": now, "currentTime": now, "nodeEligible": True})
        return text_reply(body, node, "application/json")
    if port == PROXY_STATUS_PORT and path == b"/proxyMode":
        return text_reply(mode, node)
    return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def http_reply(pod: str, peer: tuple[str, int], request: bytes) -> bytes:
    head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.replace("\r\n", "\n").split("\n")
    method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip()] = v.strip()
    path = target.split("?", 1)[0]
    ctype = "text/plain"
    if path == "/hostname":
        body = pod
    elif path == "/clientip":
        body = hostport(peer)
    elif path == "/healthz":
        body = "ok"
    else:
        ctype = "application/json"
        body = json.dumps(
            {
                "pod": pod,
                "client": hostport(peer),
                "method": method,
                "path": target,
                "host": next((v for k, v in headers.items() if k.lower() == "host"), ""),
                "headers": headers,
            }
        )
    return text_reply(body, pod, ctype)


def text_reply(body: str, pod: str, ctype: str = "text/plain") -> bytes:
    data = body.encode()
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
        f"X-Served-By: {pod}\r\nConnection: close\r\n\r\n"
    ).encode() + data


class Server:
    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self.sel = selectors.DefaultSelector()
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.targets: dict[tuple[str, int], list[socket.socket]] = {}
        self.inodes: dict[str, int | None] = {}  # netns name -> the inode its sockets were opened in
        self.health: dict[tuple[str, int], dict[str, object]] = {}  # healthCheckNodePort answers
        self.agents: set[str] = set()  # node namespaces: they answer the lab's phase
        self.proxy_mode = ""  # what a node's kube-proxy says on :10249/proxyMode
        self.families: tuple[int, ...] = (socket.AF_INET,)  # a dual-stack lab: AF_INET6 too
        self.phase = ""
        self.pending: deque[Conn] = deque()  # in accept order: silence deadlines are monotonic
        self.reload = False
        # A signal only sets a flag; this pair wakes the select() so SIGHUP acts at once.
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
        signal.set_wakeup_fd(self.wake_w.fileno())

    # -- sockets in namespaces ----------------------------------------------------------
    def load(self) -> int:
        """Open sockets for new (netns, port) pairs, close the ones no longer configured."""
        with open(self.config_path) as fh:
            config = json.load(fh)
        wanted: dict[tuple[str, int], str] = {}
        sctp: set[tuple[str, int]] = set()
        health: dict[tuple[str, int], dict[str, object]] = {}
        self.phase = config.get("phase", "")
        self.agents = {t["netns"] for t in config["targets"] if t.get("agent")}
        self.proxy_mode = str(config.get("proxyMode", ""))
        self.families = tuple(socket.AF_INET6 if f == 6 else socket.AF_INET for f in config.get("families", (4,)))
        for target in config["targets"]:
            for port in target["ports"]:
                wanted[(target["netns"], port)] = target["name"]
            for port in target.get("sctp", ()):
                wanted[(target["netns"], port)] = target["name"]
                sctp.add((target["netns"], port))
            for port, info in (target.get("health") or {}).items():
                wanted[(target["netns"], int(port))] = target["name"]
                health[(target["netns"], int(port))] = info
        self.health = health
        # a namespace made again under the same name (a sandbox repaired by a full sync) is
        # another namespace: its sockets are opened again in the new one
        inodes = {ns: _inode(ns) for ns in {ns for ns, _p in wanted}}
        for key in [k for k in self.targets if k not in wanted or self.inodes.get(k[0]) != inodes.get(k[0])]:
            for s in self.targets.pop(key):
                self.sel.unregister(s)
                s.close()
        self.inodes = inodes
        ports_inet = {t["netns"]: set(t["ports"]) for t in config["targets"]}
        by_ns: dict[str, list[int]] = {}
        for ns, port in wanted:
            if (ns, port) not in self.targets:
                by_ns.setdefault(ns, []).append(port)
        for ns, ports in by_ns.items():
            setns.enter(f"/run/netns/{ns}")
            try:
                for port in ports:
                    self.targets[(ns, port)] = self._listen(wanted[(ns, port)], port, ns, udp=(ns, port) not in health,
                                                            inet=(ns, port) not in sctp or port in ports_inet[ns],
                                                            sctp=(ns, port) in sctp)
            finally:
                setns.enter_fd(self.home, "home")
        return len(self.targets)

    def _listen(self, pod: str, port: int, ns: str, udp: bool = True, inet: bool = True, sctp: bool = False) -> list[socket.socket]:
        """TCP (and UDP unless a health port) when ``inet``; an SCTP one-to-one socket, served as
        TCP is, when ``sctp``."""
        out = []
        kinds = ([(socket.SOCK_STREAM, 0)] if inet else []) + ([(socket.SOCK_STREAM, socket.IPPROTO_SCTP)] if sctp else [])
        for family in self.families:  # one socket per family (IPv6 ones v6-only): peers read as written
            for kind, proto in kinds:
                sock = _bound(family, kind, proto, port)
                sock.listen(1024)
                self.sel.register(sock, selectors.EVENT_READ, ("accept", (pod, (ns, port))))
                out.append(sock)
            if inet and udp:  # not a health check port: those are HTTP over TCP only, as kube-proxy serves them
                usock = _bound(family, socket.SOCK_DGRAM, 0, port)
                self.sel.register(usock, selectors.EVENT_READ, ("udp", pod))
                out.append(usock)
        return out

    # -- event loop ---------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            if self.reload:
                self.reload = False
                try:
                    self.load()
                except (OSError, ValueError) as exc:  # a config half-written by hand: keep serving the last one
                    print(f"netexec: reload failed, keeping the current targets: {exc}", file=sys.stderr, flush=True)
            timeout = None
            if self.pending:
                timeout = max(0.0, self.pending[0].accepted + SILENCE_TIMEOUT - time.monotonic())
            for key, mask in self.sel.select(timeout):
                kind, obj = key.data
                if kind == "wake":
                    try:
                        self.wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                elif kind == "accept":
                    self._accept(key.fileobj, obj)  # type: ignore[arg-type]
                elif kind == "udp":
                    self._udp(key.fileobj, obj)  # type: ignore[arg-type]
                elif mask & selectors.EVENT_READ and not obj.done:
                    self._read(obj)
                elif mask & selectors.EVENT_WRITE:
                    self._flush(obj)
            self._expire()

    def _accept(self, lsock: socket.socket, target: tuple[str, tuple[str, int]]) -> None:
        pod, where = target
        while True:
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: keep serving the rest
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return
                raise
            sock.setblocking(False)
            conn = Conn(sock, pod, peer, time.monotonic(), where)
            self.sel.register(sock, selectors.EVENT_READ, ("conn", conn))
            self.pending.append(conn)

    def _udp(self, sock: socket.socket, pod: str) -> None:
        """Answer each datagram from the address it was sent to (the packet-info the kernel
        hands with it): a node has several addresses, and a reply from another one than the
        client asked would be dropped by the client's connected socket."""
        for _ in range(64):
            try:
                _, ancillary, _flags, peer = sock.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(32))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                sock.sendmsg([line_reply(pod, peer)], _reply_from(ancillary), 0, peer)
            except OSError:
                pass

    def _read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._respond(conn, line_reply(conn.pod, conn.peer))
            return
        conn.buf += data
        buf = bytes(conn.buf)
        if _HTTP_START.match(buf):
            if b"\r\n\r\n" in buf or b"\n\n" in buf or len(buf) >= MAX_REQUEST:
                info = self.health.get(conn.where)
                if info is not None:
                    reply = health_reply(info)
                elif conn.where[0] in self.agents and buf.split(b" ", 2)[1] == PHASE_PATH:
                    reply = text_reply(self.phase, conn.pod)
                elif conn.where[0] in self.agents and conn.where[1] in (PROXY_HEALTHZ_PORT, PROXY_STATUS_PORT):
                    reply = kube_proxy_reply(conn.where[1], buf, self.proxy_mode, conn.pod)
                else:
                    reply = http_reply(conn.pod, conn.peer, buf)
                self._respond(conn, reply)
        elif b"\n" in buf or len(buf) >= 16 and not buf[:1].isupper():
            self._respond(conn, line_reply(conn.pod, conn.peer))

    def _respond(self, conn: Conn, data: bytes) -> None:
        conn.done = True
        conn.out = data
        self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if conn.out:
            self.sel.modify(conn.sock, selectors.EVENT_WRITE, ("conn", conn))
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._close(conn)

    def _close(self, conn: Conn) -> None:
        conn.done = True
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _expire(self) -> None:
        now = time.monotonic()
        while self.pending and (self.pending[0].done or self.pending[0].accepted + SILENCE_TIMEOUT <= now):
            conn = self.pending.popleft()
            if not conn.done:  # a client that says nothing still gets its line (nc, telnet)
                self._respond(conn, line_reply(conn.pod, conn.peer))


IP_PKTINFO = 8  # Linux; not in Python's socket module


def _reply_from(ancillary: list[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
    """The packet-info to send a reply with: source = the request's destination address."""
    out = []
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            _ifindex, _spec_dst, addr = struct.unpack("=I4s4s", data[:12])
            out.append((level, kind, struct.pack("=I4s4s", 0, addr, b"\0" * 4)))
        elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 20:
            out.append((level, kind, data[:16] + struct.pack("=I", 0)))
    return out


def _bound(family: int, kind: int, proto: int, port: int) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if kind == socket.SOCK_DGRAM:  # learn each datagram's destination address (see Server._udp)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    sock.setblocking(False)
    return sock


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m netns_lab.services.netexec CONFIG.json", file=sys.stderr)
        return 2
    server = Server(argv[0])
    count = server.load()

    def on_hup(_sig: int, _frame: object) -> None:
        server.reload = True

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Tell the lab we are serving: it waits for this line on our stdout.
    say_ready(f"READY {count}")
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
