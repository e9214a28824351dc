"""Send compiled nf_tables transactions (:mod:`.nftmsg`) to a namespace: one batch, one send.

The kernel processes a batch inside the ``send`` call (nfnetlink_rcv_batch) and queues its
answers before returning: an error for every message that failed (by sequence number, with
the kernel's extended-ack text where it gives one), one for the batch's BEGIN if the commit
failed, and an acknowledgement for the last message, asked for so that a batch the kernel
never read cannot pass for a good one. Errors carry only the failed message's header
(NETLINK_CAP_ACK), so a batch that fails everywhere cannot flood the socket.
"""

from __future__ import annotations

import errno
import socket
import struct

from netns_lab.errors import RealizeError
from netns_lab.realize.netns import NetnsThread, in_thread
from netns_lab.realize.nftmsg import Message, batch

NETLINK_NETFILTER = 12
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_ACK_TLVS = 0x300, 0x10, 0x200
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NLMSGERR_ATTR_MSG = 1
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
GETCHAIN, GETSET = (10 << 8) | 4, (10 << 8) | 10
_HDR = struct.Struct("=IHHII")


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 22)
    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
    sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
    sock.bind((0, 0))
    return sock


def _messages(data: bytes):  # type: ignore[no-untyped-def]
    """(type, flags, sequence, offset, length) of each message in one datagram."""
    offset = 0
    while offset + _HDR.size <= len(data):
        length, kind, flags, seq, _pid = _HDR.unpack_from(data, offset)
        if length < _HDR.size:
            raise RealizeError("nf_tables answer", "read", None, f"a message of {length} bytes")
        yield kind, flags, seq, offset, length
        offset += (length + 3) & ~3


def _error(data: bytes, offset: int, length: int, flags: int) -> tuple[int, str]:
    """An NLMSG_ERROR's code and, if the kernel said one, its extended-ack message."""
    (code,) = struct.unpack_from("=i", data, offset + _HDR.size)
    text = ""
    if flags & NLM_F_ACK_TLVS:  # after the code and the failed request's header (NETLINK_CAP_ACK)
        start, end = offset + _HDR.size + 4 + _HDR.size, offset + length
        while start + 4 <= end:
            alen, akind = struct.unpack_from("=HH", data, start)
            if alen < 4:
                break
            if akind & 0x3FFF == NLMSGERR_ATTR_MSG:
                text = data[start + 4:start + alen].split(b"\0", 1)[0].decode(errors="replace")
            start += (alen + 3) & ~3
    return code, text


def send(netns: str, messages: list[Message]) -> None:
    """Apply ``messages`` as one transaction in ``netns``; :class:`RealizeError` names the
    statements the kernel refused (and nothing of the batch is applied)."""
    if not messages:
        return
    data, whats, last_seq = batch(messages)
    in_thread(lambda w: _send(w, netns, data, whats, last_seq))


def _send(w: NetnsThread, netns: str, data: bytes, whats: dict[int, str], last_seq: int) -> None:
    w.enter(netns)
    with _socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, len(data) + (1 << 16))
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
            for kind, flags, seq, offset, length in _messages(reply):
                if kind != NLMSG_ERROR:
                    continue
                code, text = _error(reply, offset, length, flags)
                if code:
                    why = f"{errno.errorcode.get(-code, code)} ({-code}){': ' + text if text else ''}"
                    errors.append(f"{whats.get(seq, f'message {seq}')}: {why}")
                elif seq == last_seq:
                    acked = True
        if errors:
            raise RealizeError(f"{netns}: nf_tables batch", "apply", None, "; ".join(errors[:3])[:400])
        if not acked:
            raise RealizeError(f"{netns}: nf_tables batch", "apply", None, "the kernel did not answer the batch")


def names(netns: str, family: int, table: str) -> tuple[set[str], set[str]]:
    """The chains and the named sets of ``table`` in ``netns``, read by a netlink dump (what a
    full sync needs to find stale objects; ``nft list table`` prints every rule to say it, ~10 s
    at 10,000 Services). A dump the kernel marks interrupted (the table changed meanwhile) is
    read again."""
    return in_thread(lambda w: _names(w, netns, family, table))


def _names(w: NetnsThread, netns: str, family: int, table: str) -> tuple[set[str], set[str]]:
    w.enter(netns)
    with _socket() as sock:
        for _attempt in range(10):
            chains, chains_ok = _dump(sock, netns, GETCHAIN, family, table, 3)  # NFTA_CHAIN_NAME
            sets, sets_ok = _dump(sock, netns, GETSET, family, table, 2)  # NFTA_SET_NAME
            if chains_ok and sets_ok:
                return chains, sets
    raise RealizeError(f"{netns}: nf_tables dump", "read", None, "the table kept changing during the dump")


def _dump(sock: socket.socket, netns: str, kind: int, family: int, table: str, name_attr: int) -> tuple[set[str], bool]:
    """One dump: (the names in ``table``, whether the kernel read it without interruption)."""
    sock.send(_HDR.pack(_HDR.size + 4, kind, 0x1 | NLM_F_DUMP, 1, 0) + struct.pack("=BBH", family, 0, 0))
    out: set[str] = set()
    whole = True
    while True:
        data = sock.recv(1 << 20)
        for mtype, flags, _seq, offset, length in _messages(data):
            whole = whole and not flags & NLM_F_DUMP_INTR
            if mtype == NLMSG_DONE:
                return out, whole
            if mtype == NLMSG_ERROR:
                code, text = _error(data, offset, length, flags)
                if code:
                    raise RealizeError(f"{netns}: nf_tables dump", "read", -code, text)
                continue
            attrs = _strings(data, offset + _HDR.size + 4, offset + length, (1, name_attr))  # NFTA_*_TABLE, the name
            if attrs.get(1) == table and name_attr in attrs:
                out.add(attrs[name_attr])


def _strings(data: bytes, start: int, end: int, wanted: tuple[int, ...]) -> dict[int, str]:
    """The string attributes ``wanted`` of one message."""
    out: dict[int, str] = {}
    while start + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, start)
        if length < 4:
            break
        if kind & 0x3FFF in wanted:
            out[kind & 0x3FFF] = data[start + 4:start + length].split(b"\0", 1)[0].decode(errors="replace")
        start += (length + 3) & ~3
    return out
