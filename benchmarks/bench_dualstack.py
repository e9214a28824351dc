"""Dual-stack benchmark: figures, not pass/fail (run as root: ``invoke bench --only dualstack``).

* up + serving for 10 nodes x 50 pods in an IPv4, an IPv6 and a dual-stack lab (every pod
  probed on each of its addresses), in both network modes;
* a full rule sync on one node at 1,000 single-stack Services (one IPv4 proxier) next to
  1,000 dual-stack Services (the IPv4 and the IPv6 proxier: twice the rules), and a
  one-endpoint change of one dual-stack Service (both families' partial syncs), per mode.

Each point runs in a fresh process. Writes benchmarks/results/dualstack.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
LAB_SIZES = [(10, 50)]
FAMILIES = ["ipv4", "ipv6", "dual"]
NETWORKS = ["vxlan", "host-gw"]
SYNC_SERVICES = 1000
PROXY_MODES = ["iptables", "nftables"]


def one_lab(nodes: int, ppn: int, network: str, family: str) -> dict[str, object]:
    from bench_lab import one_lab as up_and_serve  # this directory is the script's (sys.path[0])

    return {"family": family, "network": network, "nodes": nodes, "ppn": ppn, **up_and_serve(nodes, ppn, network, family)}


def generated(n: int, family: int):  # type: ignore[no-untyped-def]
    """N Services with 10 endpoints each, of one family (kube-proxy's view of them)."""
    from netns_lab.controllers.endpoints import Endpoint
    from netns_lab.proxy.types import ServicePortInfo

    if family == 6:
        vip, ep = int(IPv6Address("fd00:10:96::1:0")), int(IPv6Address("fd00:10:244:80::"))
        addr = IPv6Address
    else:
        vip, ep = int(IPv4Address("10.100.0.0")), int(IPv4Address("10.244.128.0"))
        addr = IPv4Address  # type: ignore[assignment]
    out = []
    for i in range(n):
        eps = tuple(Endpoint(f"gen/p{i}-{j}", str(addr(ep + (i * 10 + j) % 30000 + 1)), 8080, "node-1") for j in range(10))
        out.append(ServicePortInfo("gen", f"svc-{i}", None, "TCP", str(addr(vip + i)), 80, None, None, False, False, eps))
    return tuple(out)


def one_sync(mode: str, dual: bool) -> dict[str, object]:
    """Full sync of N Services on node-1 of a dual-stack lab: IPv4 only (single-stack
    Services) or both proxiers (dual-stack ones); then one endpoint less on one Service."""
    from netns_lab.lab import Lab

    lab = Lab.from_file(os.path.join(HERE, "..", "scenarios", "dual-stack.yaml"),
                        {"cluster.proxyMode": mode, "name": f"bds-sync-{mode[:3]}"})
    with lab.up():
        p4, p6 = lab.proxiers["node-1"], lab.proxiers6["node-1"]
        gen4, gen6 = generated(SYNC_SERVICES, 4), generated(SYNC_SERVICES, 6) if dual else ()
        t0 = time.perf_counter()
        stats = [p4.sync(gen4, full=True)] + ([p6.sync(gen6, full=True)] if dual else [])
        full_s = time.perf_counter() - t0
        mid = SYNC_SERVICES // 2
        t1 = time.perf_counter()
        parts = [p4.sync(gen4[:mid] + (replace(gen4[mid], endpoints=gen4[mid].endpoints[:-1]),) + gen4[mid + 1:])]
        if dual:
            parts.append(p6.sync(gen6[:mid] + (replace(gen6[mid], endpoints=gen6[mid].endpoints[:-1]),) + gen6[mid + 1:]))
        partial_s = time.perf_counter() - t1
    return {"mode": mode, "services": SYNC_SERVICES, "stack": "dual" if dual else "single", "full_s": full_s,
            "full_render_s": sum(s.render_s for s in stats), "full_apply_s": sum(s.apply_s for s in stats),
            "full_bytes": sum(s.bytes for s in stats), "partial_s": partial_s, "transactions": len(stats)}


def run_child(args: list[str]) -> dict[str, object]:
    from common import run_child as child  # this directory is the script's (sys.path[0])

    return child(__file__, args)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="vxlan and nftables only")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.child[0] == "lab":
            print(json.dumps(one_lab(int(args.child[1]), int(args.child[2]), args.child[3], args.child[4])))
        else:
            print(json.dumps(one_sync(args.child[1], args.child[2] == "dual")))
        return
    networks = NETWORKS[:1] if args.quick else NETWORKS
    modes = PROXY_MODES[1:] if args.quick else PROXY_MODES
    print(f"netns-lab dual-stack benchmark on {os.cpu_count()} cores, kernel {os.uname().release}")
    labs, syncs = [], []
    print(f"{'family':7} {'network':8} {'nodes x pods':>12} {'pods':>5} {'up s':>6} {'probes':>6} {'probe s':>7} {'not serving':>11}")
    for network in networks:
        for family in FAMILIES:
            for nodes, ppn in LAB_SIZES:
                r = run_child(["--child", "lab", str(nodes), str(ppn), network, family])
                labs.append(r)
                print(f"{family:7} {network:8} {f'{nodes} x {ppn}':>12} {r['pods']:5d} {r['up_s']:6.2f} {r['probes']:6d} "
                      f"{r['serving_probe_s']:7.2f} {r['not_serving']:11d}")
    print(f"{'mode':9} {'Services':>8} {'stack':6} {'full sync s':>11} {'render s':>8} {'apply s':>7} {'bytes':>9} {'1-endpoint change s':>19}")
    for mode in modes:
        for stack in ("single", "dual"):
            r = run_child(["--child", "sync", mode, stack])
            syncs.append(r)
            print(f"{mode:9} {r['services']:8d} {stack:6} {r['full_s']:11.2f} {r['full_render_s']:8.2f} {r['full_apply_s']:7.2f} "
                  f"{r['full_bytes']:9d} {r['partial_s']:19.3f}")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "dualstack.json"), "w") as fh:
        json.dump({"labs": labs, "syncs": syncs}, fh, indent=1)
    with open(os.path.join(RESULTS, "dualstack.md"), "w") as fh:
        fh.write(f"# Dual-stack benchmark ({os.cpu_count()} cores, kernel {os.uname().release})\n\n"
                 "`invoke bench --only dualstack` (benchmarks/bench_dualstack.py).\n\n"
                 "| family | network | nodes x pods | up s | probes | probe s | not serving |\n|---|---|---:|---:|---:|---:|---:|\n")
        for r in labs:
            fh.write(f"| {r['family']} | {r['network']} | {r['nodes']} x {r['ppn']} | {r['up_s']:.2f} | "
                     f"{r['probes']} | {r['serving_probe_s']:.2f} | {r['not_serving']} |\n")
        fh.write("\n| mode | Services | stack | full sync s | render s | apply s | bytes | one-endpoint change s |\n"
                 "|---|---:|---|---:|---:|---:|---:|---:|\n")
        for r in syncs:
            fh.write(f"| {r['mode']} | {r['services']} | {r['stack']} | {r['full_s']:.2f} | {r['full_render_s']:.2f} | "
                     f"{r['full_apply_s']:.2f} | {r['full_bytes']} | {r['partial_s']:.3f} |\n")


if __name__ == "__main__":
    main()
