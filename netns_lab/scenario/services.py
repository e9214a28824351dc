"""v1 Service manifests: validation as the API server does it, then IP and port allocation.

Allocation is part of validation in Kubernetes too (``provided port is already allocated``),
so it lives here: explicitly requested clusterIPs and nodePorts are reserved first, in file
order, then the rest are handed out deterministically (lowest free address / port), so a
scenario always gets the same addresses.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, replace
from typing import Any

from netns_lab.controllers.topology import outside_addresses
from netns_lab.controllers.loadbalancer import KUBE_PROXY_HEALTHZ_PORT, KUBE_PROXY_STATUS_PORT
from netns_lab.controllers.topology import NODE_AGENT_PORT
from netns_lab.model import DEFAULT_AFFINITY_TIMEOUT, ClusterConfig, Service, ServicePort
from netns_lab.store import Allocations
from netns_lab.scenario import k8s
from netns_lab.scenario.manifests import _fail, _unsupported, metadata
from netns_lab.scenario import openapi
from netns_lab.scenario.families import FamilyRequest, decide, family_of, validate as validate_families
from netns_lab.scenario.yamlsrc import Source, join

SERVICE = openapi.kind("io.k8s.api.core.v1.Service")
EXTERNAL_TYPES = ("NodePort", "LoadBalancer")
LB_ONLY = "may only be used when `type` is 'LoadBalancer'"
# Kubernetes v1.34 (PreferSameTrafficDistribution beta, on by default): validateServiceTrafficDistribution
# accepts these three, in this order in its message. Earlier versions accept PreferClose only.
TRAFFIC_DISTRIBUTIONS = ("PreferClose", "PreferSameZone", "PreferSameNode")
# Ports the lab serves on every node, so no NodePort may take them (kube-proxy would capture
# them and the node's own server would never see its traffic).
NODE_AGENT_PORTS = {
    NODE_AGENT_PORT: "the lab's node agent listens on it on every node (kubelet's port)",
    KUBE_PROXY_HEALTHZ_PORT: "kube-proxy's health check (healthz) answers on it on every node, and the cloud load balancer probes it",
    KUBE_PROXY_STATUS_PORT: "kube-proxy's status port (/proxyMode) answers on it on every node",
}


@dataclass
class ParsedService:
    """A validated Service before allocation, with where it came from for later errors."""

    service: Service
    src: Source
    path: str
    requested_ip: str | None  # as written (None: allocate; "None": headless)
    requested_lb_ip: str | None = None  # spec.loadBalancerIP
    allocate_node_ports: bool = True  # spec.allocateLoadBalancerNodePorts
    families: FamilyRequest = FamilyRequest()  # clusterIPs, ipFamilies, ipFamilyPolicy as written
    kept_lb_ips: tuple[str, ...] = ()  # an updated LoadBalancer's IPs: each family keeps its own


def parse_service(src: Source, obj: dict[str, Any], base: str) -> ParsedService:
    SERVICE.check(src, obj, base)
    name, namespace, labels = metadata(src, obj, base, namespaced=True)
    _fail(src, join(base, "metadata.name"), k8s.dns1035_label(name), name)
    spath = join(base, "spec")
    spec = obj.get("spec") or {}
    stype = spec.get("type") or "ClusterIP"
    _unsupported(src, join(spath, "type"), stype, ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort"))
    td = spec.get("trafficDistribution")
    if td is not None and td not in TRAFFIC_DISTRIBUTIONS:  # validated, then dropped: one zone, nothing to prefer
        supported = ", ".join(f'"{t}"' for t in TRAFFIC_DISTRIBUTIONS)
        raise src.error(join(spath, "trafficDistribution"), f'Unsupported value: "{td}": supported values: {supported}')
    if stype == "ExternalName":
        return _external_name(src, spec, spath, base, name, namespace, labels)
    if spec.get("externalName"):
        raise src.error(join(spath, "externalName"), "Forbidden: may only be set when `type` is 'ExternalName'")
    fams = validate_families(src, spec, spath, stype)
    requested = fams.cluster_ips[0] if fams.cluster_ips else None
    headless = fams.headless
    selector = spec.get("selector")
    if selector is not None:
        for key, value in selector.items():
            sel_path = join(join(spath, "selector"), key)
            _fail(src, sel_path, k8s.qualified_name(key), key)
            _fail(src, sel_path, k8s.label_value(value), value)
    ports = _ports(src, spec.get("ports") or [], join(spath, "ports"), stype, headless)
    affinity = spec.get("sessionAffinity") or "None"
    _unsupported(src, join(spath, "sessionAffinity"), affinity, ("ClientIP", "None"))
    timeout = DEFAULT_AFFINITY_TIMEOUT
    cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
    if cfg.get("timeoutSeconds") is not None:
        tpath = join(spath, "sessionAffinityConfig.clientIP.timeoutSeconds")
        if affinity != "ClientIP":
            raise src.error(tpath, "Invalid value: must not be set when `sessionAffinity` is None")
        timeout = cfg["timeoutSeconds"]
        if not 0 < timeout <= 86400:
            raise src.error(tpath, f"Invalid value: {timeout}: must be greater than 0 and less than 86400")
    etp = spec.get("externalTrafficPolicy")
    if etp is not None:
        if stype not in EXTERNAL_TYPES:
            raise src.error(join(spath, "externalTrafficPolicy"), f"Invalid value: \"{etp}\": may only be set for externally-accessible services")
        _unsupported(src, join(spath, "externalTrafficPolicy"), etp, ("Cluster", "Local"))
    itp = spec.get("internalTrafficPolicy") or "Cluster"
    _unsupported(src, join(spath, "internalTrafficPolicy"), itp, ("Cluster", "Local"))
    external_ips = _external_ips(src, spec.get("externalIPs") or [], join(spath, "externalIPs"))
    lb = _load_balancer(src, spec, spath, stype, etp or "Cluster")
    service = Service(
        name=name,
        namespace=namespace,
        type=stype,
        selector=tuple(sorted(selector.items())) if selector is not None else None,
        ports=ports,
        cluster_ip=None,
        session_affinity=affinity,
        affinity_timeout=timeout,
        external_traffic_policy=etp or "Cluster",
        internal_traffic_policy=itp,
        labels=labels,
        external_ips=external_ips,
        load_balancer_source_ranges=lb["ranges"],
        health_check_node_port=lb["hcnp"],
        publish_not_ready_addresses=spec.get("publishNotReadyAddresses") is True,
    )
    return ParsedService(service, src, base, requested, lb["ip"], lb["allocate"], fams)


def _not_agent_port(src: Source, path: str, port: int) -> None:
    """A NodePort on a port the lab's own servers use on every node would be captured by
    kube-proxy and break them: refused at load, not 10 seconds into the build."""
    why = NODE_AGENT_PORTS.get(port)
    if why is not None:
        raise src.error(path, f"Invalid value: {port}: may not be used as a node port: {why}")


def _external_ips(src: Source, raw: list[Any], path: str) -> tuple[str, ...]:
    """``spec.externalIPs``: the API server's ValidateNonSpecialIP rules."""
    out: list[str] = []
    for i, text in enumerate(raw):
        ipath = join(path, i)
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            raise src.error(ipath, f'Invalid value: "{text}": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)') from None
        for bad, why in (
            (ip.is_unspecified, "may not be unspecified (0.0.0.0)"),
            (ip.is_loopback, "may not be in the loopback range (127.0.0.0/8, ::1/128)"),
            (ip in ipaddress.ip_network("169.254.0.0/16") or ip in ipaddress.ip_network("fe80::/10"),
             "may not be in the link-local range (169.254.0.0/16, fe80::/10)"),
            (ip in ipaddress.ip_network("224.0.0.0/24") or ip in ipaddress.ip_network("ff00::/10"),
             "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"),
            (ip.is_multicast, "may not be a multicast address"),
        ):
            if bad:
                raise src.error(ipath, f'Invalid value: "{text}": {why}')
        if str(ip) in out:
            raise src.error(ipath, f'Duplicate value: "{text}"')
        out.append(str(ip))
    return tuple(out)


