"""Benchmarks for the pod network: figures, not pass/fail (run as root: `invoke bench`).

* up (namespaces, links, routes, netexec listening in every pod) + a probe to every pod
  proving it serves + down, for 3x10, 10x50 and 20x50 nodes x pods, in both network modes;
  peak memory of the lab's own processes (the builder and netexec);
* the full pod-to-pod matrix for 100 pods (9,900 TCP connections, each checked for NAT).

Each size runs in a fresh process so peak-memory figures do not bleed into each other.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable
from typing import Any

SIZES = [(3, 10), (10, 50), (20, 50)]
MODES = ["vxlan", "host-gw"]


def scenario_file(nodes: int, pods_per_node: int, mode: str, name: str, family: str = "ipv4") -> str:
    lines = [
        "apiVersion: netns-lab/v1", "kind: Scenario", f"name: {name}",
        f"cluster: {{nodes: {nodes}, network: {mode}, ipFamily: {family}}}", "objects:",
    ]
    for i in range(nodes * pods_per_node):
        lines.append(
            f"  - {{apiVersion: v1, kind: Pod, metadata: {{name: p{i}}}, "
            f"spec: {{containers: [{{name: c, image: netexec, ports: [{{containerPort: 8080}}]}}]}}}}"
        )
    fd, path = tempfile.mkstemp(suffix=".yaml", prefix="bench-")
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def one_lab(nodes: int, ppn: int, mode: str, family: str = "ipv4",
            extra: Callable[[Any], dict[str, Any]] | None = None) -> dict[str, float]:
    """Up, every pod serving, down; ``extra(lab)``: more figures read from the lab once up."""
    from netns_lab.lab import Lab
    from netns_lab.probes.connect import Probe, run_probes

    path = scenario_file(nodes, ppn, mode, f"bench-{mode}" if family == "ipv4" else f"bench-{family}-{mode[:4]}", family)
    try:
        lab = Lab.from_file(path)
    finally:
        os.unlink(path)
    t0 = time.perf_counter()
    lab.up()
    t_up = time.perf_counter() - t0
    figures = extra(lab) if extra else {}
    topo = lab.topology
    # every pod serving: one TCP probe from its node to each pod, on each of its addresses
    probes = [Probe(topo.node(p.node).netns, str(ip), 8080) for p in topo.workload_pods for ip in p.ips]
    t1 = time.perf_counter()
    results = run_probes(probes, timeout=5)
    t_serve = time.perf_counter() - t1
    bad = [r for r in results if r.result != "ok"]
    assert lab.state is not None
    pid = lab.state.processes[0]["pid"]
    netexec_rss = _status_kib(pid, "VmHWM")
    t2 = time.perf_counter()
    lab.down()
    t_down = time.perf_counter() - t2
    return {
        "pods": len(topo.pods), "probes": len(probes), "up_s": t_up, "serving_probe_s": t_serve, "down_s": t_down,
        "not_serving": len(bad), "builder_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "netexec_peak_kib": netexec_rss, **figures,
    }


def one_matrix(pods: int) -> dict[str, float]:
    from netns_lab.lab import Lab

    path = scenario_file(10, pods // 10, "vxlan", "bench-matrix")
    try:
        lab = Lab.from_file(path)
    finally:
        os.unlink(path)
    with lab.up():
        t0 = time.perf_counter()
        report = lab.matrix("pod-to-pod")
        elapsed = time.perf_counter() - t0
    return {"pods": pods, "pairs": len(report.pairs), "matrix_s": elapsed, "failures": len(report.failures)}


def run_child(args: list[str]) -> dict[str, float]:
    from common import run_child as child  # this directory is the script's (sys.path[0])

    return child(__file__, args)  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="only the smallest size")
    ap.add_argument("--only", default="", help="comma list of: lab, matrix")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.child[0] == "lab":
            print(json.dumps(one_lab(int(args.child[1]), int(args.child[2]), args.child[3])))
        else:
            print(json.dumps(one_matrix(int(args.child[1]))))
        return
    only = set(filter(None, args.only.split(","))) or {"lab", "matrix"}
    sizes = SIZES[:1] if args.quick else SIZES
    print(f"netns-lab benchmarks on {os.cpu_count()} cores, kernel {os.uname().release}")
    if "lab" in only:
        print(f"{'mode':8} {'nodes x pods':>12} {'pods':>5} {'up+serving s':>12} {'probe all s':>11} {'down s':>7} "
              f"{'builder MiB':>11} {'netexec MiB':>11} {'not serving':>11}")
        peaks: dict[str, list[tuple[int, int]]] = {}
        for mode in MODES:
            for nodes, ppn in sizes:
                r = run_child(["--child", "lab", str(nodes), str(ppn), mode])
                peaks.setdefault(mode, []).append((int(r["pods"]), int(r["builder_peak_kib"] + r["netexec_peak_kib"])))
                print(f"{mode:8} {f'{nodes} x {ppn}':>12} {int(r['pods']):5d} {r['up_s']:12.2f} {r['serving_probe_s']:11.2f} "
                      f"{r['down_s']:7.2f} {r['builder_peak_kib'] / 1024:11.1f} {r['netexec_peak_kib'] / 1024:11.1f} {int(r['not_serving']):11d}")
        for mode, points in peaks.items():
            if len(points) > 1:
                (p0, m0), (p1, m1) = points[0], points[-1]
                print(f"{mode}: memory per extra pod (builder + netexec peaks, {p0} -> {p1} pods): {(m1 - m0) / (p1 - p0):.1f} KiB")
    if "matrix" in only:
        r = run_child(["--child", "matrix", "100"])
        print(f"pod-to-pod matrix, {int(r['pods'])} pods on 10 nodes (vxlan): {int(r['pairs'])} pairs in {r['matrix_s']:.2f}s, "
              f"{int(r['failures'])} failures")


if __name__ == "__main__":
    main()
