"""``kubectl get networkpolicies``: kubectl's columns (NAME, POD-SELECTOR, AGE) and the
API's shape for ``-o yaml|json``, policyTypes as the API server defaulted them."""

from __future__ import annotations

from typing import Any

from netns_lab.model import LabelSelector, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule


def selector_text(sel: LabelSelector) -> str:
    """kubectl's POD-SELECTOR: ``k=v,k2 in (a,b)``, ``<none>`` for the empty selector."""
    parts = [f"{k}={v}" for k, v in sel.match_labels]
    ops = {"In": "in", "NotIn": "notin"}
    for key, op, values in sel.match_expressions:
        if op in ops:
            parts.append(f"{key} {ops[op]} ({','.join(sorted(values))})")
        else:
            parts.append(key if op == "Exists" else f"!{key}")
    return ",".join(parts) or "<none>"


def rows(policies: tuple[NetworkPolicy, ...], namespace: str | None, age_text: str) -> list[list[str]]:
    out = [(["NAMESPACE"] if namespace is None else []) + ["NAME", "POD-SELECTOR", "AGE"]]
    for p in policies:
        if namespace is None or p.namespace == namespace:
            out.append(([p.namespace] if namespace is None else []) + [p.name, selector_text(p.pod_selector), age_text])
    return out


def _selector(sel: LabelSelector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sel.match_labels:
        out["matchLabels"] = dict(sel.match_labels)
    if sel.match_expressions:
        out["matchExpressions"] = [{"key": k, "operator": op, **({"values": list(v)} if v else {})} for k, op, v in sel.match_expressions]
    return out


def _peer(p: PolicyPeer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.pod_selector is not None:
        out["podSelector"] = _selector(p.pod_selector)
    if p.namespace_selector is not None:
        out["namespaceSelector"] = _selector(p.namespace_selector)
    if p.ip_block is not None:
        out["ipBlock"] = {"cidr": p.ip_block.cidr, **({"except": list(p.ip_block.excepts)} if p.ip_block.excepts else {})}
    return out


def _port(p: PolicyPort) -> dict[str, Any]:
    return {"protocol": p.protocol, **({"port": p.port} if p.port is not None else {}),
            **({"endPort": p.end_port} if p.end_port is not None else {})}


def _rule(r: PolicyRule, peers: str) -> dict[str, Any]:
    return {**({"ports": [_port(p) for p in r.ports]} if r.ports else {}), **({peers: [_peer(p) for p in r.peers]} if r.peers else {})}


def manifest(p: NetworkPolicy) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": _selector(p.pod_selector)}
    if p.ingress:
        spec["ingress"] = [_rule(r, "from") for r in p.ingress]
    if p.egress:
        spec["egress"] = [_rule(r, "to") for r in p.egress]
    spec["policyTypes"] = list(p.policy_types)
    meta: dict[str, Any] = {"name": p.name, "namespace": p.namespace}
    if p.labels:
        meta["labels"] = dict(p.labels)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec}


def items(policies: tuple[NetworkPolicy, ...], namespace: str | None) -> list[dict[str, Any]]:
    return [manifest(p) for p in policies if namespace is None or p.namespace == namespace]
