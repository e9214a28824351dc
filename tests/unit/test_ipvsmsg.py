"""The hand-encoded IPVS and ipset requests (netns_lab/realize/ipvsmsg.py) carry exactly the
attributes and values pyroute2's message classes put in the same requests (decoded from both
encodings, compared as nested attribute maps: the kernel reads attributes by type)."""

from __future__ import annotations

import socket
import struct
import sys
import timeit

import pytest

from netns_lab.realize import ipvsmsg
from netns_lab.realize.ipvs import PROTO

V6 = socket.inet_ntoa((128).to_bytes(4, sys.byteorder))


def decode(buf: bytes, nested: frozenset[int] = frozenset()) -> dict[int, object]:
    """Attributes by type (flags kept in the type), nested ones decoded too."""
    out: dict[int, object] = {}
    off = 0
    while off + 4 <= len(buf):
        length, kind = struct.unpack_from("=HH", buf, off)
        payload = buf[off + 4: off + length]
        out[kind] = decode(payload, nested) if kind in nested else payload
        off += (length + 3) & ~3
    return out


def _pyroute2_ipvs(cmd: int, svc, dst=None, key_only: bool = False) -> bytes:  # type: ignore[no-untyped-def]
    from pyroute2.netlink.generic import ipvs as genl

    msg = genl.ipvsmsg()
    msg["cmd"] = cmd
    msg["version"] = genl.GENL_VERSION
    msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", svc.dump_key() if key_only else svc.dump_nla())]
    if dst is not None:
        msg["attrs"].append(("IPVS_CMD_ATTR_DEST", dst.dump_nla()))
    msg.encode()
    return bytes(msg.data[16: msg["header"]["length"]])  # without nlmsghdr


IPVS_NEST = frozenset({ipvsmsg.CMD_ATTR_SERVICE, ipvsmsg.CMD_ATTR_DEST})


@pytest.mark.parametrize("addr,port,proto,sched,persist", [
    ("10.96.0.1", 443, 6, "rr", None), ("10.96.0.10", 53, 17, "sh", 10800), ("fd00:10:96::1", 80, 6, "rr", None),
    ("fd00:10:96::a", 53, 17, "lc", 60),
])
def test_a_virtual_server_and_its_real_servers_match_pyroute2(addr: str, port: int, proto: int, sched: str, persist: int | None) -> None:
    from pyroute2 import IPVSDest, IPVSService

    v6 = ":" in addr
    kw = {"addr": addr, "port": port, "protocol": proto, "sched_name": sched}
    if v6:
        kw["netmask"] = V6
    if persist:
        kw |= {"flags": {"flags": 1, "mask": 0xFFFF}, "timeout": persist, "netmask": V6 if v6 else "255.255.255.255"}
    svc = IPVSService(**kw)
    mine = ipvsmsg.ipvs_body(1, ipvsmsg.service_full(addr, port, proto, sched, persist))
    theirs = _pyroute2_ipvs(1, svc)
    assert mine[:4] == theirs[:4]
    assert decode(mine[4:], IPVS_NEST) == decode(theirs[4:], IPVS_NEST)
    real = "fd00:10:244::5" if v6 else "10.244.1.5"
    mine = ipvsmsg.ipvs_body(5, ipvsmsg.service_key(addr, port, proto), ipvsmsg.dest(real, 8080))
    theirs = _pyroute2_ipvs(5, svc, IPVSDest(addr=real, port=8080, weight=1, fwd_method=0), key_only=True)
    assert decode(mine[4:], IPVS_NEST) == decode(theirs[4:], IPVS_NEST)


@pytest.mark.parametrize("entry,stype,etype", [
    ("30080", "bitmap:port", "port"),
    ("10.96.0.1", "hash:ip", "ip"),
    ("10.96.0.1,tcp:80", "hash:ip,port", "ip,port"),
    ("fd00:10:96::1,udp:53", "hash:ip,port", "ip,port"),
    ("10.244.0.5,tcp:8080,10.244.0.5", "hash:ip,port,ip", "ip,port,ip"),
    ("198.51.100.1,tcp:80,203.0.113.0/24", "hash:ip,port,net", "ip,port,net"),
    ("198.51.100.1,tcp:80,203.0.113.7", "hash:ip,port,net", "ip,port,net"),
])
def test_an_ipset_entry_matches_pyroute2(entry: str, stype: str, etype: str) -> None:
    from pyroute2 import IPSet
    from pyroute2.netlink.nfnetlink.ipset import ipset_msg

    v6 = ":" in entry.split(",")[0]
    family = socket.AF_INET6 if v6 else socket.AF_INET
    ipset = IPSet()
    try:
        core = ipset.asyncore
        args, ekw = _entry(entry, stype)
        msg = ipset_msg()
        msg["nfgen_family"] = family
        msg["attrs"] = [["IPSET_ATTR_PROTOCOL", core._proto_version], ["IPSET_ATTR_SETNAME", "KUBE-X"],
                        ["IPSET_ATTR_DATA", {"attrs": core._entry_to_data_attrs(args[0], ekw["etype"],
                                                                                "IPSET_ATTR_IPADDR_IPV6" if v6 else "IPSET_ATTR_IPADDR_IPV4")}]]
        msg["header"]["type"] = 9 | (ipvsmsg.NFNL_SUBSYS_IPSET << 8)  # IPSET_CMD_ADD: the type selects the encoding
        msg.encode()
        theirs = bytes(msg.data[16: msg["header"]["length"]])
        mine = ipvsmsg.ipset_body(family, core._proto_version, "KUBE-X", ipvsmsg.ipset_data(entry, stype))
    finally:
        ipset.close()
    nested = frozenset({ipvsmsg.IPSET_ATTR_DATA | ipvsmsg.NLA_F_NESTED, ipvsmsg.IPSET_ATTR_IP | ipvsmsg.NLA_F_NESTED,
                        ipvsmsg.IPSET_ATTR_IP2 | ipvsmsg.NLA_F_NESTED})
    assert mine[:4] == theirs[:4]
    assert decode(mine[4:], nested) == decode(theirs[4:], nested)


def test_encoding_is_cheap() -> None:
    """Not a timing assertion: printed for the record (benchmarks measure the sync itself)."""
    n = 2000
    t = timeit.timeit(lambda: ipvsmsg.ipvs_body(5, ipvsmsg.service_key("10.96.0.1", 80, 6), ipvsmsg.dest("10.244.1.5", 8080)), number=n)
    print(f"{t / n * 1e6:.1f} us per real-server request")


def _entry(entry: str, stype: str) -> tuple[tuple[object, ...], dict[str, str]]:
    """Our text form (``ip,tcp:80``) -> pyroute2's (entry, etype=...): what the lab sent before ipvsmsg."""
    from pyroute2.ipset import PortEntry

    if stype == "bitmap:port":
        return (int(entry),), {"etype": "port"}
    if stype == "hash:ip":
        return (entry,), {"etype": "ip"}
    parts = entry.split(",")
    proto, port = parts[1].split(":")
    pe = PortEntry(int(port), protocol=PROTO[proto.upper()])
    if stype == "hash:ip,port":
        return ((parts[0], pe),), {"etype": "ip,port"}
    return ((parts[0], pe, parts[2]),), {"etype": "ip,port,net" if stype == "hash:ip,port,net" else "ip,port,ip"}
