"""Run-time changes benchmark: one new Service (10 endpoints) applied to a running lab that
already has N Services, per kube-proxy mode.

For each point, a fresh lab with N Services (each with one endpoint) is built, then K new
Services are applied one at a time, each measured:
* until every node's rules are synced (``Lab.apply`` returns): Python time and the kernel's
  (iptables-restore / nft -f) separately, and Python time per phase (admission, record,
  view, each reconciler);
* then K more, each until the name answers in DNS, asked again and again from a pod, as a
  client waiting for a new Service would (apart from the first K: the asking thread shares
  the interpreter with the change and would inflate its Python time);
* the same change as a user makes it, ``invoke apply LAB FILE`` (a new process that hands
  the change to the lab's API server): until the command returns, and until DNS answers,
  from the start of the command; the first such command, which starts the API server,
  separately.

Writes benchmarks/results/changes.md and changes.json; run as root: ``invoke bench --only changes``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import until_answered  # noqa: E402
RESULTS = os.path.join(HERE, "results")
SIZES = [100, 1000, 10000]
# iptables-nft-restore grows much faster than linearly with the number of chains (1,000
# Services: ~10 s per full sync; 5,000: not within minutes), so "iptables" at 10,000 is
# measured with the legacy backend (iptables-legacy, x_tables), which kube-proxy also drives.
MODES = {"nftables": ("nftables", "nft"), "iptables": ("iptables", "nft"), "iptables-legacy": ("iptables", "legacy")}
SIZES_BY_MODE = {"iptables": [100, 1000]}
CHANGES = 5


def scenario(n: int, mode: str, path: str) -> None:
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"bench-{i}", "labels": {"app": "bench", "idx": str(i)}},
             "spec": {"nodeName": f"node-{1 + i % 2}", "containers": [{"name": "w", "image": "netexec",
                                                                       "ports": [{"name": "http", "containerPort": 9376}]}]}}
            for i in range(10)]
    pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
                 "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "netexec"}]}})
    services = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i}", "namespace": "default"},
                 "spec": {"selector": {"idx": str(i % 10)}, "ports": [{"port": 80, "targetPort": "http"}]}} for i in range(n)]
    doc = {"apiVersion": "netns-lab/v1", "kind": "Scenario", "name": "bench-chg",
           "cluster": {"nodes": 2, "proxyMode": mode, "serviceCIDR": "10.96.0.0/12"}, "objects": pods + services}
    with open(path, "w") as fh:
        json.dump(doc, fh)  # JSON is YAML


def new_service(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": "bench"}, "ports": [{"port": 80, "targetPort": "http"}]}}


def measure(mode_name: str, n: int) -> dict[str, object]:
    from netns_lab.lab import Lab

    mode, backend = MODES[mode_name]
    os.environ["NETNS_LAB_IPTABLES_BACKEND"] = backend
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.json")
        scenario(n, mode, path)
        t0 = time.perf_counter()
        lab = Lab.from_file(path)
        loaded = time.perf_counter() - t0
        lab.up()
        built = time.perf_counter() - t0
        try:
            client = lab.netns_of("pod/client")
            rows = []
            for k in range(CHANGES):  # alone: a DNS poller in this process would share the interpreter with the change
                name = f"new-{k}"
                t1 = time.perf_counter()
                lab.apply(new_service(name))
                synced = time.perf_counter() - t1
                kernel = lab._proxy.kernel_s
                rows.append({"synced_ms": synced * 1e3, "kernel_ms": kernel * 1e3, "python_ms": (synced - kernel) * 1e3,
                             "phases_ms": {k: v * 1e3 for k, v in lab.timings.items()}})
                assert lab.connect("pod/client", lab.ip_of(f"service/{name}"), 80).result == "ok"
            for k, row in enumerate(rows):  # the same change again, a pod asking for the name meanwhile
                name = f"dns-{k}"
                _, dns = until_answered(client, f"{name}.default.svc.cluster.local.", lambda name=name: lab.apply(new_service(name)))
                row["dns_ms"] = dns * 1e3 if dns is not None else None
            cli_rows = [invoke_apply(lab.name, client, tmp, f"by-cli-{k}") for k in range(CHANGES + 1)]
        finally:
            lab.down()

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows if r[key] is not None)  # type: ignore[misc]

    phases = {p: statistics.median(r["phases_ms"][p] for r in rows) for p in rows[0]["phases_ms"]}  # type: ignore[index]
    warm = cli_rows[1:]  # the first one starts the lab's API server
    return {"mode": mode_name, "services": n, "load_s": loaded, "up_s": built, "synced_ms": med("synced_ms"),
            "python_ms": med("python_ms"), "kernel_ms": med("kernel_ms"), "dns_ms": med("dns_ms"),
            "cli_first_ms": cli_rows[0][0], "cli_ms": statistics.median(r[0] for r in warm),
            "cli_dns_ms": statistics.median(r[1] for r in warm if r[1] is not None), "phases_ms": phases}


def invoke_apply(lab: str, client: str, tmp: str, name: str) -> tuple[float, float | None]:
    """`invoke apply LAB FILE` of one new Service, as a user types it: (ms until the command
    returns, rules synced on every node; ms until the name answers in DNS), both from the start
    of the command."""
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as fh:
        json.dump(new_service(name), fh)

    def run() -> None:
        done = subprocess.run([sys.executable, "-m", "invoke", "apply", lab, path], capture_output=True, text=True,
                              cwd=os.path.dirname(HERE))
        if done.returncode != 0:
            raise SystemExit(f"invoke apply failed: {done.stdout} {done.stderr}")

    took, dns = until_answered(client, f"{name}.default.svc.cluster.local.", run)
    return took * 1e3, None if dns is None else dns * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="100 and 1,000 Services only")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--point", default="", help="MODE:N, one point in this process (used by the driver)")
    args = ap.parse_args()
    if args.point:
        mode, n = args.point.split(":")
        print(json.dumps(measure(mode, int(n))))
        return
    results = []
    for mode in args.modes.split(","):
        for n in SIZES_BY_MODE.get(mode, SIZES):
            if args.quick and n > 1000:
                continue
            proc = subprocess.run([sys.executable, __file__, "--point", f"{mode}:{n}"], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{mode} {n}: failed: {proc.stderr.strip()[-400:]}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            top = sorted(r["phases_ms"].items(), key=lambda kv: -kv[1])[:4]
            print(f"{mode:16} {n:6,} Services: rules synced {r['synced_ms']:7.1f} ms (Python {r['python_ms']:6.1f}, kernel "
                  f"{r['kernel_ms']:7.1f}); DNS answers after {r['dns_ms']:6.1f} ms; `invoke apply` {r['cli_ms']:5.0f} ms "
                  f"(DNS {r['cli_dns_ms']:5.0f} ms; the first, which starts the API server, {r['cli_first_ms']:5.0f} ms); "
                  f"Python by phase: " + ", ".join(f"{k} {v:.1f}" for k, v in top), flush=True)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "changes.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    with open(os.path.join(RESULTS, "changes.md"), "w") as fh:
        fh.write("Each figure is the median of 5 changes. Left: the change made by `Lab.apply` in the lab's process (the "
                 "API server's own cost). Right: `invoke apply LAB FILE` as typed, timed from the start of the command; "
                 "the first one starts the lab's API server (it reads the lab and what the kernel holds).\n\n")
        fh.write("| mode | Services | rules synced (ms) | Python (ms) | kernel (ms) | DNS answers (ms) | `invoke apply` returns, "
                 "rules synced (ms) | `invoke apply`: DNS answers (ms) | first `invoke apply` (ms) |\n")
        fh.write("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
        for r in results:
            fh.write(f"| {r['mode']} | {r['services']:,} | {r['synced_ms']:.1f} | {r['python_ms']:.1f} | {r['kernel_ms']:.1f} | "
                     f"{r['dns_ms']:.1f} | {r['cli_ms']:.0f} | {r['cli_dns_ms']:.0f} | {r['cli_first_ms']:.0f} |\n")


if __name__ == "__main__":
    main()
