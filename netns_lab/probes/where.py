"""Name a lab interface the way a user thinks of it: ``pod/web-1`` (its eth0),
``node/node-1:cni0``, ``node/node-1:flannel.1``, ``underlay`` (node-1's uplink) or
``underlay:uplink1``, ``external``."""

from __future__ import annotations

from netns_lab.errors import LabError
from netns_lab.lab import Lab, parse_ref


def interface(lab: Lab, where: str) -> tuple[str, str]:
    """``(netns, ifname)`` for a capture point."""
    target, _, ifname = where.partition(":")
    topo = lab.topology
    if target == "underlay":
        return topo.underlay_netns, ifname or topo.nodes[0].uplink
    if target == "external":
        return topo.external_netns, ifname or "eth0"
    ref = parse_ref(target)
    if ref.kind not in ("pod", "node"):
        raise LabError(f"capture point {where!r}: use pod/NAME, node/NAME[:IFACE], underlay[:IFACE] or external")
    return lab.netns_of(ref), ifname or "eth0"
