"""What the cloud load balancer and kube-proxy's health servers must say (pure).

The service controller of a cloud provider gives the load balancer, for each Service of type
LoadBalancer, its IPs and ports, the nodes, and the health check to use: the Service's
``healthCheckNodePort`` with ``externalTrafficPolicy: Local`` (kube-proxy answers 200 only
where a ready endpoint is local), kube-proxy's own ``/healthz`` (port 10256) otherwise.
"""

from __future__ import annotations

from typing import Any

from netns_lab.controllers.topology import Topology
from netns_lab.model import Service
from netns_lab.proxy.types import ServicePortInfo

KUBE_PROXY_HEALTHZ_PORT = 10256
KUBE_PROXY_STATUS_PORT = 10249  # kube-proxy's /proxyMode (and metrics), on every node
MARK_BASE = 0x100  # the cloud LB marks packets for node i with MARK_BASE + i (policy routing)


def node_mark(index: int) -> int:
    return MARK_BASE + index


def health_answers(services: tuple[Service, ...], ports: tuple[ServicePortInfo, ...], topo: Topology) -> dict[str, dict[str, dict[str, Any]]]:
    """node -> {healthCheckNodePort: kube-proxy's answer} for every LB Service with Local policy."""
    out: dict[str, dict[str, dict[str, Any]]] = {n.name: {} for n in topo.nodes}
    checked = [svc for svc in services if svc.health_check_node_port is not None]
    if not checked:
        return out
    wanted = {(svc.namespace, svc.name) for svc in checked}
    by_service: dict[tuple[str, str], list[ServicePortInfo]] = {}
    for sp in ports:
        if (sp.namespace, sp.name) in wanted:
            by_service.setdefault((sp.namespace, sp.name), []).append(sp)
    for svc in checked:
        sps = by_service.get((svc.namespace, svc.name), [])
        for node in topo.nodes:
            # kube-proxy's LocalReadyEndpoints: distinct ready (not terminating) local
            # endpoints over the Service's ports, so a node whose last pod is terminating fails
            # the check and the load balancer stops sending it new connections; counted by pod
            # and port: a dual-stack Service's two families list the same pods
            count = len({(e.pod, e.port) for sp in sps for e in sp.local_endpoints(node.name) if e.ready})
            out[node.name][str(svc.health_check_node_port)] = {"namespace": svc.namespace, "name": svc.name, "localEndpoints": count}
    return out


def balancer_config(services: tuple[Service, ...], topo: Topology, status_path: str) -> dict[str, Any]:
    """The cloud load balancer's configuration (see :mod:`netns_lab.services.cloudlb`)."""
    lbs = []
    for svc in services:
        if svc.type != "LoadBalancer" or not svc.load_balancer_ips:
            continue
        local = svc.health_check_node_port is not None
        lbs.append({
            "key": svc.key,
            "ips": list(svc.load_balancer_ips),
            "ports": [[p.protocol.lower(), p.port] for p in svc.ports],
            "check_port": svc.health_check_node_port if local else KUBE_PROXY_HEALTHZ_PORT,
            "check_path": "/healthz",
        })
    return {
        "netns": f"/run/netns/{topo.lb_netns}",
        "interval": topo.health_check_interval,
        "status": status_path,
        "nodes": [{"name": n.name, "ip": str(n.ip), "mark": node_mark(n.index)} for n in topo.nodes],
        "services": lbs,
        **({"dualStack": True} if topo.uses_ipv6 else {}),  # keep the ip6 table, even empty: a freed IPv6 LB IP goes
    }
