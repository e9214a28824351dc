"""``invoke bgp LAB``: every speaker's sessions, as ``calicoctl node status`` shows a node's
(PEER ADDRESS, PEER TYPE, STATE, SINCE, INFO) with the prefixes each session imported and
exported, then the router's table for pod subnets and load-balancer IPs (what the network
forwards by) and how often the supervisor restarted each BIRD."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from netns_lab.controllers.bgp import PEER_TYPES, ROUTER
from netns_lab.controllers.topology import Topology
from netns_lab.realize import bgp as birds


def collect(topo: Topology, run_dir: str, socket_of: Callable[[str], str]) -> dict[str, Any]:
    """What the lab's BIRDs say now (a dead one: its error instead of its sessions).
    ``socket_of``: a speaker's control socket, by its name."""
    speakers: dict[str, Any] = {}
    for name in [n.name for n in topo.local_nodes] + [ROUTER]:
        sock = socket_of(name)
        try:
            speakers[name] = {"sessions": [asdict(s) | {"type": PEER_TYPES.get(s.name.split("_")[0], "?"),
                                                        "established": s.established} for s in birds.sessions(sock)]}
        except Exception as exc:  # noqa: BLE001  (shown to the user: a BIRD that does not answer)
            speakers[name] = {"error": str(exc)}
    try:
        with open(os.path.join(run_dir, "restarts.json")) as fh:
            restarts = json.load(fh)
    except (OSError, ValueError):
        restarts = {}
    routes = birds.kernel_routes(topo.router_netns)
    return {"speakers": speakers, "restarts": restarts,
            "router_routes": {p: sorted(map(str, hops)) for p, hops in sorted(routes.items())}}


def format_status(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for name, sp in data["speakers"].items():
        lines.append(f"{name}" + (f" (BIRD restarted {data['restarts'][name]} times)" if data["restarts"].get(name) else ""))
        if "error" in sp:
            lines += [f"  BIRD does not answer: {sp['error']}", ""]
            continue
        rows = [("PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO", "ROUTES (IMPORTED/EXPORTED)")]
        rows += [(s["neighbor"], s["type"], s["state"], s["since"], s["info"], f"{s['imported']}/{s['exported']}")
                 for s in sp["sessions"]]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        rule = "  +" + "+".join("-" * (w + 2) for w in widths) + "+"
        lines.append(rule)
        for i, row in enumerate(rows):
            lines.append("  | " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
            if i == 0:
                lines.append(rule)
        lines += [rule, ""]
    lines.append("router routes learned by BGP (kernel, proto bird):")
    for prefix, hops in data["router_routes"].items():
        lines.append(f"  {prefix:<18} via {', '.join(hops)}" + ("  (ECMP)" if len(hops) > 1 else ""))
    if not data["router_routes"]:
        lines.append("  (none)")
    return "\n".join(lines)
