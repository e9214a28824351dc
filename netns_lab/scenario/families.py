"""A Service's IP families, as kube-apiserver decides them: ``clusterIP``/``clusterIPs``,
``ipFamilies`` and ``ipFamilyPolicy``.

Two halves, as upstream: :func:`validate` is ValidateServiceClusterIPsRelatedFields (the
object alone, any cluster), :func:`decide` is the allocator's initIPFamilyFields (defaults
and the cluster's families: "this cluster is not configured for dual-stack services"). The
messages are the API server's, so a scenario fails as ``kubectl apply`` would.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from netns_lab.scenario.yamlsrc import Source, join

IP_FAMILIES = ("IPv4", "IPv6")
IP_FAMILY_POLICIES = ("PreferDualStack", "RequireDualStack", "SingleStack")
MAX_CLUSTER_IPS = 2


@dataclass(frozen=True)
class FamilyRequest:
    """What a Service manifest asked for, validated: the cluster IPs written (primary first;
    ``("None",)`` for headless), the families and the policy written (None: default)."""

    cluster_ips: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    policy: str | None = None
    ips_written: bool = False  # spec.clusterIPs itself was written (not only clusterIP, or nothing)

    @property
    def headless(self) -> bool:
        return self.cluster_ips == ("None",)


def family_of(ip: str) -> str:
    return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"


def _go_list(values: list[Any]) -> str:
    return json.dumps(values)


def validate(src: Source, spec: dict[str, Any], spath: str, stype: str) -> FamilyRequest:
    """The checks that need nothing but the Service (validation.go)."""
    cluster_ip = spec.get("clusterIP") or ""
    ips = list(spec.get("clusterIPs") or [])
    ipath = join(spath, "clusterIPs")
    written = bool(ips)
    if cluster_ip and not ips:  # storage's normalizeClusterIPs on create: an old client's singular field
        ips = [cluster_ip]
    if not cluster_ip and ips:
        raise src.error(ipath, f"Invalid value: {_go_list(ips)}: must be empty when `clusterIP` is not specified")
    if ips and ips[0] != cluster_ip:
        raise src.error(ipath, f"Invalid value: {_go_list(ips)}: first value must match `clusterIP`")
    families = list(spec.get("ipFamilies") or [])
    fpath = join(spath, "ipFamilies")
    for i, family in enumerate(families):
        if family not in IP_FAMILIES:
            supported = ", ".join(f'"{f}"' for f in IP_FAMILIES)
            raise src.error(join(fpath, i), f'Unsupported value: "{family}": supported values: {supported}')
        if family in families[:i]:
            raise src.error(join(fpath, i), f'Duplicate value: "{family}"')
    policy = spec.get("ipFamilyPolicy")
    if policy is not None and policy not in IP_FAMILY_POLICIES:
        supported = ", ".join(f'"{p}"' for p in IP_FAMILY_POLICIES)
        raise src.error(join(spath, "ipFamilyPolicy"), f'Unsupported value: "{policy}": supported values: {supported}')
    if "None" in ips:
        if ips != ["None"]:
            raise src.error(ipath, f"Invalid value: {_go_list(ips)}: 'None' must be the first and only value")
        if stype in ("NodePort", "LoadBalancer"):
            raise src.error(join(ipath, 0), f"Invalid value: \"None\": may not be set to 'None' for {stype} services")
        return FamilyRequest(("None",), tuple(families), policy, written)
    for i, ip in enumerate(ips):
        if not _valid_ip(ip):
            raise src.error(join(ipath, i), f'Invalid value: "{ip}": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)')
    if len(ips) > MAX_CLUSTER_IPS:
        raise src.error(ipath, f"Invalid value: {_go_list(ips)}: may only hold up to {MAX_CLUSTER_IPS} values")
    if len(ips) == 2 and family_of(ips[0]) == family_of(ips[1]):
        raise src.error(ipath, f"Invalid value: {_go_list(ips)}: may specify no more than one IP for each IP family")
    for i, ip in enumerate(ips):
        if i < len(families) and family_of(ip) != families[i]:
            raise src.error(join(ipath, i), f'Invalid value: "{ip}": expected an {families[i]} value as indicated by `ipFamilies[{i}]`')
    return FamilyRequest(tuple(ips), tuple(families), policy, written)


def update(src: Source, spath: str, req: FamilyRequest, was_ips: tuple[str, ...], was_families: tuple[str, ...],
           was_policy: str | None) -> FamilyRequest:
    """An update of an existing Service (storage's normalizeClusterIPs and the allocator on
    update): what it does not say is kept (the cluster IPs, the families, the policy); what it
    says may add the second family (PreferDualStack / RequireDualStack) but not change a family
    or a cluster IP once set, and may release the second one only with SingleStack."""
    ipath, fpath, ppath = join(spath, "clusterIPs"), join(spath, "ipFamilies"), join(spath, "ipFamilyPolicy")
    policy = req.policy or was_policy or "SingleStack"
    ips = was_ips
    if req.ips_written:
        for i, (new, old) in enumerate(zip(req.cluster_ips, was_ips)):
            if new != old:
                raise src.error(join(ipath, i), f'Invalid value: "{new}": may not change once set')
        ips = req.cluster_ips if len(req.cluster_ips) > len(was_ips) or policy == "SingleStack" else was_ips
        if len(req.cluster_ips) < len(was_ips) and policy != "SingleStack":
            raise src.error(ppath, f'Invalid value: "{policy}": must be \'SingleStack\' to release the secondary cluster IP')
    families = was_families
    if req.families:
        for i, (new, old) in enumerate(zip(req.families, was_families)):
            if new != old:
                raise src.error(join(fpath, i), f'Invalid value: "{new}": may not change once set')
        if len(req.families) < len(was_families) and policy != "SingleStack":
            raise src.error(ppath, f'Invalid value: "{policy}": must be \'SingleStack\' to release the secondary IP family')
        families = req.families if len(req.families) > len(was_families) else was_families
    if policy == "SingleStack":
        if len(req.families) > 1:
            raise src.error(ppath, 'Invalid value: "SingleStack": must be \'RequireDualStack\' or \'PreferDualStack\' when multiple IP families are specified')
        ips, families = ips[:1], families[:1]
    if ips != ("None",):
        for i, ip in enumerate(ips):
            if i < len(families) and family_of(ip) != families[i]:
                raise src.error(join(ipath, i), f'Invalid value: "{ip}": expected an {families[i]} value as indicated by `ipFamilies[{i}]`')
    return FamilyRequest(ips, families, policy, True)


def _valid_ip(text: str) -> bool:
    """What the API server's strict IP parser accepts: no leading zeros, no IPv4-mapped IPv6."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    if ip.version == 6:
        return ip.ipv4_mapped is None
    return True  # Python already refuses leading zeros in IPv4 ("010.0.0.1")