def _load_balancer(src: Source, spec: dict[str, Any], spath: str, stype: str, etp: str) -> dict[str, Any]:
    """The LoadBalancer-only fields: refused on other types, checked on LoadBalancer."""
    is_lb = stype == "LoadBalancer"
    for field in ("loadBalancerIP", "loadBalancerSourceRanges", "loadBalancerClass", "allocateLoadBalancerNodePorts"):
        if spec.get(field) not in (None, "", []) and not is_lb:
            raise src.error(join(spath, field), f"Forbidden: {LB_ONLY}")
    if spec.get("loadBalancerClass"):
        raise src.error(join(spath, "loadBalancerClass"), f'Unsupported value: "{spec["loadBalancerClass"]}": no load-balancer '
                        "controller in the lab serves this class; remove it to use the lab's cloud load balancer")
    ranges: list[str] = []
    for i, text in enumerate(spec.get("loadBalancerSourceRanges") or []):
        try:
            net = ipaddress.ip_network(str(text).strip(), strict=False)
        except ValueError:
            net = None
        if net is None or "/" not in str(text):
            raise src.error(join(join(spath, "loadBalancerSourceRanges"), i),
                            f'Invalid value: "{text}": must be a list of IP ranges. For example, 10.240.0.0/24,10.250.0.0/24 ')
        ranges.append(str(net))
    lb_ip = spec.get("loadBalancerIP") or None
    if lb_ip is not None:
        try:
            ipaddress.ip_address(lb_ip)
        except ValueError:
            raise src.error(join(spath, "loadBalancerIP"), f'Invalid value: "{lb_ip}": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)') from None
    hcnp = spec.get("healthCheckNodePort")
    if hcnp:
        if not (is_lb and etp == "Local"):
            raise src.error(join(spath, "healthCheckNodePort"), f"Invalid value: {hcnp}: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")
        _fail(src, join(spath, "healthCheckNodePort"), k8s.port_num(hcnp), hcnp)
        _not_agent_port(src, join(spath, "healthCheckNodePort"), hcnp)
    allocate = spec.get("allocateLoadBalancerNodePorts")
    return {"ranges": tuple(ranges), "ip": lb_ip, "hcnp": hcnp or None, "allocate": allocate is not False}


