"""Read-only facts about the host namespace (its address prefixes, its own address among a
spread lab's machines), for validation and placement."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from pyroute2 import IPRoute

from netns_lab.errors import RealizeError, ScenarioError


def host_networks() -> tuple[IPv4Network | IPv6Network, ...]:
    """IPv4 and global IPv6 prefixes configured on the host, loopback and link-local
    excluded (a dual-stack lab's ranges are checked against both). Reads, never writes."""
    nets: set[IPv4Network | IPv6Network] = set()
    with IPRoute() as ipr:
        for family, cls in ((2, IPv4Network), (10, IPv6Network)):
            for msg in ipr.get_addr(family=family):
                addr = msg.get_attr("IFA_ADDRESS")
                net = cls(f"{addr}/{msg['prefixlen']}", strict=False)
                if not (net.is_loopback or net.is_link_local):
                    nets.add(net)
    return tuple(sorted(nets, key=lambda n: (n.version, n)))


def machine_address(candidates: tuple[IPv4Address, ...]) -> tuple[IPv4Address, int]:
    """Which of ``candidates`` is this machine's own address, and its interface's MTU: how a
    machine of a spread lab finds its place in the list. Reads, never writes."""
    with IPRoute() as ipr:
        mine = {IPv4Address(m.get_attr("IFA_ADDRESS")): m["index"] for m in ipr.get_addr(family=2)}
        found = [ip for ip in candidates if ip in mine]
        if len(found) != 1:
            what = "none" if not found else ", ".join(map(str, found))
            raise ScenarioError(
                "--spread", ",".join(map(str, candidates)),
                f"Invalid value: exactly one of the machines must be this one, found {what} among its addresses",
            )
        link = ipr.get_links(mine[found[0]])[0]
        return found[0], int(link.get_attr("IFLA_MTU"))


def sctp_available() -> bool:
    """The running kernel has SCTP loaded (``/proc/net/sctp``, read-only). Checked before any
    SCTP socket is opened: opening one would make the kernel load the module, or fail."""
    return os.path.exists("/proc/net/sctp")


def require_sctp(action: str) -> None:
    if not sctp_available():
        raise RealizeError("SCTP containerPort", action, None,
                           "this kernel has no SCTP (CONFIG_IP_SCTP) loaded; run the lab inside the CI VM with a stock "
                           "kernel: `invoke test-vm --scenario FILE`, or in the Vagrant box")
