"""``kubectl get`` for a lab: the same columns, read from the live model (pure formatting).

Columns follow kubectl's default printers: pods (NAME READY STATUS RESTARTS AGE, wide adds
IP NODE), services (NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE, wide adds SELECTOR) and
endpoints (NAME ENDPOINTS AGE, at most three addresses then "+ N more...") and
endpointslices (NAME ADDRESSTYPE PORTS ENDPOINTS AGE; ``-o yaml`` shows each endpoint's
ready / serving / terminating conditions, as kube-proxy reads them).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import yaml

from netns_lab.controllers.endpoints import endpoints
from netns_lab.controllers.topology import Topology
from netns_lab import netpol_view
from netns_lab.model import Ingress, NetworkPolicy, Pod, Service

KINDS = {"pods": "pods", "pod": "pods", "po": "pods", "services": "services", "service": "services", "svc": "services",
         "endpoints": "endpoints", "ep": "endpoints", "ingress": "ingress", "ingresses": "ingress", "ing": "ingress",
         "networkpolicies": "networkpolicies", "networkpolicy": "networkpolicies", "netpol": "networkpolicies",
         "endpointslices": "endpointslices", "endpointslice": "endpointslices"}


def age(seconds: float) -> str:
    """kubectl's short durations: 45s, 12m, 3h, 2d."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    if s < 2 * 3600:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def service_ports_text(svc: Service) -> str:
    if not svc.ports:
        return "<none>"
    return ",".join(f"{p.port}:{p.node_port}/{p.protocol}" if p.node_port else f"{p.port}/{p.protocol}" for p in svc.ports)


def external_ip_text(svc: Service) -> str:
    """kubectl's EXTERNAL-IP column: LB ingress IPs then externalIPs; ``<pending>`` for an
    unassigned LoadBalancer; the target name for ExternalName."""
    if svc.type == "ExternalName":
        return svc.external_name or "<none>"
    ips = [*svc.load_balancer_ips, *svc.external_ips] if svc.type == "LoadBalancer" else list(svc.external_ips)
    if ips:
        return ",".join(ips)
    return "<pending>" if svc.type == "LoadBalancer" else "<none>"


def _selector(pairs: tuple[tuple[str, str], ...] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in pairs) if pairs else "<none>"


def _ingress_address(services: tuple[Service, ...]) -> str:
    """kubectl's ADDRESS: the controller Service's load-balancer IP (its ClusterIP for NodePort)."""
    svc = next((s for s in services if s.key == "ingress-nginx/ingress-nginx"), None)
    if svc is None:
        return ""
    return ",".join(svc.load_balancer_ips) or (svc.cluster_ip or "")


def rows(kind: str, pods: tuple[Pod, ...], services: tuple[Service, ...], topo: Topology, namespace: str | None,
         wide: bool, age_text: str, ingresses: tuple[Ingress, ...] = ()) -> list[list[str]]:
    """Header + one row per object; ``namespace=None`` means all namespaces (``-A``)."""
    kind = KINDS[kind]
    ns_col = ["NAMESPACE"] if namespace is None else []
    out: list[list[str]] = []
    if kind == "ingress":
        out.append(ns_col + ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"])
        for i in ingresses:
            if namespace is not None and i.namespace != namespace:
                continue
            hosts = ",".join(dict.fromkeys(r.host or "*" for r in i.rules)) or "*"
            ports = "80, 443" if i.tls else "80"
            out.append(([i.namespace] if namespace is None else []) + [i.name, i.class_name or "<none>", hosts,
                                                                      _ingress_address(services), ports, age_text])
        return out
    if kind == "pods":
        out.append(ns_col + ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] + (["IP", "NODE"] if wide else []))
        for p in pods:
            if namespace is not None and p.namespace != namespace:
                continue
            plan = topo.pod(p.key)
            n = len(p.containers)
            ready = f"{n if p.ready else 0}/{n}"  # containers keep their readiness while terminating
            row = [p.name, ready, "Terminating" if p.terminating else "Running", "0", age_text] + ([str(plan.ip), plan.node] if wide else [])
            out.append(([p.namespace] if namespace is None else []) + row)
    elif kind == "services":
        out.append(ns_col + ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"] + (["SELECTOR"] if wide else []))
        for s in services:
            if namespace is not None and s.namespace != namespace:
                continue
            cluster_ip = "<none>" if s.type == "ExternalName" else (s.cluster_ip or "None")
            row = [s.name, s.type, cluster_ip, external_ip_text(s), service_ports_text(s), age_text]
            out.append(([s.namespace] if namespace is None else []) + row + ([_selector(s.selector)] if wide else []))
    elif kind == "endpointslices":
        out.append(ns_col + ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"])
        for sl in endpoint_slices(services, pods, topo, namespace):
            meta = sl["metadata"]
            ports = ",".join(str(p["port"]) for p in sl["ports"]) or "<unset>"
            addrs = [e["addresses"][0] for e in sl["endpoints"]]
            text = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "") if addrs else "<unset>"
            out.append(([meta["namespace"]] if namespace is None else []) + [meta["name"], sl["addressType"], ports, text, age_text])
    else:
        out.append(ns_col + ["NAME", "ENDPOINTS", "AGE"])
        for s in services:
            if (namespace is not None and s.namespace != namespace) or s.type == "ExternalName":
                continue
            addrs: list[str] = []
            for eps in endpoints(s, pods, topo, family=_primary_family(s)).values():
                addrs += [f"{e.ip}:{e.port}" for e in eps if f"{e.ip}:{e.port}" not in addrs]
            text = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "") if addrs else "<none>"
            out.append(([s.namespace] if namespace is None else []) + [s.name, text, age_text])
    return out


