"""Follow one real packet through the lab with the kernel's own tracing.

Nothing is re-simulated in Python: every node gets a tiny ``netns-lab-trace`` table that sets
``meta nftrace`` on the first packet of one flow (its source address and a source port chosen
for this trace), and ``nft monitor trace`` in each node namespace reports every rule that
packet meets after that: kube-proxy's nftables chains, and iptables-nft's chains (KUBE-SERVICES
-> KUBE-SVC-... -> KUBE-SEP-... and the DNAT) as well, since iptables-nft rules are nftables
rules. In ipvs mode IPVS is not netfilter: its connection table (``ipvsadm -Lnc``) names the
virtual and real server chosen. Around that: ``ip route get`` for the routing decision each node makes, a capture on
the node network for the VXLAN header, conntrack's entry for the NAT chosen, and what the
server answered (it names itself and the client address it saw).

The trace table and monitors are removed when the trace ends, whatever happens.
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from netns_lab.errors import LabError
from netns_lab.lab import Lab
from netns_lab.probes.capture import Capture
from netns_lab.probes.connect import split_hostport
from netns_lab.model import hostport
from netns_lab.scenario.k8s import ascii_int
from netns_lab.realize.netns import run_in

TABLE = "netns-lab-trace"
_LINE = re.compile(r"^trace id (\w+) (\w+) (\S+) (\S+) (packet|rule|verdict|policy):? ?(.*)$")
_VERDICT = re.compile(r"\s*\(verdict ([^)]*)\)\s*$")
_NOISE = re.compile(r"\s*counter packets \d+ bytes \d+")


@dataclass
class Step:
    node: str
    table: str  # "ip nat", "ip kube-proxy", ...
    chain: str
    kind: str  # packet | rule | policy
    text: str
    verdict: str = ""


@dataclass
class Trace:
    source: str
    source_addr: str
    target: str
    target_addr: str
    protocol: str
    mode: str
    steps: list[Step] = field(default_factory=list)
    routes: dict[str, str] = field(default_factory=dict)
    vxlan: list[dict[str, Any]] = field(default_factory=list)
    conntrack: dict[str, str] = field(default_factory=dict)
    router: list[str] = field(default_factory=list)  # from outside: the router's decision and the route it used
    ipvs: dict[str, str] = field(default_factory=dict)  # ipvs mode: node -> IPVS connection (virtual -> real server)
    policy: list[str] = field(default_factory=list)  # NetworkPolicy: which chain and rule accepted or dropped it
    result: str = ""
    served_by: str | None = None
    server_saw: str | None = None

    def _first_jump(self, chain_pattern: str) -> str | None:
        for s in self.steps:
            if s.kind == "rule" and re.match(rf"^(jump|goto) ({chain_pattern})", s.verdict):
                return s.verdict.split(" ", 1)[1]
        return None

    @property
    def service_chain(self) -> str | None:
        """The per-Service chain taken (iptables KUBE-SVC-/KUBE-SVL-, nftables service-/local-)."""
        return self._first_jump(r"KUBE-SV[CL]-|(service|local)-[A-Z2-7]{8}-")

    @property
    def endpoint_chain(self) -> str | None:
        """The per-endpoint chain taken (iptables KUBE-SEP-, nftables endpoint-)."""
        return self._first_jump(r"KUBE-SEP-|endpoint-[A-Z2-7]{8}-")

    @property
    def dnat(self) -> str | None:
        """The destination chosen: by the DNAT rule the packet met, or by IPVS (its real server)."""
        for s in self.steps:
            m = re.search(r"dnat (?:ip6? )?to (\d+\.\d+\.\d+\.\d+:\d+|\[[0-9a-f:]+\]:\d+)", s.text)
            if s.kind == "rule" and m:
                return m.group(1)
        for conn in self.ipvs.values():
            return conn.split()[-1]
        return None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(service_chain=self.service_chain, endpoint_chain=self.endpoint_chain, dnat=self.dnat)
        return out


def parse_monitor(node: str, text: str) -> list[Step]:
    """``nft monitor trace`` lines -> steps, without the trace table itself and repeats (a
    bridged packet meets the ip hooks twice with br_netfilter)."""
    steps: list[Step] = []
    seen: set[tuple[str, str, str, str]] = set()
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        _id, family, table, chain, kind, rest = m.groups()
        if table == TABLE:
            continue
        verdict = ""
        v = _VERDICT.search(rest)
        if v:
            verdict, rest = v.group(1), rest[: v.start()]
        rest = " ".join(_NOISE.sub("", rest).split())
        key = (f"{family} {table}", chain, kind, rest)
        if key in seen:
            continue
        seen.add(key)
        if kind == "packet":
            rest = _packet_summary(rest)
        steps.append(Step(node, f"{family} {table}", chain, kind, rest, verdict))
    return steps


def _packet_summary(text: str) -> str:
    want = ("iif", "oif", "ip saddr", "ip daddr", "ip6 saddr", "ip6 daddr", "tcp sport", "tcp dport", "udp sport", "udp dport", "tcp flags")
    parts = []
    for key in want:
        m = re.search(rf"(?:^| ){key} (?:== )?(\S+)", text)
        if m:
            parts.append(f"{key} {m.group(1)}")
    return " ".join(parts)


def _target(lab: Lab, text: str, family: int | None = None) -> tuple[str, str, int]:
    """``my-service:80``, ``service/NS/NAME:80``, ``loadbalancer/NAME:80``, ``pod/X:9376``,
    ``IP:PORT``, ``[IPv6]:PORT``; an object's address of ``family`` (4, 6; None: primary)."""
    host, sep, port = text.rpartition(":")
    number = ascii_int(port)  # not "٨٠"
    if not sep or number is None or not 1 <= number <= 65535:
        raise LabError(f"--to {text!r}: must be HOST:PORT (a Service name, service/..., pod/..., node/... or an IP; [IPv6]:PORT)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if "/" not in host and not re.match(r"^\d+\.\d+\.\d+\.\d+$", host) and ":" not in host:
        host = f"service/{host}"
    return host, lab.ip_of(host, family), number


def trace(lab: Lab, source: str, target: str, protocol: str = "tcp", timeout: float = 2.0, family: int | None = None) -> Trace:
    """Send one packet from ``source`` to ``target`` and report its way through the lab
    (over IPv6 with ``family`` 6 in a dual-stack lab, or to an IPv6 address)."""
    if protocol not in ("tcp", "udp"):
        raise LabError(f"--protocol {protocol!r}: tcp or udp")
    if lab.proxy_mode != "nftables" and lab.iptables_backend != "nft":
        raise LabError("trace reads the kernel's nftables trace, which sees iptables rules only with the nft backend "
                       "(iptables-nft); this lab uses iptables-legacy")
    src_ns = lab.netns_of(source)
    host, dst_ip, dport = _target(lab, target, family)
    v6 = ":" in dst_ip
    src_ip = lab.ip_of(source, 6 if v6 else family)
    sport = random.randint(40000, 60999)
    topo = lab.topology
    result = Trace(source, hostport(src_ip, sport), f"{host}:{dport}", hostport(dst_ip, dport), protocol, lab.proxy_mode)
    nft_family = "ip6" if v6 else "ip"
    match = f"{nft_family} saddr {src_ip} {protocol} sport {sport}" + (" tcp flags syn" if protocol == "tcp" else "")
    ruleset = (f"table {nft_family} {TABLE} {{\n"
               f"  chain pre {{ type filter hook prerouting priority -350 ; {match} meta nftrace set 1 ; }}\n"
               f"  chain out {{ type filter hook output priority -350 ; {match} meta nftrace set 1 ; }}\n}}\n")
    monitors: dict[str, subprocess.Popen[str]] = {}
    installed: list[str] = []
    try:
        for node in topo.local_nodes:  # a spread lab's other machines are traced there
            subprocess.run(["ip", "netns", "exec", node.netns, "nft", "-f", "-"], input=ruleset, text=True, check=True,
                           capture_output=True)
            installed.append(node.netns)
            monitors[node.name] = subprocess.Popen(["ip", "netns", "exec", node.netns, "nft", "monitor", "trace"],
                                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(0.3)  # let the monitors subscribe before the packet leaves
        # On each node's port of the node network (a bridge device itself sees only its own frames)
        # (BPF's udp[] reads IPv4 datagrams only: over an IPv6 underlay the decoding below picks the packet)
        bpf = f"udp port 8472 and {_inner_source_filter(src_ip)}" if topo.node_cidr.version == 4 else "ip6 and udp port 8472"
        caps = [Capture(topo.underlay_netns, n.uplink, limit=20, bpf=bpf) for n in topo.local_nodes] if topo.network == "vxlan" else []
        with contextlib.ExitStack() as stack:
            for cap in caps:
                stack.enter_context(cap)
            _send(src_ns, src_ip, sport, dst_ip, dport, protocol, timeout, result)
            time.sleep(0.2)
        result.vxlan = _decode_underlay([p for cap in caps for p in cap.packets()], src_ip, sport)
        time.sleep(0.2)
    finally:
        for name, proc in monitors.items():
            proc.terminate()
            out, _ = proc.communicate(timeout=5)
            result.steps += parse_monitor(name, out)
        for ns in installed:
            subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", nft_family, TABLE], capture_output=True)
    if src_ns in {c.netns for c in topo.clients} and topo.has_outside:
        result.router = _router_route(topo.router_netns, src_ip, dst_ip)
    nodes_seen = list(dict.fromkeys(s.node for s in result.steps))
    for name in nodes_seen:
        ns = topo.node(name).netns
        first = next((s for s in result.steps if s.node == name and s.kind == "packet"), None)
        iif = re.search(r"iif (\S+)", first.text).group(1).strip('"') if first and "iif" in first.text else None  # type: ignore[union-attr]
        dst = split_hostport(result.dnat)[0] if result.dnat else dst_ip
        cmd = ["ip", "-n", ns, "route", "get", dst] + (["from", src_ip, "iif", iif] if iif else [])
        route = subprocess.run(cmd, capture_output=True, text=True)
        result.routes[name] = " ".join((route.stdout or route.stderr).split())
        ct = subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-L", "-f", "ipv6" if v6 else "ipv4", "-p", protocol,
                             "--orig-src", src_ip, "--sport", str(sport)], capture_output=True, text=True)
        lines = [l for l in ct.stdout.splitlines() if l.strip()]
        if lines:
            result.conntrack[name] = " ".join(lines[0].split())
    result.policy = policy_verdicts(lab, result.steps)
    if lab.proxy_mode == "ipvs":  # IPVS is not netfilter: read its connection table
        for node in topo.local_nodes:
            conns = subprocess.run(["ip", "netns", "exec", node.netns, "ipvsadm", "-Lnc"], capture_output=True, text=True).stdout
            for line in conns.splitlines():
                parts = line.split()  # PRO EXPIRE STATE SOURCE VIRTUAL DESTINATION
                if len(parts) == 6 and parts[3] == hostport(src_ip, sport):
                    result.ipvs[node.name] = f"{parts[0]} {parts[2]} {parts[3]} {parts[4]} -> {parts[5]}"
    return result


