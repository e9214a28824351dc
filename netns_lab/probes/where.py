"""Name a lab interface the way a user thinks of it: ``pod/web-1`` (its eth0),
``node/node-1:cni0``, ``node/node-1:flannel.1``, ``underlay`` (node-1's uplink) or
``underlay:uplink1`` (``underlay:trunk0``: a spread lab's way to its other machines), ``external`` (or ``external/NAME``), ``router[:eth1]``, ``cloud-lb``, ``wan``."""

from __future__ import annotations

from netns_lab.errors import LabError
from netns_lab.lab import Lab, parse_ref


def interface(lab: Lab, where: str) -> tuple[str, str]:
    """``(netns, ifname)`` for a capture point."""
    target, _, ifname = where.partition(":")
    topo = lab.topology
    if target == "underlay":
        return topo.underlay_netns, ifname or topo.local_nodes[0].uplink
    fixed = {"router": (topo.router_netns, "eth0"), "cloud-lb": (topo.lb_netns, "eth0"), "wan": (topo.wan_netns, "br0")}
    if target in fixed:
        return fixed[target][0], ifname or fixed[target][1]
    ref = parse_ref(target)
    if ref.kind not in ("pod", "node", "external"):
        raise LabError(f"capture point {where!r}: use pod/NAME, node/NAME[:IFACE], underlay[:IFACE], external[/NAME], "
                       "router[:IFACE], cloud-lb or wan")
    return lab.netns_of(ref), ifname or "eth0"