def _primary_family(s: Service) -> int:
    """The legacy Endpoints controller lists the addresses of the Service's primary family."""
    return 6 if s.ip_families[:1] == ("IPv6",) else 4


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def endpoint_slices(services: tuple[Service, ...], pods: tuple[Pod, ...], topo: Topology,
                    namespace: str | None) -> list[dict[str, Any]]:
    """The EndpointSlices the controller keeps: per Service with a selector, every selected
    pod with its conditions (ready = ready and not terminating, serving = ready, terminating),
    one slice per address family of the Service (its spec.ipFamilies) and set of resolved port
    numbers (a named targetPort may differ per pod)."""
    out: list[dict[str, Any]] = []
    by_key = {p.key: p for p in pods}
    for s in services:
        if (namespace is not None and s.namespace != namespace) or s.selector is None or s.type == "ExternalName":
            continue
        for family in s.ip_families or ("IPv4",):
            out += _slices(s, family, pods, by_key, topo)
    return out


def _slices(s: Service, family: str, pods: tuple[Pod, ...], by_key: dict[str, Pod], topo: Topology) -> list[dict[str, Any]]:
    """The EndpointSlices of one address family of ``s`` (the controller's getAddressTypesForService)."""
    out: list[dict[str, Any]] = []
    groups: dict[tuple[tuple[Any, ...], ...], list[Any]] = {}
    per_port = endpoints(s, pods, topo, conditions=True, family=6 if family == "IPv6" else 4)
    by_pod: dict[str, dict[Any, Any]] = {}
    for sp, eps in per_port.items():
        for e in eps:
            by_pod.setdefault(e.pod, {})[sp] = e
    for pod_key, ports in by_pod.items():
        sig = tuple((sp.name or "", sp.protocol, e.port) for sp, e in ports.items())
        groups.setdefault(sig, []).append(next(iter(ports.values())))
    for sig, eps in groups.items() or {(): []}.items():
        digest = hashlib.sha256(f"{s.key}|{sig}".encode() + (b"|IPv6" if family == "IPv6" else b"")).hexdigest()[:5]
        items = []
        for e in eps:
            pod = by_key[e.pod]
            items.append({"addresses": [e.ip], "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
                          "nodeName": e.node, "targetRef": {"kind": "Pod", "name": pod.name, "namespace": pod.namespace}})
        out.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": f"{s.name}-{digest}", "namespace": s.namespace,
                                 "labels": {"kubernetes.io/service-name": s.name,
                                            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
                    "addressType": family, "endpoints": items,
                    "ports": [{**({"name": n} if n else {}), "port": port, "protocol": proto} for n, proto, port in sig]})
    return out


