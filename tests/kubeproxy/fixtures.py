"""kube-proxy's own expected-output tests, as data: read a fixture, build the lab's model.

Each YAML file under ``tests/kubeproxy/<mode>/`` is one state asserted by a test of
kubernetes/kubernetes ``pkg/proxy/<mode>/proxier_test.go`` (v1.34 generation): the fake
proxier's settings, the Services and EndpointSlices the test creates (ordinary manifests) and
the expected rules, word for word. :func:`load` turns one into the lab's inputs (a
:class:`NodeContext` and the Service ports with their endpoints), so the lab's renderers can
be compared with kube-proxy's expectations after the normalisation the upstream test helpers
apply (``normalise.py``). The differences the comparison allows are listed, with why, in
``DIFFERENCES`` in ``normalise.py``: nowhere else.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

import yaml

from netns_lab.controllers.endpoints import Endpoint
from netns_lab.proxy.types import NodeContext, ServicePortInfo

HERE = os.path.dirname(__file__)
DEFAULT_AFFINITY = 10800


@dataclass(frozen=True)
class Fixture:
    name: str
    data: dict[str, Any]
    ctx: NodeContext
    ports: tuple[ServicePortInfo, ...]

    @property
    def expected(self) -> str:
        return str(self.data["expected"])

    @property
    def proxier(self) -> dict[str, Any]:
        return self.data["proxier"]  # type: ignore[no-any-return]


def names(mode: str) -> list[str]:
    return sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(HERE, mode, "*.yaml")))


def sloppy_ip(text: str) -> str:
    """Go's ParseIPSloppy, as kube-proxy reads addresses written before strict validation:
    surrounding blanks ignored, IPv4 octets with leading zeros read as decimal."""
    text = text.strip()
    addr, slash, bits = text.partition("/")
    if "." in addr and ":" not in addr:
        addr = ".".join(str(int(o)) for o in addr.split("."))
    return f"{addr}{slash}{int(bits)}" if slash else addr


def load(mode: str, name: str) -> Fixture:
    with open(os.path.join(HERE, mode, f"{name}.yaml")) as fh:
        data = yaml.safe_load(fh)
    p = data["proxier"]
    node_ips = tuple(ip for ip in p.get("nodeIPs", []) if ":" not in ip)
    if mode == "ipvs":
        node_ips = _ipvs_node_ips(p)
    ctx = NodeContext(
        node=p["hostname"],
        # ipvs' fake proxier has no local detector (NoOp): the lab always has one; the rule it
        # shapes (KUBE-CLUSTER-IP masquerade) is compared by target and set only, as upstream does
        cluster_cidr=IPv4Network(p["clusterCIDR"] or "10.244.0.0/16"),
        service_cidr=IPv4Network((p.get("serviceCIDRs") or ["10.96.0.0/12"])[0]),
        node_ips=node_ips,
        localhost_node_ports=bool(p.get("localhostNodePorts", False)),
        nfacct=bool(p.get("nfacctCounters")) and all(p["nfacctCounters"].values()),
        random_fully=bool(p.get("hasRandomFully", p.get("iptablesHasRandomFully", True))),
    )
    return Fixture(name, data, ctx, tuple(_ports(data)))


def _ipvs_node_ips(p: dict[str, Any]) -> tuple[str, ...]:
    """The addresses ipvs' NodePorts listen on: with nodePortAddresses, the interface addresses
    inside them; else every local address of the family (the fake netlink's), not loopback."""
    from ipaddress import ip_address, ip_interface, ip_network

    if p.get("nodePortAddresses") and "0.0.0.0/0" not in p["nodePortAddresses"]:  # 0.0.0.0/0: match all
        nets = [ip_network(c) for c in p["nodePortAddresses"] if ":" not in c]
        addrs = [str(ip_interface(a).ip) for a in sum((p.get("networkInterfaces") or {}).values(), [])]
        return tuple(a for a in addrs if ":" not in a and any(ip_address(a) in n for n in nets) and not ip_address(a).is_loopback)
    addrs = sum((p.get("netlinkLocalAddresses") or {}).values(), [])
    return tuple(a for a in addrs if ":" not in a and not ip_address(a).is_loopback and not ip_address(a).is_link_local)


def _ports(data: dict[str, Any]) -> list[ServicePortInfo]:
    slices = data.get("endpointSlices") or []
    out: list[ServicePortInfo] = []
    for svc in data.get("services") or []:
        meta, spec = svc["metadata"], svc.get("spec") or {}
        if ":" in spec.get("clusterIP", ""):  # an IPv6 Service: not the IPv4 proxier's (nor this IPv4 lab's)
            continue
        ns, name = meta.get("namespace", "default"), meta["name"]
        kind = spec.get("type") or "ClusterIP"
        affinity = None
        if spec.get("sessionAffinity") == "ClientIP":
            cfg = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
            affinity = int(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY)
        # an ingress IP with ipMode Proxy is the load balancer's, not a VIP the node takes (LoadBalancerVIPs)
        lb_ips = tuple(sloppy_ip(i["ip"]) for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                       if "ip" in i and ":" not in i["ip"] and i.get("ipMode") != "Proxy")
        external_local = spec.get("externalTrafficPolicy") == "Local"
        for port in spec.get("ports") or []:
            out.append(ServicePortInfo(
                namespace=ns, name=name, port_name=port.get("name") or None, protocol=port.get("protocol", "TCP"),
                cluster_ip=sloppy_ip(spec["clusterIP"]), port=int(port.get("port", 0)),
                node_port=port.get("nodePort") if kind in ("NodePort", "LoadBalancer") and port.get("nodePort") else None,
                affinity_timeout=affinity, external_local=external_local,
                internal_local=spec.get("internalTrafficPolicy") == "Local",
                endpoints=_endpoints(slices, ns, name, port.get("name") or "", port.get("protocol", "TCP")),
                external_ips=tuple(sloppy_ip(i) for i in spec.get("externalIPs") or [] if ":" not in i),
                lb_ips=lb_ips if kind == "LoadBalancer" else (),
                source_ranges=tuple(sloppy_ip(c) for c in spec.get("loadBalancerSourceRanges") or [] if ":" not in c),
                health_check_node_port=spec.get("healthCheckNodePort") if kind == "LoadBalancer" and external_local else None,
            ))
    return out


def _endpoints(slices: list[dict[str, Any]], ns: str, svc: str, port_name: str, protocol: str) -> tuple[Endpoint, ...]:
    """The Service port's endpoints from its EndpointSlices, with kube-proxy's reading of the
    conditions (ready: nil is true; serving: nil is true; terminating: nil is false)."""
    out: list[Endpoint] = []
    seen: set[str] = set()
    for sl in slices:
        meta = sl["metadata"]
        if meta.get("namespace", "default") != ns or (meta.get("labels") or {}).get("kubernetes.io/service-name") != svc:
            continue
        if sl.get("addressType") not in ("IPv4", None):
            continue
        numbers = [p["port"] for p in sl.get("ports") or [] if (p.get("name") or "") == port_name
                   and p.get("protocol", "TCP") == protocol]
        if not numbers:
            continue
        for ep in sl.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            ready = cond.get("ready", True) is not False
            serving = cond.get("serving", True) is not False
            terminating = cond.get("terminating", False) is True
            ip = sloppy_ip(ep["addresses"][0])
            key = f"{ip}:{numbers[0]}"
            if key in seen:  # kube-proxy keeps one endpoint per address and port
                continue
            seen.add(key)
            out.append(Endpoint(f"{ns}/{ip}", ip, int(numbers[0]), ep.get("nodeName") or "", ready, serving, terminating))
    return tuple(sorted(out, key=lambda e: (tuple(int(o) for o in e.ip.split(".")), e.port)))
