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


@dataclass(frozen=True)
class MtuResult:
    size: int  # IP datagram size sent
    result: str  # ok | refused | timeout
    detail: str = ""
    path_mtu: int | None = None


def _probe(dst: str, port: int, size: int, timeout: float) -> MtuResult:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        sock.connect((dst, port))
        payload = b"x" * (size - IP_UDP_HEADERS)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                sock.send(payload)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    mtu = sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
                    return MtuResult(size, "refused", f"EMSGSIZE: path MTU is {mtu}", mtu)
                return MtuResult(size, "refused", errno.errorcode.get(exc.errno or 0, str(exc)))
            ready, _, _ = select.select([sock], [], [], 0.5)
            if ready:
                try:
                    reply = sock.recv(65535)
                except OSError as exc:
                    if exc.errno == errno.EMSGSIZE:  # ICMP fragmentation-needed came back
                        mtu = sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
                        return MtuResult(size, "refused", f"ICMP fragmentation needed: path MTU {mtu}", mtu)
                    return MtuResult(size, "refused", errno.errorcode.get(exc.errno or 0, str(exc)))
                return MtuResult(size, "ok", reply.decode(errors="replace").strip())
        return MtuResult(size, "timeout", f"no reply within {timeout:g}s")


def probe_mtu(src_netns: str, dst: str, port: int, size: int, timeout: float = 2.0) -> MtuResult:
    """Send one UDP datagram of IP size ``size`` with DF from ``src_netns`` to a netexec port."""
    return run_in(src_netns, lambda: _probe(dst, port, size, timeout))