def _external_name(src: Source, spec: dict[str, Any], spath: str, base: str, name: str, namespace: str,
                   labels: tuple[tuple[str, str], ...]) -> ParsedService:
    """type ExternalName: a DNS alias (CNAME) and nothing else: no VIP, no ports, no rules."""
    target = spec.get("externalName")
    if not target:
        raise src.error(join(spath, "externalName"), "Required value")
    errs = k8s.dns1123_subdomain(target.rstrip("."))
    if errs:
        raise src.error(join(spath, "externalName"), f'Invalid value: "{target}": {"; ".join(errs)}')
    for field in ("clusterIP", "clusterIPs"):
        if spec.get(field) not in (None, "", []):
            raise src.error(join(spath, field), f"Invalid value: {spec[field]!r}: may not be set for ExternalName services")
    for field in ("ipFamilies", "ipFamilyPolicy"):
        if spec.get(field) not in (None, []):
            raise src.error(join(spath, field), "Forbidden: may not be set for ExternalName services")
    if spec.get("ports"):
        raise src.error(join(spath, "ports"), "Forbidden: may not be set for ExternalName services (no VIP, no port: the name is a CNAME)")
    for field in ("selector", "sessionAffinity", "externalTrafficPolicy", "internalTrafficPolicy"):
        if spec.get(field):
            raise src.error(join(spath, field), "Forbidden: may not be set for ExternalName services")
    return ParsedService(Service(name=name, namespace=namespace, type="ExternalName", labels=labels,
                                 external_name=target.rstrip(".")), src, base, "None")


