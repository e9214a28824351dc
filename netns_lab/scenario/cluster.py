"""The ``cluster:`` section: defaults from DESIGN.md and the address-plan rules.

The rules here are the ones that make a plan buildable: ranges that do not overlap, a /24
pod subnet per node, room on the node network, a DNS IP inside the Service range.
"""

from __future__ import annotations

import ipaddress
from dataclasses import fields
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from netns_lab.model import (DUAL_DEFAULTS, IP_FAMILIES, IPV6_DEFAULTS, EXTERNAL_LOAD_BALANCERS, NETWORK_MODES, POLICY_DATAPLANES, PROXY_MODES, ClusterConfig,
                             ExternalConfig)
from netns_lab.scenario import k8s
from netns_lab.scenario.bgp import parse_bgp
from netns_lab.scenario.schema import ANY, BOOL, INT, STR, ListOf, Obj
from netns_lab.scenario.yamlsrc import Source, join

CLUSTER = Obj(
    "netns-lab/v1 Scenario.cluster",
    {
        "nodes": ANY,
        "network": STR,
        "ipFamily": STR,
        "proxyMode": STR,
        "networkPolicy": STR,
        "nodeCIDR": STR,
        "podCIDR": STR,
        "serviceCIDR": STR,
        "clusterDomain": STR,
        "dnsIP": STR,
        "nodePortRange": STR,
        "mtu": INT,
        "ipvsScheduler": STR,
        "ipvsLegacyPing": BOOL,
        "ingressServiceType": STR,
        "bgp": ANY,  # checked by scenario.bgp once the network and load balancer are known
        "external": Obj(
            "netns-lab/v1 Scenario.cluster.external",
            {"cidr": STR, "clients": ListOf(STR), "loadBalancerPool": STR, "healthCheckIntervalSeconds": ANY,
             "loadBalancer": STR},
        ),
    },
)
MAX_NODES = 250  # the node network plan and the benchmark's largest run fit well inside this
RESERVED_NODE_NAMES = ("net",)
NODE_SUBNET_PREFIX = 24
NODE_SUBNET_PREFIX6 = 64  # a dual-stack node's IPv6 pod subnet, as kube-controller-manager's --node-cidr-mask-size-ipv6
IPV6_MIN_MTU = 1280  # RFC 8200: a link that carries IPv6 carries 1,280-byte packets
MAX_SERVICE_PREFIX6 = 108  # kube-apiserver refuses a larger IPv6 Service range (its allocator's bitmap)
HostNet = IPv4Network | IPv6Network
_DEFAULTS = {f.name: f.default for f in fields(ClusterConfig)}


