"""What every BGP speaker of a lab says (pure): BIRD 2 configurations and MetalLB's choices.

Two users of BGP, one daemon per node (as Calico's BIRD and MetalLB's FRR can share a node's
sessions, here one BIRD does both):

* ``cluster.network: bgp``, Calico's layout (confd's ``bird.cfg.template``): the nodes in one
  AS, a full iBGP mesh (``Mesh_<ip>`` sessions; the lower address waits passively, as
  Calico does, so two nodes never race to connect), the router an external peer
  (``Global_<ip>``). Each node announces its pod subnet from a static blackhole route (the
  block's aggregate; its pods' own routes stay local) and installs what its peers announce
  into the kernel (``proto bird``). Nothing is encapsulated: the pod MTU is the node MTU.
* ``cluster.external.loadBalancer: bgp``, MetalLB's BGP mode: each node announces the
  load-balancer IPs it should (:func:`announcements`, MetalLB's ``ShouldAnnounce``) as /32s,
  to the router only, with itself as the next hop.

The router (the top-of-rack switch, its own AS) accepts only pod subnets and pool /32s
(anything else a node might say is filtered), merges equal routes into one multipath route
(``merge paths on``) and installs it; the kernel spreads flows over the next hops by an L4
hash (``fib_multipath_hash_policy=1``, set when the router's namespace is made).

Every value written here comes from the validated model (addresses, prefixes, integers): a
scenario's text never reaches a configuration file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address

from netns_lab.controllers.topology import NodePlan, Topology
from netns_lab.model import Service
from netns_lab.proxy.types import ServicePortInfo

CONNECT = "connect delay time 1; connect retry time 1; error wait time 1, 5;"  # Calico: 2, 5, 5..30; a lab converges sooner
ROUTER = "router"  # the router's speaker name (nodes' speakers are named after their nodes)


@dataclass(frozen=True)
class Speaker:
    """One BIRD: where it runs and what it is told."""

    name: str  # a node's name, or ROUTER
    netns: str
    config: str
    stem: str  # its files' names in the lab's bgp directory (file_stem)


def session_name(kind: str, peer: IPv4Address) -> str:
    """Calico's protocol names: ``Mesh_10_0_0_3`` (node-to-node), ``Global_10_0_0_1`` (the
    router, a global peer), and the router's own ``Node_10_0_0_2``."""
    return f"{kind}_{str(peer).replace('.', '_')}"


PEER_TYPES = {"Mesh": "node-to-node mesh", "Global": "global", "Node": "node"}  # calicoctl node status's PEER TYPE


def announcements(services: tuple[Service, ...], ports: tuple[ServicePortInfo, ...], topo: Topology) -> dict[str, tuple[str, ...]]:
    """node -> the load-balancer IPs its speaker announces (MetalLB's ``ShouldAnnounce``): none
    without a ready endpoint anywhere; with ``externalTrafficPolicy: Local`` only the nodes
    that hold a ready endpoint (the others would drop the traffic); every node otherwise."""
    out: dict[str, set[str]] = {n.name: set() for n in topo.nodes}
    if topo.load_balancer != "bgp":
        return {name: () for name in out}
    ready_nodes: dict[tuple[str, str], set[str]] = {}
    for sp in ports:
        ready_nodes.setdefault((sp.namespace, sp.name), set()).update(e.node for e in sp.endpoints if e.ready)
    for svc in services:
        # written into BIRD's configuration: only addresses of the pool, in their canonical form
        ips = [str(ip_address(ip)) for ip in svc.load_balancer_ips if ip_address(ip) in topo.lb_pool]
        if svc.type != "LoadBalancer" or not ips:
            continue
        nodes = ready_nodes.get((svc.namespace, svc.name), set())
        if not nodes:
            continue  # noEndpoints: even Cluster withdraws
        chosen = nodes if svc.external_traffic_policy == "Local" else set(out)
        for name in chosen & set(out):
            out[name].update(ips)
    return {name: tuple(sorted(ips, key=ip_address)) for name, ips in out.items()}


def speakers(topo: Topology, announced: dict[str, tuple[str, ...]]) -> tuple[Speaker, ...]:
    """Every speaker of the lab (the nodes, then the router), ``announced`` from :func:`announcements`."""
    if not topo.uses_bgp:
        return ()
    nodes = tuple(Speaker(n.name, n.netns, node_config(topo, n, announced.get(n.name, ())), file_stem(topo, n.name))
                  for n in topo.local_nodes)
    return (*nodes, Speaker(ROUTER, topo.router_netns, router_config(topo), ROUTER))


