"""ICMP (or ICMPv6) echo from inside a namespace, with a raw socket (what ``ping`` does).

scapy's own sending path reads the *host's* routing table at import time, so inside a lab
namespace we send with a kernel socket and keep scapy for capture and decoding.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from dataclasses import dataclass

from netns_lab.realize.netns import run_in


@dataclass(frozen=True)
class PingResult:
    src_netns: str
    dst: str
    result: str  # reply | no-reply
    detail: str = ""
    rtt: float | None = None


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes = b"netns-lab") -> bytes:
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, seq) + payload


ECHO_REQUEST6, ECHO_REPLY6, UNREACHABLE6 = 128, 129, 1  # ICMPv6 (RFC 4443)


def _answer(packet: bytes, v6: bool, ident: int, seq: int) -> str | None:
    """What one received packet says about our echo ``ident``/``seq``: "reply", "unreachable"
    (an error quoting it) or None. IPv4 raw sockets hand over the IP header, IPv6 ones do not."""
    ihl = 0 if v6 else (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8:
        return None
    icmp_type, _, _, r_ident, r_seq = struct.unpack("!BBHHH", packet[ihl : ihl + 8])
    if icmp_type == (ECHO_REPLY6 if v6 else 0) and (r_ident, r_seq) == (ident, seq):
        return "reply"
    inner = packet[ihl + 8 :]  # an error quotes our packet: its IP header, then our echo's first bytes
    if v6 and icmp_type == UNREACHABLE6 and len(inner) >= 40 + 6:
        q_type, _, _, q_ident = struct.unpack("!BBHH", inner[40:46])
        return "unreachable" if q_type == ECHO_REQUEST6 and q_ident == ident else None
    if not v6 and icmp_type == 3 and len(inner) >= 28:
        inner_ihl = (inner[0] & 0x0F) * 4
        return "unreachable" if struct.unpack("!H", inner[inner_ihl + 4 : inner_ihl + 6])[0] == ident else None
    return None


def _ping(src_netns: str, dst: str, timeout: float, count: int) -> PingResult:
    """ICMP or ICMPv6 echo (by ``dst``'s family); for ICMPv6 the kernel fills in the checksum,
    which covers a pseudo-header."""
    v6 = ":" in dst
    ident = (os.getpid() ^ int(time.monotonic() * 1000)) & 0xFFFF
    family, proto = (socket.AF_INET6, socket.IPPROTO_ICMPV6) if v6 else (socket.AF_INET, socket.IPPROTO_ICMP)
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        for seq in range(1, count + 1):
            start = time.monotonic()
            request = struct.pack("!BBHHH", ECHO_REQUEST6, 0, 0, ident, seq) + b"netns-lab" if v6 else echo_request(ident, seq)
            try:
                sock.sendto(request, (dst, 0))
            except OSError as exc:
                return PingResult(src_netns, dst, "no-reply", f"send failed: {exc.strerror}")
            deadline = start + timeout
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                packet, addr = sock.recvfrom(65535)
                seen = _answer(packet, v6, ident, seq)
                if seen == "reply" and addr[0] == dst:
                    return PingResult(src_netns, dst, "reply", f"echo reply from {dst}", time.monotonic() - start)
                if seen == "unreachable":
                    return PingResult(src_netns, dst, "no-reply", f"ICMP{'v6' if v6 else ''} unreachable from {addr[0]}")
    return PingResult(src_netns, dst, "no-reply", f"no echo reply within {timeout:g}s")


def ping(src_netns: str, dst: str, timeout: float = 1.0, count: int = 1) -> PingResult:
    """One or more echo requests from ``src_netns``; ``reply`` on the first matching answer."""
    return run_in(src_netns, lambda: _ping(src_netns, dst, timeout, count))
