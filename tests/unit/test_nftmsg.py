"""The nf_tables message compiler, without a kernel: what it refuses, how it splits element
lists, and one message byte for byte as nft itself sends it (tests/test_nft_netlink.py
applies everything it makes to real namespaces)."""

from __future__ import annotations

import struct

import pytest

from netns_lab.realize import nftmsg

T = "ip kube-proxy"


@pytest.mark.parametrize("line", [
    'add table ip kube-proxy { comment "rules for kube-proxy" ; }',
    "add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }",
    "add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check",
    "add rule ip kube-proxy masquerading masquerade fully-random",
    "add rule ip kube-proxy firewall-x ip daddr != { 203.0.113.0/24 , 198.51.100.0/24 } drop",
    "add rule ip kube-proxy firewall-x ip saddr != { 203.0.113.0/24 , 2001:db8::/32 } drop",
    "add rule ip kube-proxy firewall-x ip saddr != { 203.0.113.0/24 , 198.51.100.0/24 drop",
    "add rule ip kube-proxy x ip saddr != 0.0.0.0/0 drop",
    "add rule ip kube-proxy x ip saddr 10.1.2.300 drop",
    "add rule ip kube-proxy x numgen random mod 3 vmap { 0 : goto a , 1 : goto b }",
    "add element ip kube-proxy service-ips { 10.96.0.1 . icmp . 80 : goto a }",
    "add rule ip6 kube-proxy x jump y",
    "insert rule ip kube-proxy x drop",
])
def test_what_it_does_not_know_it_refuses(line: str) -> None:
    with pytest.raises(nftmsg.Unsupported):
        nftmsg.compile_transaction(T, line)


def test_a_long_element_list_is_split_under_the_attribute_size_limit() -> None:
    elements = ", ".join(f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256} . tcp . 80 : goto service-{i:05d}-ns/name/tcp/http"
                         for i in range(5000))
    messages = nftmsg.compile_transaction(T, f"add element {T} service-ips {{ {elements} }}")
    assert len(messages) > 1
    assert all(len(m.body) < 65535 for m in messages)
    assert sum(m.body.count(b"-ns/name/tcp/http\0") for m in messages) == 5000  # every element, once


def test_an_anonymous_numgen_map_is_the_message_nft_sends() -> None:
    """NEWSET for ``numgen random mod 2 vmap { ... }`` as ``nft --debug=mnl`` (1.0.6) showed
    it: the name the kernel numbers, flags anonymous|constant|map, integer key, verdict data,
    the set id, the size, nft's user data."""
    c = nftmsg.Compiler(T)
    c.set_id = 14
    msgs = c.compile(f"add rule {T} service-S numgen random mod 2 vmap {{ 0 : goto endpoint-A , 1 : goto endpoint-A }}\n")
    assert [m.kind & 0xFF for m in msgs] == [nftmsg.NEWSET, nftmsg.NEWSETELEM, nftmsg.NEWRULE]
    nft = bytes.fromhex(
        "02000000" "0f000100" "6b756265" "2d70726f" "78790000" "0c000200" "5f5f6d61" "70256400"
        + "08000300" "0000000b" "08000400" "00000004" "08000500" "00000004" "08000600" "ffffff00"
        + "08000700" "00000000" "08000a00" "0000000f" "0c000980" "08000100" "00000002"
        + "20000d00" "00040100" "00000104" "00000000" "04080004" "01000000" "01000604" "00000000")
    assert msgs[0].body == nft  # attribute headers in host order (x86), values big-endian


