"""Apply rendered Service rules to a node namespace, the way kube-proxy applies them.

iptables: one ``iptables-restore --noflush`` per sync; nftables: one ``nft -f`` transaction
per sync. Each proxier remembers what it applied last so the next sync rewrites only what
changed (kube-proxy's partial sync); a proxier created by another process (``Lab.attach``)
starts with a full sync that also finds stale chains by reading the kernel.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass

from netns_lab.errors import RealizeError
from netns_lab.proxy import iptables as ipt
from netns_lab.proxy import nftables as nft
from netns_lab.proxy.types import NodeContext, ServicePortInfo


@dataclass
class SyncStats:
    mode: str
    full: bool
    render_s: float
    apply_s: float
    bytes: int


def _run(netns: str, cmd: list[str], data: str) -> None:
    proc = subprocess.run(["ip", "netns", "exec", netns, *cmd], input=data, capture_output=True, text=True)
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

    def sync(self, ports: tuple[ServicePortInfo, ...], full: bool = False) -> SyncStats:  # pragma: no cover
        raise NotImplementedError


class IptablesProxier(Proxier):
    mode = "iptables"

    def __init__(self, netns: str, ctx: NodeContext) -> None:
        super().__init__(netns, ctx)
        self.applied: ipt.Ruleset | None = None

    def _existing(self) -> tuple[dict[str, set[str]], bool]:
        out = subprocess.run(["ip", "netns", "exec", self.netns, "iptables-save"], capture_output=True, text=True).stdout
        chains: dict[str, set[str]] = {t: set() for t in ipt.TABLES}
        table = ""
        for line in out.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":KUBE-") and table in chains:
                chains[table].add(line[1:].split()[0])
        return chains, "-j KUBE-SERVICES" in out

    def sync(self, ports: tuple[ServicePortInfo, ...], full: bool = False) -> SyncStats:
        t0 = time.perf_counter()
        rules = ipt.render(self.ctx, ports)
        old, existing, jumps = self.applied, None, False
        if full or old is None:
            existing, hooked = self._existing()
            old, jumps = None, not hooked
        text = ipt.restore_input(rules, old, existing, jumps)
        t1 = time.perf_counter()
        _run(self.netns, ["iptables-restore", "--noflush"], text)
        t2 = time.perf_counter()
        self.applied = rules
        self.last_stats = SyncStats(self.mode, old is None, t1 - t0, t2 - t1, len(text))
        return self.last_stats


class NftablesProxier(Proxier):
    mode = "nftables"

    def __init__(self, netns: str, ctx: NodeContext) -> None:
        super().__init__(netns, ctx)
        self.applied: nft.NftRuleset | None = None

    def _existing(self) -> tuple[set[str], set[str]]:
        out = subprocess.run(["ip", "netns", "exec", self.netns, "nft", "list", "table", "ip", "kube-proxy"],
                             capture_output=True, text=True).stdout
        chains = set(re.findall(r"^\s*chain (\S+) \{", out, re.M))
        sets = {s for s in re.findall(r"^\s*set (\S+) \{", out, re.M) if s.startswith("affinity-")}
        return chains, sets

    def sync(self, ports: tuple[ServicePortInfo, ...], full: bool = False) -> SyncStats:
        t0 = time.perf_counter()
        rules = nft.render(self.ctx, ports)
        old = self.applied
        chains = sets = None
        if full or old is None:
            chains, sets = self._existing()
            old = None
        text = nft.transaction(rules, old, chains, sets)
        t1 = time.perf_counter()
        _run(self.netns, ["nft", "-f", "-"], text)
        t2 = time.perf_counter()
        self.applied = rules
        self.last_stats = SyncStats(self.mode, old is None, t1 - t0, t2 - t1, len(text))
        return self.last_stats


PROXIERS: dict[str, type[Proxier]] = {"iptables": IptablesProxier, "nftables": NftablesProxier}


def make_proxier(mode: str, netns: str, ctx: NodeContext) -> Proxier:
    try:
        return PROXIERS[mode](netns, ctx)
    except KeyError:
        raise RealizeError(f"proxyMode {mode}", "start", None, f"supported here: {', '.join(PROXIERS)}") from None


def delete_stale_udp(netns: str, cluster_ip: str, port: int, endpoint_ip: str) -> None:
    """kube-proxy's stale-UDP fix: forget conntrack entries that still point a ClusterIP flow
    at an endpoint that is gone, so the client's next datagram is load-balanced afresh."""
    subprocess.run(
        ["ip", "netns", "exec", netns, "conntrack", "-D", "-p", "udp", "--orig-dst", cluster_ip,
         "--orig-port-dst", str(port), "--reply-src", endpoint_ip],
        capture_output=True, text=True,
    )


def delete_stale_udp_nodeport(netns: str, node_port: int, endpoint_ip: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", netns, "conntrack", "-D", "-p", "udp", "--orig-port-dst", str(node_port),
         "--reply-src", endpoint_ip],
        capture_output=True, text=True,
    )
