"""Cluster DNS benchmark: queries/s and latency from a pod with 10,000 Services in the model,
and how long a Service change takes to be answered (run as root: ``invoke bench --only dns``).

Queries go the way a pod's do: from the client pod's namespace to the kube-dns ClusterIP,
through kube-proxy's rules (nftables mode here), to the DNS server in the coredns pod.
"""

from __future__ import annotations

import os
import random
import selectors
import socket
import statistics
import sys
import time

from dnslib import DNSRecord

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import until_answered  # noqa: E402
SERVICES = 10_000
QUERIES = 20_000
IN_FLIGHT = 64


def generated(n: int):  # type: ignore[no-untyped-def]
    from ipaddress import IPv4Address

    from netns_lab.model import Service, ServicePort

    base = int(IPv4Address("10.100.0.0"))
    return tuple(Service(f"svc-{i}", "bench", ports=(ServicePort(80, name="http"),), cluster_ip=str(IPv4Address(base + i)))
                 for i in range(n))


def blast(dns_ip: str, names: list[str]) -> tuple[float, list[float], int]:
    """Pipelined UDP queries (IN_FLIGHT outstanding); returns (qps, latencies, answered)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((dns_ip, 53))
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    packets = [DNSRecord.question(n, "A").pack() for n in names]  # built before the clock starts
    sent: dict[int, float] = {}
    lat: list[float] = []
    next_i = 0
    t0 = time.perf_counter()
    deadline = t0 + 60
    while (next_i < len(names) or sent) and time.perf_counter() < deadline:
        while next_i < len(names) and len(sent) < IN_FLIGHT:
            qid = next_i % 65536
            sock.send(qid.to_bytes(2, "big") + packets[next_i][2:])
            sent[qid] = time.perf_counter()
            next_i += 1
        for _ in sel.select(0.5):
            while True:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                qid = int.from_bytes(data[:2], "big")
                start = sent.pop(qid, None)
                if start is not None:
                    lat.append(time.perf_counter() - start)
        if not sel.get_map() or (next_i >= len(names) and sent and time.perf_counter() - max(sent.values()) > 1.0):
            break
    elapsed = time.perf_counter() - t0
    sock.close()
    return len(lat) / elapsed, lat, len(lat)


def main() -> None:
    from netns_lab.lab import Lab
    from netns_lab.realize.netns import run_in

    lab = Lab.from_file(os.path.join(HERE, "..", "scenarios", "dns.yaml"), {"name": "bench-dns", "cluster.proxyMode": "nftables"})
    with lab.up():
        from dataclasses import replace

        from netns_lab.model import Namespace

        extra = generated(SERVICES)  # straight into the lab's objects (10,000 applies would measure admission instead)
        lab.objects = replace(lab.objects, namespaces=(*lab.objects.namespaces, Namespace("bench")), services=lab.services + extra)
        t0 = time.perf_counter()
        lab.sync()
        print(f"{len(lab.services):,} Services in the model (sync {time.perf_counter() - t0:.1f}s)")
        client = lab.netns_of("pod/my-namespace/client")
        dns_ip = str(lab.topology.dns_ip)
        distinct = [f"svc-{i}.bench.svc.cluster.local." for i in random.sample(range(SERVICES), SERVICES)]
        repeated = [f"svc-{random.randrange(SERVICES)}.bench.svc.cluster.local." for _ in range(QUERIES)]
        for label, names in (("every name new (server answer cache cold)", distinct),
                             ("random names, repeats answered from cache", repeated)):
            qps, lat, answered = run_in(client, lambda names=names: blast(dns_ip, names))
            lat.sort()
            p50 = statistics.median(lat) * 1e3
            p99 = lat[int(len(lat) * 0.99) - 1] * 1e3
            print(f"UDP queries from a pod via the kube-dns ClusterIP, {label}: {answered}/{len(names)} answered, "
                  f"{qps:,.0f} queries/s with {IN_FLIGHT} in flight, latency p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        # A Service change, end to end: apply -> admission -> sync (zone, rules) -> answered by the server
        from netns_lab.model import Service, ServicePort

        samples, syncs = [], []
        for i in range(10):
            new = Service(f"fresh-{i}", "bench", ports=(ServicePort(80),), cluster_ip=f"10.110.0.{i + 1}")
            took, answered = until_answered(
                client, f"fresh-{i}.bench.svc.cluster.local.",
                lambda new=new: lab.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": new.name, "namespace": "bench"},
                                           "spec": {"clusterIP": new.cluster_ip, "ports": [{"port": 80}]}}),
                want=new.cluster_ip, timeout=10)
            syncs.append(took * 1e3)
            if answered is None:
                raise SystemExit("change never became visible")
            samples.append(answered * 1e3)
        print(f"Service created -> answered by DNS to a polling pod: median {statistics.median(samples):.0f} ms, "
              f"max {max(samples):.0f} ms over {len(samples)} changes (whole sync incl. kube-proxy rules: "
              f"median {statistics.median(syncs):.0f} ms)")


if __name__ == "__main__":
    main()