MAX_STEM = 32  # /run/netns-lab/<40-character lab>/bgp/<stem>.ctl stays within a socket path's 108 bytes


def file_stem(topo: Topology, node: str) -> str:
    """A node speaker's file names (``STEM.conf``, ``.ctl``, ``.pid``, ``.log``): the node's
    name, as users look for it, unless it is the router's (a node may be called ``router``) or
    too long for a control socket's path (a node name may have 253 characters): then
    ``node<index>-<hash>``, unique and short. The router's stem is ROUTER."""
    if node != ROUTER and len(node) <= MAX_STEM:
        return node
    return f"node{topo.node(node).index}-{hashlib.sha256(node.encode()).hexdigest()[:8]}"


def _head(router_id: IPv4Address, merge_limit: int = 0) -> list[str]:
    """Every BIRD's start. Only routes learned by BGP go to the kernel (a static blackhole that
    announces a prefix stays in BIRD). ``graceful restart`` on the kernel protocol (Calico's):
    a BIRD that was restarted keeps the routes its predecessor installed until BGP has
    converged again, instead of pruning them at start-up; that recovery waits 10 s at most
    for a peer that is down (BIRD's default, 240 s, would hold the node's routes that long).
    ``merge_limit``: the router merges equal routes into one multipath route of up to that
    many next hops (BIRD's default limit, 16, would cut a larger cluster's ECMP routes)."""
    return [
        f"router id {router_id};",
        "graceful restart wait 10;",
        "timeformat protocol iso long;",  # 'since' with a date: uptime for `invoke bgp`
        "log stderr all;",
        "protocol device { scan time 10; }",
        "protocol kernel {",
        "  ipv4 { import none; export filter { if source = RTS_BGP then accept; reject; }; };",
        *([f"  merge paths on limit {merge_limit};"] if merge_limit else []),
        "  graceful restart on;",
        "}",
    ]


def _bfd(topo: Topology) -> list[str]:
    if not topo.bfd_multiplier:
        return []
    return ["protocol bfd {",
            # idle tx: how often a session that is not up sends (BIRD's default is 1 s): a node coming
            # back is seen within intervals of the same size as a failure
            f'  interface "eth0" {{ min rx interval {topo.bfd_rx_ms} ms; min tx interval {topo.bfd_tx_ms} ms; '
            f"idle tx interval {topo.bfd_tx_ms} ms; multiplier {topo.bfd_multiplier}; }};",
            "}"]


def _timers(topo: Topology, bfd: bool) -> str:
    """Hold/keepalive, connect timers and, for the sessions with the router (``bfd``), BFD:
    what fails a node over. The mesh relies on its hold timer and graceful restart: BFD on
    every node pair would grow as the square of the nodes (a 250-node mesh at 100 ms: over
    600,000 packets a second)."""
    hold = f"hold time {topo.bgp_hold_time}; keepalive time {max(1, topo.bgp_hold_time // 3)};" if topo.bgp_hold_time else "hold time 0;"
    return f"{hold} {CONNECT}" + (" bfd on;" if bfd and topo.bfd_multiplier else "")


def _pod_blocks(topo: Topology) -> str:
    """The prefix set every node's pod subnet belongs to (a /24 of podCIDR)."""
    prefix = topo.nodes[0].pod_subnet.prefixlen
    return f"[ {topo.pod_cidr}{{{prefix},{prefix}}} ]"


