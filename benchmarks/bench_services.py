"""Services benchmark: kube-proxy's iptables vs nftables mode as the number of Services grows.

For N Services with 10 endpoints each (N-1 generated, plus one real Service backed by 10
netexec pods), per mode, in a fresh process per point:
* full sync: Python render time and kernel apply time (iptables-restore / nft -f);
* one-endpoint change (partial sync) on one Service;
* peak memory (max RSS) of the process doing it;
* connect latency: p50/p99 of 300 new TCP connections from a pod to the real Service.
The real Service is placed last in the rule order, the worst case for a linear chain.

Writes benchmarks/results/services.md (table) and services.png (plot); run as root:
``invoke bench --only services``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from ipaddress import IPv4Address

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
SIZES = [100, 1000, 5000, 10000]
# iptables-nft-restore (1.8.9) grows much faster than linearly with the number of chains in
# one restore: 1,000 Services take ~10 s, 5,000 did not finish in 8 minutes. Its curve is
# measured on smaller sizes instead of letting one point run for an hour.
SIZES_BY_MODE = {"iptables": [100, 1000, 2000, 3000]}
CHANGES = 5  # one-endpoint changes per point: the median is reported
# iptables = the nft backend (iptables-nft); nftables = rules sent over netlink (realize/nftmsg.py),
# nftables-cli = the same rules through `nft -f` (what kube-proxy's knftables does)
MODES = ["iptables", "iptables-legacy", "nftables", "nftables-cli"]
# ipvs needs IP_VS: it is measured where the kernel has it (`--modes ipvs,...` inside `invoke test-vm`)


def generated_ports(n: int):  # type: ignore[no-untyped-def]
    from netns_lab.controllers.endpoints import Endpoint
    from netns_lab.proxy.types import ServicePortInfo

    base = int(IPv4Address("10.100.0.0"))
    out = []
    for i in range(n):
        eps = tuple(
            Endpoint(f"gen/p{i}-{j}", str(IPv4Address(int(IPv4Address("10.244.128.0")) + (i * 10 + j) % 30000)), 8080, "node-1")
            for j in range(10)
        )
        out.append(ServicePortInfo("gen", f"svc-{i}", None, "TCP", str(IPv4Address(base + i)), 80, None, None, False, False, eps))
    return tuple(out)


def latency(lab, count: int = 300) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from netns_lab.realize.netns import run_in

    vip = lab.ip_of("service/target")

    def measure() -> list[float]:
        samples = []
        for _ in range(count):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            t0 = time.perf_counter()
            s.connect((vip, 80))
            samples.append(time.perf_counter() - t0)
            s.close()
        return samples

    samples = sorted(run_in(lab.netns_of("pod/client"), measure))
    return statistics.median(samples) * 1e6, samples[int(0.99 * len(samples)) - 1] * 1e6


def one_point(mode: str, n: int) -> dict[str, float]:
    from netns_lab.lab import Lab
    from netns_lab.realize.proxier import IPTABLES_BACKEND_ENV, NFT_WRITER_ENV

    proxy_mode = mode
    if mode == "iptables-legacy":
        os.environ[IPTABLES_BACKEND_ENV] = "legacy"
        proxy_mode = "iptables"
    if mode == "nftables-cli":
        os.environ[NFT_WRITER_ENV] = "nft"
        proxy_mode = "nftables"
    lab = Lab.from_file(os.path.join(HERE, "scenarios", "services.yaml"), {"cluster.proxyMode": proxy_mode, "name": f"bsvc-{mode[:3]}"})
    with lab.up():
        proxier = lab.proxiers["node-1"]
        real = tuple(p for p in lab.service_ports() if p.name == "target")
        kube = tuple(p for p in lab.service_ports() if p.name != "target")
        gen = generated_ports(n - 1)
        ports = kube + gen + real
        full = proxier.sync(ports, full=True)
        changed = list(gen)
        mid = len(changed) // 2
        parts = []
        for k in range(CHANGES):  # one endpoint out, back in, out...: each a partial sync
            if changed:
                changed[mid] = replace(changed[mid], endpoints=gen[mid].endpoints[:-1] if k % 2 == 0 else gen[mid].endpoints)
            parts.append(proxier.sync(kube + tuple(changed) + real))
        part = sorted(parts, key=lambda st: st.render_s + st.apply_s)[len(parts) // 2]
        assert lab.connect("pod/client", "service/target", 80).result == "ok"
        p50, p99 = latency(lab)
    return {
        "mode": mode, "services": n, "full_render_s": full.render_s, "full_apply_s": full.apply_s, "full_bytes": full.bytes,
        "partial_render_s": part.render_s, "partial_apply_s": part.apply_s, "partial_bytes": part.bytes,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "p50_us": p50, "p99_us": p99,
    }


def write_results(rows: list[dict[str, float]], name: str = "services", modes: list[str] | None = None) -> None:
    modes = modes or sorted({str(r["mode"]) for r in rows}, key=lambda m: (MODES + ["ipvs"]).index(m) if m in MODES + ["ipvs"] else 99)
    if any(not r.get("partial_apply_s") for r in rows):
        raise SystemExit("a point without a one-endpoint change")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    lines = [
        "| mode | Services | full sync: render | full sync: apply | render/apply | one-endpoint change | peak RSS | connect p50 | connect p99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['services']:,} | {r['full_render_s']:.2f} s | {r['full_apply_s']:.2f} s | "
            f"{100 * r['full_render_s'] / r['full_apply_s']:.0f}% | {1000 * (r['partial_render_s'] + r['partial_apply_s']):.0f} ms "
            f"({1000 * r['partial_apply_s']:.0f} ms apply) | {r['peak_rss_mib']:.0f} MiB | {r['p50_us']:.0f} us | {r['p99_us']:.0f} us |"
        )
    table = "\n".join(lines)
    how = " ".join(["python", "benchmarks/bench_services.py", *sys.argv[1:]])
    where = f"{os.cpu_count()} cores, kernel {os.uname().release}"
    if os.environ.get("NETNS_LAB_IN_VM"):
        how = f'invoke test-vm --exec "{how}"'
        where += ", inside the stock-kernel VM under software emulation (qemu TCG, no KVM): times are many times native"
    with open(os.path.join(RESULTS, f"{name}.md"), "w") as fh:
        fh.write(f"# Services benchmark\n\n`{how}` (as root) on {where}. 10 endpoints per Service.\n\n{table}\n")
    print(table)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for color, mode in zip(("tab:blue", "tab:orange", "tab:green", "tab:olive", "tab:red"), modes):
        pts = [r for r in rows if r["mode"] == mode]
        if not pts:
            continue
        xs = [r["services"] for r in pts]
        axes[0].plot(xs, [r["full_render_s"] + r["full_apply_s"] for r in pts], marker="o", color=color, label=mode)
        axes[1].plot(xs, [1000 * (r["partial_render_s"] + r["partial_apply_s"]) for r in pts], marker="o", color=color, label=mode)
        axes[2].plot(xs, [r["p50_us"] for r in pts], marker="o", color=color, label=f"{mode} p50")
        axes[2].plot(xs, [r["p99_us"] for r in pts], marker="x", linestyle="--", color=color, label=f"{mode} p99")
    for ax, title, unit in zip(axes, ("full sync", "one-endpoint change", "new TCP connection to one Service"), ("s", "ms", "µs")):
        ax.set_title(title)
        ax.set_xlabel("Services (10 endpoints each)")
        ax.set_ylabel(unit)
        ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, f"{name}.png"), dpi=100)
    print(f"wrote {os.path.join(RESULTS, name + '.png')}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="100 and 1,000 Services only")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--replot", action="store_true", help="redraw table and plot from results/services.json")
    ap.add_argument("--modes", default="", help="comma list of modes (default: iptables,iptables-legacy,nftables,nftables-cli; add ipvs where IP_VS exists)")
    ap.add_argument("--sizes", default="", help="comma list of Service counts (default: per mode)")
    ap.add_argument("--results", default="", help="write the table/plot under this name instead of 'services'")
    ap.add_argument("--cap", default="", help="MODE=N,...: skip that mode's sizes above N (e.g. iptables=1000: its full sync grows fastest)")
    args = ap.parse_args()
    if args.replot:
        with open(os.path.join(RESULTS, "services.json")) as fh:
            write_results(json.load(fh))  # the default name
        return
    if args.child:
        print(json.dumps(one_point(args.child[0], int(args.child[1]))))
        return
    modes = args.modes.split(",") if args.modes else MODES
    caps = {m: int(n) for m, _, n in (c.partition("=") for c in args.cap.split(",") if c)}
    rows = []
    for mode in modes:
        sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else SIZES_BY_MODE.get(mode, SIZES)
        sizes = [n for n in sizes if n <= caps.get(mode, n)]
        for n in sizes[:2] if args.quick else sizes:
            time.sleep(2)  # let the previous lab's namespaces be freed by the kernel
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(n)], capture_output=True, text=True, timeout=1800)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{mode} x {n} failed")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{mode:8} {n:6d}: full {r['full_render_s']:.2f}+{r['full_apply_s']:.2f}s, partial "
                  f"{1000 * (r['partial_render_s'] + r['partial_apply_s']):.0f} ms, p50 {r['p50_us']:.0f} us", flush=True)
    write_results(rows, args.results or "services", modes)


if __name__ == "__main__":
    main()
