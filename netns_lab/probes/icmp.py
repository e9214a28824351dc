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


def _ping6(src_netns: str, dst: str, timeout: float, count: int) -> PingResult:
    """ICMPv6 echo: the kernel fills in the checksum (it covers a pseudo-header) and hands
    back ICMPv6 messages without their IPv6 header."""
    ident = (os.getpid() ^ int(time.monotonic() * 1000)) & 0xFFFF
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        for seq in range(1, count + 1):
            start = time.monotonic()
            try:
                sock.sendto(struct.pack("!BBHHH", ECHO_REQUEST6, 0, 0, ident, seq) + b"netns-lab", (dst, 0))
            except OSError as exc:
                return PingResult(src_netns, dst, "no-reply", f"send failed: {exc.strerror}")
            deadline = start + timeout
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                packet, addr = sock.recvfrom(65535)
                if len(packet) < 8:
                    continue
                icmp_type, _, _, r_ident, r_seq = struct.unpack("!BBHHH", packet[:8])
                if icmp_type == ECHO_REPLY6 and addr[0] == dst and r_ident == ident and r_seq == seq:
                    return PingResult(src_netns, dst, "reply", f"echo reply from {dst}", time.monotonic() - start)
                if icmp_type == UNREACHABLE6 and len(packet) >= 8 + 40 + 8:  # quoting our echo: IPv6 header, then ICMPv6
                    q_type, _, _, q_ident = struct.unpack("!BBHH", packet[48:54])
                    if q_type == ECHO_REQUEST6 and q_ident == ident:
                        return PingResult(src_netns, dst, "no-reply", f"ICMPv6 unreachable from {addr[0]}")
    return PingResult(src_netns, dst, "no-reply", f"no echo reply within {timeout:g}s")


def _ping(src_netns: str, dst: str, timeout: float, count: int) -> PingResult:
    ident = (os.getpid() ^ int(time.monotonic() * 1000)) & 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        for seq in range(1, count + 1):
            start = time.monotonic()
            try:
                sock.sendto(echo_request(ident, seq), (dst, 0))
            except OSError as exc:
                return PingResult(src_netns, dst, "no-reply", f"send failed: {exc.strerror}")
            deadline = start + timeout
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                packet, addr = sock.recvfrom(65535)
                ihl = (packet[0] & 0x0F) * 4
                icmp_type, _, _, r_ident, r_seq = struct.unpack("!BBHHH", packet[ihl : ihl + 8])
                if icmp_type == 0 and addr[0] == dst and r_ident == ident and r_seq == seq:
                    return PingResult(src_netns, dst, "reply", f"echo reply from {dst}", time.monotonic() - start)
                if icmp_type == 3 and len(packet) >= ihl + 8 + 28:  # unreachable quoting our echo
                    inner = packet[ihl + 8 :]
                    inner_ihl = (inner[0] & 0x0F) * 4
                    q_ident = struct.unpack("!H", inner[inner_ihl + 4 : inner_ihl + 6])[0]
                    if q_ident == ident:
                        return PingResult(src_netns, dst, "no-reply", f"ICMP unreachable from {addr[0]}")
    return PingResult(src_netns, dst, "no-reply", f"no echo reply within {timeout:g}s")


def ping(src_netns: str, dst: str, timeout: float = 1.0, count: int = 1) -> PingResult:
    """One or more echo requests from ``src_netns``; ``reply`` on the first matching answer."""
    if ":" in dst:
        return run_in(src_netns, lambda: _ping6(src_netns, dst, timeout, count))
    return run_in(src_netns, lambda: _ping(src_netns, dst, timeout, count))