def _cidr(src: Source, path: str, value: str, version: int = 4) -> Any:
    """One CIDR of IP ``version``, written as its network address."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise src.error(path, f'Invalid value: "{value}": must be a valid CIDR (e.g. 10.0.0.0/24)') from None
    if net.version != version:
        raise src.error(path, f'Invalid value: "{value}": expected IPv{version} CIDR for IPv{version} family')
    if str(net.network_address) != str(ipaddress.ip_address(value.split("/")[0])):
        raise src.error(path, f'Invalid value: "{value}": must be a network address, e.g. "{net}"')
    return net


def _cidrs(src: Source, path: str, value: str, ip_family: str) -> tuple[Any, IPv6Network | None]:
    """``A`` (ipv4, ipv6: of that family) or ``A,B`` (dual: IPv4 first, then IPv6), as kind's
    networking subnets: (the primary family's, the second family's or None)."""
    parts = [p.strip() for p in value.split(",")]
    if ip_family != "dual":
        if len(parts) > 1:
            raise src.error(path, f'Invalid value: "{value}": only one CIDR allowed for single-stack networking '
                                  f'(cluster.ipFamily is {ip_family}; "dual" takes an IPv4 and an IPv6 CIDR)')
        return _cidr(src, path, parts[0], 6 if ip_family == "ipv6" else 4), None
    if len(parts) != 2:
        raise src.error(path, f'Invalid value: "{value}": expected two CIDRs, one from each family, for dual-stack '
                              'networking (IPv4 first, e.g. "10.244.0.0/16,fd00:10:244::/56")')
    v4, v6 = (ipaddress.ip_network(p, strict=False) if _parses(p) else None for p in parts)
    if v4 is not None and v6 is not None and (v4.version, v6.version) == (6, 4):
        raise src.error(path, f'Invalid value: "{value}": the IPv4 CIDR comes first: dual-stack labs are IPv4-primary')
    return _cidr(src, path, parts[0]), _cidr(src, path, parts[1], 6)


def _parses(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _nodes(src: Source, path: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return _DEFAULTS["nodes"]
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_NODES:
            raise src.error(path, f"Invalid value: {value}: must be between 1 and {MAX_NODES}, inclusive")
        return tuple(f"node-{i}" for i in range(1, value + 1))
    if not isinstance(value, list) or not value:
        raise src.error(path, "Invalid type: expected a node count or a non-empty list of node names")
    names: list[str] = []
    for i, name in enumerate(value):
        npath = join(path, i)
        if not isinstance(name, str):
            raise src.error(npath, "Invalid type: expected string")
        errs = k8s.dns1123_subdomain(name)
        if errs:
            raise src.error(npath, f'Invalid value: "{name}": {"; ".join(errs)}')
        if name in RESERVED_NODE_NAMES:
            raise src.error(npath, f'Invalid value: "{name}": reserved for the lab\'s own namespaces')
        if name in names:
            raise src.error(npath, f'Duplicate value: "{name}"')
        names.append(name)
    if len(names) > MAX_NODES:
        raise src.error(path, f"Too many: {len(names)}: must have at most {MAX_NODES} items")
    return tuple(names)


def parse_cluster(src: Source, raw: Any, path: str, host_networks: tuple[HostNet, ...] = ()) -> ClusterConfig:
    """Validate the ``cluster:`` mapping and return a :class:`ClusterConfig`.

    ``host_networks`` are the host's own address prefixes: the lab never touches the host,
    but a lab range equal to one of them would make addresses ambiguous for the user.
    """
    raw = {} if raw is None else raw  # `cluster: []` or `cluster: 0` is a mistake, not "all defaults"
    CLUSTER.check(src, raw, path)  # also drops null fields: `mtu: null` is the default, as in Kubernetes
    nodes = _nodes(src, join(path, "nodes"), raw.get("nodes"))
    network = raw.get("network", _DEFAULTS["network"])
    proxy_mode = raw.get("proxyMode", _DEFAULTS["proxy_mode"])
    # NetworkPolicy's dataplane follows kube-proxy's unless asked: nftables next to nftables
    policy = raw.get("networkPolicy", "nftables" if proxy_mode == "nftables" else "iptables")
    for field, value, allowed in (("network", network, NETWORK_MODES), ("proxyMode", proxy_mode, PROXY_MODES),
                                  ("networkPolicy", policy, POLICY_DATAPLANES)):
        if value not in allowed:
            supported = ", ".join(f'"{a}"' for a in allowed)
            raise src.error(join(path, field), f'Unsupported value: "{value}": supported values: {supported}')
    if policy == "nftables" and proxy_mode == "ipvs":  # as Calico's nftables dataplane requires
        raise src.error(join(path, "networkPolicy"), 'Unsupported value: "nftables": with proxyMode ipvs the policy dataplane '
                        'is "iptables" (IPVS forwards Services in the input path, where only the iptables layout follows it)')
    ip_family = raw.get("ipFamily", _DEFAULTS["ip_family"])
    if ip_family not in IP_FAMILIES:
        supported = ", ".join(f'"{a}"' for a in IP_FAMILIES)
        raise src.error(join(path, "ipFamily"), f'Unsupported value: "{ip_family}": supported values: {supported}')
    dual, v6only = ip_family == "dual", ip_family == "ipv6"
    defaults = IPV6_DEFAULTS if v6only else _DEFAULTS  # the primary family's
    cidrs: dict[str, Any] = {}  # the primary family's ranges (IPv6 ones in an ipv6 lab)
    cidrs6: dict[str, IPv6Network] = {}  # a dual-stack lab's second family
    for field, key in (("nodeCIDR", "node_cidr"), ("podCIDR", "pod_cidr"), ("serviceCIDR", "service_cidr")):
        value = raw.get(field)
        if value is None:
            cidrs[field] = defaults[key]
            if dual:
                cidrs6[field] = DUAL_DEFAULTS[key + "6"]
            continue
        v4, v6 = _cidrs(src, join(path, field), value, ip_family)
        cidrs[field] = v4
        if v6 is not None:
            cidrs6[field] = v6
    for family_cidrs in (cidrs, cidrs6):
        names = list(family_cidrs)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                if family_cidrs[a].overlaps(family_cidrs[b]):
                    raise src.error(join(path, b), f'Invalid value: "{family_cidrs[b]}": overlaps {a} {family_cidrs[a]}')
        for field, net in family_cidrs.items():
            for host_net in host_networks:
                if net.overlaps(host_net):  # type: ignore[arg-type]  (False across families)
                    raise src.error(
                        join(path, field),
                        f'Invalid value: "{net}": overlaps the host network {host_net}; choose a range the host does not use',
                    )
    if dual:
        _check_ipv6_plan(src, path, cidrs, cidrs6, len(nodes))
    pod_cidr, node_cidr = cidrs["podCIDR"], cidrs["nodeCIDR"]
    if v6only:
        _check_ipv6_ranges(src, path, cidrs, len(nodes))
    elif pod_cidr.prefixlen > NODE_SUBNET_PREFIX:
        raise src.error(
            join(path, "podCIDR"),
            f'Invalid value: "{pod_cidr}": must be /{NODE_SUBNET_PREFIX} or larger: each node gets a /{NODE_SUBNET_PREFIX} pod subnet',
        )
    capacity = 2 ** min(32, (NODE_SUBNET_PREFIX6 if v6only else NODE_SUBNET_PREFIX) - pod_cidr.prefixlen)
    if len(nodes) > capacity:
        raise src.error(
            join(path, "podCIDR"),
            f'Invalid value: "{pod_cidr}": has room for {capacity} node pod subnets (/{NODE_SUBNET_PREFIX}), the cluster has {len(nodes)} nodes',
        )
    # .1 is the router, nodes follow, the last host is the cloud load balancer; keep the
    # broadcast address free.
    if len(nodes) > node_cidr.num_addresses - 4:
        raise src.error(
            join(path, "nodeCIDR"),
            f'Invalid value: "{node_cidr}": has room for {max(node_cidr.num_addresses - 4, 0)} nodes, the cluster has {len(nodes)}',
        )
    dns_raw = raw.get("dnsIP")
    dns_ip = defaults["dns_ip"]
    if dns_raw is not None:
        try:
            dns_ip = ipaddress.ip_address(dns_raw)
        except ValueError:
            dns_ip = None
        if dns_ip is None or dns_ip.version != (6 if v6only else 4):
            raise src.error(join(path, "dnsIP"), f'Invalid value: "{dns_raw}": must be a valid {"IPv6" if v6only else "IPv4"} '
                                                 'address (of the primary family)') from None
    svc = cidrs["serviceCIDR"]
    if dns_ip not in svc or dns_ip in (svc.network_address, svc.broadcast_address):
        raise src.error(join(path, "dnsIP"), f'Invalid value: "{dns_ip}": must be a usable address of serviceCIDR {svc}')
    domain = raw.get("clusterDomain", _DEFAULTS["cluster_domain"])
    errs = k8s.dns1123_subdomain(domain)
    if errs:
        raise src.error(join(path, "clusterDomain"), f'Invalid value: "{domain}": {"; ".join(errs)}')
    npr = _DEFAULTS["node_port_range"]
    if raw.get("nodePortRange") is not None:
        npr = _port_range(src, join(path, "nodePortRange"), raw["nodePortRange"])
    mtu = raw.get("mtu", _DEFAULTS["mtu"])
    if not 1280 <= mtu <= 9000:
        raise src.error(join(path, "mtu"), f"Invalid value: {mtu}: must be between 1280 and 9000, inclusive")
    overhead = 70 if v6only else 50  # VXLAN over an IPv6 underlay: a 40-byte outer header, not 20
    if (dual or v6only) and network == "vxlan" and mtu - overhead < IPV6_MIN_MTU:
        raise src.error(join(path, "mtu"), f"Invalid value: {mtu}: must be at least {IPV6_MIN_MTU + overhead} in "
                                           f"{'a dual-stack' if dual else 'an IPv6'} vxlan lab: the pods' MTU ({overhead} less) "
                                           f"must hold IPv6's minimum of {IPV6_MIN_MTU}")
    from netns_lab.proxy.ipvs import SCHEDULERS

    scheduler = raw.get("ipvsScheduler", _DEFAULTS["ipvs_scheduler"])
    if scheduler not in SCHEDULERS:
        supported = ", ".join(f'"{x}"' for x in SCHEDULERS)
        raise src.error(join(path, "ipvsScheduler"), f'Unsupported value: "{scheduler}": supported values: {supported}')
    external = _external(src, join(path, "external"), raw.get("external"), cidrs, cidrs6, host_networks, ip_family)
    ingress_type = raw.get("ingressServiceType", _DEFAULTS["ingress_service_type"])
    if ingress_type not in ("LoadBalancer", "NodePort"):
        raise src.error(join(path, "ingressServiceType"), f'Unsupported value: "{ingress_type}": supported values: "LoadBalancer", "NodePort"')
    uses_bgp = network == "bgp" or external.load_balancer == "bgp"
    bgp = parse_bgp(src, raw.get("bgp"), join(path, "bgp"), uses_bgp,
                    None if ip_family == "ipv4" else f'BGP runs in IPv4 labs only (cluster.ipFamily is "{ip_family}")')
    return ClusterConfig(
        bgp=bgp,
        ingress_service_type=ingress_type,
        external=external,
        ipvs_scheduler=scheduler,
        ipvs_legacy_ping=bool(raw.get("ipvsLegacyPing", False)),
        nodes=nodes,
        network=network,
        ip_family=ip_family,
        node_cidr6=cidrs6.get("nodeCIDR"),
        pod_cidr6=cidrs6.get("podCIDR"),
        service_cidr6=cidrs6.get("serviceCIDR"),
        proxy_mode=proxy_mode,
        network_policy=policy,
        node_cidr=node_cidr,
        pod_cidr=pod_cidr,
        service_cidr=svc,
        cluster_domain=domain,
        dns_ip=dns_ip,
        node_port_range=npr,
        mtu=mtu,
    )


def _check_ipv6_plan(src: Source, path: str, cidrs: dict[str, IPv4Network], cidrs6: dict[str, IPv6Network], nodes: int) -> None:
    """The IPv6 ranges of a dual-stack lab: a /64 pod subnet per node, a Service range the
    API server accepts, and a node network that holds every IPv4 host number (a host's IPv6
    address mirrors its IPv4 one: 10.0.0.3 is fd00:10::3)."""
    pod6 = cidrs6["podCIDR"]
    if pod6.prefixlen > NODE_SUBNET_PREFIX6:
        raise src.error(join(path, "podCIDR"), f'Invalid value: "{pod6}": must be /{NODE_SUBNET_PREFIX6} or larger: '
                                                f'each node gets a /{NODE_SUBNET_PREFIX6} IPv6 pod subnet')
    capacity = 2 ** min(NODE_SUBNET_PREFIX6 - pod6.prefixlen, 32)
    if nodes > capacity:
        raise src.error(join(path, "podCIDR"), f'Invalid value: "{pod6}": has room for {capacity} node pod subnets '
                                                f'(/{NODE_SUBNET_PREFIX6}), the cluster has {nodes} nodes')
    svc6 = cidrs6["serviceCIDR"]
    if svc6.prefixlen < MAX_SERVICE_PREFIX6:
        raise src.error(join(path, "serviceCIDR"), f'Invalid value: "{svc6}": too large: for 128-bit addresses, the mask '
                                                    f'must be >= {MAX_SERVICE_PREFIX6} (as kube-apiserver\'s --service-cluster-ip-range)')
    _mirrors(src, join(path, "nodeCIDR"), cidrs["nodeCIDR"], cidrs6["nodeCIDR"])


def _check_ipv6_ranges(src: Source, path: str, cidrs: dict[str, Any], nodes: int) -> None:
    """An IPv6-only lab's ranges: a /64 pod subnet per node, a Service range the API server takes."""
    pod6, svc6 = cidrs["podCIDR"], cidrs["serviceCIDR"]
    if pod6.prefixlen > NODE_SUBNET_PREFIX6:
        raise src.error(join(path, "podCIDR"), f'Invalid value: "{pod6}": must be /{NODE_SUBNET_PREFIX6} or larger: '
                                                f'each node gets a /{NODE_SUBNET_PREFIX6} pod subnet')
    if svc6.prefixlen < MAX_SERVICE_PREFIX6:
        raise src.error(join(path, "serviceCIDR"), f'Invalid value: "{svc6}": too large: for 128-bit addresses, the mask '
                                                    f'must be >= {MAX_SERVICE_PREFIX6} (as kube-apiserver\'s --service-cluster-ip-range)')