def _router_route(router_ns: str, src_ip: str, dst_ip: str) -> list[str]:
    """The router's decision for a packet from outside (``ip route get ... iif eth1``) and
    the table entry it used, with its origin: ``proto bird`` for a route learned by BGP (a
    pod subnet or a load-balancer IP announced by the nodes), ``proto static`` for one an
    administrator set (the cloud LB's pool)."""
    v6 = ["-6"] if ":" in dst_ip else []
    got = subprocess.run(["ip", *v6, "-n", router_ns, "route", "get", dst_ip, "from", src_ip, "iif", "eth1"],
                         capture_output=True, text=True)
    table = subprocess.run(["ip", *v6, "-n", router_ns, "route", "show", "match", dst_ip], capture_output=True, text=True)
    entries = [" ".join(e.split()) for e in re.split(r"\n(?=\S)", table.stdout.strip()) if e.strip()]
    best = max(entries, key=lambda e: int(e.split()[0].partition("/")[2] or (128 if v6 else 32)), default="no route")
    return [" ".join((got.stdout or got.stderr).split()), best]


_ACCEPT_MARK = re.compile(r"mark set (?:meta )?mark (?:or|\|) 0x0*10000\b")  # iptables-nft's and nft's spellings


def policy_verdicts(lab: Lab, steps: list[Step]) -> list[str]:
    """The NetworkPolicy rules the packet met, named: the policy rule that accepted it (it
    sets Calico's accept mark) or the endpoint chain's "no policy passed it" drop."""
    from netns_lab.controllers.netpol import EGRESS, INGRESS, plan
    from netns_lab.policy import endpoint_chain, policy_chain

    names: dict[str, str] = {}
    for node in plan(lab.objects, lab.topology).values():
        for c in node.chains:
            names[policy_chain(c)] = f"policy {c.policy}, {c.direction.lower()}"
        for ep in node.endpoints:
            for direction, ids in ((INGRESS, ep.ingress), (EGRESS, ep.egress)):
                if ids is not None:
                    names[endpoint_chain(ep.iface, direction)] = f"{direction.lower()} of {ep.pod}"
    out = []
    for s in steps:
        chain = s.chain.removeprefix("filter-")
        if chain.startswith(("cali-pi-", "cali-po-")) and _ACCEPT_MARK.search(s.text):
            out.append(f"{s.node}: accepted by {s.chain} ({names.get(chain, '?')}): {s.text}")
        elif chain.startswith(("cali-tw-", "cali-fw-")) and s.verdict == "drop":
            out.append(f"{s.node}: dropped by {s.chain} ({names.get(chain, '?')}: no policy allows it): {s.text}")
    return out


