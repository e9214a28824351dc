"""DNS lookups the way a pod makes them: its own resolv.conf, its search path and ndots.

The query leaves from inside the pod's namespace (a worker thread), goes to the nameserver
its resolv.conf names (the kube-dns ClusterIP, through the node's Service rules) and is
answered by the real DNS server; dnspython is the client, over UDP or TCP.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from netns_lab.realize.netns import run_in
from netns_lab.realize.resolvconf import config_dir


@dataclass(frozen=True)
class ResolveResult:
    result: str  # ok | nxdomain | refused | servfail | timeout | failed
    answers: tuple[str, ...] = ()
    detail: str = ""
    qname: str = ""  # the name that answered (after search expansion)


def parse_resolv_conf(text: str) -> tuple[list[str], list[str], int]:
    nameservers, search, ndots = [], [], 1
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if parts[0] == "nameserver" and len(parts) > 1:
            nameservers.append(parts[1])
        elif parts[0] == "search":
            search = parts[1:]
        elif parts[0] == "options":
            for opt in parts[1:]:
                if opt.startswith("ndots:"):
                    ndots = int(opt.split(":", 1)[1])
    return nameservers, search, ndots


def candidates(name: str, search: list[str], ndots: int) -> list[str]:
    """The names a stub resolver tries, in order (resolv.conf(5) semantics)."""
    if name.endswith("."):
        return [name]
    absolute = name + "."
    expanded = [f"{name}.{d.rstrip('.')}." for d in search]
    return [absolute, *expanded] if name.count(".") >= ndots else [*expanded, absolute]


def normalize(text: str) -> str:
    return " ".join(t.strip('"').rstrip(".") for t in text.lower().split())


def resolve(netns_name: str, name: str, rtype: str = "A", tcp: bool = False, timeout: float = 2.0) -> ResolveResult:
    with open(f"{config_dir(netns_name)}/resolv.conf") as fh:
        nameservers, search, ndots = parse_resolv_conf(fh.read())
    if not nameservers:
        return ResolveResult("failed", detail="no nameserver in the pod's resolv.conf")

    def ask() -> ResolveResult:
        seen_nx: ResolveResult | None = None
        last = ResolveResult("failed", detail="no candidate name")
        for qname in candidates(name, search, ndots):
            try:
                query = dns.message.make_query(qname, dns.rdatatype.from_text(rtype))
            except dns.exception.FormError:  # NameTooLong: a long name plus a search domain passes 255 octets
                continue  # no resolver can send it; try the next candidate
            try:
                if tcp:
                    reply = dns.query.tcp(query, nameservers[0], timeout=timeout)
                else:
                    reply = dns.query.udp(query, nameservers[0], timeout=timeout)
            except dns.exception.Timeout:
                return ResolveResult("timeout", detail=f"no answer from {nameservers[0]} for {qname}", qname=qname)
            except OSError as exc:
                return ResolveResult("failed", detail=f"{nameservers[0]}: {exc.strerror}", qname=qname)
            rcode = reply.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                seen_nx = seen_nx or ResolveResult("nxdomain", detail=f"NXDOMAIN for {qname}", qname=qname)
                last = seen_nx
                continue
            if rcode != dns.rcode.NOERROR:
                last = ResolveResult(dns.rcode.to_text(rcode).lower(), detail=f"{dns.rcode.to_text(rcode)} for {qname}", qname=qname)
                continue
            answers = tuple(rd.to_text() for rrset in reply.answer for rd in rrset
                            if rrset.rdtype == dns.rdatatype.from_text(rtype) or rrset.rdtype == dns.rdatatype.CNAME)
            return ResolveResult("ok", answers, f"{len(answers)} answer(s) for {qname}", qname)
        if seen_nx is not None:  # an out-of-zone last try (REFUSED) does not hide that the name does not exist
            return seen_nx
        return last

    return run_in(netns_name, ask)
