"""kube-proxy's stale UDP conntrack cleanup (pkg/proxy/conntrack/cleanup.go), as a pure plan.

UDP has no connection to close, so a conntrack entry outlives the decision that made it: a
flow DNATed to an endpoint that is gone, or a flow to a Service that had no endpoint yet
(never DNATed, its reply source is the Service IP itself), keeps its entry and is
blackholed until the entry expires. After a sync, kube-proxy reads the UDP entries and
deletes every one whose original destination is a UDP Service's IP (ClusterIP, externalIP,
LB IP) or NodePort while its reply source is not one of that Service port's serving
endpoints. :func:`stale` is that filter over parsed entries; the realize side lists and
deletes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netns_lab.proxy.types import ServicePortInfo


@dataclass(frozen=True)
class Entry:
    orig_dst: str
    orig_dport: int
    reply_src: str


_ENTRY = re.compile(r"\bdst=(\S+) .*?\bdport=(\d+) .*?\bsrc=(\S+) ")


def parse(listing: str) -> list[Entry]:
    """``conntrack -L -p udp`` lines: the first dst/dport (original direction), then the
    first src after them (reply direction)."""
    out = []
    for line in listing.splitlines():
        m = _ENTRY.search(line)
        if m:
            out.append(Entry(m.group(1), int(m.group(2)), m.group(3)))
    return out


def stale(entries: list[Entry], ports: tuple[ServicePortInfo, ...], deleted_ips: frozenset[str] = frozenset()) -> list[tuple[str, str, str]]:
    """What to delete: ("ip", orig dst, reply src) or ("port", node port, reply src).
    ``deleted_ips``: Service IPs whose UDP port went (kube-proxy's DeletedUDPClusterIPs): every
    UDP entry to them goes, whatever answered it."""
    by_ip: dict[str, set[str]] = {}
    by_node_port: dict[int, set[str]] = {}
    for sp in ports:
        if sp.protocol != "UDP":
            continue
        serving = {e.ip for e in sp.endpoints if e.serving}
        for ip in (sp.cluster_ip, *sp.external_ips, *sp.lb_ips):
            by_ip.setdefault(ip, set()).update(serving)
        if sp.node_port is not None:
            by_node_port.setdefault(sp.node_port, set()).update(serving)
    out: set[tuple[str, str, str]] = set()
    for e in entries:
        if e.orig_dst in deleted_ips and e.orig_dst not in by_ip:
            out.add(("ip", e.orig_dst, e.reply_src))
        if e.orig_dst in by_ip and e.reply_src not in by_ip[e.orig_dst]:
            out.add(("ip", e.orig_dst, e.reply_src))
        if e.orig_dport in by_node_port and e.reply_src not in by_node_port[e.orig_dport]:
            out.add(("port", str(e.orig_dport), e.reply_src))
    return sorted(out)
