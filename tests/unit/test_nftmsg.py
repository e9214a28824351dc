"""The nf_tables message compiler, without a kernel: what it refuses, how it splits element
lists, and one message byte for byte as nft itself sends it (tests/test_nft_netlink.py
applies everything it makes to real namespaces)."""

from __future__ import annotations

import pytest

from netns_lab.realize import nftmsg

T = "ip kube-proxy"


@pytest.mark.parametrize("line", [
    'add table ip kube-proxy { comment "rules for kube-proxy" ; }',
    "add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }",
    "add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check",
    "add rule ip kube-proxy masquerading masquerade fully-random",
    "add rule ip kube-proxy firewall-x ip saddr != { 203.0.113.0/24 , 198.51.100.0/24 } drop",
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



def test_a_numgen_map_of_many_endpoints_is_split_and_a_too_long_comment_refused() -> None:
    targets = " , ".join(f"{i} : goto endpoint-{i:05d}-ns/name/tcp/http__10.244.{i // 250}.{i % 250}/8080" for i in range(2000))
    messages = nftmsg.compile_transaction(T, f"add rule {T} service-S numgen random mod 2000 vmap {{ {targets} }}")
    kinds = [m.kind & 0xFF for m in messages]
    assert kinds[0] == nftmsg.NEWSET and kinds[-1] == nftmsg.NEWRULE and kinds.count(nftmsg.NEWSETELEM) > 1
    assert all(len(m.body) < 65535 for m in messages)
    with pytest.raises(nftmsg.Unsupported, match="longer than 128"):
        nftmsg.compile_transaction(T, f'add element {T} no-endpoint-services {{ 10.96.0.1 . tcp . 80 comment "{"x" * 129}" : drop }}')
    nftmsg.compile_transaction(T, f'add element {T} no-endpoint-services {{ 10.96.0.1 . tcp . 80 comment "{"x" * 128}" : drop }}')
