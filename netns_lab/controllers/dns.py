"""Cluster DNS records per the Kubernetes DNS specification (kubernetes/dns, schema 1.1.0).

Pure: the model in, a record table out, and :func:`answer` to look a question up in it.
The DNS server process only parses and packs wire format around :func:`answer`, so every
naming rule here is unit-tested without a socket.

* ClusterIP Service: A ``svc.ns.svc.zone``; SRV ``_port._proto.svc.ns.svc.zone`` per named
  port; PTR for the ClusterIP.
* Headless Service: A per ready endpoint; ``host.svc.ns.svc.zone`` per endpoint (the pod's
  ``hostname`` when its ``subdomain`` names the Service, else the dashed IP, as CoreDNS does);
  SRV per endpoint x named port; PTR for those pod IPs. No ready endpoint: NXDOMAIN.
* ExternalName Service: CNAME. ``a-b-c-d.ns.pod.zone``: A (CoreDNS ``pods insecure``).
* Dual-stack: AAAA beside A for each IPv6 cluster IP and headless endpoint (the dashed name of
  an IPv6 endpoint turns ``:`` into ``-``: ``fd00-10-244--5``), ``ip6.arpa`` PTRs, and
  ``fd00-10-244--5.ns.pod.zone`` AAAA, as CoreDNS answers them.
* ``dns-version.zone`` TXT "1.1.0". Other names in the zone: NXDOMAIN; outside: REFUSED.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from netns_lab.controllers.endpoints import endpoints
from netns_lab.controllers.topology import Topology, address_of
from netns_lab.model import Pod, Service

SCHEMA_VERSION = "1.1.0"
TTL = 5
NOERROR, NXDOMAIN, REFUSED = 0, 3, 5
_POD_NAME = re.compile(r"^(\d{1,3})-(\d{1,3})-(\d{1,3})-(\d{1,3})$")


@dataclass
class Records:
    """``name -> {type -> [rdata]}``; names are lower-case and end with a dot."""

    zone: str
    names: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    namespaces: set[str] = field(default_factory=set)
    reverse_nets: list[str] = field(default_factory=list)  # CIDRs whose PTRs we own

    def add(self, name: str, rtype: str, data: Any) -> None:
        self.names.setdefault(name.lower(), {}).setdefault(rtype, []).append(data)

    def to_json(self) -> dict[str, Any]:
        return {"zone": self.zone, "names": self.names, "namespaces": sorted(self.namespaces), "reverse_nets": self.reverse_nets}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Records":
        return cls(d["zone"], d["names"], set(d["namespaces"]), d["reverse_nets"])


def reverse_name(ip: str) -> str:
    """``d.c.b.a.in-addr.arpa.``, or the 32 nibbles of an IPv6 address under ``ip6.arpa.``."""
    if ":" in ip:
        return ipaddress.IPv6Address(ip).reverse_pointer + "."
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa."


def dashed(ip: str) -> str:
    """CoreDNS's endpointHostname for an endpoint without a hostname: ``10-244-1-5``,
    ``fd00-10-244-1--5``."""
    return ip.replace(".", "-").replace(":", "-")


def address_type(ip: str) -> str:
    return "AAAA" if ":" in ip else "A"


def reverse_nets(topo: Topology) -> list[str]:
    """The ranges whose reverse names this server owns (NXDOMAIN, not REFUSED, for the rest)."""
    nets = [topo.service_cidr, topo.pod_cidr, topo.service_cidr6, topo.pod_cidr6]
    return [str(n) for n in nets if n is not None]


def build(services: tuple[Service, ...], pods: tuple[Pod, ...], topo: Topology, zone: str) -> Records:
    z = zone.lower().rstrip(".") + "."
    rec = Records(z, reverse_nets=reverse_nets(topo))
    rec.namespaces = namespaces_of(services, pods)
    rec.add(f"dns-version.{z}", "TXT", SCHEMA_VERSION)
    for svc in services:
        for name, rtype, data in service_records(svc, pods, topo, z):
            rec.add(name, rtype, data)
    return rec


def namespaces_of(services: tuple[Service, ...], pods: tuple[Pod, ...]) -> set[str]:
    """The namespaces that exist for DNS (``a-b-c-d.NS.pod.zone`` answers in them)."""
    return {p.namespace for p in pods} | {s.namespace for s in services} | {"default", "kube-system"}


def service_records(svc: Service, pods: tuple[Pod, ...], topo: Topology, z: str) -> list[tuple[str, str, Any]]:
    """Every record one Service contributes to the zone (``z``: the zone with its dot)."""
    if not svc.headless or svc.type == "ExternalName":
        return list(_fixed_records(svc, z))
    # headless: the ready endpoints themselves, of each of the Service's families
    out: list[tuple[str, str, Any]] = []
    for family in _families(svc, topo):
        out += _headless_records(svc, pods, topo, z, family)
    return out


def _families(svc: Service, topo: Topology) -> tuple[int, ...]:
    """Which families' endpoints a headless Service lists: its ipFamilies, those the lab has."""
    wanted = svc.ip_families or ("IPv4",)
    return tuple(f for f in (4, 6) if f"IPv{f}" in wanted and f in topo.families)


