"""Apply rendered Service rules to a node namespace, the way kube-proxy applies them.

iptables: one ``iptables-restore --noflush`` per sync; nftables: one ``nft -f`` transaction
per sync. Each proxier remembers what it applied last so the next sync rewrites only what
changed (kube-proxy's partial sync); a proxier created by another process (``Lab.attach``)
starts with a full sync that also finds stale chains by reading the kernel.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass

from netns_lab.errors import RealizeError
from netns_lab.proxy import conntrack
from netns_lab.proxy import iptables as ipt
from netns_lab.proxy import nftables as nft
from netns_lab.proxy.types import NodeContext, ServicePortInfo
from netns_lab.realize import nftmsg, nftnl
from netns_lab.realize.netns import NetnsThread, in_thread, write_sysctl


Delta = tuple[tuple[ServicePortInfo, ...], tuple[ServicePortInfo, ...]]  # (ports gone, ports new)


@dataclass
class SyncStats:
    mode: str
    full: bool
    render_s: float
    apply_s: float
    bytes: int


def _run(netns: str, cmd: list[str], data: str) -> None:
    """Run ``cmd`` in ``netns`` with ``data`` on its stdin. The data goes through an in-memory
    file, not a pipe: a pipe would be fed 512 bytes per poll round by ``subprocess`` (4,000
    rounds for the 2 MB a 10,000-Service iptables sync writes); the tool reads the file at once."""
    fd = os.memfd_create("kube-proxy-input", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as fh:
            fh.write(data.encode())
        os.lseek(fd, 0, os.SEEK_SET)
        proc = subprocess.run(["ip", "netns", "exec", netns, *cmd], stdin=fd, capture_output=True, text=True)
    finally:
        os.close(fd)
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.split())[:400]
        raise RealizeError(f"{netns}: {' '.join(cmd)}", "apply", None, detail)


class Proxier:
    """One node's kube-proxy data plane for one mode."""

    mode = ""

    def __init__(self, netns: str, ctx: NodeContext) -> None:
        self.netns = netns
        self.ctx = ctx
        self.last_stats: SyncStats | None = None
        self.last_input = ""  # what the last sync sent to the kernel, for inspection

    def sync(self, ports: tuple[ServicePortInfo, ...], full: bool = False, delta: Delta | None = None) -> SyncStats:  # pragma: no cover
        """Bring the kernel to ``ports``; ``delta`` (ports gone, ports new since the last sync),
        when the caller knows it, saves comparing every port."""
        raise NotImplementedError

    def adopt(self, ports: tuple[ServicePortInfo, ...]) -> None:  # pragma: no cover
        """The kernel already holds the rules for ``ports`` (another process synced them): learn
        what they are without applying anything, so the next sync is a partial one, as a
        restarted kube-proxy would if it could read its own rules back."""
        raise NotImplementedError