def test_several_source_ranges_are_the_interval_set_nft_sends() -> None:
    """``ip saddr != { a , b , c } drop``: NEWSET byte for byte as ``nft --debug=mnl`` (1.0.6)
    sent it (flags anonymous|constant|interval, the size, nft's user data), then its elements:
    an END at 0.0.0.0, then each range's start and its END (the first address after it)."""
    msgs = nftmsg.Compiler("ip t").compile("add rule ip t c ip saddr != { 10.0.0.0/8 , 192.168.5.0/24 , 203.0.113.7 } drop")
    assert [m.kind & 0xFF for m in msgs] == [nftmsg.NEWSET, nftmsg.NEWSETELEM, nftmsg.NEWRULE]
    nft = bytes.fromhex(
        "02000000" "06000100" "74000000" "0c000200" "5f5f7365" "74256400" "08000300" "00000007" "08000400" "00000007"
        + "08000500" "00000004" "08000a00" "00000001" "0c000980" "08000100" "00000007"
        + "26000d00" "00040200" "00000204" "01000000" "03140004" "07000000" "010c0004" "0c000000" "01040b00" "00000000")
    assert msgs[0].body == nft
    assert _elements(msgs[1].body) == [("00000000", END, ""), ("0a000000", 0, ""), ("0b000000", END, ""), ("c0a80500", 0, ""),
                                       ("c0a80600", END, ""), ("cb007107", 0, ""), ("cb007108", END, "")]
    # a range that runs to the last address has no END; its start is marked open, as nft marks it
    msgs = nftmsg.Compiler("ip t").compile("add rule ip t c ip saddr != { 128.0.0.0/1 , 1.2.3.4 } drop")
    assert _elements(msgs[1].body) == [("00000000", END, ""), ("01020304", 0, ""), ("01020305", END, ""),
                                       ("80000000", 0, "010401000000")]


END = nftmsg.ELEM_INTERVAL_END


def _attrs(data: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, i)
        out.append((kind & 0x3FFF, data[i + 4 : i + length]))
        i += (length + 3) & ~3
    return out


def _elements(body: bytes) -> list[tuple[str, int, str]]:
    """A NEWSETELEM's elements as (key, flags, user data), read back attribute by attribute."""
    listed = dict(_attrs(body[4:]))[3]  # NFTA_SET_ELEM_LIST_ELEMENTS
    out = []
    for _kind, elem in _attrs(listed):
        attrs = dict(_attrs(elem))
        flags = struct.unpack("!I", attrs[3])[0] if 3 in attrs else 0
        out.append((dict(_attrs(attrs[1]))[1].hex(), flags, attrs.get(6, b"").hex()))
    return out


def test_overlapping_and_adjacent_ranges_are_merged_as_nft_merges_them() -> None:
    one = nftmsg.Compiler("ip t").compile("add rule ip t c ip saddr != { 10.0.0.0/9 , 10.1.0.0/16 , 10.128.0.0/9 , 1.2.3.4 } drop")
    two = nftmsg.Compiler("ip t").compile("add rule ip t c ip saddr != { 10.0.0.0/8 , 1.2.3.4 } drop")
    assert [m.body for m in one] == [m.body for m in two]



def test_a_numgen_map_of_many_endpoints_is_split_and_a_too_long_comment_refused() -> None:
    targets = " , ".join(f"{i} : goto endpoint-{i:05d}-ns/name/tcp/http__10.244.{i // 250}.{i % 250}/8080" for i in range(2000))
    messages = nftmsg.compile_transaction(T, f"add rule {T} service-S numgen random mod 2000 vmap {{ {targets} }}")
    kinds = [m.kind & 0xFF for m in messages]
    assert kinds[0] == nftmsg.NEWSET and kinds[-1] == nftmsg.NEWRULE and kinds.count(nftmsg.NEWSETELEM) > 1
    assert all(len(m.body) < 65535 for m in messages)
    with pytest.raises(nftmsg.Unsupported, match="longer than 128"):
        nftmsg.compile_transaction(T, f'add element {T} no-endpoint-services {{ 10.96.0.1 . tcp . 80 comment "{"x" * 129}" : drop }}')
    nftmsg.compile_transaction(T, f'add element {T} no-endpoint-services {{ 10.96.0.1 . tcp . 80 comment "{"x" * 128}" : drop }}')