def _ports(src: Source, raw: list[dict[str, Any]], path: str, stype: str, headless: bool) -> tuple[ServicePort, ...]:
    if not raw and not headless:
        raise src.error(path, "Required value")
    out: list[ServicePort] = []
    names: set[str] = set()
    seen: set[tuple[int, str]] = set()
    for i, p in enumerate(raw):
        ppath = join(path, i)
        name = p.get("name")
        if len(raw) > 1 and not name:
            raise src.error(join(ppath, "name"), "Required value")
        if name:
            _fail(src, join(ppath, "name"), k8s.dns1123_label(name), name)
            if name in names:
                raise src.error(join(ppath, "name"), f'Duplicate value: "{name}"')
            names.add(name)
        port = p.get("port")
        if port is None:
            raise src.error(join(ppath, "port"), "Required value")
        _fail(src, join(ppath, "port"), k8s.port_num(port), port)
        protocol = p.get("protocol") or "TCP"
        _unsupported(src, join(ppath, "protocol"), protocol, ("SCTP", "TCP", "UDP"))
        if protocol == "SCTP":
            raise src.error(join(ppath, "protocol"), 'Unsupported value: "SCTP": netns-lab serves TCP and UDP only')
        if (port, protocol) in seen:
            raise src.error(ppath, f'Duplicate value: port {port}/{protocol} is already declared by another port of this Service')
        seen.add((port, protocol))
        target = p.get("targetPort")
        if isinstance(target, int):
            _fail(src, join(ppath, "targetPort"), k8s.port_num(target), target)
        elif isinstance(target, str):
            _fail(src, join(ppath, "targetPort"), k8s.port_name(target), target)
        app_protocol = p.get("appProtocol")
        if app_protocol is not None:  # validated, then dropped: kube-proxy does not read it
            _fail(src, join(ppath, "appProtocol"), k8s.qualified_name(app_protocol), app_protocol)
        node_port = p.get("nodePort")
        if node_port is not None and node_port != 0:
            if stype == "ClusterIP":
                raise src.error(join(ppath, "nodePort"), "Forbidden: may not be used when `type` is 'ClusterIP'")
            _fail(src, join(ppath, "nodePort"), k8s.port_num(node_port), node_port)
            _not_agent_port(src, join(ppath, "nodePort"), node_port)
        out.append(ServicePort(port=port, protocol=protocol, name=name or None, target_port=target, node_port=node_port or None))
    return tuple(out)


def _family(net: Any) -> str:
    return "IPv6" if net.version == 6 else "IPv4"


def lab_machine_addresses(cluster: ClusterConfig) -> dict[str, str]:
    """address -> what has it, for the machines the lab adds outside the cluster (the build's
    own plan: controllers.topology.outside_addresses)."""
    nodes, ext = cluster.node_cidr, cluster.external.cidr
    where = outside_addresses(nodes, ext, len(cluster.external.clients))
    out = {
        str(where.router_ip): f"the lab's router on the node network (the nodes' gateway, first address of nodeCIDR {nodes})",
        str(where.router_ext_ip): f"the lab's router on the external network (first address of cluster.external.cidr {ext})",
        str(where.lb_ip): f"the cloud load balancer (last address of nodeCIDR {nodes})",
    }
    for name, ip in zip(cluster.external.clients, where.clients):
        out[str(ip)] = f'the external client "{name}"'
    return out