class IptablesProxier(Proxier):
    """``backend`` is ``nft`` (iptables-nft, what current distributions and kind use) or
    ``legacy`` (x_tables): the same rules, very different restore times at scale."""

    mode = "iptables"

    def __init__(self, netns: str, ctx: NodeContext, backend: str = "nft") -> None:
        super().__init__(netns, ctx)
        self.backend = backend
        self.plan = ipt.IptablesSync(ctx)

    def _cmd(self, tool: str) -> str:
        """``iptables-nft-restore``..., ``ip6tables-...`` for a node's IPv6 proxier."""
        return f"{'ip6tables' if self.ctx.family == 6 else 'iptables'}-{self.backend}-{tool}"

    def _existing(self) -> tuple[set[tuple[str, str]], list[tuple[str, str]]]:
        """KUBE chains in the kernel (a full sync deletes those no Service needs), and the
        hooks from built-in chains it lacks (a full sync puts back one deleted by hand, as
        kube-proxy's EnsureRule does): one iptables-save, rules told apart by table, chain,
        target and comment (iptables-save orders a rule's matches its own way)."""
        out = subprocess.run(["ip", "netns", "exec", self.netns, self._cmd("save")], capture_output=True, text=True).stdout
        chains: set[tuple[str, str]] = set()
        hooks: set[tuple[str, str, str, str]] = set()
        table = ""
        for line in out.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":KUBE-") and table in ipt.TABLES:
                chains.add((table, line[1:].split()[0]))
            elif line.startswith("-A ") and "-j KUBE-" in line:
                hooks.add(_hook_key(table, line))
        missing = [(t, rule) for t, rule in ipt.jump_rules(self.ctx) if _hook_key(t, rule) not in hooks]
        return chains, missing

    def sync(self, ports: tuple[ServicePortInfo, ...], full: bool = False, delta: Delta | None = None) -> SyncStats:
        t0 = time.perf_counter()
        existing, jumps = None, list[tuple[str, str]]()
        full = full or not self.plan.synced
        if full:
            existing, jumps = self._existing()
            if self.ctx.localhost_node_ports:
                # kube-proxy's EnsureSysctl: 127.0.0.1:<nodePort> is DNATed to a pod, which the
                # kernel routes only with route_localnet (KUBE-FIREWALL keeps 127/8 local)
                in_thread(lambda w: _route_localnet(w, self.netns))
        text = self.plan.restore_input(ports, full, existing, jumps, delta)
        t1 = time.perf_counter()
        _run(self.netns, [self._cmd("restore"), "--noflush"], text)
        self.last_input = text
        t2 = time.perf_counter()
        self.last_stats = SyncStats(self.mode, full, t1 - t0, t2 - t1, len(text))
        return self.last_stats


    def adopt(self, ports: tuple[ServicePortInfo, ...]) -> None:
        self.plan.restore_input(ports, True, None, False)


def _hook_key(table: str, rule: str) -> tuple[str, str, str, str]:
    """(table, chain, target, comment) of an ``-A CHAIN ... -j TARGET`` line."""
    words = shlex.split(rule)
    comment = words[words.index("--comment") + 1] if "--comment" in words else ""
    return table, words[1], words[words.index("-j") + 1], comment


def _route_localnet(w: NetnsThread, netns: str) -> None:
    w.enter(netns)
    try:
        write_sysctl("net/ipv4/conf/all/route_localnet", 1)
    finally:
        w.go_home()


NFT_WRITER_ENV = "NETNS_LAB_NFT_WRITER"  # netlink (default) | nft: every transaction through `nft -f`
FULL_SYNC_BATCH = 300  # Service ports per batch of a full sync's chains (see NftablesProxier._apply)


