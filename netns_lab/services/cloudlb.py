"""The emulated cloud load balancer: health checks in Python, forwarding in the kernel.

Runs inside the lab's ``<lab>__lb`` namespace. Every interval it checks each node the way a
cloud provider's controller is told to by Kubernetes: for a Service with
``externalTrafficPolicy: Local``, ``GET /healthz`` on its ``healthCheckNodePort`` (kube-proxy
answers 200 where the node has a ready local endpoint, 503 elsewhere); otherwise kube-proxy's
own ``/healthz`` on port 10256. A node is in service for a Service after one good answer and
out after one bad one (or a timeout), so a change takes effect within one interval.

Forwarding is nftables (one atomic ``nft -f`` per change): a verdict map sends each
``LB IP . protocol . port`` to a per-Service chain that marks the packet by a hash of its
flow; the lab's policy-routing rules send each mark to one node, packet unchanged. The hash
picks one of :data:`SLOTS` slots; a slot belongs to one node and only falls back to another
while that node is unhealthy, so flows to healthy nodes never move when another node fails.

Config (JSON, re-read on SIGHUP): ``netns``, ``interval``, ``status`` (a file this process
rewrites after every round: which nodes are in service for which Service), ``nodes``
(name, ip, mark) and ``services`` (key, ips, ports, check_port, check_path).
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from netns_lab import atomic
from netns_lab.services import setns
from netns_lab.services.ready import say_ready

TABLE = "ip cloud-lb"
TABLE6 = "ip6 cloud-lb"  # a dual-stack lab's IPv6 load-balancer IPs: the same slots, marks and nodes
SLOTS = 64
SEED = 0x6B38


NFT_COMMENT_MAX = 128


def slot_owners(nodes: list[dict[str, Any]], healthy: set[str]) -> list[dict[str, Any]] | None:
    """Slot -> node: slot s belongs to node s mod N, or, while that node is out, to a healthy one."""
    up = [n for n in nodes if n["name"] in healthy]
    if not up:
        return None
    out = []
    for s in range(SLOTS):
        own = nodes[s % len(nodes)]
        out.append(own if own["name"] in healthy else up[s % len(up)])
    return out


def _comment(text: str) -> str:
    """nft refuses comments over 128 characters, and a Service key (two 63-character names)
    with its note can be longer: keep the start, which names the Service."""
    return text if len(text) <= NFT_COMMENT_MAX else text[: NFT_COMMENT_MAX - 3] + "..."


def render(config: dict[str, Any], healthy: dict[str, set[str]]) -> str:
    """The whole ``cloud-lb`` table for the current health (pure; one nft transaction), and
    its IPv6 twin when a Service has an IPv6 load-balancer IP."""
    text = _table(config, healthy, TABLE, "ip", "ipv4_addr", lambda ip: ":" not in ip)
    if any(":" in ip for svc in config["services"] for ip in svc["ips"]) or config.get("dualStack"):
        text += _table(config, healthy, TABLE6, "ip6", "ipv6_addr", lambda ip: ":" in ip)
    return text


def _table(config: dict[str, Any], healthy: dict[str, set[str]], table: str, ip_kw: str, addr_type: str,
           mine: Any) -> str:
    elements: list[str] = []
    chains: list[str] = []
    for i, svc in enumerate(config["services"]):
        chain = f"svc-{i}"
        for ip in filter(mine, svc["ips"]):
            for proto, port in svc["ports"]:
                elements.append(f"{ip} . {proto} . {port} : jump {chain}")
        owners = slot_owners(config["nodes"], healthy.get(svc["key"], set()))
        if owners is None:
            body = f'counter drop comment "{_comment(svc["key"] + ": no node in service")}"'
        else:
            slots = ", ".join(f"{s} : {n['mark']:#x}" for s, n in enumerate(owners))
            body = (f'meta mark set jhash {ip_kw} saddr . th sport mod {SLOTS} seed {SEED:#x} map {{ {slots} }} '
                    f'comment "{_comment(svc["key"])}"')
        chains.append(f"  chain {chain} {{ {body} ; }}")
    elems = f" elements = {{ {', '.join(elements)} }} ;" if elements else ""
    return "\n".join([
        f"table {table}",
        f"delete table {table}",
        f"table {table} {{",
        f"  map services {{ type {addr_type} . inet_proto . inet_service : verdict ;{elems} }}",
        "  chain prerouting { type filter hook prerouting priority mangle ; policy accept ; "
        f"{ip_kw} daddr . meta l4proto . th dport vmap @services ; }}",
        *chains,
        "}",
    ]) + "\n"


def check(ip: str, port: int, path: str, timeout: float) -> tuple[bool, str]:
    """One HTTP health check: (in service?, what was seen)."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.settimeout(timeout)
            host = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"  # the Host header brackets an IPv6 address
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data and len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        return False, exc.strerror or type(exc).__name__
    status = data.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = status.split(" ")
    return len(parts) > 1 and parts[1] == "200", status or "empty reply"


class Balancer:
    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self.config: dict[str, Any] = {}
        self.reload = True
        self.applied: str | None = None
        self.round = 0
        self.results: dict[tuple[str, str, int, str], tuple[bool, str]] = {}  # last round's checks
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=16)

    def load(self) -> None:
        with open(self.config_path) as fh:
            self.config = json.load(fh)
        self.applied = None

    def one_round(self) -> dict[str, set[str]]:
        cfg = self.config
        timeout = min(1.0, cfg["interval"] * 0.5)
        targets = {(n["name"], n["ip"], s["check_port"], s["check_path"]) for s in cfg["services"] for n in cfg["nodes"]}
        futures = {t: self.pool.submit(check, t[1], t[2], t[3], timeout) for t in targets}
        results = {t: f.result() for t, f in futures.items()}
        healthy: dict[str, set[str]] = {}
        for s in cfg["services"]:
            healthy[s["key"]] = {n["name"] for n in cfg["nodes"] if results[(n["name"], n["ip"], s["check_port"], s["check_path"])][0]}
        self.results = results
        return healthy

    def apply(self, healthy: dict[str, set[str]]) -> None:
        text = render(self.config, healthy)
        if text != self.applied:
            proc = subprocess.run(["nft", "-f", "-"], input=text, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"nft failed: {proc.stderr.strip()}", file=sys.stderr, flush=True)
                return
            if self.applied is not None:
                print(f"round {self.round}: " + "; ".join(f"{k}: {sorted(v)}" for k, v in sorted(healthy.items())), file=sys.stderr, flush=True)
            self.applied = text
        self.round += 1
        status = {
            "round": self.round,
            "time": time.time(),
            "services": {s["key"]: {"ips": s["ips"], "healthy": sorted(healthy.get(s["key"], ()))} for s in self.config["services"]},
            "checks": {f"{t[0]}:{t[2]}": r[1] for t, r in self.results.items()},
        }
        atomic.write(self.config["status"], json.dumps(status))

    def serve(self, ready: bool = False) -> None:
        while True:
            start = time.monotonic()
            if self.reload:
                self.reload = False
                self.load()
            self.apply(self.one_round())
            if not ready:
                say_ready()
                ready = True
            time.sleep(max(0.0, self.config["interval"] - (time.monotonic() - start)))




def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m netns_lab.services.cloudlb CONFIG.json", file=sys.stderr)
        return 2
    balancer = Balancer(argv[0])
    balancer.load()
    setns.enter(balancer.config["netns"])  # before any thread: new threads inherit it

    def on_hup(_sig: int, _frame: object) -> None:
        balancer.reload = True

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    balancer.reload = False
    balancer.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
