"""Packet capture on any lab interface, decoded with scapy.

The AF_PACKET socket is opened by a thread inside the lab namespace (so it sees that
namespace's interface), and frames are collected while the caller sends its probe.
scapy is imported lazily: it costs about a second and most commands never need it.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any

from netns_lab.realize.netns import NetnsThread

ETH_P_ALL = 0x0003


SO_ATTACH_FILTER = 26


def _attach_bpf(sock: socket.socket, expression: str) -> None:
    """Compile a tcpdump filter (tcpdump -dd, through scapy) and let the kernel apply it."""
    import ctypes

    from scapy.arch.common import compile_filter

    prog = compile_filter(expression, linktype=1)  # Ethernet
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(ctypes.string_at(ctypes.addressof(prog), ctypes.sizeof(prog))))


def _drain(sock: socket.socket) -> None:
    """An ETH_P_ALL socket receives every frame of the namespace from its creation on: what it
    queued before its filter was attached and it was bound must not count as captured (a
    lab with BFD sends a packet every 100 ms: a `--count 2` capture saw only those)."""
    sock.setblocking(False)
    try:
        while True:
            sock.recv(65535)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)


class Capture:
    """``with Capture(ns, "br0") as cap: ...`` then ``cap.packets()`` (scapy Ether objects)."""

    def __init__(self, netns_name: str, ifname: str, limit: int = 10000, bpf: str | None = None) -> None:
        self.netns = netns_name
        self.ifname = ifname
        self.limit = limit
        self.bpf = bpf
        self.frames: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"capture-{ifname}", daemon=True)

    def _run(self) -> None:
        worker = NetnsThread()
        try:
            worker.enter(self.netns)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            if self.bpf:
                _attach_bpf(sock, self.bpf)
            sock.bind((self.ifname, 0))
            _drain(sock)  # frames queued before the filter and the binding held (any interface, any packet)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            worker.close()
            return
        self._ready.set()
        try:
            while not self._stop.is_set() and len(self.frames) < self.limit:
                ready, _, _ = select.select([sock], [], [], 0.05)
                if ready:
                    data = sock.recv(65535)
                    self.frames.append((time.time(), data))
        finally:
            sock.close()
            worker.close()

    def __enter__(self) -> "Capture":
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.05)  # let the last frames of the probe arrive
        self._stop.set()
        self._thread.join()

    def packets(self) -> list[Any]:
        import scapy.layers.inet  # noqa: F401  (registers IP/TCP/UDP/ICMP for decoding)
        import scapy.layers.inet6  # noqa: F401  (and IPv6/ICMPv6: a dual-stack lab's other half)
        import scapy.layers.vxlan  # noqa: F401  (VXLAN on flannel's port 8472)
        from scapy.layers.l2 import Ether

        out = []
        for ts, data in self.frames:
            pkt = Ether(data)
            pkt.time = ts
            out.append(pkt)
        return out

    def write_pcap(self, path: str) -> None:
        from scapy.utils import wrpcap

        wrpcap(path, self.packets())
