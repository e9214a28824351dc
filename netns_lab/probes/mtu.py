"""Path-MTU probes: a datagram of an exact IP size with DF set, from inside a namespace.

The overlay promise is that a full-size packet crosses nodes whole and a larger one with
DF is *refused* (EMSGSIZE from the kernel, or ICMP fragmentation-needed), never silently
dropped, which is the classic symptom of a wrong overlay MTU.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from dataclasses import dataclass

from netns_lab.realize.netns import run_in

IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2
IP_MTU = 14
IP_UDP_HEADERS = 28
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_MTU = 23, 2, 24
IPV6_UDP_HEADERS = 48  # IPv6 header 40 + UDP 8: IPv6 routers never fragment, the sender is told


@dataclass(frozen=True)
class MtuResult:
    size: int  # IP datagram size sent
    result: str  # ok | refused | timeout
    detail: str = ""
    path_mtu: int | None = None


def _probe(dst: str, port: int, size: int, timeout: float) -> MtuResult:
    v6 = ":" in dst
    level, mtu_opt = (socket.IPPROTO_IPV6, IPV6_MTU) if v6 else (socket.IPPROTO_IP, IP_MTU)
    with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(level, IPV6_MTU_DISCOVER if v6 else IP_MTU_DISCOVER, IPV6_PMTUDISC_DO if v6 else IP_PMTUDISC_DO)
        sock.connect((dst, port))
        payload = b"x" * (size - (IPV6_UDP_HEADERS if v6 else IP_UDP_HEADERS))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                sock.send(payload)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    mtu = sock.getsockopt(level, mtu_opt)
                    return MtuResult(size, "refused", f"EMSGSIZE: path MTU is {mtu}", mtu)
                return MtuResult(size, "refused", errno.errorcode.get(exc.errno or 0, str(exc)))
            ready, _, _ = select.select([sock], [], [], 0.5)
            if ready:
                try:
                    reply = sock.recv(65535)
                except OSError as exc:
                    if exc.errno == errno.EMSGSIZE:  # ICMP fragmentation-needed came back
                        mtu = sock.getsockopt(level, mtu_opt)
                        return MtuResult(size, "refused", f"ICMP {'packet too big' if v6 else 'fragmentation needed'}: path MTU {mtu}", mtu)
                    return MtuResult(size, "refused", errno.errorcode.get(exc.errno or 0, str(exc)))
                return MtuResult(size, "ok", reply.decode(errors="replace").strip())
        return MtuResult(size, "timeout", f"no reply within {timeout:g}s")


def probe_mtu(src_netns: str, dst: str, port: int, size: int, timeout: float = 2.0) -> MtuResult:
    """Send one UDP datagram of IP size ``size`` with DF from ``src_netns`` to a netexec port."""
    return run_in(src_netns, lambda: _probe(dst, port, size, timeout))