class NftablesProxier(Proxier):
    mode = "nftables"

    def __init__(self, netns: str, ctx: NodeContext) -> None:
        super().__init__(netns, ctx)
        self.plan = nft.NftSync(ctx)
        self.writer = ""  # how the last sync reached the kernel: netlink or nft

    def adopt(self, ports: tuple[ServicePortInfo, ...]) -> None:
        self.plan.transaction(ports, True, None, None)

    def _existing(self) -> tuple[set[str], set[str]]:
        """The table's chains and affinity sets now (none before the first sync)."""
        chains, sets = nftnl.names(self.netns, 10 if self.ctx.family == 6 else 2, "kube-proxy")
        return chains, {s for s in sets if s.startswith("affinity-")}

    def sync(self, ports: tuple[ServicePortInfo, ...], full: bool = False, delta: Delta | None = None) -> SyncStats:
        t0 = time.perf_counter()
        chains = sets = None
        full = full or not self.plan.synced
        if full:
            chains, sets = self._existing()
        text = self.plan.transaction(ports, full, chains, sets, delta)
        t1 = time.perf_counter()
        try:
            self.writer = self._apply(text, full, (chains or set()) | (sets or set()))
        except BaseException:
            self.plan = nft.NftSync(self.ctx)  # the kernel may hold part of it: forget, the next sync is a full one
            raise
        self.last_input = text
        t2 = time.perf_counter()
        self.last_stats = SyncStats(self.mode, full, t1 - t0, t2 - t1, len(text))
        return self.last_stats

    def _apply(self, text: str, full: bool, existing: set[str]) -> str:
        """Send the transaction over netlink (:mod:`.nftmsg`), or to ``nft -f`` when it holds a
        statement the compiler does not know; returns how (``netlink``, ``nft`` or ``both``).

        A partial sync is one transaction. A full sync re-asserts the table's fixed objects
        with ``nft -f`` (adding them again changes nothing a packet sees), then writes the
        Service ports' chains in batches of :data:`FULL_SYNC_BATCH` ports, then, in one last
        transaction, the ports whose chains the kernel holds with other rules, the maps
        switched to the new chains, and what is stale removed. So every batch before the last
        only re-writes rules as they are or makes chains nothing jumps to yet, and no packet
        meets a Service half old, half new. One transaction for all would cost the kernel
        O(n^2): binding each anonymous ``numgen`` map walks the whole transaction so far
        (``__nft_set_trans_bind``): 242 s at 10,000 Services through ``nft -f``, against 25 s
        in batches (benchmarks/results/services.md); each batch costs one commit,
        which the kernel pays in proportion to the table (it validates every jump from the
        base chains and visits every chain), hence batches of hundreds, not of one."""
        if os.environ.get(NFT_WRITER_ENV) == "nft":
            _run(self.netns, ["nft", "-f", "-"], text)
            return "nft"
        batches = [text]
        if full:
            batches = self.plan.batches(existing, FULL_SYNC_BATCH)
            _run(self.netns, ["nft", "-f", "-"], "\n".join(self.plan.parts.head) + "\n")
        ways = set()
        for batch in batches:
            try:
                messages = nftmsg.compile_transaction(self.plan.table, batch)
            except nftmsg.Unsupported:  # a statement outside the renderer's vocabulary: never a guess
                _run(self.netns, ["nft", "-f", "-"], batch + "\n")
                ways.add("nft")
                continue
            nftnl.send(self.netns, messages)
            ways.add("netlink")
        return "both" if len(ways) > 1 else ways.pop()


PROXIERS: dict[str, type[Proxier]] = {"iptables": IptablesProxier, "nftables": NftablesProxier}


IPTABLES_BACKEND_ENV = "NETNS_LAB_IPTABLES_BACKEND"  # nft (default) | legacy


def make_proxier(mode: str, netns: str, ctx: NodeContext, iptables_backend: str = "nft",
                 ipvs_scheduler: str = "rr", ipvs_legacy_ping: bool = False) -> Proxier:
    if mode == "iptables":
        return IptablesProxier(netns, ctx, iptables_backend)
    if mode == "nftables":
        return NftablesProxier(netns, ctx)
    if mode == "ipvs":
        from netns_lab.realize.ipvs import IpvsProxier

        return IpvsProxier(netns, ctx, ipvs_scheduler, ipvs_legacy_ping, iptables_backend)
    raise RealizeError(f"proxyMode {mode}", "start", None, f"supported here: {', '.join(PROXIERS)}")


def clean_stale_udp(netns: str, ports: tuple[ServicePortInfo, ...], deleted_ips: frozenset[str] = frozenset(),
                    family: int = 4) -> int:
    """kube-proxy's stale-UDP cleanup on one node (see :mod:`netns_lab.proxy.conntrack`):
    list the node's UDP entries of IP version ``family``, delete those a Service's current
    endpoints no longer explain. Returns how many filters were applied."""
    listing = subprocess.run(["ip", "netns", "exec", netns, "conntrack", "-L", "-f", f"ipv{family}", "-p", "udp"],
                             capture_output=True, text=True).stdout
    doomed = conntrack.stale(conntrack.parse(listing), ports, deleted_ips)
    for kind, what, reply_src in doomed:
        match = ["--orig-dst", what] if kind == "ip" else ["--orig-port-dst", what]
        subprocess.run(["ip", "netns", "exec", netns, "conntrack", "-D", "-f", f"ipv{family}", "-p", "udp", *match, "--reply-src", reply_src],
                       capture_output=True, text=True)
    return len(doomed)