def _hex(ip: str) -> str:
    return "".join(f"{int(b):02x}" for b in ip.split("."))


def _inner_source_filter(ip: str) -> str:
    """A BPF test on the source address of the packet inside a VXLAN datagram (UDP 8 + VXLAN 8
    + Ethernet 14 bytes in): IPv4's at +12, IPv6's 16 bytes at +8, compared 4 bytes at a time."""
    if ":" not in ip:
        return f"udp[42:4] = 0x{_hex(ip)}"
    raw = socket.inet_pton(socket.AF_INET6, ip)
    return " and ".join(f"udp[{38 + i}:4] = 0x{raw[i:i + 4].hex()}" for i in range(0, 16, 4))


def _send(ns: str, src_ip: str, sport: int, dst_ip: str, dport: int, protocol: str, timeout: float, out: Trace) -> None:
    """One connection (TCP) or datagram (UDP) from a fixed source port; netexec answers
    ``<pod> <client-ip>:<port>``."""

    def go() -> None:
        kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET6 if ":" in src_ip else socket.AF_INET, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((src_ip, sport))
            s.settimeout(timeout)
            try:
                if protocol == "tcp":
                    s.connect((dst_ip, dport))
                    s.sendall(b"trace\n")
                    data = s.recv(512)
                else:
                    s.sendto(b"trace\n", (dst_ip, dport))
                    data = s.recv(512)
            except OSError as exc:
                out.result = {socket.timeout: "timeout", ConnectionRefusedError: "refused"}.get(type(exc), exc.strerror or str(exc))  # type: ignore[call-overload]
                return
        out.result = "ok"
        parts = data.decode(errors="replace").strip().split(" ")
        if len(parts) == 2:
            out.served_by, out.server_saw = parts

    run_in(ns, go)