def node_config(topo: Topology, node: NodePlan, lb_ips: tuple[str, ...]) -> str:
    """A node's BIRD: its pod subnet (bgp network) and its load-balancer IPs (bgp LB)."""
    pods = topo.network == "bgp"
    lines = _head(node.ip)
    if pods:
        lines.append(f"protocol static pods {{ ipv4; route {node.pod_subnet} blackhole; }}")
    lbs = "".join(f" route {ip}/32 blackhole;" for ip in lb_ips) if topo.load_balancer == "bgp" else ""
    lines.append(f"protocol static lbs {{ ipv4;{lbs} }}")
    lines += _bfd(topo)
    to_router = ['proto = "pods"'] * pods + ['proto = "lbs"'] * (topo.load_balancer == "bgp")
    # The router's default route (a node whose link went down and up again gets it back with
    # the session); without the mesh, the other nodes' subnets too: their own AS is in those
    # routes' path (allow local as), as with Calico peering to a ToR in one AS.
    mesh_free = pods and not topo.bgp_mesh
    from_router = ("filter { if net = 0.0.0.0/0 then accept; "
                   + (f"if net ~ {_pod_blocks(topo)} then accept; " if mesh_free else "") + "reject; }")
    lines += [
        f"protocol bgp {session_name('Global', topo.router_ip)} {{",
        f"  local {node.ip} as {topo.bgp_as}; neighbor {topo.router_ip} as {topo.bgp_router_as}; direct;",
        f"  {_timers(topo, bfd=True)}",
        "  graceful restart off;",  # the router must withdraw a dead node's routes at once
        *(["  allow local as;"] if mesh_free else []),
        f"  ipv4 {{ import {from_router}; export filter {{ if {' || '.join(to_router) or 'false'} then accept; reject; }}; }};",
        "}",
    ]
    if pods and topo.bgp_mesh:
        for peer in topo.nodes:
            if peer.name == node.name:
                continue
            lines += [
                f"protocol bgp {session_name('Mesh', peer.ip)} {{",
                f"  local {node.ip} as {topo.bgp_as}; neighbor {peer.ip} as {topo.bgp_as}; direct;",
                f"  {_timers(topo, bfd=False)}",
                *(["  passive on;"] if int(peer.ip) > int(node.ip) else []),  # Calico: the lower address waits
                # Calico's too: a peer whose BIRD died keeps its routes (stale) until it is back,
                # so pods keep reaching the pods of a node whose BIRD is restarted
                "  graceful restart on;",
                f"  ipv4 {{ import filter {{ if net ~ {_pod_blocks(topo)} then accept; reject; }}; "
                'export filter { if proto = "pods" then accept; reject; }; };',
                "}",
            ]
    return "\n".join(lines) + "\n"


def router_config(topo: Topology) -> str:
    """The top-of-rack router: one eBGP session per node; pod subnets and pool /32s only."""
    accept = []
    if topo.network == "bgp":
        accept.append(f"if net ~ {_pod_blocks(topo)} then accept;")
    if topo.load_balancer == "bgp":
        accept.append(f"if net ~ [ {topo.lb_pool}{{32,32}} ] then accept;")
    # without the mesh, the router passes each node's pod subnet on to the others
    reflect = f"if net ~ {_pod_blocks(topo)} then accept; " if topo.network == "bgp" and not topo.bgp_mesh else ""
    lines = _head(topo.router_ip, merge_limit=min(255, max(16, len(topo.nodes))))
    # the top-of-rack switch announces the default route to the nodes, as datacenter fabrics do
    lines.append("protocol static default_route { ipv4; route 0.0.0.0/0 blackhole; }")
    lines += _bfd(topo)
    for node in topo.nodes:
        lines += [
            f"protocol bgp {session_name('Node', node.ip)} {{",
            f"  local {topo.router_ip} as {topo.bgp_router_as}; neighbor {node.ip} as {topo.bgp_as}; direct;",
            f"  {_timers(topo, bfd=True)}",
            "  graceful restart off;",
            f"  ipv4 {{ import filter {{ {' '.join(accept)} reject; }}; "
            f'export filter {{ if proto = "default_route" then accept; {reflect}reject; }}; }};',
            "}",
        ]
    return "\n".join(lines) + "\n"


def announced_in(config: str) -> tuple[str, ...]:
    """The load-balancer IPs a node's configuration announces (its ``lbs`` static routes)."""
    line = next((l for l in config.splitlines() if l.startswith("protocol static lbs ")), "")
    return tuple(part.split()[1][: -len("/32")] for part in line.split(";") if part.strip().startswith("route "))


def expected_routes(topo: Topology, announced: dict[str, tuple[str, ...]]) -> dict[str, frozenset[IPv4Address]]:
    """What the router's kernel must hold once BGP converged: prefix -> its next hops (the
    node addresses), for each pod subnet (bgp network) and announced LB IP."""
    out: dict[str, set[IPv4Address]] = {}
    if topo.network == "bgp":
        for n in topo.nodes:
            out[str(n.pod_subnet)] = {n.ip}
    by_name = {n.name: n for n in topo.nodes}
    for name, ips in announced.items():
        for ip in ips:
            out.setdefault(f"{ip}/32", set()).add(by_name[name].ip)
    return {k: frozenset(v) for k, v in out.items()}
