"""IPVS (generic netlink) and ipset (nfnetlink) request messages, encoded with ``struct``.

Why not pyroute2's message classes: they encode one message in ~300 µs here (its generic
attribute machinery), so a full ipvs-mode sync of 1,000 Services (~12,000 requests: a
virtual server, its ten real servers, ipset entries) spent seconds natively, and minutes in
the stock-kernel VM under emulation, building messages, against well under a second for the
kernel to apply them. These are the few messages kube-proxy's ipvs mode sends, with the same
attributes and values pyroute2 sends (tests/unit/test_ipvsmsg.py decodes both and compares),
so the kernel sees the same requests.

Attribute numbers are the kernel's (include/uapi/linux/ip_vs.h, netfilter/ipset/ip_set.h).
"""

from __future__ import annotations

import socket
import struct
import sys

NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLA_F_NESTED, NLA_F_NET_BYTEORDER = 0x8000, 0x4000
GENL_VERSION = 0x1  # IPVS_GENL_VERSION
NFNL_SUBSYS_IPSET = 6

# IPVS: command attributes, service and destination attributes
CMD_ATTR_SERVICE, CMD_ATTR_DEST = 1, 2
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_SCHED_NAME, SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK = 1, 2, 3, 4, 6, 7, 8, 9
DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT, DEST_U_THRESH, DEST_L_THRESH = 1, 2, 3, 4, 5, 6
DEST_ADDR_FAMILY, DEST_TUN_TYPE, DEST_TUN_PORT, DEST_TUN_FLAGS = 11, 13, 14, 15
# ipset
IPSET_ATTR_PROTOCOL, IPSET_ATTR_SETNAME, IPSET_ATTR_DATA = 1, 2, 7
IPSET_ATTR_IP, IPSET_ATTR_PORT, IPSET_ATTR_PROTO, IPSET_ATTR_IP2, IPSET_ATTR_CIDR2 = 1, 4, 7, 20, 21
IPSET_ATTR_IPADDR_IPV4, IPSET_ATTR_IPADDR_IPV6 = 1, 2

_HDR = struct.Struct("=IHHII")  # nlmsghdr


def nla(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _u16(v: int) -> bytes:
    return struct.pack("=H", v)


def _u32(v: int) -> bytes:
    return struct.pack("=I", v)


def _be16(v: int) -> bytes:
    return struct.pack("!H", v)


def _addr(ip: str) -> tuple[int, bytes]:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    return family, socket.inet_pton(family, ip)


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _HDR.pack(_HDR.size + len(body), kind, flags, seq, 0) + body


# -- IPVS ---------------------------------------------------------------------------------------
def service_key(addr: str, port: int, protocol: int) -> bytes:
    """The attributes that name a virtual server (all a deletion or a real server's request reads)."""
    family, raw = _addr(addr)
    return nla(SVC_ADDR, raw) + nla(SVC_AF, _u16(family)) + nla(SVC_PORT, _be16(port)) + nla(SVC_PROTOCOL, _u16(protocol))


V4_HOST = b"\xff\xff\xff\xff"
V6_HOST = (128).to_bytes(4, sys.byteorder)  # IPv6: the prefix length, read as a host-order u32 (as ipvsadm sends it)


def service_full(addr: str, port: int, protocol: int, scheduler: str, persistent_s: int | None) -> bytes:
    """A virtual server as created or changed: key, scheduler, flags (persistence), timeout, netmask."""
    v6 = ":" in addr
    flags = 0x1 if persistent_s else 0  # IP_VS_SVC_F_PERSISTENT
    return (service_key(addr, port, protocol) + nla(SVC_SCHED_NAME, scheduler.encode() + b"\0")
            + nla(SVC_FLAGS, struct.pack("=II", flags, 0xFFFF)) + nla(SVC_TIMEOUT, _u32(persistent_s or 0))
            + nla(SVC_NETMASK, V6_HOST if v6 else V4_HOST))


def dest(addr: str, port: int, weight: int = 1) -> bytes:
    """A real server (masquerading, as kube-proxy's: forwarding method 0)."""
    family, raw = _addr(addr)
    return (nla(DEST_TUN_TYPE, b"\0") + nla(DEST_TUN_PORT, b"\0\0") + nla(DEST_TUN_FLAGS, b"\0\0")
            + nla(DEST_U_THRESH, _u32(0)) + nla(DEST_L_THRESH, _u32(0)) + nla(DEST_ADDR, raw)
            + nla(DEST_ADDR_FAMILY, _u16(family)) + nla(DEST_PORT, _be16(port)) + nla(DEST_WEIGHT, _u32(weight))
            + nla(DEST_FWD_METHOD, _u32(0)))


def ipvs_body(cmd: int, service: bytes, destination: bytes | None = None) -> bytes:
    """genlmsghdr + the service (and real server) attributes."""
    body = struct.pack("=BBH", cmd, GENL_VERSION, 0) + nla(CMD_ATTR_SERVICE, service)
    return body + (nla(CMD_ATTR_DEST, destination) if destination is not None else b"")


# -- ipset --------------------------------------------------------------------------------------
def _ip_nest(kind: int, ip: str) -> bytes:
    family, raw = _addr(ip)
    inner = IPSET_ATTR_IPADDR_IPV6 if family == socket.AF_INET6 else IPSET_ATTR_IPADDR_IPV4
    return nla(kind | NLA_F_NESTED, nla(inner | NLA_F_NET_BYTEORDER, raw))


def ipset_data(entry: str, stype: str) -> bytes:
    """The DATA of one entry in our text form: ``30080`` (bitmap:port), ``ip`` (hash:ip),
    ``ip,tcp:80`` (hash:ip,port), ``ip,tcp:80,ip2`` (hash:ip,port,ip) or ``ip,tcp:80,cidr``
    (hash:ip,port,net; a bare address is a host, as ipset reads it)."""
    if stype == "bitmap:port":
        return nla(IPSET_ATTR_PORT | NLA_F_NET_BYTEORDER, _be16(int(entry)))
    parts = entry.split(",")
    out = _ip_nest(IPSET_ATTR_IP, parts[0])
    if stype == "hash:ip":
        return out
    proto, port = parts[1].split(":")
    out += nla(IPSET_ATTR_PORT | NLA_F_NET_BYTEORDER, _be16(int(port)))
    out += nla(IPSET_ATTR_PROTO | NLA_F_NET_BYTEORDER, bytes([{"tcp": 6, "udp": 17, "sctp": 132}[proto.lower()]]))
    if stype == "hash:ip,port":
        return out
    ip2, _, cidr = parts[2].partition("/")
    if cidr:
        out += nla(IPSET_ATTR_CIDR2 | NLA_F_NET_BYTEORDER, bytes([int(cidr)]))
    return out + _ip_nest(IPSET_ATTR_IP2, ip2)


def ipset_body(family: int, protocol_version: int, name: str, data: bytes) -> bytes:
    """nfgenmsg + protocol version, set name and the entry."""
    return (struct.pack("=BBH", family, 0, 0) + nla(IPSET_ATTR_PROTOCOL, bytes([protocol_version]))
            + nla(IPSET_ATTR_SETNAME, name.encode() + b"\0") + nla(IPSET_ATTR_DATA | NLA_F_NESTED, data))
