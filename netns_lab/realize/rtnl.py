"""A small synchronous rtnetlink channel: pyroute2's message classes, a plain socket.

pyroute2 0.9's ``IPRoute`` runs an asyncio loop per call (~0.5 ms per request); building a
1,000-pod lab takes ~8,000 requests. Here messages are still encoded and decoded by
pyroute2 (``ifinfmsg``, ``ifaddrmsg``, ``rtmsg``, ``ndmsg``), but requests are sent in
batches on one ``AF_NETLINK`` socket and their ACKs collected together, which is how
``ip -batch`` gets its speed. The socket belongs to the namespace of the thread that opened
it, so a builder thread opens one per namespace and never needs to switch back to use it.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink import NLM_F_DUMP, NLMSG_DONE
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_GETADDR,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    RTM_NEWRULE,
    RTM_SETLINK,
)
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from netns_lab.errors import RealizeError

NETLINK_ROUTE = 0
CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
NUD_PERMANENT = 0x80
RTNH_F_ONLINK = 4
NTF_SELF = 0x02
_HDR = struct.Struct("=IHHII")
WINDOW = 64  # requests in flight per socket (see Rtnl.commit)
IFLA_PROTINFO = 12
IFLA_BRPORT_MODE = 4
NLA_F_NESTED = 0x8000


class Batch:
    """Netlink requests sent a window at a time on one socket, every ACK checked: the
    mechanism, for any netlink protocol (rtnetlink here, generic netlink for IPVS and
    nfnetlink for ipset in :mod:`.ipvs`). The socket belongs to the namespace of the thread
    that created this object."""

    def __init__(self, where: str, protocol: int = NETLINK_ROUTE) -> None:
        self.where = where  # for error messages
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, 0))
        self.seq = 0
        self.pending: dict[int, str] = {}  # sequence -> what it was, for errors
        self.out: list[bytes] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queueing --------------------------------------------------------------------------
    def queue(self, msg: Any, kind: int, flags: int, what: str) -> None:
        """Any pyroute2 message class instance, sent as message type ``kind`` at commit()."""
        self._append(self._encode(msg, kind, flags), what)

    def queue_body(self, kind: int, flags: int, body: bytes, what: str) -> None:
        """A message already encoded but for its netlink header (realize.ipvsmsg)."""
        self.seq += 1
        self._append(_HDR.pack(_HDR.size + len(body), kind, flags, self.seq, 0) + body, what)

    def _encode(self, msg: Any, kind: int, flags: int) -> bytes:
        """A pyroute2 message as bytes, with the next sequence number."""
        self.seq += 1
        msg["header"]["type"] = kind
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = self.seq
        msg.encode()
        return bytes(msg.data[: msg["header"]["length"]])

    def _replies(self) -> Iterator[tuple[int, int, bytes, int, int]]:
        """What the kernel sends back, message by message: (type, sequence, buffer, offset, length)."""
        while True:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, kind, _flags, seq, _pid = _HDR.unpack_from(data, offset)
                yield kind, seq, data, offset, length
                offset += (length + 3) & ~3

    def _append(self, data: bytes, what: str) -> None:
        self.out.append(data)
        self.pending[self.seq] = what

    # -- sending -----------------------------------------------------------------------------
    def commit(self) -> None:
        """Send every queued request and check every ACK, in order, a window at a time.

        Each ACK costs the socket ~1 KiB of receive buffer (skb truesize) and the buffer is
        capped by the host's ``net.core.rmem_max`` (208 KiB by default), so at most
        ``WINDOW`` requests are in flight: more would make the kernel drop ACKs (ENOBUFS).
        The first error is raised as a RealizeError naming the object; later requests of the
        batch are still sent and checked, as the kernel applies them in order.
        """
        out, self.out = self.out, []
        first_error: RealizeError | None = None
        for start in range(0, len(out), WINDOW):
            window = out[start : start + WINDOW]
            chunk: list[bytes] = []
            size = 0
            for data in window:
                if size + len(data) > 60000 and chunk:
                    self.sock.sendmsg(chunk)
                    chunk, size = [], 0
                chunk.append(data)
                size += len(data)
            if chunk:
                self.sock.sendmsg(chunk)
            waiting = len(window)
            replies = self._replies()
            while waiting:  # the kernel sends exactly one ACK (NLMSG_ERROR) per request
                kind, seq, data, offset, _length = next(replies)
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, offset + _HDR.size)
                    what = self.pending.pop(seq, "?")
                    waiting -= 1
                    if code and first_error is None:
                        first_error = RealizeError(what, "netlink request for", -code)
        if first_error is not None:
            raise first_error


class Rtnl(Batch):
    """Batched rtnetlink requests in the namespace this object was created in."""

    def __init__(self, where: str) -> None:
        super().__init__(where, NETLINK_ROUTE)

    def link_add(self, what: str, **fields: Any) -> None:
        """``ifinfmsg`` from keyword fields: ``index``, ``flags`` plus IFLA_* attributes."""
        self.queue(_ifinf(fields), RTM_NEWLINK, CREATE, what)

    def link_set(self, what: str, **fields: Any) -> None:
        self.queue(_ifinf(fields), RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, what)

    def bridge_port_hairpin(self, what: str, index: int) -> None:
        """``bridge link set dev X hairpin on``: let a bridge port send a frame back out of the
        port it came in on, as kubelet's hairpin-veth mode does, so a pod reaches itself
        through its own Service when br_netfilter DNATs inside the bridge."""
        # Encoded by hand: the kernel only reads IFLA_PROTINFO as port attributes when it carries
        # NLA_F_NESTED, which pyroute2 does not set on this attribute.
        mode = struct.pack("=HHB3x", 5, IFLA_BRPORT_MODE, 1)
        protinfo = struct.pack("=HH", 4 + len(mode), IFLA_PROTINFO | NLA_F_NESTED) + mode
        body = struct.pack("=BxHiII", socket.AF_BRIDGE, 0, index, 0, 0) + protinfo
        self.seq += 1
        self._append(_HDR.pack(_HDR.size + len(body), RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, self.seq, 0) + body, what)

    def _addr(self, kind: int, flags: int, what: str, index: int, address: str, prefixlen: int) -> None:
        msg = ifaddrmsg()
        msg["family"] = family_of(address)
        msg["prefixlen"] = prefixlen
        msg["index"] = index
        msg["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
        if msg["family"] == socket.AF_INET6:
            # The plan gives every address once, so duplicate address detection has nothing to
            # find; without NODAD an address stays "tentative" (unusable) for about a second.
            msg["attrs"] = [("IFA_ADDRESS", address), ("IFA_FLAGS", IFA_F_NODAD)]
        self.queue(msg, kind, flags, what)

    def addr_add(self, what: str, index: int, address: str, prefixlen: int) -> None:
        self._addr(RTM_NEWADDR, CREATE, what, index, address, prefixlen)

    def addr_del(self, what: str, index: int, address: str, prefixlen: int) -> None:
        self._addr(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, what, index, address, prefixlen)

    def addresses(self, index: int, family: int = socket.AF_INET) -> list[str]:
        """The addresses of ``family`` on interface ``index`` (a dump, outside any batch)."""
        msg = ifaddrmsg()
        msg["family"] = family
        self.sock.send(self._encode(msg, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP))
        out: list[str] = []
        for kind, _seq, data, offset, length in self._replies():
            if kind == NLMSG_DONE:
                return out
            if kind == RTM_NEWADDR:
                m = ifaddrmsg(data[offset : offset + length])
                m.decode()
                if m["index"] == index:
                    out.append(m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS"))
        return out

    def route_add(self, what: str, dst: str, dst_len: int, gateway: str, oif: int, onlink: bool = False,
                  table: int = 254) -> None:
        self._route(what, dst, dst_len, table, [("RTA_GATEWAY", gateway), ("RTA_OIF", oif)], RTNH_F_ONLINK if onlink else 0)

    def route_add_multipath(self, what: str, dst: str, dst_len: int, hops: list[tuple[str, int]]) -> None:
        """An ECMP route: one next hop per (gateway, interface index), equal weight."""
        nhs = [{"oif": oif, "hops": 0, "attrs": [("RTA_GATEWAY", gw)]} for gw, oif in hops]
        self._route(what, dst, dst_len, 254, [("RTA_MULTIPATH", nhs)], 0)

    def _route(self, what: str, dst: str, dst_len: int, table: int, attrs: list[tuple[str, Any]], flags: int) -> None:
        msg = rtmsg()
        gateways = [v for k, v in attrs if k == "RTA_GATEWAY"] + [
            a[1] for k, v in attrs if k == "RTA_MULTIPATH" for nh in v for a in nh["attrs"] if a[0] == "RTA_GATEWAY"]
        msg["family"] = family_of(dst if dst_len else gateways[0])
        msg["dst_len"] = dst_len
        msg["table"] = table if table < 256 else 252
        msg["proto"] = 4  # static
        msg["scope"] = 0
        msg["type"] = 1  # unicast
        msg["flags"] = flags
        msg["attrs"] = [*([("RTA_DST", dst)] if dst_len else []), ("RTA_TABLE", table), *attrs]
        self.queue(msg, RTM_NEWROUTE, CREATE, what)

    def route_del(self, what: str, dst: str, dst_len: int, table: int = 254) -> None:
        """``ip route del DST/LEN`` in ``table`` (whatever its next hops)."""
        msg = rtmsg()
        msg["family"] = family_of(dst)
        msg["dst_len"] = dst_len
        msg["table"] = table
        msg["attrs"] = [("RTA_DST", dst), ("RTA_TABLE", table)]
        self.queue(msg, RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, what)

    def rule_add(self, what: str, fwmark: int, table: int, priority: int, family: int = socket.AF_INET) -> None:
        """``ip [-6] rule add fwmark MARK lookup TABLE priority PRIO`` (policy routing)."""
        msg = fibmsg()
        msg["family"] = family
        msg["table"] = table if table < 256 else 252
        msg["action"] = 1  # FR_ACT_TO_TBL
        msg["attrs"] = [("FRA_TABLE", table), ("FRA_FWMARK", fwmark), ("FRA_FWMASK", 0xFFFFFFFF), ("FRA_PRIORITY", priority)]
        self.queue(msg, RTM_NEWRULE, CREATE, what)

    def neigh_add(self, what: str, index: int, dst: str, lladdr: str, family: int | None = None, flags: int = 0, append: bool = False) -> None:
        """A permanent ARP (IPv4) or neighbour-discovery (IPv6) entry; AF_BRIDGE: an FDB entry."""
        msg = ndmsg()
        msg["family"] = family_of(dst) if family is None else family
        msg["ifindex"] = index
        msg["state"] = NUD_PERMANENT
        msg["flags"] = flags
        msg["attrs"] = [("NDA_DST", dst), ("NDA_LLADDR", lladdr)]
        # Replace, not exclusive: an entry ARP learned before the plan's permanent one arrived (a
        # node on another machine of a spread lab may speak first) is overwritten, as `ip neigh replace`.
        nl_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | (0x800 if append else 0x100)  # NLM_F_APPEND / NLM_F_REPLACE
        self.queue(msg, RTM_NEWNEIGH, nl_flags, what)

    def neigh_del(self, what: str, index: int, dst: str) -> None:
        msg = ndmsg()
        msg["family"] = family_of(dst)
        msg["ifindex"] = index
        msg["attrs"] = [("NDA_DST", dst)]
        self.queue(msg, RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, what)

    def fdb_append(self, what: str, index: int, lladdr: str, dst: str) -> None:
        """A VXLAN forwarding entry (``bridge fdb append LLADDR dev X dst IP self permanent``)."""
        self.neigh_add(what, index, dst, lladdr, family=socket.AF_BRIDGE, flags=NTF_SELF, append=True)

IFA_F_NODAD = 0x02


def family_of(address: str) -> int:
    """AF_INET6 for an IPv6 address, AF_INET otherwise: requests take their family from the
    address they carry, so one call serves both families of a dual-stack lab."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _ifinf(fields: dict[str, Any]) -> ifinfmsg:
    msg = ifinfmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["index"] = fields.pop("index", 0)
    if fields.pop("up", False):
        msg["flags"] = IFF_UP
        msg["change"] = IFF_UP
    msg["attrs"] = _attrs(fields)
    return msg


