"""Ingress controllers benchmark: endpoint changes without a reload, and throughput.

One lab runs both controllers (nginx with its Lua balancer, HAProxy with its runtime API),
each with an Ingress for ``one.example.com`` (a Service with 1 pod) and ``ten.example.com``
(a Service with 10 pods, plus one more, ``late``, that turns ready and not ready). For each
controller:

* endpoint change: ``late`` becomes ready -> the first request the controller sends it,
  timed from the start of the change (requests go out back to back from the external
  client); 5 times, median. This path never reloads (the counters are checked);
* rule change: a new host -> the first request that reaches a backend on it (it answers 404
  until then; a reload: nginx's graceful one, HAProxy's seamless one); 5 times, median;
* requests/s from the external client to ``one`` and ``ten`` for 5 s each: 2 processes x 8
  threads, each on its own keep-alive connection (the client shares the machine's 2 cores
  with the controllers and the pods: the figures compare, they do not rate a server).

Writes benchmarks/results/ingress.md and ingress.json; run as root: ``invoke bench --only ingress``.
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
CONTROLLERS = {"nginx": "ingress-nginx/ingress-nginx", "haproxy": "haproxy-ingress/haproxy-ingress"}
REPEAT = 5
SECONDS = 5.0

LOADGEN = r'''
import http.client, sys, threading, time
host, addr, seconds, threads = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
counts, errors = [0] * threads, [0] * threads
def run(i):
    conn = http.client.HTTPConnection(addr, 80, timeout=5)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            conn.request("GET", "/bench", headers={"Host": host})
            r = conn.getresponse(); r.read()
            if r.status == 200: counts[i] += 1
            else: errors[i] += 1
        except OSError:
            errors[i] += 1
            conn.close(); conn = http.client.HTTPConnection(addr, 80, timeout=5)
ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sum(counts), sum(errors))
'''


def scenario(path: str) -> None:
    def pod(name: str, app: str, node: int) -> dict[str, object]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
                "spec": {"nodeName": f"node-{node}", "containers": [{"name": "c", "image": "netexec",
                                                                     "ports": [{"name": "web", "containerPort": 8080}]}]}}

    objects: list[dict[str, object]] = [pod("one-1", "one", 2)] + [pod(f"ten-{i}", "ten", 1 + i % 2) for i in range(10)]
    objects.append(pod("late", "ten", 2))
    for app in ("one", "ten"):
        objects.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": app},
                        "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": "web"}]}})
    objects.append({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "haproxy"},
                    "spec": {"controller": "haproxy-ingress.github.io/controller"}})
    for cls in CONTROLLERS:
        objects.append(ingress(cls, []))
    doc = {"apiVersion": "netns-lab/v1", "kind": "Scenario", "name": "bench-ingress", "cluster": {"nodes": 2}, "objects": objects}
    with open(path, "w") as fh:
        json.dump(doc, fh)


def ingress(cls: str, extra: list[str]) -> dict[str, object]:
    """The Ingress of class ``cls``: one.example.com, ten.example.com and the ``extra`` hosts (to ten)."""
    def rule(host: str, svc: str) -> dict[str, object]:
        return {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"number": 80}}}}]}}

    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": f"bench-{cls}"},
            "spec": {"ingressClassName": cls, "rules": [rule("one.example.com", "one"), rule("ten.example.com", "ten")]
                     + [rule(h, "ten") for h in extra]}}


def first_request(lab, lb: str, host: str, path: str, change, done) -> float:  # type: ignore[no-untyped-def]
    """Seconds from the start of ``change()`` to the first answer for which ``done(r)``;
    the requests go out back to back, each on a new connection."""
    import threading

    from netns_lab.probes.http import get

    ext = lab.netns_of("external")
    seen: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            r = get(ext, f"http://{host}{path}", lb, timeout=2.0)
            if done(r):
                seen.append(time.perf_counter())
                return

    t0 = time.perf_counter()
    poller = threading.Thread(target=poll)
    poller.start()
    change()
    poller.join(timeout=30)
    stop.set()
    if not seen:
        raise SystemExit(f"{host}{path}: never answered as expected")
    return seen[0] - t0


def throughput(lab, lb: str, host: str) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    ext = lab.netns_of("external")
    procs = [subprocess.Popen(["ip", "netns", "exec", ext, sys.executable, "-c", LOADGEN, host, lb, str(SECONDS), "8"],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    ok = errors = 0
    for p in procs:
        out, _ = p.communicate(timeout=SECONDS + 30)
        a, b = out.split()
        ok, errors = ok + int(a), errors + int(b)
    return ok / SECONDS, errors


def main() -> None:
    from netns_lab.lab import Lab

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench-ingress.json")
        scenario(path)
        with Lab.from_file(path) as lab:
            lab.set_ready("late", False)
            for cls, service in CONTROLLERS.items():
                lb = lab.ip_of(f"loadbalancer/{service}")
                counters = (lab.ingress_reloads, lab.ingress_dynamic_updates) if cls == "nginx" else \
                    (lab.haproxy_reloads, lab.haproxy_dynamic_updates)
                reloads = counters[0]()
                ready, own = [], []
                for _ in range(REPEAT):
                    ready.append(first_request(lab, lb, "ten.example.com", "/x", lambda: lab.set_ready("late", True),
                                               lambda r: r.served_by == "late"))
                    own.append(lab.timings[f"{cls}-ingress" if cls == "haproxy" else "ingress-nginx"])
                    lab.set_ready("late", False)
                assert counters[0]() == reloads, "an endpoint change reloaded"
                rule, hosts = [], []
                for k in range(REPEAT):  # a new host: it answers 404 (no such host) until the reload is done
                    hosts.append(f"new{k}.example.com")
                    new = ingress(cls, list(hosts))
                    rule.append(first_request(lab, lb, hosts[-1], "/", lambda new=new: lab.apply(new), lambda r: r.status == 200))
                rps = {n: throughput(lab, lb, f"{n}.example.com") for n in ("one", "ten")}
                row = {"controller": cls, "ready_to_first_ms": statistics.median(ready) * 1e3, "own_ms": statistics.median(own) * 1e3,
                       "rule_to_first_ms": statistics.median(rule) * 1e3, "reloads": counters[0]() - reloads,
                       "dynamic_updates": counters[1](), "rps_1": rps["one"][0], "rps_10": rps["ten"][0],
                       "errors": rps["one"][1] + rps["ten"][1]}
                results.append(row)
                print(f"{cls:8} pod ready -> first request {row['ready_to_first_ms']:6.1f} ms (no reload; the controller's "
                      f"own step {row['own_ms']:5.1f} ms); rule change "
                      f"(reload) -> first request {row['rule_to_first_ms']:6.1f} ms; {row['rps_1']:7.0f} req/s to 1 backend, "
                      f"{row['rps_10']:7.0f} req/s to 10 ({row['errors']} errors)", flush=True)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "ingress.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    with open(os.path.join(RESULTS, "ingress.md"), "w") as fh:
        fh.write("Medians of 5. Endpoint change: a pod turns ready, timed to the first request the controller sends it "
                 "(no reload: nginx's Lua balancer gets a POST, HAProxy's runtime API fills a slot). Rule change: a new "
                 "host, timed to its first answer (404 until the reload is done). Requests/s: keep-alive connections from the external client "
                 "(16 in 2 processes), the client on the same 2 cores.\n\n")
        fh.write("| controller | pod ready -> first request (ms) | of which the controller's own step (ms) | rule change (reload) -> "
                 "first answer (ms) | req/s, 1 backend | req/s, 10 backends |\n")
        fh.write("|---|---:|---:|---:|---:|---:|\n")
        for r in results:
            fh.write(f"| {r['controller']} | {r['ready_to_first_ms']:.1f} | {r['own_ms']:.1f} | {r['rule_to_first_ms']:.1f} | "
                     f"{r['rps_1']:.0f} | {r['rps_10']:.0f} |\n")


if __name__ == "__main__":
    main()