@dataclass(frozen=True)
class Families:
    """The allocator's decision: the policy and the families (primary first); the cluster IPs
    of ``cluster_ips`` are the ones asked for, by position (the rest are allocated)."""

    policy: str
    families: tuple[str, ...]


def decide(src: Source, spath: str, req: FamilyRequest, cluster_families: tuple[str, ...], selectorless: bool) -> Families:
    """initIPFamilyFields: the policy's default, the families inferred from the IPs, the
    dual-stack and family checks against ``cluster_families`` (primary first)."""
    ipath, fpath, ppath = join(spath, "clusterIPs"), join(spath, "ipFamilies"), join(spath, "ipFamilyPolicy")
    headless_selectorless = req.headless and selectorless
    policy = req.policy or ("RequireDualStack" if headless_selectorless else "SingleStack")
    real_ips = () if req.headless else req.cluster_ips
    if policy == "SingleStack":
        if len(real_ips) > 1:
            raise src.error(ppath, 'Invalid value: "SingleStack": must be \'RequireDualStack\' or \'PreferDualStack\' when multiple cluster IPs are specified')
        if len(req.families) > 1:
            raise src.error(ppath, 'Invalid value: "SingleStack": must be \'RequireDualStack\' or \'PreferDualStack\' when multiple IP families are specified')
    families = list(req.families)
    for i, ip in enumerate(real_ips):
        if i >= len(families):
            families.append(family_of(ip))
    dual_cluster = len(cluster_families) > 1
    if headless_selectorless:  # no IP is ever allocated: any families, even on a single-stack cluster
        if not families:
            families = [cluster_families[0]]
        if policy != "SingleStack" and len(families) == 1:
            families.append("IPv6" if families[0] == "IPv4" else "IPv4")
        return Families(policy, tuple(families))
    for i, ip in enumerate(real_ips):
        if family_of(ip) not in cluster_families:
            raise src.error(join(ipath, i), f"Invalid value: {_go_list(list(req.cluster_ips))}: {family_of(ip)} is not configured on this cluster")
    if policy == "RequireDualStack" and not dual_cluster:
        raise src.error(ppath, 'Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services')
    for i, family in enumerate(families):
        if family not in cluster_families:
            raise src.error(join(fpath, i), f'Invalid value: "{family}": not configured on this cluster')
    if not families:
        families = [cluster_families[0]]
    if policy != "SingleStack" and dual_cluster and len(families) == 1:
        families.append(next(f for f in cluster_families if f != families[0]))
    return Families(policy, tuple(families))