def _decode_underlay(packets: list[Any], src_ip: str, sport: int) -> list[dict[str, Any]]:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.vxlan import VXLAN

    out = []
    for p in packets:
        if VXLAN not in p:
            continue
        outer, inner = (p[IPv6] if isinstance(p.payload, IPv6) else p[IP]), p[VXLAN].payload  # an IPv6 lab's underlay is IPv6
        layer = IPv6 if ":" in src_ip else IP
        if layer not in inner or inner[layer].src != src_ip:
            continue
        l4 = inner[TCP] if TCP in inner else inner[UDP] if UDP in inner else None
        if l4 is None or l4.sport != sport:
            continue
        out.append({"outer_src": outer.src, "outer_dst": outer.dst, "udp_dport": p[UDP].dport, "vni": p[VXLAN].vni,
                    "inner_src": hostport(inner[layer].src, l4.sport), "inner_dst": hostport(inner[layer].dst, l4.dport)})
        break  # the first packet of the flow is the one traced
    return out


def render(t: Trace) -> str:
    """Human-readable, hop by hop."""
    lines = [f"trace {t.source} ({t.source_addr}) -> {t.target} ({t.target_addr}) {t.protocol}, proxy mode {t.mode}"]
    for s in t.steps:
        where = f"{s.node:<10} {s.table} {s.chain}"
        if s.kind == "packet":
            lines.append(f"{where}: packet {s.text}")
        elif s.kind == "policy":
            lines.append(f"{where}: policy {s.text}")
        else:
            lines.append(f"{where}: {s.text}" + (f"  => {s.verdict}" if s.verdict and s.verdict != "continue" else ""))
    if t.router:
        lines.append(f"{'router':<10} route: {t.router[0]}")
        lines.append(f"{'router':<10} table: {t.router[1]}")
    for node, route in t.routes.items():
        lines.append(f"{node:<10} route: {route}")
    for v in t.vxlan:
        lines.append(f"{'underlay':<10} VXLAN {v['outer_src']} -> {v['outer_dst']} udp/{v['udp_dport']} VNI {v['vni']}: "
                     f"inner {v['inner_src']} -> {v['inner_dst']}")
    for node, ct in t.conntrack.items():
        lines.append(f"{node:<10} conntrack: {ct}")
    for node, conn in t.ipvs.items():
        lines.append(f"{node:<10} IPVS connection: {conn} (virtual server -> real server)")
    for verdict in t.policy:
        lines.append(f"network policy: {verdict}")
    summary = [f"Service chain {t.service_chain}" if t.service_chain else "",
               f"endpoint chain {t.endpoint_chain}" if t.endpoint_chain else "",
               f"DNAT to {t.dnat}" if t.dnat else "no DNAT"]
    lines.append("chosen: " + ", ".join(x for x in summary if x))
    if t.result == "ok":
        lines.append(f"server: {t.served_by} answered; it saw the client as {t.server_saw}")
    else:
        lines.append(f"result: {t.result}")
    return "\n".join(lines)
