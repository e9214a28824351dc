"""Send compiled nf_tables transactions (:mod:`.nftmsg`) to a namespace: one batch, one send.

The kernel processes a batch inside the ``send`` call (nfnetlink_rcv_batch) and queues its
answers before returning: an error for every message that failed (by sequence number), one
for the batch's BEGIN if the commit failed, and an acknowledgement for the last message,
asked for so that a batch the kernel never read cannot pass for a good one.
"""

from __future__ import annotations

import errno
import socket
import struct

from netns_lab.errors import RealizeError
from netns_lab.realize.netns import NetnsThread, in_thread
from netns_lab.realize.nftmsg import NLM_F_ACK, Message, batch

NETLINK_NETFILTER = 12
NLMSG_ERROR = 2
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
_HDR = struct.Struct("=IHHII")


def send(netns: str, messages: list[Message]) -> None:
    """Apply ``messages`` as one transaction in ``netns``; :class:`RealizeError` names the
    first statement the kernel refused (and nothing of the batch is applied)."""
    if not messages:
        return
    last = messages[-1]
    messages = messages[:-1] + [Message(last.kind, last.flags | NLM_F_ACK, last.body, last.what)]
    data, whats = batch(messages)
    in_thread(lambda w: _send(w, netns, data, whats))


def _send(w: NetnsThread, netns: str, data: bytes, whats: dict[int, str]) -> None:
    w.enter(netns)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER) as sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, len(data) + (1 << 16))
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 22)
        sock.bind((0, 0))
        sock.send(data)
        sock.setblocking(False)
        acked, errors = False, []
        while True:
            try:
                reply = sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # answers lost: the batch cannot be trusted
                    raise RealizeError(f"{netns}: nf_tables batch", "apply", None, "answers overflowed the socket") from exc
                raise
            offset = 0
            while offset + _HDR.size <= len(reply):
                length, kind, _flags, seq, _pid = _HDR.unpack_from(reply, offset)
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", reply, offset + _HDR.size)
                    if code:
                        errors.append(f"{whats.get(seq, f'message {seq}')}: {errno.errorcode.get(-code, code)} ({-code})")
                    else:
                        acked = True
                offset += (length + 3) & ~3
        if errors:
            raise RealizeError(f"{netns}: nf_tables batch", "apply", None, "; ".join(errors[:3])[:400])
        if not acked:
            raise RealizeError(f"{netns}: nf_tables batch", "apply", None, "the kernel did not answer the batch")


NLMSG_DONE = 3
NLM_F_DUMP = 0x300
GETCHAIN, GETSET = (10 << 8) | 4, (10 << 8) | 10


def names(netns: str, family: int, table: str) -> tuple[set[str], set[str]]:
    """The chains and the named sets of ``table`` in ``netns``, read by a netlink dump (what a
    full sync needs to find stale objects; ``nft list table`` prints every rule to say it, ~10 s
    at 10,000 Services)."""
    return in_thread(lambda w: _names(w, netns, family, table))


def _names(w: NetnsThread, netns: str, family: int, table: str) -> tuple[set[str], set[str]]:
    w.enter(netns)
    chains: set[str] = set()
    sets: set[str] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER) as sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 22)
        sock.bind((0, 0))
        for kind, name_attr, out in ((GETCHAIN, 3, chains), (GETSET, 2, sets)):
            sock.send(_HDR.pack(_HDR.size + 4, kind, 0x1 | NLM_F_DUMP, 1, 0) + struct.pack("=BBH", family, 0, 0))
            done = False
            while not done:
                data = sock.recv(1 << 20)
                offset = 0
                while offset + _HDR.size <= len(data):
                    length, mtype, _flags, _seq, _pid = _HDR.unpack_from(data, offset)
                    if mtype == NLMSG_DONE:
                        done = True
                    elif mtype == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, offset + _HDR.size)
                        if code:
                            raise RealizeError(f"{netns}: nf_tables dump", "read", -code)
                    else:
                        attrs = _attrs(data, offset + _HDR.size + 4, offset + length)
                        if attrs.get(1) == table and name_attr in attrs:
                            out.add(attrs[name_attr])
                    offset += (length + 3) & ~3
    return chains, sets


def _attrs(data: bytes, start: int, end: int) -> dict[int, str]:
    """The string attributes of one message (table and name are all a dump is read for)."""
    out: dict[int, str] = {}
    while start + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, start)
        if length < 4:
            break
        if kind & 0x7FFF in (1, 2, 3):
            out[kind & 0x7FFF] = data[start + 4:start + length].split(b"\0", 1)[0].decode(errors="replace")
        start += (length + 3) & ~3
    return out