def table(data: list[list[str]]) -> str:
    """kubectl's layout: left-aligned columns separated by three spaces."""
    widths = [max(len(r[i]) for r in data) for i in range(len(data[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in data)


def objects(kind: str, pods: tuple[Pod, ...], services: tuple[Service, ...], topo: Topology, namespace: str | None,
            ingresses: tuple[Ingress, ...] = ()) -> dict[str, Any]:
    """A ``kind: List`` in the API's shape, for ``-o json|yaml``."""
    kind = KINDS[kind]
    items: list[dict[str, Any]] = []
    if kind == "ingress":
        def backend(b: Any) -> dict[str, Any]:
            port = {"number": b.port_number} if b.port_number is not None else {"name": b.port_name}
            return {"service": {"name": b.service, "port": port}}

        for i in ingresses:
            if namespace is None or i.namespace == namespace:
                spec: dict[str, Any] = {}
                if i.class_name:
                    spec["ingressClassName"] = i.class_name
                if i.default_backend:
                    spec["defaultBackend"] = backend(i.default_backend)
                if i.tls:
                    spec["tls"] = [{"hosts": list(t.hosts), **({"secretName": t.secret_name} if t.secret_name else {})} for t in i.tls]
                if i.rules:
                    spec["rules"] = [{**({"host": r.host} if r.host else {}), "http": {"paths": [
                        {"path": p.path, "pathType": p.path_type, "backend": backend(p.backend)} for p in r.paths]}} for r in i.rules]
                address = _ingress_address(services)
                items.append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": i.name, "namespace": i.namespace},
                              "spec": spec, "status": {"loadBalancer": {"ingress": [{"ip": address}] if address else []}}})
        return {"apiVersion": "v1", "kind": "List", "items": items}
    if kind == "endpointslices":
        return {"apiVersion": "v1", "kind": "List", "items": endpoint_slices(services, pods, topo, namespace)}
    if kind == "pods":
        for p in pods:
            if namespace is None or p.namespace == namespace:
                plan = topo.pod(p.key)
                deleting = {} if p.deletion_deadline is None else {"deletionTimestamp": _rfc3339(p.deletion_deadline)}
                items.append({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": p.name, "namespace": p.namespace, "labels": dict(p.labels), **deleting},
                    "spec": {"nodeName": plan.node, "containers": [{"name": c.name, "image": c.image,
                             "ports": [{"containerPort": cp.container_port, "protocol": cp.protocol, **({"name": cp.name} if cp.name else {})} for cp in c.ports]}
                             for c in p.containers]},
                    "status": {"phase": "Running", "hostIP": str(topo.node(plan.node).ip),
                               "hostIPs": [{"ip": str(ip)} for ip in topo.node(plan.node).ips],
                               "podIP": str(plan.ip), "podIPs": [{"ip": str(ip)} for ip in plan.ips],
                               "conditions": [{"type": "Ready", "status": "True" if p.ready else "False"}]},
                })
    elif kind == "services":
        for s in services:
            if namespace is None or s.namespace == namespace:
                spec: dict[str, Any] = {"type": s.type}
                if s.type == "ExternalName":
                    spec["externalName"] = s.external_name
                else:
                    spec["clusterIP"] = s.cluster_ip or "None"
                    spec["clusterIPs"] = list(s.cluster_ips) or ["None"]
                    spec["ipFamilies"] = list(s.ip_families)
                    spec["ipFamilyPolicy"] = s.ip_family_policy
                    spec["ports"] = [{k: v for k, v in {"name": p.name, "protocol": p.protocol, "port": p.port,
                                      "targetPort": p.target, "nodePort": p.node_port}.items() if v is not None} for p in s.ports]
                    if s.selector is not None:
                        spec["selector"] = dict(s.selector)
                    if s.external_ips:
                        spec["externalIPs"] = list(s.external_ips)
                    if s.type in ("NodePort", "LoadBalancer"):
                        spec["externalTrafficPolicy"] = s.external_traffic_policy
                    if s.load_balancer_source_ranges:
                        spec["loadBalancerSourceRanges"] = list(s.load_balancer_source_ranges)
                    if s.health_check_node_port is not None:
                        spec["healthCheckNodePort"] = s.health_check_node_port
                    if s.publish_not_ready_addresses:
                        spec["publishNotReadyAddresses"] = True
                status: dict[str, Any] = {"loadBalancer": {}}
                if s.load_balancer_ips:
                    status["loadBalancer"]["ingress"] = [{"ip": ip, "ipMode": "VIP"} for ip in s.load_balancer_ips]
                items.append({"apiVersion": "v1", "kind": "Service",
                              "metadata": {"name": s.name, "namespace": s.namespace, "labels": dict(s.labels)}, "spec": spec,
                              "status": status})
    else:
        for s in services:
            if (namespace is None or s.namespace == namespace) and s.type != "ExternalName":
                subsets = []
                for sp, eps in endpoints(s, pods, topo, family=_primary_family(s)).items():
                    if eps:
                        subsets.append({"addresses": [{"ip": e.ip, "nodeName": e.node, "targetRef": {"kind": "Pod", "name": e.pod.split("/", 1)[1]}} for e in eps],
                                        "ports": [{"port": eps[0].port, "protocol": sp.protocol, **({"name": sp.name} if sp.name else {})}]})
                items.append({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": s.name, "namespace": s.namespace}, "subsets": subsets})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def render(kind: str, pods: tuple[Pod, ...], services: tuple[Service, ...], topo: Topology, namespace: str | None,
           output: str = "", age_text: str = "0s", ingresses: tuple[Ingress, ...] = (),
           policies: tuple[NetworkPolicy, ...] = ()) -> str:
    if KINDS[kind] == "networkpolicies":
        if output in ("json", "yaml"):
            doc = {"apiVersion": "v1", "kind": "List", "items": netpol_view.items(policies, namespace)}
            return json.dumps(doc, indent=4) if output == "json" else yaml.safe_dump(doc, sort_keys=False).rstrip()
        return table(netpol_view.rows(policies, namespace, age_text))
    if output in ("json", "yaml"):
        doc = objects(kind, pods, services, topo, namespace, ingresses)
        return json.dumps(doc, indent=4) if output == "json" else yaml.safe_dump(doc, sort_keys=False).rstrip()
    return table(rows(kind, pods, services, topo, namespace, output == "wide", age_text, ingresses))
