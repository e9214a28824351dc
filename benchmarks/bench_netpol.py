"""NetworkPolicy benchmark: 1,000 pods on 10 nodes with 0, 100 and 1,000 policies, per dataplane.

The lab: 20 namespaces ``ns-0..19`` of 50 pods (labels ``app=a0..a9``, ``tier=t0..t4``), and a
namespace ``bench`` with a ``client`` (node-1) and a ``target`` (node-2) that one policy
isolates and opens to the client. Policy k (of N) lives in ``ns-(k mod 20)``, selects
``app=a((k div 20) mod 10)`` and admits TCP 80 from pods ``tier=t(k mod 5)`` of namespaces
labelled ``team=t(k mod 7)``: 100 policies isolate 500 pods, 1,000 isolate all 1,000, each
selected by 5.

Figures per dataplane (iptables + ipset next to kube-proxy's iptables mode; nftables next
to its nftables mode) and N:

* policies sync: the change that creates the N policies (admission, the model, every node's
  rules), and the reconciler's full sync of them (``view.full``: every node rewritten);
* label change: ``team=...`` set on one namespace, which changes the peer sets of the
  policies that select it: the change returns once every node's rules follow it;
* connect latency: 400 new TCP connections, one after the other, from ``client`` to
  ``target`` (another node; its one policy admits the client), p50 and p99 of connect():
  the per-packet cost of the policy dataplane with N policies elsewhere in the cluster.

Writes benchmarks/results/netpol.md and netpol.json; run as root: ``invoke bench --only netpol``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
NAMESPACES, PER_NS, NODES = 20, 50, 10
SIZES = (0, 100, 1000)
CONNECTS = 400

CONNECT_LOOP = r'''
import socket, sys, time
dst, n = sys.argv[1], int(sys.argv[2])
out = []
for _ in range(n):
    s = socket.socket(); s.settimeout(2)
    t0 = time.perf_counter(); s.connect((dst, 80)); out.append(time.perf_counter() - t0); s.close()
print(" ".join(f"{x:.6f}" for x in out))
'''


def scenario(path: str, proxy: str, dataplane: str) -> None:
    objects: list[dict[str, object]] = []
    for n in range(NAMESPACES):
        objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{n}"}})
        for i in range(PER_NS):
            objects.append({"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": f"p{i}", "namespace": f"ns-{n}", "labels": {"app": f"a{i % 10}", "tier": f"t{i % 5}"}},
                            "spec": {"nodeName": f"node-{1 + (n * PER_NS + i) % NODES}",
                                     "containers": [{"name": "c", "image": "netexec", "ports": [{"name": "http", "containerPort": 80}]}]}})
    objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
    for name, node in (("client", 1), ("target", 2)):
        objects.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "bench", "labels": {"role": name}},
                        "spec": {"nodeName": f"node-{node}", "containers": [{"name": "c", "image": "netexec", "ports": [{"containerPort": 80}]}]}})
    objects.append(policy("target", "bench", {"matchLabels": {"role": "target"}},
                          [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 80}]}]))
    doc = {"apiVersion": "netns-lab/v1", "kind": "Scenario", "name": f"bench-np-{dataplane[:3]}",
           "cluster": {"nodes": NODES, "proxyMode": proxy, "networkPolicy": dataplane}, "objects": objects}
    with open(path, "w") as fh:
        json.dump(doc, fh)


def policy(name: str, ns: str, selector: dict[str, object], ingress: list[dict[str, object]]) -> dict[str, object]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns},
            "spec": {"podSelector": selector, "ingress": ingress}}


def policies(count: int) -> list[dict[str, object]]:
    return [policy(f"np-{k}", f"ns-{k % NAMESPACES}", {"matchLabels": {"app": f"a{(k // NAMESPACES) % 10}"}},
                   [{"from": [{"namespaceSelector": {"matchLabels": {"team": f"t{k % 7}"}},
                               "podSelector": {"matchLabels": {"tier": f"t{k % 5}"}}}], "ports": [{"port": 80}]}])
            for k in range(count)]


def connect_latency(lab) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    out = subprocess.run(["ip", "netns", "exec", lab.netns_of("pod/bench/client"), sys.executable, "-c", CONNECT_LOOP,
                          lab.ip_of("pod/bench/target"), str(CONNECTS)], capture_output=True, text=True, check=True).stdout
    times = sorted(float(x) * 1000 for x in out.split())
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def rules_size(lab) -> int:  # type: ignore[no-untyped-def]
    """Policy rules on node-2 (the target's): iptables lines with cali- / nft calico table lines."""
    ns = lab.topology.node("node-2").netns
    if lab.objects.cluster.network_policy == "nftables":
        text = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "ip", "calico"], capture_output=True, text=True).stdout
        return sum(1 for line in text.splitlines() if line.strip())
    text = subprocess.run(["ip", "netns", "exec", ns, "iptables-save", "-t", "filter"], capture_output=True, text=True).stdout
    return sum(1 for line in text.splitlines() if line.startswith("-A cali-"))


def full_sync(lab) -> float:  # type: ignore[no-untyped-def]
    """The policy reconciler's full sync: every node's rules rendered and rewritten."""
    from netns_lab.reconcile.netpol import NetworkPolicies

    rec = next(r for r in lab.reconcilers if isinstance(r, NetworkPolicies))
    view = lab._view().but_full()
    t0 = time.perf_counter()
    rec.sync(view)
    return time.perf_counter() - t0


def run(dataplane: str, proxy: str) -> list[dict[str, object]]:
    from netns_lab.lab import Lab

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench-netpol.json")
        scenario(path, proxy, dataplane)
        t0 = time.perf_counter()
        with Lab.from_file(path) as lab:
            up = time.perf_counter() - t0
            print(f"{dataplane}: 1,002 pods on {NODES} nodes up in {up:.1f} s", flush=True)
            for count in SIZES:
                made = policies(count)
                t0 = time.perf_counter()
                if made:
                    lab.apply(*made)
                created = time.perf_counter() - t0
                full = full_sync(lab)
                ns = f"ns-{count % NAMESPACES}"
                t0 = time.perf_counter()
                lab.label(f"namespace/{ns}", team="t3")
                label = time.perf_counter() - t0
                lab.label(f"namespace/{ns}", team=None)
                p50, p99 = connect_latency(lab)
                row = {"dataplane": dataplane, "policies": count, "create_s": round(created, 3), "full_sync_s": round(full, 3),
                       "label_change_s": round(label, 3), "connect_p50_ms": round(p50, 3), "connect_p99_ms": round(p99, 3),
                       "node2_rule_lines": rules_size(lab)}
                print(json.dumps(row), flush=True)
                rows.append(row)
                if made:
                    lab.delete(*(f"networkpolicy/{m['metadata']['namespace']}/{m['metadata']['name']}" for m in made))  # type: ignore[index]
    return rows


def main() -> None:
    rows = run("iptables", "iptables") + run("nftables", "nftables")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "netpol.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    lines = ["# NetworkPolicy: 1,002 pods on 10 nodes (`invoke bench --only netpol`)", "",
             "| dataplane | policies | create (one change) | full sync, all nodes | label change | connect p50 | connect p99 | rule lines on node-2 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['dataplane']} | {r['policies']:,} | {r['create_s']:.2f} s | {r['full_sync_s']:.2f} s | "
                     f"{float(r['label_change_s']) * 1000:.0f} ms | {r['connect_p50_ms']:.3f} ms | {r['connect_p99_ms']:.3f} ms | "
                     f"{r['node2_rule_lines']:,} |")
    with open(os.path.join(RESULTS, "netpol.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
