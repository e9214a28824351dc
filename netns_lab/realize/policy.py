"""Apply a node's rendered NetworkPolicy rules, the way Calico's Felix applies them.

iptables: ipsets first (``ipset restore``; a set whose members change is filled under a
temporary name and swapped in, so a live connection never meets a half-filled set), then one
``iptables-restore --noflush`` of the filter table (every ``cali-`` chain written whole,
stale ones flushed and deleted, ``FORWARD``'s jump added or removed), then stale sets
destroyed. nftables: the ``calico`` table replaced whole in one ``nft -f`` transaction.
With no isolated pod left, nothing of either remains: no chain, no set, no table.
"""

from __future__ import annotations

import subprocess
import time

from netns_lab.controllers.netpol import NodePolicy
from netns_lab.policy import iptables as ipt
from netns_lab.policy import nftables as nft
from netns_lab.realize.proxier import _run


TEMP = "cali4t:"  # a set being filled before it is swapped in


class IptablesPolicy:
    mode = "iptables"

    def __init__(self, netns: str, backend: str = "nft", ipvs: bool = False) -> None:
        self.netns, self.backend, self.ipvs = netns, backend, ipvs
        self.chains: set[str] = set()
        self.sets: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.hooked = False
        self.leftovers: list[str] = []
        self.hooks = ((("FORWARD", ipt.FORWARD), ("OUTPUT", ipt.OUTPUT)) if ipvs else (("FORWARD", ipt.FORWARD),))

    def _read_kernel(self) -> None:
        """What an earlier process (or a killed sync) left: this node's cali- chains and sets."""
        out = subprocess.run(["ip", "netns", "exec", self.netns, f"iptables-{self.backend}-save", "-t", "filter"],
                             capture_output=True, text=True).stdout
        self.chains = {line[1:].split()[0] for line in out.splitlines() if line.startswith(":cali-")}
        self.hooked = f"-A FORWARD -j {ipt.FORWARD}" in out
        names = subprocess.run(["ip", "netns", "exec", self.netns, "ipset", "list", "-n"], capture_output=True, text=True).stdout
        self.sets = {n: ("?", ()) for n in names.split() if n.startswith(ipt.SET_PREFIXES)}
        self.leftovers = [n for n in names.split() if n.startswith(TEMP)]  # a sync killed between swap and destroy

    def apply(self, policy: NodePolicy, full: bool = False) -> float:
        t0 = time.monotonic()
        if full:
            self._read_kernel()
        sets = ipt.render_sets(policy)
        chains, lines = ipt.render(policy, self.ipvs)
        script = [f"destroy {n}" for n in self.leftovers]
        self.leftovers = []
        for name, (kind, members) in sets.items():
            if self.sets.get(name) == (kind, members):
                continue
            if name not in self.sets:
                script += [f"create {name} {kind}", *(f"add {name} {m}" for m in members)]
            else:  # filled aside, then swapped: the rules never see it half full
                tmp = TEMP + name[8:]
                script += [f"create {tmp} {kind} -exist", f"flush {tmp}", *(f"add {tmp} {m}" for m in members),
                           f"swap {tmp} {name}", f"destroy {tmp}"]
        if script:
            _run(self.netns, ["ipset", "restore"], "\n".join(script) + "\n")
        stale = self.chains - set(chains)
        rules = ["*filter", *(f":{c} - [0:0]" for c in [*chains, *sorted(stale)]), *lines]
        if chains and not self.hooked:
            rules += [f"-I {hook} 1 -j {chain}" for hook, chain in self.hooks]
        elif not chains and self.hooked:
            rules += [f"-D {hook} -j {chain}" for hook, chain in self.hooks]
        rules += [f"-X {c}" for c in sorted(stale)]
        if chains or stale or self.hooked:
            _run(self.netns, [f"iptables-{self.backend}-restore", "-w", "5", "--noflush"], "\n".join([*rules, "COMMIT"]) + "\n")
        self.chains, self.hooked = set(chains), bool(chains)
        gone = [n for n in self.sets if n not in sets]
        if gone:
            _run(self.netns, ["ipset", "restore"], "".join(f"destroy {n}\n" for n in gone))
        self.sets = sets
        return time.monotonic() - t0

    def adopt(self, policy: NodePolicy) -> None:
        """A process attaching to a running lab: the kernel holds what ``policy`` renders."""
        self.chains = set(ipt.render(policy, self.ipvs)[0])
        self.sets = ipt.render_sets(policy)
        self.hooked = bool(self.chains)


class NftablesPolicy:
    mode = "nftables"

    def __init__(self, netns: str, backend: str = "nft", ipvs: bool = False) -> None:
        """``backend`` and ``ipvs`` are the iptables dataplane's; nftables needs neither (ipvs
        with the nftables policy dataplane is refused at load)."""
        self.netns = netns
        self.present = False

    def apply(self, policy: NodePolicy, full: bool = False) -> float:
        t0 = time.monotonic()
        text = nft.render(policy)
        if full:
            self.present = True  # `table` before `delete table` makes the delete safe either way
        if text or self.present:  # the old table goes, the new one (if any) comes, in one transaction
            _run(self.netns, ["nft", "-f", "-"], f"table {nft.FAMILY} {nft.TABLE}\ndelete table {nft.FAMILY} {nft.TABLE}\n{text}")
        self.present = bool(text)
        return time.monotonic() - t0

    def adopt(self, policy: NodePolicy) -> None:
        self.present = not policy.empty


DATAPLANES: dict[str, type] = {"iptables": IptablesPolicy, "nftables": NftablesPolicy}
