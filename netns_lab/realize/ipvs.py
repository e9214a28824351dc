"""Apply kube-proxy's ipvs mode to a node namespace: IPVS and ipset through netlink
(pyroute2's IPVS and IPSet), the ``kube-ipvs0`` dummy through rtnetlink, and the fixed
iptables glue through one ``iptables-restore --noflush``.

Syncs are diffs: virtual servers are added or removed only when a Service port appears
or goes, and an endpoint change edits that virtual server's real servers in place.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

from netns_lab.errors import RealizeError
from netns_lab.proxy import ipvs as render_ipvs
from netns_lab.proxy.types import NodeContext, ServicePortInfo
from netns_lab.realize.netns import NetnsThread, in_thread, write_sysctl
from netns_lab.realize.proxier import Proxier, SyncStats, _run
from netns_lab.realize.rtnl import Rtnl

DUMMY_INDEX = 5
IP_VS_SVC_F_PERSISTENT = 0x1
PROTO = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP}
SYSCTLS = {
    "net/ipv4/vs/conntrack": 1,  # kube-proxy: keep conntrack for IPVS traffic (needed for SNAT)
    "net/ipv4/vs/expire_nodest_conn": 1,
    "net/ipv4/vs/expire_quiescent_template": 1,
    "net/ipv4/conf/all/arp_ignore": 1,  # strict ARP: VIPs on kube-ipvs0 are not announced
    "net/ipv4/conf/all/arp_announce": 2,
}


def ipvs_available() -> bool:
    """The running kernel has IP_VS loaded (``/proc/net/ip_vs``, read-only)."""
    return os.path.exists("/proc/net/ip_vs")


def require_ipvs() -> None:
    if not ipvs_available():
        raise RealizeError(
            "proxyMode ipvs", "start", None,
            "this kernel has no IP_VS (CONFIG_IP_VS) loaded, and ipvs mode also needs dummy interfaces "
            "(CONFIG_DUMMY); run the lab inside the CI VM with a stock kernel: "
            "`invoke test-vm --scenario FILE`, or in the Vagrant box",
        )


class IpvsProxier(Proxier):
    mode = "ipvs"

    def __init__(self, netns: str, ctx: NodeContext, scheduler: str = "rr", legacy_ping: bool = False,
                 iptables_backend: str = "nft") -> None:
        super().__init__(netns, ctx)
        self.scheduler = scheduler
        self.legacy_ping = legacy_ping
        self.backend = iptables_backend
        self.applied: render_ipvs.IpvsPlan | None = None

    def sync(self, ports: tuple[ServicePortInfo, ...], full: bool = False) -> SyncStats:
        t0 = time.perf_counter()
        plan = render_ipvs.render(self.ctx, ports, self.scheduler)
        full = full or self.applied is None
        t1 = time.perf_counter()
        in_thread(lambda w: self._apply(w, plan, full))
        glue = render_ipvs.iptables_glue(self.ctx, self.legacy_ping, jumps=full and not self._hooked())
        _run(self.netns, [f"iptables-{self.backend}-restore", "--noflush"], glue)
        t2 = time.perf_counter()
        self.applied = plan
        self.last_input = glue
        self.last_stats = SyncStats(self.mode, full, t1 - t0, t2 - t1, len(glue))
        return self.last_stats

    def _hooked(self) -> bool:
        out = subprocess.run(["ip", "netns", "exec", self.netns, f"iptables-{self.backend}-save", "-t", "nat"],
                             capture_output=True, text=True).stdout
        return "-j KUBE-SERVICES" in out

    def _apply(self, w: NetnsThread, plan: render_ipvs.IpvsPlan, full: bool) -> None:
        from pyroute2 import IPVS, IPSet

        w.enter(self.netns)
        try:
            nl = Rtnl(self.netns)
            ipset = IPSet()
            ipvs = IPVS()
            if full:
                for key, value in SYSCTLS.items():
                    write_sysctl(key, value)
        finally:
            w.go_home()
        try:
            old = self.applied if not full else None
            self._dummy(nl, plan, old, full)
            self._ipsets(ipset, plan, old, full)
            self._virtual_servers(ipvs, plan, old, full)
        finally:
            nl.close()
            ipset.close()
            ipvs.close()

    def _dummy(self, nl: Rtnl, plan: render_ipvs.IpvsPlan, old: render_ipvs.IpvsPlan | None, full: bool) -> None:
        if full:
            try:
                nl.link_add(f"{self.netns}/{render_ipvs.DUMMY}", index=DUMMY_INDEX, ifname=render_ipvs.DUMMY, kind="dummy")
                nl.commit()
            except RealizeError as exc:
                if exc.errno != 17:  # EEXIST: a full sync of a node that already has it
                    raise
            current = self._dummy_addresses(nl)
        else:
            current = old.vips if old else set()
        for vip in sorted(plan.vips - current):
            nl.addr_add(f"{self.netns}/{render_ipvs.DUMMY} {vip}", DUMMY_INDEX, vip, 32)
        for vip in sorted(current - plan.vips):
            nl.addr_del(f"{self.netns}/{render_ipvs.DUMMY} {vip}", DUMMY_INDEX, vip, 32)
        nl.commit()

    @staticmethod
    def _dummy_addresses(nl: Rtnl) -> set[str]:
        return set(nl.addresses(DUMMY_INDEX))

    def _ipsets(self, ipset, plan: render_ipvs.IpvsPlan, old: render_ipvs.IpvsPlan | None, full: bool) -> None:  # type: ignore[no-untyped-def]
        for name, stype in render_ipvs.SET_TYPES.items():
            if full:
                kw = {"bitmap_ports_range": (0, 65535)} if stype == "bitmap:port" else {}
                ipset.create(name, stype=stype, exclusive=False, **kw)
                ipset.flush(name)
                before: set[str] = set()
            else:
                before = old.sets[name] if old else set()
            now = plan.sets[name]
            for entry in sorted(before - now):
                args, kw = _entry(entry, stype)
                ipset.delete(name, *args, **kw)
            for entry in sorted(now - before):
                args, kw = _entry(entry, stype)
                ipset.add(name, *args, **kw)

    def _virtual_servers(self, ipvs, plan: render_ipvs.IpvsPlan, old: render_ipvs.IpvsPlan | None, full: bool) -> None:  # type: ignore[no-untyped-def]
        from pyroute2 import IPVSDest, IPVSService

        def svc_obj(vs: render_ipvs.VirtualServer) -> IPVSService:
            kw = {"addr": vs.addr, "port": vs.port, "protocol": PROTO[vs.protocol], "sched_name": vs.scheduler}
            if vs.persistence:
                kw |= {"flags": {"flags": IP_VS_SVC_F_PERSISTENT, "mask": 0xFFFF}, "timeout": vs.persistence, "netmask": "255.255.255.255"}
            return IPVSService(**kw)

        if full:
            current: dict[tuple[str, int, str], set[tuple[str, int]]] = {}
            for msg in ipvs.service("dump"):
                s = IPVSService.from_message(msg)
                proto = {v: k for k, v in PROTO.items()}.get(s["protocol"], "TCP")
                key = (s["addr"], s["port"], proto)
                current[key] = {(d["addr"], d["port"]) for d in (IPVSDest.from_message(m) for m in ipvs.dest("dump", service=s))}
            current_vs = {k: None for k in current}
        else:
            current = {k: set(vs.reals) for k, vs in (old.services.items() if old else ())}
            current_vs = {k: vs for k, vs in (old.services.items() if old else ())}
        for key in set(current) - set(plan.services):
            addr, port, proto = key
            ipvs.service("del", service=IPVSService(addr=addr, port=port, protocol=PROTO[proto]))
        for key, vs in plan.services.items():
            service = svc_obj(vs)
            if key not in current:
                ipvs.service("add", service=service)
                have: set[tuple[str, int]] = set()
            else:
                prev = current_vs.get(key)
                if prev is None or (prev.scheduler, prev.persistence) != (vs.scheduler, vs.persistence):
                    ipvs.service("set", service=service)
                have = current[key]
            want = set(vs.reals)
            for ip, port in sorted(have - want):
                ipvs.dest("del", service=service, dest=IPVSDest(addr=ip, port=port))
            for ip, port in sorted(want - have):
                ipvs.dest("add", service=service, dest=IPVSDest(addr=ip, port=port, weight=1, fwd_method=0))


def _entry(entry: str, stype: str) -> tuple[tuple[object, ...], dict[str, str]]:
    """Our text form (``ip,tcp:80``) -> pyroute2's (entry, etype=...)."""
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
