"""kube-proxy: every local node's Service rules (iptables, nftables or IPVS) follow the
Service ports and their endpoints; UDP conntrack entries that no current endpoint explains
are deleted, as kube-proxy does, so a client's next datagram reaches a live backend."""

from __future__ import annotations

import time

from netns_lab.controllers.topology import Topology
from netns_lab.faults import fault
from netns_lab.proxy.types import NodeContext, ServicePortInfo
from netns_lab.realize.proxier import Proxier, clean_stale_udp, make_proxier
from netns_lab.reconcile import View, plural


class KubeProxy:
    """One proxier per local node; in a dual-stack lab one more per node for IPv6 (kube-proxy's
    metaproxier: an ``ip6 kube-proxy`` table or ip6tables, fed the IPv6 half of each Service)."""

    name = "kube-proxy"

    def __init__(self, mode: str, iptables_backend: str, ipvs: tuple[str, bool]) -> None:
        self.mode = mode
        self.iptables_backend = iptables_backend
        self.ipvs = ipvs
        self.proxiers: dict[str, Proxier] = {}
        self.proxiers6: dict[str, Proxier] = {}  # node -> its IPv6 proxier (dual-stack labs)
        self.ports: tuple[ServicePortInfo, ...] = ()  # as last synced
        self.ports6: tuple[ServicePortInfo, ...] = ()  # the IPv6 family's, as last synced
        self.kernel_s = 0.0  # of the last sync: time spent in iptables-restore / nft / netlink (the rest is Python)

    def restore(self, view: View) -> None:
        """A process attaching to a running lab: the rules in the kernel are those of the
        recorded objects; each node's proxier learns them (rendered, not applied)."""
        self._proxiers(view.topology)
        for p in self.proxiers.values():
            p.adopt(view.ports)
        self.ports = view.ports
        self.ports6 = view.ports6
        for p in self.proxiers6.values():
            p.adopt(self.ports6)

    def _proxiers(self, topo: Topology) -> bool:
        """Create the per-node proxiers on first use; True when they are new (a full sync)."""
        if self.proxiers:
            return False
        primary = topo.families[0]
        for n in topo.local_nodes:  # an IPv6-only lab's primary proxier is an IPv6 one (no localhost NodePorts)
            ctx = NodeContext(n.name, topo.pod_cidr, topo.service_cidr, (str(n.ip),), localhost_node_ports=primary == 4, family=primary)
            self.proxiers[n.name] = make_proxier(self.mode, n.netns, ctx, self.iptables_backend, *self.ipvs)
            if topo.pod_cidr6 is not None and topo.service_cidr6 is not None and n.ip6 is not None:
                ctx6 = NodeContext(n.name, topo.pod_cidr6, topo.service_cidr6, (str(n.ip6),), localhost_node_ports=False, family=6)
                self.proxiers6[n.name] = make_proxier(self.mode, n.netns, ctx6, self.iptables_backend, *self.ipvs)
        return True

    def sync(self, view: View, progress=None) -> list[str]:  # type: ignore[no-untyped-def]
        full = self._proxiers(view.topology) or view.full
        delta = None if full else view.port_changes(since=self.ports)
        ports6 = view.ports6
        if (delta == ((), ()) or view.ports == self.ports) and ports6 == self.ports6 and not full:
            self.ports = view.ports
            return []
        t0 = time.monotonic()
        self.kernel_s = 0.0
        for i, (name, p) in enumerate(self.proxiers.items(), 1):
            self.kernel_s += p.sync(view.ports, full=full, delta=delta).apply_s
            if name in self.proxiers6 and (full or ports6 != self.ports6):
                self.kernel_s += self.proxiers6[name].sync(ports6, full=full).apply_s
            fault(f"kube-proxy:{name}")  # tests: killed with some nodes synced and others not
            if progress:
                progress(f"Service rules ({len(view.ports)} ports)", i, len(self.proxiers))
        seconds = time.monotonic() - t0
        old, self.ports = self.ports, view.ports
        old6, self.ports6 = self.ports6, ports6
        if full:
            gone, came = old, view.ports
        elif delta is not None:  # what changed, as the endpoints controller knows it
            gone, came = delta
        else:  # by the ports' cached hashes: not every port of 10,000 Services
            before, after = set(old), set(view.ports)
            gone, came = tuple(p for p in old if p not in after), tuple(p for p in view.ports if p not in before)
        before6, after6 = set(old6), set(ports6)
        gone6, came6 = tuple(p for p in old6 if p not in after6), tuple(p for p in ports6 if p not in before6)
        self._forget_stale_udp(gone, came, view.topology, view.topology.families[0], self.ports)  # the primary family's
        if gone6 or came6:
            self._forget_stale_udp(gone6, came6, view.topology, 6, self.ports6)
        events = endpoint_changes(gone + gone6, came + came6)
        nodes = ", ".join(self.proxiers)
        what = "full sync" if full else "partial sync"
        count = len(self.proxiers) + (len(self.proxiers6) if full or old6 != ports6 else 0)
        events.append(f"rules synced on {nodes} ({self.mode}{', IPv4 and IPv6' if self.proxiers6 else ''}, {what}, "
                      f"{plural(count, 'transaction')}, {seconds * 1000:.0f} ms)")
        return events

    def _forget_stale_udp(self, old: tuple[ServicePortInfo, ...], new: tuple[ServicePortInfo, ...], topo: Topology,
                          family: int, ports: tuple[ServicePortInfo, ...]) -> None:
        """After a sync that changed a UDP Service port: kube-proxy's cleanup on every node
        (a flow to a gone endpoint, or to a Service that had none yet, is forgotten)."""
        if not any(p.protocol == "UDP" for p in (*old, *new)):
            return
        still = {(p.namespace, p.name, p.port_name, p.protocol) for p in new}
        deleted = frozenset(p.cluster_ip for p in old if p.protocol == "UDP" and (p.namespace, p.name, p.port_name, p.protocol) not in still)
        for node in topo.local_nodes:
            clean_stale_udp(node.netns, ports, deleted, family)


def endpoint_changes(old: tuple[ServicePortInfo, ...], new: tuple[ServicePortInfo, ...]) -> list[str]:
    """``Service shop/web: endpoints 2 -> 3`` for each Service whose ready endpoints changed."""

    def count(ports: tuple[ServicePortInfo, ...]) -> dict[str, int]:
        ips: dict[str, set[str]] = {}  # by pod: a dual-stack endpoint has an address per family
        for p in ports:
            ips.setdefault(f"{p.namespace}/{p.name}", set()).update(e.pod for e in p.endpoints if e.ready)
        return {k: len(v) for k, v in ips.items()}

    before, after = count(old), count(new)
    out = []
    for key in sorted(before.keys() | after.keys()):
        if key not in after:
            out.append(f"Service {key}: no longer proxied (had {plural(before[key], 'endpoint')})")
        elif key not in before:
            out.append(f"Service {key}: proxied, {plural(after[key], 'endpoint')}")
        elif before[key] != after[key]:
            out.append(f"Service {key}: endpoints {before[key]} -> {after[key]}")
    return out
