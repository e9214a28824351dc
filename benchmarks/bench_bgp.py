"""BGP benchmark: figures, not pass/fail (run as root: ``invoke bench --only bgp``).

* up + serving for 3 nodes x 10 pods and 20 x 50 with ``cluster.network: bgp`` next to vxlan
  and host-gw, in the same run (every pod probed from its node); for bgp, how long after the
  BIRDs started every route was in place (the router: every pod subnet; each node: every
  other node's subnet), which is part of "up";
* convergence after a failure in scenarios/bgp.yaml (3 nodes, LB IPs announced by BGP): a
  node's link set down (the router withdraws its routes: BFD, or the hold timer without it),
  a node's BIRD SIGKILLed (its TCP sessions close: withdrawn at once; back when the
  supervisor restarted it and the sessions are up again).

Each point runs in a fresh process. Writes benchmarks/results/bgp.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
LAB_SIZES = [(3, 10), (20, 50)]
NETWORKS = ["vxlan", "host-gw", "bgp"]
SCENARIO = os.path.join(HERE, "..", "scenarios", "bgp.yaml")


def one_lab(nodes: int, ppn: int, network: str) -> dict[str, object]:
    from bench_lab import one_lab as up_and_serve  # this directory is the script's (sys.path[0])

    r = up_and_serve(nodes, ppn, network, extra=lambda lab: {"bgp_converged_s": lab.bgp_convergence_s if lab.topology.uses_bgp else None})
    return {"network": network, "nodes": nodes, "ppn": ppn, **r}


def _router_hops(lab, prefix: str) -> frozenset:  # type: ignore[no-untyped-def,type-arg]
    from netns_lab.realize.bgp import kernel_routes

    return kernel_routes(lab.topology.router_netns).get(prefix, frozenset())


def _until(cond, timeout: float = 60.0) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            return float("nan")
        time.sleep(0.01)
    return time.monotonic() - t0


def one_failure(kind: str, bfd: bool) -> dict[str, object]:
    """``kind``: link (node-3's eth0 down, then up) or kill (node-3's BIRD SIGKILLed)."""
    from netns_lab.lab import Lab

    sets: dict[str, object] = {"name": f"bbgp-{kind}-{'bfd' if bfd else 'hold'}"}
    if not bfd:
        sets["cluster.bgp"] = {"bfd": False}
    with Lab.from_file(SCENARIO, sets).up() as lab:
        lb = f"{lab.service('web-lb').load_balancer_ips[0]}/32"
        node = lab.topology.node("node-3")
        if kind == "link":
            lab.exec("node/node-3", ["ip", "link", "set", "eth0", "down"], check=True)
            gone = _until(lambda: node.ip not in _router_hops(lab, lb))
            lab.exec("node/node-3", ["ip", "link", "set", "eth0", "up"], check=True)
            back = _until(lambda: node.ip in _router_hops(lab, lb))
        else:
            with open(os.path.join(lab.bgp_run_dir, "node-3.pid")) as fh:
                pid = int(fh.read())
            os.kill(pid, signal.SIGKILL)
            gone = _until(lambda: node.ip not in _router_hops(lab, lb))
            back = _until(lambda: node.ip in _router_hops(lab, lb))
    return {"failure": kind, "bfd": bfd, "hold_time_s": lab.topology.bgp_hold_time,
            "bfd_detect_ms": lab.topology.bfd_tx_ms * lab.topology.bfd_multiplier, "withdrawn_s": gone, "back_s": back}


def run_child(args: list[str]) -> dict[str, object]:
    from common import run_child as child  # this directory is the script's (sys.path[0])

    return child(__file__, args)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the smaller lab only")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.child[0] == "lab":
            print(json.dumps(one_lab(int(args.child[1]), int(args.child[2]), args.child[3])))
        else:
            print(json.dumps(one_failure(args.child[1], args.child[2] == "bfd")))
        return
    sizes = LAB_SIZES[:1] if args.quick else LAB_SIZES
    print(f"netns-lab BGP benchmark on {os.cpu_count()} cores, kernel {os.uname().release}")
    labs, failures = [], []
    print(f"{'network':8} {'nodes x pods':>12} {'pods':>5} {'up s':>6} {'BGP converged s':>15} {'probe s':>7} {'not serving':>11}")
    for nodes, ppn in sizes:
        for network in NETWORKS:
            r = run_child(["--child", "lab", str(nodes), str(ppn), network])
            labs.append(r)
            conv = "" if r["bgp_converged_s"] is None else f"{r['bgp_converged_s']:.2f}"
            print(f"{network:8} {f'{nodes} x {ppn}':>12} {r['pods']:5d} {r['up_s']:6.2f} {conv:>15} "
                  f"{r['serving_probe_s']:7.2f} {r['not_serving']:11d}")
    print(f"{'failure':8} {'detection':22} {'withdrawn after s':>17} {'back after s':>12}")
    for kind in ("link", "kill"):
        for bfd in (True, False):
            r = run_child(["--child", "failure", kind, "bfd" if bfd else "hold"])
            failures.append(r)
            how = f"BFD {r['bfd_detect_ms']} ms" if bfd else f"hold timer {r['hold_time_s']} s"
            print(f"{kind:8} {how:22} {r['withdrawn_s']:17.3f} {r['back_s']:12.2f}")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "bgp.json"), "w") as fh:
        json.dump({"labs": labs, "failures": failures}, fh, indent=1)
    with open(os.path.join(RESULTS, "bgp.md"), "w") as fh:
        fh.write(f"# BGP benchmark ({os.cpu_count()} cores, kernel {os.uname().release})\n\n"
                 "`invoke bench --only bgp` (benchmarks/bench_bgp.py).\n\n"
                 "| network | nodes x pods | up s | of which BGP convergence s | probe s | not serving |\n"
                 "|---|---:|---:|---:|---:|---:|\n")
        for r in labs:
            conv = "" if r["bgp_converged_s"] is None else f"{r['bgp_converged_s']:.2f}"
            fh.write(f"| {r['network']} | {r['nodes']} x {r['ppn']} | {r['up_s']:.2f} | {conv} | {r['serving_probe_s']:.2f} | "
                     f"{r['not_serving']} |\n")
        fh.write("\n| failure (node-3) | detection | router withdrew its routes after s | announced again after s |\n"
                 "|---|---|---:|---:|\n")
        for r in failures:
            how = f"BFD ({r['bfd_detect_ms']} ms)" if r["bfd"] else f"hold timer ({r['hold_time_s']} s)"
            what = "link down, then up" if r["failure"] == "link" else "BIRD SIGKILLed, restarted"
            fh.write(f"| {what} | {how} | {r['withdrawn_s']:.3f} | {r['back_s']:.2f} |\n")


if __name__ == "__main__":
    main()