def _headless_records(svc: Service, pods: tuple[Pod, ...], topo: Topology, z: str, family: int) -> list[tuple[str, str, Any]]:
    base = f"{svc.name}.{svc.namespace}.svc.{z}"
    per_port = endpoints(svc, pods, topo, family=family)
    by_pod = {p.key: p for p in pods}
    hosts: dict[str, str] = {}
    for eps in per_port.values():
        for ep in eps:
            pod = by_pod[ep.pod]
            host = pod.hostname if pod.hostname and pod.subdomain == svc.name else dashed(ep.ip)
            hosts[ep.ip] = f"{host}.{base}"
    if not svc.ports and svc.selector is not None:  # a headless Service without ports still lists its pods
        from netns_lab.controllers.endpoints import is_ready, selects

        for pod in pods:
            if is_ready(svc, pod) and selects(svc, pod):
                plan = topo.pod(pod.key)
                ip = str(address_of(plan, family))
                host = pod.hostname if pod.hostname and pod.subdomain == svc.name else dashed(ip)
                hosts[ip] = f"{host}.{base}"
    out: list[tuple[str, str, Any]] = []
    rtype = "AAAA" if family == 6 else "A"
    for ip, fqdn in sorted(hosts.items()):
        out += [(base, rtype, ip), (fqdn, rtype, ip), (reverse_name(ip), "PTR", fqdn)]
    for sp, eps in per_port.items():
        if not sp.name:
            continue
        weight = 100 // max(len(eps), 1)
        for ep in eps:
            out.append((f"_{sp.name}._{sp.protocol.lower()}.{base}", "SRV", [0, weight, ep.port, hosts[ep.ip]]))
    return out


@functools.lru_cache(maxsize=1 << 16)
def _fixed_records(svc: Service, z: str) -> tuple[tuple[str, str, Any], ...]:
    """Records that depend on the Service alone (not on pods), cached per immutable Service:
    with 10,000 Services a change rebuilds the table from these instead of from scratch."""
    base = f"{svc.name}.{svc.namespace}.svc.{z}"
    if svc.type == "ExternalName":
        return ((base, "CNAME", svc.external_name.rstrip(".") + "." if svc.external_name else ""),)
    out: list[tuple[str, str, Any]] = []
    for ip in svc.cluster_ips:  # A and AAAA for a dual-stack Service, primary first
        out += [(base, address_type(ip), ip), (reverse_name(ip), "PTR", base)]
    for sp in svc.ports:
        if sp.name:
            out.append((f"_{sp.name}._{sp.protocol.lower()}.{base}", "SRV", (0, 100, sp.port, base)))
    return tuple(out)


def _in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def answer(rec: Records, qname: str, qtype: str, _depth: int = 0) -> tuple[int, list[tuple[str, str, Any]]]:
    """(rcode, [(owner name, type, rdata)]) for one question; names compared lower-case."""
    name = qname.lower() if qname.endswith(".") else qname.lower() + "."
    if name.endswith((".in-addr.arpa.", ".ip6.arpa.")):
        return _reverse(rec, name, qtype)
    if not _in_zone(name, rec.zone):
        return REFUSED, []
    entry = rec.names.get(name)
    if entry is None:
        pod_ip = _pod_record(rec, name)
        if pod_ip is None:
            return NXDOMAIN, []
        entry = {address_type(pod_ip): [pod_ip]}
    if "CNAME" in entry and qtype != "CNAME":
        # CoreDNS follows a CNAME that stays inside the cluster zone and adds the target's
        # records, so a stub resolver (glibc) gets its address in one answer.
        target = entry["CNAME"][0]
        out: list[tuple[str, str, Any]] = [(qname, "CNAME", target)]
        tname = target.lower() if target.endswith(".") else target.lower() + "."
        if _in_zone(tname, rec.zone) and tname != name and _depth < 8:  # ExternalNames may loop
            code, more = answer(rec, tname, qtype, _depth + 1)
            if code == NOERROR:
                out += [r for r in more if r[1] != "CNAME" or r[0] != qname]
        return NOERROR, out
    return NOERROR, [(qname, qtype, d) for d in entry.get(qtype, [])]


def _pod_record(rec: Records, name: str) -> str | None:
    """``a-b-c-d.ns.pod.zone`` -> a.b.c.d, for any namespace that exists (``pods insecure``);
    a name with other than three dashes, or with ``--``, is an IPv6 address with its colons
    dashed (CoreDNS's parsing): ``fd00-10-244--5`` -> fd00:10:244::5."""
    suffix = f".pod.{rec.zone}"
    if not name.endswith(suffix):
        return None
    labels = name[: -len(suffix)].split(".")
    if len(labels) != 2 or labels[1] not in rec.namespaces:
        return None
    if labels[0].count("-") != 3 or "--" in labels[0]:
        try:
            return str(ipaddress.IPv6Address(labels[0].replace("-", ":")))
        except ValueError:
            return None
    m = _POD_NAME.match(labels[0])
    if not m or any(int(x) > 255 for x in m.groups()):
        return None
    return ".".join(m.groups())


def _reverse(rec: Records, name: str, qtype: str) -> tuple[int, list[tuple[str, str, Any]]]:
    entry = rec.names.get(name)
    if entry is not None:
        return NOERROR, [(name, qtype, d) for d in entry.get(qtype, [])]
    ip = _from_reverse(name)
    if ip is None:
        return REFUSED, []
    if any(ip in ipaddress.ip_network(n) for n in rec.reverse_nets):  # False across families
        return NXDOMAIN, []
    return REFUSED, []


def _from_reverse(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        if name.endswith(".ip6.arpa."):
            nibbles = name[: -len(".ip6.arpa.")].split(".")
            if len(nibbles) != 32 or not all(len(n) == 1 for n in nibbles):
                return None
            digits = "".join(reversed(nibbles))
            return ipaddress.IPv6Address(":".join(digits[i : i + 4] for i in range(0, 32, 4)))
        return ipaddress.IPv4Address(".".join(reversed(name[: -len(".in-addr.arpa.")].split("."))))
    except ValueError:
        return None