def _attrs(fields: dict[str, Any]) -> list[tuple[str, Any]]:
    names = {
        "ifname": "IFLA_IFNAME", "mtu": "IFLA_MTU", "address": "IFLA_ADDRESS", "master": "IFLA_MASTER",
        "net_ns_fd": "IFLA_NET_NS_FD", "link": "IFLA_LINK",
    }
    attrs: list[tuple[str, Any]] = []
    kind = fields.pop("kind", None)
    data = fields.pop("data", None)
    for key, value in fields.items():
        attrs.append((names[key], value))
    if kind is not None:
        info: list[tuple[str, Any]] = [("IFLA_INFO_KIND", kind)]
        if data is not None:
            info.append(("IFLA_INFO_DATA", data))
        attrs.append(("IFLA_LINKINFO", {"attrs": info}))
    return attrs


def veth_peer(**fields: Any) -> dict[str, Any]:
    """IFLA_INFO_DATA for a veth: the peer's own ifinfmsg (name, netns, MAC, index, up)."""
    index = fields.pop("index", 0)
    up = fields.pop("up", False)
    return {"attrs": [("VETH_INFO_PEER", {"index": index, "flags": IFF_UP if up else 0, "change": IFF_UP if up else 0, "attrs": _attrs(fields)})]}


__all__ = ["Batch", "Rtnl", "veth_peer"]
