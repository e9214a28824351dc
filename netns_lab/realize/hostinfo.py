"""Read-only facts about the host namespace (its address prefixes), for validation."""

from __future__ import annotations

from ipaddress import IPv4Network

from pyroute2 import IPRoute


def host_networks() -> tuple[IPv4Network, ...]:
    """IPv4 prefixes configured on the host, loopback excluded. Reads, never writes."""
    nets: set[IPv4Network] = set()
    with IPRoute() as ipr:
        for msg in ipr.get_addr(family=2):
            addr = msg.get_attr("IFA_ADDRESS")
            net = IPv4Network(f"{addr}/{msg['prefixlen']}", strict=False)
            if not net.is_loopback:
                nets.add(net)
    return tuple(sorted(nets))
