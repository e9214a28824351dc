"""kube-proxy's nftables transactions as nf_tables netlink messages: what ``nft -f`` sends.

Why: ``nft -f`` (1.0.6 here, and knftables, which kube-proxy uses, runs the same binary)
loads the table's chains into its cache before it evaluates a single line, so a partial sync
that touches one Service paid ~2 s at 10,000 Services for a transaction of ~30 messages.
This module compiles the transaction text the renderer wrote (:mod:`netns_lab.proxy.nftables`)
into the messages nft would have sent for it, so the kernel gets the same objects without
nft's cache; ``nft list table`` shows the same table either way (tests/test_nft_netlink.py
applies every kube-proxy fixture both ways and compares).

The vocabulary is the renderer's, not nftables': chains, flushes and deletions, affinity
sets, map and set elements, and the rule forms :func:`~netns_lab.proxy.nftables.render_port`
writes (a firewall of several source ranges included). Anything else (the table's base
chains, ``ct state``, ``masquerade``, a set of destination addresses...) raises
:class:`Unsupported`, and the caller sends that transaction to ``nft -f`` instead: never a
guess.

Encodings follow nft's (``nft --debug=netlink,mnl`` shows them): a byte-aligned prefix is
matched by loading only its bytes, a concatenation's members take 4-byte slots, an
anonymous verdict map is a NEWSET named ``__map%d`` (the kernel picks the number) tied to its
rule by a set id, an anonymous interval set one named ``__set%d``. Attribute numbers are the
kernel's (include/uapi/linux/netfilter/nf_tables.h).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
import sys
from collections.abc import Callable

NFNL_SUBSYS_NFTABLES = 10
NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE, NLM_F_APPEND = 0x1, 0x4, 0x400, 0x800
NLA_F_NESTED = 0x8000
BATCH_BEGIN, BATCH_END = 0x10, 0x11
NEWCHAIN, DELCHAIN, NEWRULE, DELRULE, NEWSET, DELSET, NEWSETELEM, DELSETELEM = 3, 5, 6, 8, 9, 11, 12, 14

# verdicts (NF_DROP, NFT_JUMP, NFT_GOTO), registers, comparison operators
DROP, JUMP, GOTO = 0, -3, -4
REG_VERDICT, REG_1, REG_2 = 0, 1, 2
CMP_EQ, CMP_NEQ = 0, 1
BASE_NETWORK = 1
# set flags: anonymous | constant | map, anonymous | constant | interval, timeout | eval (a set `update` writes to)
ANON_VMAP_FLAGS, ANON_INTERVAL_FLAGS, AFFINITY_FLAGS = 0x0B, 0x07, 0x30
ELEM_INTERVAL_END = 0x1  # NFT_SET_ELEM_INTERVAL_END
LOOKUP_INVERT = 0x1  # NFT_LOOKUP_F_INV: `!= { ... }`
TYPE_INTEGER, TYPE_IPV4, TYPE_IPV6, TYPE_VERDICT = 4, 7, 8, 0xFFFFFF00
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132}
ELEMENTS_PER_MESSAGE_BYTES = 60000  # nft splits element lists too (mnl_nft_setelem_batch)
COMMENT_MAX = 128  # NFTNL_UDATA_COMMENT_MAXLEN

# nft's set user data (libnftnl udata TLVs): the key's byte order, and for an anonymous
# verdict map made by `numgen ... vmap { }` what nft writes for its data (copied from
# `nft --debug=mnl`); `nft list` reads them to print keys and values as it was given them
# (libnftnl writes its numbers in host order; these were captured on x86-64, where the lab runs)
UDATA_BIG_ENDIAN_KEY = bytes.fromhex("000402000000")
UDATA_NUMGEN_VMAP = bytes.fromhex("000401000000" "010400000000" "04080004010000000100" "060400000000")
# an anonymous interval set of source addresses (`ip saddr != { a , b }`): big-endian key,
# merged elements, and its key's `typeof` (payload expression; ip or ip6 header; saddr field)
UDATA_SADDR_INTERVALS = {
    "ip": bytes.fromhex("000402000000" "020401000000" "0314" "000407000000" "010c" "00040c000000" "01040b000000"),
    "ip6": bytes.fromhex("000402000000" "020401000000" "0314" "000407000000" "010c" "00040d000000" "010408000000"),
}
UDATA_ELEM_INTERVAL_OPEN = bytes.fromhex("010401000000")  # an interval that runs to the last address


class Unsupported(ValueError):
    """A statement this compiler does not know: send the transaction to ``nft -f``."""


# -- attributes --------------------------------------------------------------------------------
def nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    if length > 0xFFFF:  # a netlink attribute's length is 16 bits
        raise Unsupported(f"an attribute of {length} bytes")
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def nest(kind: int, *parts: bytes) -> bytes:
    return nla(kind | NLA_F_NESTED, b"".join(parts))


def be32(v: int) -> bytes:
    return struct.pack("!i" if v < 0 else "!I", v)


def strz(s: str) -> bytes:
    return s.encode() + b"\0"


def _verdict(code: int, chain: str | None = None) -> bytes:
    inner = nla(1, be32(code)) + (nla(2, strz(chain)) if chain else b"")  # NFTA_VERDICT_CODE, _CHAIN
    return nest(2, inner)  # NFTA_DATA_VERDICT


def _expr(name: str, *attrs: bytes) -> bytes:
    return nest(1, nla(1, strz(name)), nest(2, *attrs))  # NFTA_LIST_ELEM {NFTA_EXPR_NAME, NFTA_EXPR_DATA}


def _udata_comment(text: str) -> bytes:
    raw = strz(text)
    if len(raw) > COMMENT_MAX + 1:  # nft refuses it ("comment too long"): so must its stand-in
        raise Unsupported(f"a comment longer than {COMMENT_MAX} bytes")
    return bytes((0, len(raw))) + raw  # NFTNL_UDATA_*_COMMENT


# -- expressions (what nft's netlink_linearize emits for each) ----------------------------------
def payload(offset: int, length: int, dreg: int = REG_1) -> bytes:
    return _expr("payload", nla(1, be32(dreg)), nla(2, be32(BASE_NETWORK)), nla(3, be32(offset)), nla(4, be32(length)))


def cmp(op: int, raw: bytes, sreg: int = REG_1) -> bytes:
    return _expr("cmp", nla(1, be32(sreg)), nla(2, be32(op)), nest(3, nla(1, raw)))


def immediate_verdict(code: int, chain: str | None = None) -> bytes:
    return _expr("immediate", nla(1, be32(REG_VERDICT)), nest(2, _verdict(code, chain)))  # NFTA_IMMEDIATE_DATA


def immediate_value(reg: int, raw: bytes) -> bytes:
    return _expr("immediate", nla(1, be32(reg)), nest(2, nla(1, raw)))  # NFTA_IMMEDIATE_DATA {NFTA_DATA_VALUE}


def lookup(set_name: str, sreg: int = REG_1, dreg: int | None = None, set_id: int | None = None, flags: int = 0) -> bytes:
    attrs = [nla(1, strz(set_name)), nla(2, be32(sreg))]
    if dreg is not None:
        attrs.append(nla(3, be32(dreg)))
    if set_id is not None:
        attrs.append(nla(4, be32(set_id)))
    if flags:
        attrs.append(nla(5, be32(flags)))  # NFTA_LOOKUP_FLAGS
    return _expr("lookup", *attrs)


class Family:
    """What differs between ``ip`` and ``ip6`` tables: offsets, address sizes, the NAT family."""

    def __init__(self, name: str) -> None:
        if name not in ("ip", "ip6"):
            raise Unsupported(f"table family {name!r}")
        self.name = name
        self.v6 = name == "ip6"
        self.nfproto = 10 if self.v6 else 2
        self.addr_len = 16 if self.v6 else 4
        self.saddr, self.daddr = (8, 24) if self.v6 else (12, 16)
        self.addr_type = TYPE_IPV6 if self.v6 else TYPE_IPV4

    def addr(self, text: str) -> bytes:
        a = ipaddress.ip_address(text)
        if a.version != (6 if self.v6 else 4):
            raise Unsupported(f"address {text} in an {self.name} table")
        return a.packed

    def network(self, text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """``10.0.0.0/8`` or ``10.1.2.3`` (a /32) of this table's family."""
        net = ipaddress.ip_network(text, strict=False)
        if net.version != (6 if self.v6 else 4):
            raise Unsupported(f"address {text} in an {self.name} table")
        return net

    def load(self, field: str, length: int | None = None) -> bytes:
        """The payload expression loading ``saddr`` or ``daddr`` (or its first ``length`` bytes)."""
        return payload(self.saddr if field == "saddr" else self.daddr, length or self.addr_len)

    def match(self, field: str, value: str, negate: bool = False) -> list[bytes]:
        """``ip saddr 10.0.0.1`` / ``ip saddr != 10.244.0.0/16``: nft loads only a byte-aligned
        prefix's bytes; another prefix is masked (bitwise) first."""
        op = CMP_NEQ if negate else CMP_EQ
        net = self.network(value)
        bits = net.prefixlen
        if bits == 0:
            raise Unsupported(f"prefix {value}")
        if "/" not in value or bits == self.addr_len * 8:
            return [self.load(field), cmp(op, net.network_address.packed)]
        if bits % 8 == 0:
            return [self.load(field, bits // 8), cmp(op, net.network_address.packed[: bits // 8])]
        mask = net.netmask.packed
        bitwise = _expr("bitwise", nla(1, be32(REG_1)), nla(2, be32(REG_1)), nla(3, be32(self.addr_len)),
                        nest(4, nla(1, mask)), nest(5, nla(1, bytes(self.addr_len))))
        return [self.load(field), bitwise, cmp(op, net.network_address.packed)]


# -- messages ------------------------------------------------------------------------------------
class Message:
    """One nf_tables request: its type, flags and body (nfgenmsg + attributes), and the
    statement it came from (for errors)."""

    __slots__ = ("kind", "flags", "body", "what")

    def __init__(self, kind: int, flags: int, body: bytes, what: str) -> None:
        self.kind, self.flags, self.body, self.what = kind, flags, body, what


_TOKEN = re.compile(r'"[^"]*"|\S+')


class Compiler:
    """Compiles one transaction's text (``add chain ...`` lines) for one table."""

    _HANDLERS: dict[str, Callable[[Compiler, str, str], list[Message]]]  # set below the class

    def __init__(self, table: str) -> None:
        fam, _, name = table.partition(" ")
        self.family = Family(fam)
        self.table = name
        self.prefix = f"{fam} {name} "
        self.set_id = 0
        self.head = struct.pack("=BBH", self.family.nfproto, 0, 0)  # nfgenmsg
        self.table_attr = nla(1, strz(name))

    def compile(self, text: str) -> list[Message]:
        out: list[Message] = []
        for line in text.splitlines():
            if line.strip():
                out.extend(self.statement(line))
        return out

    def _msg(self, kind: int, flags: int, attrs: bytes, what: str) -> Message:
        return Message((NFNL_SUBSYS_NFTABLES << 8) | kind, NLM_F_REQUEST | flags, self.head + attrs, what)

    def statement(self, line: str) -> list[Message]:
        for verb, handler in self._HANDLERS.items():
            if line.startswith(verb) and line[len(verb):].startswith(self.prefix):
                rest = line[len(verb) + len(self.prefix):]
                try:
                    return handler(self, rest, line)  # type: ignore[no-any-return]
                except Unsupported:
                    raise
                except (ValueError, IndexError, struct.error) as exc:  # an address or number it cannot read
                    raise Unsupported(line) from exc
        raise Unsupported(line)

    # chains and sets
    def _named(self, rest: str, line: str, kind: int, flags: int, name_attr: int) -> list[Message]:
        """A statement that names one chain or set and nothing more (``add chain T C``,
        ``flush chain``, ``delete chain``, ``delete set``, ``flush set|map``: the last a
        DELSETELEM without elements). Anything after the name (a base chain's hook, a comment)
        is the full sync's fixed objects: not this compiler's."""
        if " " in rest:
            raise Unsupported(line)
        return [self._msg(kind, flags, self.table_attr + nla(name_attr, strz(rest)), line)]

    def _add_set(self, rest: str, line: str) -> list[Message]:
        """An affinity set: ``NAME { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }``."""
        addr = "ipv6_addr" if self.family.v6 else "ipv4_addr"
        m = re.fullmatch(r"(\S+) \{ type " + addr + r" ; flags dynamic,timeout ; timeout (\d+)s ; \}", rest)
        if not m:
            raise Unsupported(line)
        self.set_id += 1
        attrs = (self.table_attr + nla(2, strz(m.group(1))) + nla(3, be32(AFFINITY_FLAGS))
                 + nla(4, be32(self.family.addr_type)) + nla(5, be32(self.family.addr_len)) + nla(10, be32(self.set_id))
                 + nla(11, struct.pack("!Q", int(m.group(2)) * 1000)) + nla(13, UDATA_BIG_ENDIAN_KEY))
        return [self._msg(NEWSET, NLM_F_CREATE, attrs, line)]

    # elements
    def _key(self, text: str, line: str) -> bytes:
        parts = text.split(" . ")
        if len(parts) == 1:
            return self.family.addr(parts[0])
        if len(parts) == 3:
            return self.family.addr(parts[0]) + self._proto(parts[1], line) + self._port(parts[2], line)
        if len(parts) == 2:
            return self._proto(parts[0], line) + self._port(parts[1], line)
        raise Unsupported(line)

    @staticmethod
    def _proto(text: str, line: str) -> bytes:
        if text not in PROTOCOLS:
            raise Unsupported(line)
        return bytes((PROTOCOLS[text], 0, 0, 0))  # one byte in a 4-byte slot

    @staticmethod
    def _port(text: str, line: str) -> bytes:
        if not text.isdigit() or int(text) > 65535:
            raise Unsupported(line)
        return struct.pack("!H", int(text)) + b"\0\0"

    def _element(self, text: str, line: str, keys_only: bool) -> bytes:
        text = text.strip()
        verdict = b""
        if " : " in text:
            text, _, target = text.partition(" : ")
            verdict = nest(2, self._verdict_data(target, line))  # NFTA_SET_ELEM_DATA
        comment = b""
        m = re.fullmatch(r'(.*?) comment "([^"]*)"', text)
        if m:
            text, comment = m.group(1), nla(6, _udata_comment(m.group(2)))  # NFTA_SET_ELEM_USERDATA
        key = nest(1, nla(1, self._key(text, line)))  # NFTA_SET_ELEM_KEY {NFTA_DATA_VALUE}
        return nest(1, key) if keys_only else nest(1, key + verdict + comment)

    def _verdict_data(self, text: str, line: str) -> bytes:
        words = text.split()
        if words == ["drop"]:
            return _verdict(DROP)
        if len(words) == 2 and words[0] in ("goto", "jump"):
            return _verdict(GOTO if words[0] == "goto" else JUMP, words[1])
        raise Unsupported(line)

    def _elements(self, rest: str, line: str, kind: int) -> list[Message]:
        m = re.fullmatch(r"(\S+) \{ (.*) \}", rest)
        if not m:
            raise Unsupported(line)
        head = self.table_attr + nla(2, strz(m.group(1)))
        elems = [self._element(text, line, kind == DELSETELEM) for text in m.group(2).split(", ")]
        return [self._msg(kind, NLM_F_CREATE if kind == NEWSETELEM else 0, head + nest(3, *group), line) for group in _groups(elems)]


    # rules
    def _add_rule(self, rest: str, line: str) -> list[Message]:
        chain, _, body = rest.partition(" ")
        words = _TOKEN.findall(body)
        comment = b""
        if len(words) >= 2 and words[-2] == "comment" and words[-1].startswith('"'):
            comment = nla(7, _udata_comment(words[-1][1:-1]))  # NFTA_RULE_USERDATA
            words = words[:-2]
        before: list[Message] = []  # an anonymous map goes before its rule
        exprs = self._exprs(words, line, before)
        attrs = self.table_attr + nla(2, strz(chain)) + nest(4, *exprs) + comment
        return before + [self._msg(NEWRULE, NLM_F_CREATE | NLM_F_APPEND, attrs, line)]

    def _exprs(self, w: list[str], line: str, before: list[Message]) -> list[bytes]:
        fam = self.family.name
        out: list[bytes] = []
        i = 0
        while i < len(w):
            rest = w[i:]
            if rest[:2] in ([fam, "saddr"], [fam, "daddr"]) and len(rest) > 2:
                field = rest[1]
                if rest[2:4] == ["!=", "{"]:
                    if "}" not in rest:
                        raise Unsupported(line)
                    end = rest.index("}")
                    ranges = " ".join(rest[4:end]).replace(",", " ").split()
                    if not ranges:
                        raise Unsupported(line)
                    if len(ranges) == 1:
                        out += self.family.match(field, ranges[0], negate=True)  # one range: nft makes it a match
                    else:
                        out += self._not_in_ranges(field, ranges, line, before)
                    i += end + 1
                elif rest[2] == "!=" and len(rest) > 3:
                    out += self.family.match(field, rest[3], negate=True)
                    i += 4
                elif rest[2].startswith("@"):
                    out += [self.family.load(field), lookup(rest[2][1:])]
                    i += 3
                elif rest[2] != "{":
                    out += self.family.match(field, rest[2])
                    i += 3
                else:
                    raise Unsupported(line)
            elif rest[:4] == ["fib", "saddr", "type", "local"]:
                fib = _expr("fib", nla(1, be32(REG_1)), nla(2, be32(3)), nla(3, be32(1)))  # ADDRTYPE of SADDR
                out += [fib, cmp(CMP_EQ, (2).to_bytes(4, sys.byteorder))]  # RTN_LOCAL, host order
                i += 4
            elif rest[:2] == ["meta", "l4proto"] and len(rest) > 2 and rest[2] in PROTOCOLS:
                meta = _expr("meta", nla(2, be32(16)), nla(1, be32(REG_1)))  # NFT_META_L4PROTO
                out += [meta, cmp(CMP_EQ, bytes((PROTOCOLS[rest[2]],)))]
                i += 3
            elif len(rest) == 2 and rest[0] in ("jump", "goto"):
                out.append(immediate_verdict(JUMP if rest[0] == "jump" else GOTO, rest[1]))
                i += 2
            elif rest == ["drop"]:
                out.append(immediate_verdict(DROP))
                i += 1
            elif rest[:2] == ["dnat", "to"] and len(rest) == 3:
                addr, port = _hostport(rest[2], line)
                out += [immediate_value(REG_1, self.family.addr(addr)), immediate_value(REG_2, struct.pack("!H", port)),
                        _expr("nat", nla(1, be32(1)), nla(2, be32(self.family.nfproto)), nla(3, be32(REG_1)),
                              nla(5, be32(REG_2)), nla(7, be32(0x2)))]  # DNAT; NF_NAT_RANGE_PROTO_SPECIFIED
                i += 3
            elif rest[:1] == ["update"] and len(rest) == 6 and rest[1].startswith("@") and rest[2:] == ["{", fam, "saddr", "}"]:
                out += [self.family.load("saddr"),
                        _expr("dynset", nla(1, strz(rest[1][1:])), nla(3, be32(1)), nla(4, be32(REG_1)))]  # UPDATE
                i += 6
            elif rest[:3] == ["numgen", "random", "mod"] and len(rest) >= 7 and rest[4:6] == ["vmap", "{"] and rest[-1] == "}":
                out += self._numgen_vmap(int(rest[3]), " ".join(rest[6:-1]), line, before)
                i = len(w)
            else:
                raise Unsupported(line)
        return out

    def _not_in_ranges(self, field: str, ranges: list[str], line: str, before: list[Message]) -> list[bytes]:
        """``ip saddr != { 203.0.113.0/24 , 198.51.100.7 }`` (a firewall of several source
        ranges): nft makes an anonymous interval set ``__set%d`` and looks the address up in it,
        inverted. Its elements are the ranges merged (overlapping and adjacent ones become one),
        each a start and an end marked INTERVAL_END (the end is the first address after it),
        after an END at 0 when the first range starts above it; a range that runs to the last
        address has no end, its start is marked open in its user data."""
        if field != "saddr":
            raise Unsupported(line)
        bits = self.family.addr_len * 8
        spans: list[list[int]] = []
        for r in sorted((self.family.network(t) for t in ranges), key=lambda n: int(n.network_address)):
            lo, hi = int(r.network_address), int(r.broadcast_address) + 1
            if spans and lo <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], hi)
            else:
                spans.append([lo, hi])
        keys: list[tuple[int, int, bytes]] = []  # (address, element flags, element user data)
        if spans[0][0] > 0:
            keys.append((0, ELEM_INTERVAL_END, b""))
        for lo, hi in spans:
            if hi >= 1 << bits:
                keys.append((lo, 0, UDATA_ELEM_INTERVAL_OPEN))
            else:
                keys += [(lo, 0, b""), (hi, ELEM_INTERVAL_END, b"")]
        elems = [nest(1, (nla(3, be32(flags)) if flags else b"") + nest(1, nla(1, addr.to_bytes(bits // 8, "big")))
                      + (nla(6, udata) if udata else b"")) for addr, flags, udata in keys]
        shape = nla(3, be32(ANON_INTERVAL_FLAGS)) + nla(4, be32(self.family.addr_type)) + nla(5, be32(self.family.addr_len))
        sid = self._anonymous("__set%d", shape, UDATA_SADDR_INTERVALS[self.family.name], elems, line, "set", before)
        return [self.family.load(field), lookup("__set%d", REG_1, set_id=sid, flags=LOOKUP_INVERT)]

    def _anonymous(self, name: str, shape: bytes, udata: bytes, elems: list[bytes], line: str, kind: str,
                   before: list[Message]) -> int:
        """An anonymous set or map made for one rule, before it: NEWSET ``name`` (``__set%d``
        or ``__map%d``: the kernel numbers it) of that ``shape`` (flags, key, data), sized for
        its elements, then the elements in messages that each fit (errors name ``line``'s ``kind``).
        Returns the set id the rule names it by."""
        self.set_id += 1
        head = self.table_attr + nla(2, strz(name))
        before.append(self._msg(NEWSET, NLM_F_CREATE, head + shape + nla(10, be32(self.set_id))
                                + nest(9, nla(1, be32(len(elems)))) + nla(13, udata), f"{line} [its {kind}]"))
        for group in _groups(elems):  # several messages for a Service of many endpoints, as nft splits them
            before.append(self._msg(NEWSETELEM, NLM_F_CREATE, head + nla(4, be32(self.set_id)) + nest(3, *group),
                                    f"{line} [its elements]"))
        return self.set_id

    def _numgen_vmap(self, modulus: int, body: str, line: str, before: list[Message]) -> list[bytes]:
        entries = [e.strip() for e in body.split(" , ")]
        if modulus < 1 or len(entries) != modulus:
            raise Unsupported(line)
        elems = []
        for n, entry in enumerate(entries):
            index, _, target = entry.partition(" : ")
            if index != str(n):
                raise Unsupported(line)
            key = nest(1, nla(1, n.to_bytes(4, sys.byteorder)))  # integer, host order
            elems.append(nest(1, key + nest(2, self._verdict_data(target, line))))  # KEY, DATA
        shape = (nla(3, be32(ANON_VMAP_FLAGS)) + nla(4, be32(TYPE_INTEGER)) + nla(5, be32(4))
                 + nla(6, be32(TYPE_VERDICT)) + nla(7, be32(0)))
        sid = self._anonymous("__map%d", shape, UDATA_NUMGEN_VMAP, elems, line, "map", before)
        ng = _expr("numgen", nla(1, be32(REG_1)), nla(2, be32(modulus)), nla(3, be32(1)), nla(4, be32(0)))  # RANDOM
        return [ng, lookup("__map%d", REG_1, REG_VERDICT, sid)]


Compiler._HANDLERS = {  # statement verb -> how to compile what follows the table
    "add chain ": lambda c, rest, line: c._named(rest, line, NEWCHAIN, NLM_F_CREATE, 3),  # NFTA_CHAIN_NAME
    "flush chain ": lambda c, rest, line: c._named(rest, line, DELRULE, 0, 2),  # NFTA_RULE_CHAIN
    "delete chain ": lambda c, rest, line: c._named(rest, line, DELCHAIN, 0, 3),
    "delete set ": lambda c, rest, line: c._named(rest, line, DELSET, 0, 2),  # NFTA_SET_NAME
    "flush set ": lambda c, rest, line: c._named(rest, line, DELSETELEM, 0, 2),  # NFTA_SET_ELEM_LIST_SET
    "flush map ": lambda c, rest, line: c._named(rest, line, DELSETELEM, 0, 2),
    "add set ": Compiler._add_set,
    "add rule ": Compiler._add_rule,
    "add element ": lambda c, rest, line: c._elements(rest, line, NEWSETELEM),
    "delete element ": lambda c, rest, line: c._elements(rest, line, DELSETELEM),
}


def _groups(elems: list[bytes]) -> list[list[bytes]]:
    """Elements in runs that each fit one message's element list (a 16-bit attribute length)."""
    out: list[list[bytes]] = [[]]
    size = 0
    for e in elems:
        if out[-1] and size + len(e) > ELEMENTS_PER_MESSAGE_BYTES:
            out.append([])
            size = 0
        out[-1].append(e)
        size += len(e)
    return out


def _hostport(text: str, line: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([0-9.]+):(\d+)", text)
    if not m:
        raise Unsupported(line)
    addr, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if int(port) > 65535:
        raise Unsupported(line)
    return addr, int(port)


def compile_transaction(table: str, text: str) -> list[Message]:
    """The messages for ``text`` (one transaction for ``table``, e.g. ``ip kube-proxy``), or
    :class:`Unsupported` for a statement outside the renderer's partial-sync vocabulary."""
    return Compiler(table).compile(text)


def batch(messages: list[Message]) -> tuple[bytes, dict[int, str], int]:
    """BEGIN, the messages, END as one buffer (the kernel takes the rest of the buffer after
    BEGIN as the batch, so it must go in one send); sequence -> statement for errors; and the
    sequence of the last message, which asks for an acknowledgement (NLM_F_ACK): its answer
    says the kernel read the batch to its end."""
    hdr = struct.Struct("=IHHII")
    nfgen_batch = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(NFNL_SUBSYS_NFTABLES))
    parts = [hdr.pack(hdr.size + 4, BATCH_BEGIN, NLM_F_REQUEST, 1, 0) + nfgen_batch]
    whats: dict[int, str] = {}
    seq = 1
    for i, m in enumerate(messages):
        seq += 1
        flags = m.flags | (NLM_F_ACK if i == len(messages) - 1 else 0)
        parts.append(hdr.pack(hdr.size + len(m.body), m.kind, flags, seq, 0) + m.body)
        parts.append(b"\0" * (-len(m.body) % 4))
        whats[seq] = m.what
    last = seq
    seq += 1
    parts.append(hdr.pack(hdr.size + 4, BATCH_END, NLM_F_REQUEST, seq, 0) + nfgen_batch)
    whats[1] = whats[seq] = "the transaction"
    return b"".join(parts), whats, last