def allocate(parsed: list[ParsedService], cluster: ClusterConfig, existing: tuple[Service, ...] = (),
             held: "Allocations | None" = None) -> tuple[Service, ...]:
    """Fill clusterIP and nodePorts as kube-apiserver's allocators would (deterministically).

    The first address of serviceCIDR belongs to the implicit ``default/kubernetes`` Service
    and ``cluster.dnsIP`` to kube-dns; both are reserved here. ``existing``: the Services a
    running lab already has (their addresses and ports are taken); without it, this is a
    whole scenario and ``default/kubernetes`` comes first in the result. ``held``: what the
    existing Services hold, when the caller keeps it (store.Allocations); read from them if not.
    """
    net = cluster.service_cidr
    kubernetes_ip = str(net.network_address + 1)
    whole = held is None and not existing  # a scenario's Services, from nothing: default/kubernetes first
    held = held if held is not None else Allocations.of(existing)
    taken_ips = {kubernetes_ip, str(cluster.dns_ip)} | held.ips
    lo, hi = cluster.node_port_range
    taken_ports: set[tuple[int, str]] = set(held.ports)
    pool = cluster.external.load_balancer_pool
    # the cloud load balancer's pool of each family (a dual-stack Service gets an LB IP of each)
    lb_pools: dict[str, Any] = {_family(n): n for n in (pool, cluster.external.load_balancer_pool6) if n is not None}
    # never listed: a /8 pool would be 16 million addresses (seconds and gigabytes)
    edges = (pool.network_address, pool.broadcast_address) if pool.num_addresses > 2 else ()
    taken_lb: set[str] = set(held.lbs)
    machines = lab_machine_addresses(cluster)
    nets = {_family(n): n for n in (net, cluster.service_cidr6) if n is not None}  # primary first
    decided = {id(ps): decide(ps.src, join(ps.path, "spec"), ps.families, cluster.ip_families, ps.service.selector is None)
               for ps in parsed if ps.service.type != "ExternalName"}
    for ps in parsed:
        for i, ip in enumerate(ps.service.external_ips):
            if ip in machines:
                raise ps.src.error(join(ps.path, f"spec.externalIPs[{i}]"), f'Invalid value: "{ip}": is the address of {machines[ip]}; '
                                   "an externalIP must be an address no machine of the lab has")
    for ps in parsed:  # explicit requests first, in file order
        if ps.requested_lb_ip is not None:
            where = join(ps.path, "spec.loadBalancerIP")
            wanted = ipaddress.ip_address(ps.requested_lb_ip)
            fpool = lb_pools.get(family_of(ps.requested_lb_ip))
            if fpool is None or wanted not in fpool or wanted in edges or wanted == fpool.network_address:
                where_pool = ", ".join(str(p) for p in lb_pools.values())
                raise ps.src.error(where, f'Invalid value: "{ps.requested_lb_ip}": not in the cloud load balancer\'s pool cluster.external.loadBalancerPool {where_pool}')
            if ps.requested_lb_ip in taken_lb:
                raise ps.src.error(where, f'Invalid value: "{ps.requested_lb_ip}": already assigned to another Service')
            taken_lb.add(ps.requested_lb_ip)
        hcnp = ps.service.health_check_node_port
        if hcnp is not None:
            where = join(ps.path, "spec.healthCheckNodePort")
            if not lo <= hcnp <= hi:
                raise ps.src.error(where, f"Invalid value: {hcnp}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}")
            if (hcnp, "TCP") in taken_ports:
                raise ps.src.error(where, f"Invalid value: {hcnp}: provided port is already allocated")
            taken_ports.add((hcnp, "TCP"))
        written = () if ps.families.headless or ps.service.type == "ExternalName" else ps.families.cluster_ips
        for ip in written:
            where, value = join(ps.path, "spec.clusterIPs"), json.dumps(list(written))
            addr = ipaddress.ip_address(ip)
            fnet = nets[family_of(ip)]
            if addr not in fnet or addr == fnet.network_address or (addr.version == 4 and addr == fnet.broadcast_address):
                raise ps.src.error(where, f'Invalid value: {value}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {fnet}')
            if str(addr) in taken_ips:
                raise ps.src.error(where, f'Invalid value: {value}: failed to allocate IP {ip}: provided IP is already allocated')
            taken_ips.add(str(addr))
        for i, port in enumerate(ps.service.ports):
            if port.node_port is None:
                continue
            where = join(ps.path, f"spec.ports[{i}].nodePort")
            if not lo <= port.node_port <= hi:
                raise ps.src.error(where, f"Invalid value: {port.node_port}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}")
            if (port.node_port, port.protocol) in taken_ports:
                raise ps.src.error(where, f"Invalid value: {port.node_port}: provided port is already allocated")
            taken_ports.add((port.node_port, port.protocol))
    # the lowest free address of each range (the primary's first two: its network address and default/kubernetes)
    next_ip = {f: int(n.network_address) + (2 if n is net else 1) for f, n in nets.items()}
    taken_ints: set[int] | None = None
    next_port = lo
    out = [] if not whole else [Service(name="kubernetes", namespace="default", ports=(ServicePort(443, "TCP", "https", 6443),),
                                       cluster_ip=kubernetes_ip, cluster_ips=(kubernetes_ip,), ip_families=(_family(net),),
                                       ip_family_policy="SingleStack", labels=(("component", "apiserver"), ("provider", "kubernetes")))]
    for ps in parsed:
        svc = ps.service
        if svc.key == "default/kubernetes":
            raise ps.src.error(join(ps.path, "metadata.name"), 'services "kubernetes" already exists')
        if svc.type == "ExternalName":
            out.append(svc)
            continue
        fams = decided[id(ps)]
        ips: list[str] = [] if ps.families.headless else [str(ipaddress.ip_address(ip)) for ip in ps.families.cluster_ips]
        for family in fams.families[len(ips):] if not ps.families.headless else ():
            if taken_ints is None:  # integers: walking 10,000 taken addresses as IPv4Address objects costs ~30 ms
                taken_ints = set(held.ip_ints) | {int(ipaddress.ip_address(t)) for t in taken_ips - held.ips}
            fnet, last = nets[family], int(nets[family].broadcast_address) - (1 if family == "IPv4" else 0)
            while next_ip[family] in taken_ints:
                next_ip[family] += 1
            if next_ip[family] > last:
                raise ps.src.error(join(ps.path, "spec.clusterIPs"), f"Internal error: failed to allocate a serviceIP: range is full ({fnet})")
            ips.append(str(ipaddress.ip_address(next_ip[family])))
            taken_ints.add(next_ip[family])
            taken_ips.add(ips[-1])
        ports = list(svc.ports)

        def free_port(protocol: str, where: str) -> int:
            nonlocal next_port
            while (next_port, protocol) in taken_ports:
                next_port += 1
            if next_port > hi:
                raise ps.src.error(join(ps.path, where), f"Internal error: range is full ({lo}-{hi})")
            taken_ports.add((next_port, protocol))
            return next_port

        if svc.type == "NodePort" or (svc.type == "LoadBalancer" and ps.allocate_node_ports):
            for i, port in enumerate(ports):
                if port.node_port is None:
                    ports[i] = replace(port, node_port=free_port(port.protocol, f"spec.ports[{i}].nodePort"))
        extra: dict[str, object] = {}
        if svc.type == "LoadBalancer":
            lb_ips: list[str] = []
            for family in fams.families:  # one per family of the Service, in its order
                fpool = lb_pools.get(family)
                if fpool is None:
                    continue
                lb_ip = ps.requested_lb_ip if ps.requested_lb_ip and family_of(ps.requested_lb_ip) == family else None
                if lb_ip is None:
                    lb_ip = next((ip for ip in ps.kept_lb_ips if family_of(ip) == family and ip not in taken_lb), None)
                    if lb_ip is not None:
                        taken_lb.add(lb_ip)
                if lb_ip is None:
                    lb_ip = next((str(h) for h in fpool.hosts() if str(h) not in taken_lb), None)
                    if lb_ip is None:
                        raise ps.src.error(join(ps.path, "spec.type"), f'Invalid value: "LoadBalancer": no load-balancer IP left: '
                                           f"the pool cluster.external.loadBalancerPool {fpool} is exhausted")
                    taken_lb.add(lb_ip)
                lb_ips.append(lb_ip)
            extra["load_balancer_ips"] = tuple(lb_ips)
            if svc.external_traffic_policy == "Local" and svc.health_check_node_port is None:
                extra["health_check_node_port"] = free_port("TCP", "spec.healthCheckNodePort")
        out.append(replace(svc, cluster_ip=ips[0] if ips else None, cluster_ips=tuple(ips), ip_families=fams.families,
                           ip_family_policy=fams.policy, ports=tuple(ports), **extra))  # type: ignore[arg-type]
    return tuple(out)
