"""networking.k8s.io/v1 NetworkPolicy: the API server's defaulting and validation, messages
included (pkg/apis/networking/validation: ValidateNetworkPolicySpec and what it calls).

Like an Ingress, a policy is checked whole: every invalid field is reported, one line each,
in the API server's order (podSelector, then each ingress rule's ports and peers, each
egress rule's, then policyTypes), because a policy pasted from a blog post is rarely wrong
in one place only.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from netns_lab.errors import ScenarioError, ScenarioErrors
from netns_lab.model import IPBlock, LabelSelector, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule
from netns_lab.scenario import k8s, openapi
from netns_lab.scenario.ingress import quoted
from netns_lab.scenario.manifests import metadata
from netns_lab.scenario.schema import collect
from netns_lab.scenario.yamlsrc import Source, join

API = "networking.k8s.io/v1"
NETWORK_POLICY = openapi.kind("io.k8s.api.networking.v1.NetworkPolicy")
PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def _q(value: Any) -> str:
    """A value as field.Invalid prints it: strings quoted (Go's %q), numbers bare."""
    return quoted(value) if isinstance(value, str) else str(value)


class _Errors:
    def __init__(self, src: Source) -> None:
        self.src, self.list = src, []  # type: ignore[var-annotated]

    def add(self, path: str, message: str) -> None:
        self.list.append(self.src.error(path, message))


def _selector(errs: _Errors, raw: Any, path: str) -> LabelSelector:
    """metav1 ValidateLabelSelector: matchLabels as labels, each requirement's operator and values."""
    raw = raw if isinstance(raw, dict) else {}
    labels = raw.get("matchLabels") or {}
    for key, value in labels.items():
        lpath = join(path, "matchLabels")  # the API server names the map, not the key
        for msg in k8s.qualified_name(key):
            errs.add(lpath, f"Invalid value: {_q(key)}: {msg}")
        for msg in k8s.label_value(value if isinstance(value, str) else str(value)):
            errs.add(lpath, f"Invalid value: {_q(value)}: {msg}")
    exprs: list[tuple[str, str, tuple[str, ...]]] = []
    for i, req in enumerate(raw.get("matchExpressions") or []):
        rpath = join(join(path, "matchExpressions"), i)
        key, op, values = req.get("key") or "", req.get("operator") or "", tuple(req.get("values") or ())
        if op in ("In", "NotIn"):
            if not values:
                errs.add(join(rpath, "values"), "Required value: must be specified when `operator` is 'In' or 'NotIn'")
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errs.add(join(rpath, "values"), "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        else:
            errs.add(join(rpath, "operator"), f"Invalid value: {_q(op)}: not a valid selector operator")
        for msg in k8s.qualified_name(key):
            errs.add(join(rpath, "key"), f"Invalid value: {_q(key)}: {msg}")
        for j, value in enumerate(values):
            for msg in k8s.label_value(value):
                errs.add(join(join(rpath, "values"), j), f"Invalid value: {_q(value)}: {msg}")
        exprs.append((key, op, values))
    return LabelSelector(tuple(sorted(labels.items())), tuple(exprs))


def _port(errs: _Errors, raw: dict[str, Any], path: str) -> PolicyPort:
    protocol = raw.get("protocol") or "TCP"
    if protocol not in PROTOCOLS:
        supported = ", ".join(f'"{p}"' for p in PROTOCOLS)
        errs.add(join(path, "protocol"), f"Unsupported value: {_q(protocol)}: supported values: {supported}")
    port, end = raw.get("port"), raw.get("endPort")
    if port is not None and isinstance(port, int):
        for msg in k8s.port_num(port):
            errs.add(join(path, "port"), f"Invalid value: {port}: {msg}")
        if end is not None:
            if end < port:
                errs.add(join(path, "endPort"), f"Invalid value: {end}: must be greater than or equal to `port`")
            for msg in k8s.port_num(end):
                errs.add(join(path, "endPort"), f"Invalid value: {end}: {msg}")
    elif port is not None:
        if end is not None:
            errs.add(join(path, "endPort"), f"Invalid value: {end}: may not be specified when `port` is non-numeric")
        for msg in k8s.port_name(str(port)):
            errs.add(join(path, "port"), f"Invalid value: {_q(port)}: {msg}")
    elif end is not None:
        errs.add(join(path, "endPort"), f"Invalid value: {end}: may not be specified when `port` is not specified")
    return PolicyPort(protocol, port, end)


_CIDR_TEXT = re.compile(r"[0-9A-Fa-f.:]+/[0-9]{1,3}")  # what Go's ParseCIDR reads: no zone, no netmask form


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """netutils.ParseCIDRSloppy: ADDRESS/PREFIX, host bits may be set; None when it is no CIDR
    at all (Python's parser also takes zones and netmasks, which the API server does not)."""
    if not isinstance(text, str) or not _CIDR_TEXT.fullmatch(text):
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _cidr_errors(text: str) -> list[str]:
    """IsValidCIDRForLegacyField: any CIDR ParseCIDRSloppy reads (host bits set, as in
    ``10.244.0.2/4``, are accepted while the StrictIPCIDRValidation gate is off, its default)."""
    return [] if _network(text) is not None else ["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"]


def _ip_block(errs: _Errors, raw: dict[str, Any], path: str) -> IPBlock:
    cidr = raw.get("cidr") or ""
    if not cidr:
        errs.add(join(path, "cidr"), "Required value")
        return IPBlock("", ())
    for msg in _cidr_errors(cidr):
        errs.add(join(path, "cidr"), f"Invalid value: {_q(cidr)}: {msg}")
    net = _network(cidr)
    excepts = tuple(raw.get("except") or ())
    if net is None:
        return IPBlock(cidr, excepts)
    for i, text in enumerate(excepts):
        epath = join(join(path, "except"), i)
        for msg in _cidr_errors(text):
            errs.add(epath, f"Invalid value: {_q(text)}: {msg}")
        exc = _network(text)
        if exc is None:
            continue
        if exc.version != net.version or exc.network_address not in net or net.prefixlen >= exc.prefixlen:
            errs.add(epath, f"Invalid value: {_q(text)}: must be a strict subset of `cidr`")
    return IPBlock(cidr, excepts)


def _peer(errs: _Errors, raw: dict[str, Any], path: str) -> PolicyPeer:
    pods = nss = block = None
    if raw.get("podSelector") is not None:
        pods = _selector(errs, raw["podSelector"], join(path, "podSelector"))
    if raw.get("namespaceSelector") is not None:
        nss = _selector(errs, raw["namespaceSelector"], join(path, "namespaceSelector"))
    if raw.get("ipBlock") is not None:
        block = _ip_block(errs, raw["ipBlock"], join(path, "ipBlock"))
    count = sum(x is not None for x in (pods, nss, block))
    if count == 0:
        errs.add(path, "Required value: must specify a peer")
    elif count > 1 and block is not None:
        errs.add(path, "Forbidden: may not specify both ipBlock and another peer")
    return PolicyPeer(pods, nss, block)


def _rules(errs: _Errors, raw: Any, path: str, peers_field: str) -> tuple[PolicyRule, ...]:
    out = []
    for i, rule in enumerate(raw or []):
        rpath = join(path, i)
        rule = rule if isinstance(rule, dict) else {}
        ports = tuple(_port(errs, p or {}, join(join(rpath, "ports"), j)) for j, p in enumerate(rule.get("ports") or []))
        peers = tuple(_peer(errs, p or {}, join(join(rpath, peers_field), j)) for j, p in enumerate(rule.get(peers_field) or []))
        out.append(PolicyRule(peers, ports))
    return tuple(out)


DUAL_STACK_REFUSAL = ('Unsupported value: "NetworkPolicy": not built for dual-stack or IPv6 labs yet (the policy dataplane '
                      'filters IPv4 only: IPv6 traffic would pass); use cluster.ipFamily ipv4')
INGRESS_IPV6_REFUSAL = ('Unsupported value: "Ingress": not built for IPv6-only labs yet (the ingress controllers listen '
                        'on IPv4); use cluster.ipFamily ipv4 or dual')


def refusal(kind: str, ip_family: str) -> str | None:
    """Why a kind cannot be used in a lab of this family yet (None: it can)."""
    if kind == "NetworkPolicy" and ip_family != "ipv4":
        return DUAL_STACK_REFUSAL
    if kind == "Ingress" and ip_family == "ipv6":
        return INGRESS_IPV6_REFUSAL
    return None


def parse_network_policy(src: Source, obj: dict[str, Any], base: str) -> NetworkPolicy:
    errors = collect(NETWORK_POLICY, src, obj, base)
    if errors:  # decoding (types, unknown fields) comes before validation, as in the API server
        raise ScenarioErrors.of(errors)
    errs = _Errors(src)
    try:
        name, namespace, labels = metadata(src, obj, base, namespaced=True)
        for msg in k8s.dns1123_subdomain(name):
            errs.add(join(base, "metadata.name"), f"Invalid value: {_q(name)}: {msg}")
    except ScenarioError as exc:
        errs.list.append(exc)
        name, namespace, labels = "", "default", ()
    spath = join(base, "spec")
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    selector = _selector(errs, spec.get("podSelector"), join(spath, "podSelector"))
    ingress = _rules(errs, spec.get("ingress"), join(spath, "ingress"), "from")
    egress = _rules(errs, spec.get("egress"), join(spath, "egress"), "to")
    types = spec.get("policyTypes")
    if types is None or types == []:  # SetDefaults_NetworkPolicy
        types = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
    if len(types) > len(POLICY_TYPES):
        errs.add(join(spath, "policyTypes"), f'Invalid value: {_go_list(types)}: may not specify more than two policyTypes')
    else:
        for i, ptype in enumerate(types):
            if ptype not in POLICY_TYPES:
                errs.add(join(join(spath, "policyTypes"), i),
                         f'Unsupported value: {_q(ptype)}: supported values: "Ingress", "Egress"')
    if errs.list:
        raise ScenarioErrors.of(errs.list)
    return NetworkPolicy(name, namespace, selector, tuple(types), ingress, egress, labels)


def _go_list(items: list[Any]) -> str:
    """How field.Invalid prints spec.PolicyTypes (Go's %#v of the slice)."""
    return "[]networking.PolicyType{" + ", ".join(_q(str(i)) for i in items) + "}"
