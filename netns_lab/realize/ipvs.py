"""Apply kube-proxy's ipvs mode to a node namespace: IPVS and ipset through netlink
(messages built by pyroute2, sent in batches: :class:`_Requests`), the ``kube-ipvs0`` dummy
through rtnetlink, and the fixed iptables glue through one ``iptables-restore --noflush``.

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
from netns_lab.realize import ipvsmsg
from netns_lab.realize.netns import NetnsThread, in_thread, write_sysctl
from netns_lab.realize.proxier import Proxier, SyncStats, _run
from netns_lab.realize.rtnl import Batch, Rtnl

DUMMY_INDEX = 5
NETLINK_NETFILTER, NETLINK_GENERIC = 12, 16
PROTO = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": socket.IPPROTO_SCTP}
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


class _Requests:
    """IPVS (generic netlink) and ipset (nfnetlink) changes, queued and sent a window at a time.

    The messages are encoded by :mod:`.ipvsmsg` (pyroute2's classes took ~300 µs each: a
    full sync of 1,000 Services is ~12,000 requests); pyroute2 still finds the IPVS family's
    id and ipset's protocol version, and does the dumps (single requests anyway).
    """

    def __init__(self, where: str, ipvs, ipset) -> None:  # type: ignore[no-untyped-def]
        self.where = where
        self.genl = Batch(where, NETLINK_GENERIC)
        self.nfnl = Batch(where, NETLINK_NETFILTER)
        self.family = ipvs.prid  # the IPVS generic netlink family id
        self.ipset_version = ipset.asyncore._proto_version

    def close(self) -> None:
        self.genl.close()
        self.nfnl.close()

    def ipvs(self, cmd: int, what: str, service: bytes, dest: bytes | None = None) -> None:
        self.genl.queue_body(self.family, ipvsmsg.NLM_F_REQUEST | ipvsmsg.NLM_F_ACK, ipvsmsg.ipvs_body(cmd, service, dest),
                             f"{self.where} IPVS {what}")

    def ipset_entry(self, cmd: int, name: str, entry: str, stype: str, family: int = socket.AF_INET) -> None:
        body = ipvsmsg.ipset_body(family, self.ipset_version, name, ipvsmsg.ipset_data(entry, stype))
        self.nfnl.queue_body(cmd | (ipvsmsg.NFNL_SUBSYS_IPSET << 8), ipvsmsg.NLM_F_REQUEST | ipvsmsg.NLM_F_ACK, body,
                             f"{self.where} ipset {name} {entry}")

    def commit(self) -> None:
        self.nfnl.commit()
        self.genl.commit()


class IpvsProxier(Proxier):
    mode = "ipvs"

    def __init__(self, netns: str, ctx: NodeContext, scheduler: str = "rr", legacy_ping: bool = False,
                 iptables_backend: str = "nft") -> None:
        super().__init__(netns, ctx)
        self.scheduler = scheduler
        self.legacy_ping = legacy_ping
        self.backend = iptables_backend
        self.applied: render_ipvs.IpvsPlan | None = None
        self.v6 = ctx.family == 6  # a dual-stack node's IPv6 proxier: its own sets, virtual servers and VIPs
        self.tool = "ip6tables" if self.v6 else "iptables"

    def sync(self, ports: tuple[ServicePortInfo, ...], full: bool = False, delta: object = None) -> SyncStats:
        t0 = time.perf_counter()
        plan = render_ipvs.render(self.ctx, ports, self.scheduler)
        full = full or self.applied is None
        t1 = time.perf_counter()
        in_thread(lambda w: self._apply(w, plan, full))
        glue = render_ipvs.iptables_glue(self.ctx, plan, self.legacy_ping, jumps=full and not self._hooked())
        _run(self.netns, [f"{self.tool}-{self.backend}-restore", "--noflush"], glue)
        t2 = time.perf_counter()
        self.applied = plan
        self.last_input = glue
        self.last_stats = SyncStats(self.mode, full, t1 - t0, t2 - t1, len(glue))
        return self.last_stats

    def adopt(self, ports: tuple[ServicePortInfo, ...]) -> None:
        self.applied = render_ipvs.render(self.ctx, ports, self.scheduler)

    def _hooked(self) -> bool:
        out = subprocess.run(["ip", "netns", "exec", self.netns, f"{self.tool}-{self.backend}-save", "-t", "nat"],
                             capture_output=True, text=True).stdout
        return "-j KUBE-SERVICES" in out

    def _apply(self, w: NetnsThread, plan: render_ipvs.IpvsPlan, full: bool) -> None:
        from pyroute2 import IPVS, IPSet

        w.enter(self.netns)
        try:
            nl = Rtnl(self.netns)
            ipset = IPSet()
            ipvs = IPVS()
            batch = _Requests(self.netns, ipvs, ipset)
            if full:
                for key, value in SYSCTLS.items():
                    write_sysctl(key, value)
        finally:
            w.go_home()
        try:
            old = self.applied if not full else None
            self._dummy(nl, plan, old, full)
            self._ipsets(ipset, batch, plan, old, full)
            self._virtual_servers(ipvs, batch, plan, old, full)
            batch.commit()
        finally:
            nl.close()
            batch.close()
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
        host = 128 if self.v6 else 32
        for vip in sorted(plan.vips - current):
            nl.addr_add(f"{self.netns}/{render_ipvs.DUMMY} {vip}", DUMMY_INDEX, vip, host)
        for vip in sorted(current - plan.vips):
            nl.addr_del(f"{self.netns}/{render_ipvs.DUMMY} {vip}", DUMMY_INDEX, vip, host)
        nl.commit()

    def _dummy_addresses(self, nl: Rtnl) -> set[str]:
        """This family's VIPs on kube-ipvs0 (the other family's proxier owns the rest)."""
        return {a for a in nl.addresses(DUMMY_INDEX, socket.AF_INET6 if self.v6 else socket.AF_INET) if not a.startswith("fe80:")}

    def _ipsets(self, ipset, batch: _Requests, plan: render_ipvs.IpvsPlan, old: render_ipvs.IpvsPlan | None, full: bool) -> None:  # type: ignore[no-untyped-def]
        from pyroute2.netlink.nfnetlink.ipset import IPSET_CMD_ADD, IPSET_CMD_DEL

        family = socket.AF_INET6 if self.v6 else socket.AF_INET
        for base, stype in render_ipvs.SET_TYPES.items():
            name = render_ipvs.set_name(base, self.ctx.family)
            if full:
                kw: dict[str, object] = {"bitmap_ports_range": (0, 65535)} if stype == "bitmap:port" else {"family": family}
                ipset.create(name, stype=stype, exclusive=False, **kw)
                ipset.flush(name)
                before: set[str] = set()
            else:
                before = old.sets[base] if old else set()
            now = plan.sets[base]
            for cmd, entries in ((IPSET_CMD_DEL, before - now), (IPSET_CMD_ADD, now - before)):
                for entry in sorted(entries):
                    batch.ipset_entry(cmd, name, entry, stype, family)

    def _virtual_servers(self, ipvs, batch: _Requests, plan: render_ipvs.IpvsPlan, old: render_ipvs.IpvsPlan | None,  # type: ignore[no-untyped-def]
                         full: bool) -> None:
        from pyroute2 import IPVSDest, IPVSService
        from pyroute2.netlink.generic import ipvs as genl

        if full:
            current: dict[tuple[str, int, str], set[tuple[str, int]]] = {}
            for msg in ipvs.service("dump"):
                s = IPVSService.from_message(msg)
                if (":" in str(s["addr"])) != self.v6:
                    continue  # the other family's proxier owns it
                proto = {v: k for k, v in PROTO.items()}.get(s["protocol"], "TCP")
                key = (s["addr"], s["port"], proto)
                current[key] = {(d["addr"], d["port"]) for d in (IPVSDest.from_message(m) for m in ipvs.dest("dump", service=s))}
            current_vs = {k: None for k in current}
        else:
            current = {k: set(vs.reals) for k, vs in (old.services.items() if old else ())}
            current_vs = {k: vs for k, vs in (old.services.items() if old else ())}
        for key in set(current) - set(plan.services):
            addr, port, proto = key
            batch.ipvs(genl.IPVS_CMD_DEL_SERVICE, f"del {key}", ipvsmsg.service_key(addr, port, PROTO[proto]))
        for key, vs in plan.services.items():
            name = ipvsmsg.service_key(vs.addr, vs.port, PROTO[vs.protocol])
            if key not in current:
                batch.ipvs(genl.IPVS_CMD_NEW_SERVICE, f"add {key}", self._service(vs))
                have: set[tuple[str, int]] = set()
            else:
                prev = current_vs.get(key)
                if prev is None or (prev.scheduler, prev.persistence) != (vs.scheduler, vs.persistence):
                    batch.ipvs(genl.IPVS_CMD_SET_SERVICE, f"set {key}", self._service(vs))
                have = current[key]
            want = set(vs.reals)
            for ip, port in sorted(have - want):
                batch.ipvs(genl.IPVS_CMD_DEL_DEST, f"del real server {ip}:{port} of {key}", name, ipvsmsg.dest(ip, port))
            for ip, port in sorted(want - have):
                batch.ipvs(genl.IPVS_CMD_NEW_DEST, f"add real server {ip}:{port} to {key}", name, ipvsmsg.dest(ip, port))

    @staticmethod
    def _service(vs: render_ipvs.VirtualServer) -> bytes:
        """A virtual server as created or changed: the kernel wants a netmask on every one (for
        IPv6 a prefix length), persistence per client address (/32, /128) when it has one."""
        return ipvsmsg.service_full(vs.addr, vs.port, PROTO[vs.protocol], vs.scheduler, vs.persistence or None)