def _mirrors(src: Source, path: str, v4: IPv4Network, v6: IPv6Network) -> None:
    if v6.num_addresses < v4.num_addresses:
        raise src.error(path, f'Invalid value: "{v4},{v6}": the IPv6 range must be at least as large as the IPv4 one '
                              f'(/{128 - (32 - v4.prefixlen)} or larger): each host\'s IPv6 address has its IPv4 host number')


MIN_CLIENT = 10  # clients get .10, .11...; .1 is the router


def _external(src: Source, path: str, raw: Any, cluster_cidrs: dict[str, IPv4Network], cluster_cidrs6: dict[str, IPv6Network],
              host_networks: tuple[HostNet, ...], ip_family: str) -> ExternalConfig:
    """``cluster.external``: its ranges must not overlap the cluster's (the router joins them)."""
    raw = {} if raw is None else raw  # checked (and nulls dropped) as part of CLUSTER
    default = ExternalConfig()
    cidr6: IPv6Network | None = DUAL_DEFAULTS["external_cidr6"] if ip_family == "dual" else None
    if raw.get("cidr") is not None:
        cidr, cidr6 = _cidrs(src, join(path, "cidr"), raw["cidr"], ip_family)
    else:
        cidr = IPV6_DEFAULTS["external_cidr"] if ip_family == "ipv6" else default.cidr
    pool6: IPv6Network | None = DUAL_DEFAULTS["load_balancer_pool6"] if ip_family == "dual" else None
    if raw.get("loadBalancerPool") is not None:
        pool, pool6 = _cidrs(src, join(path, "loadBalancerPool"), raw["loadBalancerPool"], ip_family)
    else:
        pool = IPV6_DEFAULTS["load_balancer_pool"] if ip_family == "ipv6" else default.load_balancer_pool
    for ext_cidr, ext_pool, ranges in ((cidr, pool, cluster_cidrs), (cidr6, pool6, cluster_cidrs6)):  # per family
        if ext_cidr is None or ext_pool is None:
            continue  # an IPv4 lab's IPv6 half
        for field, net in (("cidr", ext_cidr), ("loadBalancerPool", ext_pool)):
            for other, onet in (*ranges.items(), *((("external.cidr", ext_cidr),) if field != "cidr" else ())):
                if net.overlaps(onet):  # type: ignore[arg-type]
                    raise src.error(join(path, field), f'Invalid value: "{net}": overlaps {other} {onet}')
            for host_net in host_networks:
                if net.overlaps(host_net):  # type: ignore[arg-type]  (False across families)
                    raise src.error(join(path, field), f'Invalid value: "{net}": overlaps the host network {host_net}; choose a range the host does not use')
    if cidr6 is not None:
        _mirrors(src, join(path, "cidr"), cidr, cidr6)
    clients = list(default.clients)
    for i, name in enumerate(raw.get("clients") or []):
        cpath = join(join(path, "clients"), i)
        errs = k8s.dns1123_label(name)
        if errs:
            raise src.error(cpath, f'Invalid value: "{name}": {"; ".join(errs)}')
        if name in clients:
            raise src.error(cpath, f'Duplicate value: "{name}"' + (' (the client "external" always exists)' if name == "external" else ""))
        clients.append(name)
    if MIN_CLIENT + len(clients) > cidr.num_addresses - 1:
        raise src.error(join(path, "cidr"), f'Invalid value: "{cidr}": too small for the router (.1) and {len(clients)} clients (from .{MIN_CLIENT})')
    interval = raw.get("healthCheckIntervalSeconds", default.health_check_interval)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0.1 <= interval <= 60:
        raise src.error(join(path, "healthCheckIntervalSeconds"), f"Invalid value: {interval!r}: must be a number of seconds between 0.1 and 60")
    load_balancer = raw.get("loadBalancer", default.load_balancer)
    if load_balancer not in EXTERNAL_LOAD_BALANCERS:
        supported = ", ".join(f'"{a}"' for a in EXTERNAL_LOAD_BALANCERS)
        raise src.error(join(path, "loadBalancer"), f'Unsupported value: "{load_balancer}": supported values: {supported}')
    return ExternalConfig(load_balancer=load_balancer, cidr=cidr, cidr6=cidr6, load_balancer_pool6=pool6, clients=tuple(clients), load_balancer_pool=pool, health_check_interval=float(interval))


def _port_range(src: Source, path: str, value: str) -> tuple[int, int]:
    """``30000-32767``, as kube-apiserver's ``--service-node-port-range``."""
    from netns_lab.scenario.k8s import ascii_int
    from netns_lab.scenario.services import NODE_AGENT_PORTS

    lo_s, sep, hi_s = value.partition("-")
    lo, hi = ascii_int(lo_s), ascii_int(hi_s if sep else lo_s)  # not int(): it reads "٣٠٠٠٠" and "3_0000"
    if lo is None or hi is None:
        raise src.error(path, f'Invalid value: "{value}": must be a port range like "30000-32767"')
    if not (1 <= lo <= hi <= 65535):
        raise src.error(path, f'Invalid value: "{value}": must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535')
    for port, why in NODE_AGENT_PORTS.items():
        if lo <= port <= hi:
            raise src.error(path, f'Invalid value: "{value}": covers port {port}, which no NodePort may use: {why}; '
                                  'choose a range without 10250 and 10256, e.g. "30000-32767"')
    return lo, hi
