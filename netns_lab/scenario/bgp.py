"""``cluster.bgp`` and ``cluster.external.loadBalancer: bgp``: the AS numbers, the mesh, BFD.

The rules are those of the daemons and of MetalLB's configuration (its messages where it has
one): an AS number a BGP speaker may use (RFC 6793/7300: not 0, 23456 or 65535, not the
last 32-bit value), the router in another AS than the nodes (it is an external peer: eBGP
is what makes it spread a load-balancer IP over every node that announces it), MetalLB's
BFDProfile ranges and hold time rule. Everything is checked at load, so a value never
reaches a BIRD configuration file unchecked.
"""

from __future__ import annotations

from typing import Any

from netns_lab.model import BfdConfig, BgpConfig
from netns_lab.scenario.schema import ANY, BOOL, INT, Obj
from netns_lab.scenario.yamlsrc import Source, join

BFD = Obj("netns-lab/v1 Scenario.cluster.bgp.bfd",
          {"enabled": BOOL, "receiveInterval": INT, "transmitInterval": INT, "detectMultiplier": INT})
BGP = Obj("netns-lab/v1 Scenario.cluster.bgp",
          {"asNumber": INT, "routerAsNumber": INT, "nodeToNodeMesh": BOOL, "holdTime": INT, "bfd": ANY})
RESERVED_AS = {0: "reserved (RFC 7607)", 23456: "AS_TRANS (RFC 6793)", 65535: "reserved (RFC 7300)",
               4294967295: "reserved (RFC 7300)"}
MAX_AS = 4294967295
BFD_RANGES = {  # MetalLB's BFDProfile: field -> (min, max)
    "receiveInterval": (10, 60000),
    "transmitInterval": (10, 60000),
    "detectMultiplier": (2, 255),
}


def parse_bgp(src: Source, raw: Any, path: str, used: bool, unsupported: str | None) -> BgpConfig:
    """``cluster.bgp`` (``path``). ``used``: the pod network or the load balancer is bgp (the
    section means nothing otherwise, and a user who wrote it expects BGP: refused).
    ``unsupported``: why this lab cannot run BGP at all (e.g. its IP family), or None."""
    if raw is not None and not used:
        raise src.error(path, 'Forbidden: only with cluster.network "bgp" or cluster.external.loadBalancer "bgp"')
    if used and unsupported:
        raise src.error(path, f"Forbidden: {unsupported}")
    raw = {} if raw is None else raw
    BGP.check(src, raw, path)
    default = BgpConfig()
    as_number = _as_number(src, join(path, "asNumber"), raw.get("asNumber", default.as_number))
    router_as = _as_number(src, join(path, "routerAsNumber"), raw.get("routerAsNumber", default.router_as_number))
    if router_as == as_number:
        raise src.error(join(path, "routerAsNumber"), f"Invalid value: {router_as}: must differ from asNumber: the router is "
                                                      "an external (eBGP) peer of the cluster's nodes")
    hold = raw.get("holdTime", default.hold_time)
    if hold != 0 and not 3 <= hold <= 65535:  # RFC 4271 4.2; MetalLB: "must be 0 or >=3s"
        raise src.error(join(path, "holdTime"), f"Invalid value: {hold}: must be 0 or between 3 and 65535 seconds")
    return BgpConfig(as_number=as_number, router_as_number=router_as,
                     node_to_node_mesh=raw.get("nodeToNodeMesh", default.node_to_node_mesh), hold_time=hold,
                     bfd=_bfd(src, join(path, "bfd"), raw.get("bfd")))


def _as_number(src: Source, path: str, value: int) -> int:
    if value in RESERVED_AS:
        raise src.error(path, f"Invalid value: {value}: {RESERVED_AS[value]}, not a usable AS number")
    if not 1 <= value < MAX_AS:
        raise src.error(path, f"Invalid value: {value}: must be between 1 and {MAX_AS - 1}")
    return value


def _bfd(src: Source, path: str, raw: Any) -> BfdConfig:
    """``bfd: true|false`` or MetalLB's BFDProfile fields (milliseconds)."""
    if raw is None:
        return BfdConfig()
    if isinstance(raw, bool):
        return BfdConfig(enabled=raw)
    if not isinstance(raw, dict):
        raise src.error(path, 'Invalid value: expected true, false or a mapping (enabled, receiveInterval, transmitInterval, '
                              'detectMultiplier)')
    BFD.check(src, raw, path)
    default = BfdConfig()
    values: dict[str, int] = {}
    for field, (low, high) in BFD_RANGES.items():
        value = raw.get(field, getattr(default, _snake(field)))
        if not low <= value <= high:  # MetalLB's own message
            raise src.error(join(path, field), f"Invalid value: {value}: must be in {low}-{high} range")
        values[_snake(field)] = value
    return BfdConfig(enabled=raw.get("enabled", True), **values)


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)
