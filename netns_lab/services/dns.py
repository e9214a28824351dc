"""The cluster DNS server (the lab's CoreDNS): real DNS wire protocol, UDP and TCP, port 53.

It runs inside the DNS pod's namespace (``kube-system/coredns``), reached through the
``kube-dns`` Service like any cluster DNS. Records come from files the lab writes whenever
Services or endpoints change; they are looked at before every answer, so a change is
visible to the very next question without signals or races.
Names are answered by :func:`netns_lab.controllers.dns.answer` (the naming rules). The
zone is a snapshot plus a journal of changed names (see :class:`Zone`).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import sys

from dnslib import AAAA, CNAME, PTR, QTYPE, RCODE, RR, SRV, TXT, A, DNSRecord

from netns_lab.controllers.dns import TTL, Records, answer
from netns_lab.services import setns
from netns_lab.services.ready import say_ready

_RDATA = {
    "A": lambda d: A(d),
    "AAAA": lambda d: AAAA(d),
    "CNAME": lambda d: CNAME(d),
    "PTR": lambda d: PTR(d),
    "TXT": lambda d: TXT(d),
    "SRV": lambda d: SRV(priority=d[0], weight=d[1], port=d[2], target=d[3]),
}


class Zone:
    """The record table, kept current from its files, and a cache of packed answers.

    The files: a snapshot (``dns-zone.json``, replaced atomically) naming its journal, a file
    of changed names the lab appends to (one JSON line each: ``{"n": NAME, "e": ENTRY|null}``
    or ``{"ns": [...]}``). Before each answer the snapshot's mtime and the journal's size are
    looked at (two stats): a new snapshot is read whole, new journal lines are applied.

    The cache is keyed by the question exactly as asked (name case included, type, class,
    and the RD bit): a repeated question costs a dict lookup and a 2-byte ID patch instead of
    a parse and a pack. Any change of the zone empties it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.mtime = -1
        self.records = Records("cluster.local.")
        self.cache: dict[bytes, bytes] = {}
        self.journal = ""
        self.offset = 0

    def current(self) -> Records:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return self.records
        if mtime != self.mtime:
            with open(self.path) as fh:
                data = json.load(fh)
            self.records = Records.from_json(data)
            self.journal = os.path.join(os.path.dirname(self.path), data["journal"]) if data.get("journal") else ""
            self.offset = 0
            self.mtime = mtime
            self.cache.clear()
        if self.journal:
            self._follow()
        return self.records

    def _follow(self) -> None:
        try:
            size = os.stat(self.journal).st_size
        except FileNotFoundError:
            return  # replaced by a newer snapshot: the next stat of the snapshot sees it
        if size <= self.offset:
            return
        with open(self.journal, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read(size - self.offset)
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written is read next time
        for line in complete.splitlines():
            change = json.loads(line)
            if "ns" in change:
                self.records.namespaces = set(change["ns"])
            elif change["e"]:
                self.records.names[change["n"]] = change["e"]
            else:
                self.records.names.pop(change["n"], None)
        if complete:
            self.offset += len(complete)
            self.cache.clear()


def cached_respond(zone: Zone, data: bytes) -> bytes | None:
    """Answer from the cache when this exact question was answered since the last change."""
    zone.current()  # may clear the cache
    # header: id(2) flags(2) qd an ns ar (2 each); plain one-question queries only
    if len(data) < 17 or data[4:6] != b"\x00\x01" or data[6:10] != b"\x00\x00\x00\x00":
        return respond(zone, data)
    key = bytes([data[2] & 0x01]) + data[12:] if data[10:12] == b"\x00\x00" else None
    if key is not None:
        hit = zone.cache.get(key)
        if hit is not None:
            return data[:2] + hit
    out = respond(zone, data)
    if key is not None and out is not None and len(zone.cache) < 100_000:
        zone.cache[key] = out[2:]
    return out


def respond(zone: Zone, data: bytes) -> bytes | None:
    try:
        request = DNSRecord.parse(data)
    except Exception:  # not DNS: say nothing, as servers do
        return None
    reply = request.reply()
    reply.header.ra = 0
    if not request.questions:
        reply.header.rcode = RCODE.FORMERR
        return reply.pack()
    q = request.questions[0]
    qname = str(q.qname)
    qtype = QTYPE.get(q.qtype)
    rcode, answers = answer(zone.current(), qname, qtype if isinstance(qtype, str) else str(qtype))
    reply.header.rcode = rcode
    reply.header.aa = 1 if rcode != 5 else 0
    for owner, rtype, rdata in answers:
        build = _RDATA.get(rtype)
        if build is not None:
            reply.add_answer(RR(owner, getattr(QTYPE, rtype), rdata=build(rdata), ttl=TTL))
    return reply.pack()


def _listen(kind: int, port: int) -> socket.socket:
    """One socket for both families where the pod has IPv6 (an IPv6-only lab's kube-dns IP is
    IPv6; IPv4 questions arrive mapped), an IPv4 one where IPv6 is off (an IPv4 lab)."""
    try:
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        return s
    except OSError:
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        return s


def serve(netns_path: str, zone_path: str, port: int = 53) -> None:
    setns.enter(netns_path)
    zone = Zone(zone_path)
    udp, tcp = _listen(socket.SOCK_DGRAM, port), _listen(socket.SOCK_STREAM, port)
    tcp.listen(256)
    for s in (udp, tcp):
        s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(udp, selectors.EVENT_READ, "udp")
    sel.register(tcp, selectors.EVENT_READ, "accept")
    buffers: dict[socket.socket, bytearray] = {}
    say_ready()
    while True:
        for key, _ in sel.select():
            kind = key.data
            if kind == "udp":
                for _ in range(64):
                    try:
                        data, peer = udp.recvfrom(4096)
                    except BlockingIOError:
                        break
                    out = cached_respond(zone, data)
                    if out is not None:
                        udp.sendto(out, peer)
            elif kind == "accept":
                try:
                    conn, _ = tcp.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                buffers[conn] = bytearray()
                sel.register(conn, selectors.EVENT_READ, "tcp")
            else:
                conn = key.fileobj  # type: ignore[assignment]
                try:
                    chunk = conn.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                buf = buffers[conn]
                buf += chunk
                while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                    size = struct.unpack("!H", buf[:2])[0]
                    out = cached_respond(zone, bytes(buf[2 : 2 + size]))
                    del buf[: 2 + size]
                    if out is not None:
                        try:
                            conn.setblocking(True)
                            conn.sendall(struct.pack("!H", len(out)) + out)
                            conn.setblocking(False)
                        except OSError:
                            chunk = b""
                if not chunk:
                    sel.unregister(conn)
                    buffers.pop(conn, None)
                    conn.close()


def supervise(netns_path: str, zone_path: str) -> None:
    """kubelet's ``restartPolicy: Always`` for the DNS container: restart it when it dies
    (after a short back-off), so killing the DNS "pod" is a survivable event."""
    import subprocess
    import time

    child: subprocess.Popen[bytes] | None = None

    def stop(*_: object) -> None:
        if child is not None and child.poll() is None:
            child.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    first = True
    while True:
        child = subprocess.Popen([sys.executable, "-m", "netns_lab.services.dns", netns_path, zone_path],
                                 stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert child.stdout is not None
        line = child.stdout.readline()
        child.stdout.close()
        if first:
            say_ready(line.decode().strip() or "FAILED")  # the server's own line, passed on
            first = False
        child.wait()
        time.sleep(0.2)  # back-off before the restart


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--supervise" and len(argv) == 3:
        supervise(argv[1], argv[2])
        return 0
    if len(argv) != 2:
        print("usage: python -m netns_lab.services.dns [--supervise] NETNS_PATH ZONE.json", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(argv[0], argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
