"""The ingress controller's job (pure): Ingress objects + endpoints -> an nginx configuration.

Kubernetes' path semantics mapped onto nginx's location matching, which already picks an
exact (``=``) location first and otherwise the longest prefix:

* ``Exact /foo`` -> ``location = /foo``;
* ``Prefix /foo`` (a trailing slash is ignored) -> ``location = /foo`` plus ``location /foo/``,
  so it matches ``/foo`` and ``/foo/...`` element-wise but not ``/foobar``; ``Prefix /`` ->
  ``location /``; an Exact path of the same host wins the tie for ``= /foo``;
* ``ImplementationSpecific`` -> a plain nginx prefix location (what ingress-nginx does).

Hosts become ``server`` blocks (``*.example.com`` matches exactly one label, as Kubernetes
says, through a regular-expression ``server_name``); rules without a host and unknown hosts go
to the default server. Unmatched paths go to the default backend (the first
``spec.defaultBackend`` of an Ingress) or to a built-in 404. Hosts listed under ``tls`` get
``listen 443 ssl`` with the Secret's certificate (SNI) and a 308 redirect from plain HTTP.
Upstreams are the pod endpoints, as ingress-nginx does (not the Service's ClusterIP).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from netns_lab.controllers.endpoints import Endpoint, endpoints
from netns_lab.controllers.topology import Topology
from netns_lab.model import Ingress, IngressBackend, Pod, Secret, Service

DEFAULT_404 = "default backend - 404"


@dataclass
class Location:
    match: str  # "= /foo", "/foo/", "/"
    upstream: str | None  # None: the default backend
    source: str  # "ns/ingress: Prefix /foo", for comments


@dataclass
class Server:
    host: str  # "_" for the default server
    locations: dict[str, Location] = field(default_factory=dict)
    tls_secret: str | None = None  # ns/name
    paths: list[tuple[str, str, str]] = field(default_factory=list)  # (pathType, path, upstream), declared order


def k8s_match(paths: list[tuple[str, str, str]], request: str) -> str | None:
    """The upstream Kubernetes' rules pick for ``request`` (None: the default backend):
    the longest matching path wins, Exact over Prefix on a tie; Prefix matches element-wise."""
    best: tuple[int, int, str] | None = None
    for ptype, path, upstream in paths:
        if ptype == "Exact":
            hit, length = request == path, len(path)
        elif ptype == "Prefix":
            p = _norm_prefix(path)
            hit, length = p == "/" or request == p or request.startswith(p + "/"), len(p)
        else:
            hit, length = request.startswith(path), len(path)
        if hit and (best is None or (length, ptype == "Exact") > best[:2]):
            best = (length, int(ptype == "Exact"), upstream)
    return best[2] if best else None


def _norm_prefix(path: str) -> str:
    return path.rstrip("/") or "/"


def upstream_name(namespace: str, backend: IngressBackend) -> str:
    port = backend.port_number if backend.port_number is not None else backend.port_name
    return f"{namespace}-{backend.service}-{port}"


def _add(server: Server, ing: Ingress, path: str, path_type: str, upstream: str) -> None:
    src = f"{ing.key}: {path_type} {path}"
    server.paths.append((path_type, path, upstream))
    if path_type == "Exact":
        server.locations[f"= {path}"] = Location(f"= {path}", upstream, src)  # an Exact path wins the tie
        return
    if path_type == "ImplementationSpecific":
        server.locations.setdefault(path, Location(path, upstream, src))
        return
    p = _norm_prefix(path)
    if p == "/":
        server.locations.setdefault("/", Location("/", upstream, src))
        return
    server.locations.setdefault(f"= {p}", Location(f"= {p}", upstream, src))
    server.locations.setdefault(f"{p}/", Location(f"{p}/", upstream, src))


def plan_servers(ingresses: tuple[Ingress, ...]) -> tuple[dict[str, Server], tuple[str, IngressBackend] | None]:
    """Host -> server with its locations; and the default backend (namespace, backend)."""
    servers: dict[str, Server] = {"_": Server("_")}
    default: tuple[str, IngressBackend] | None = None
    for ing in ingresses:
        if ing.default_backend is not None and default is None:
            default = (ing.namespace, ing.default_backend)
        for rule in ing.rules:
            server = servers.setdefault(rule.host or "_", Server(rule.host or "_"))
            for p in rule.paths:
                _add(server, ing, p.path, p.path_type, upstream_name(ing.namespace, p.backend))
        for t in ing.tls:
            for host in t.hosts:
                server = servers.setdefault(host, Server(host))
                if server.tls_secret is None and t.secret_name:
                    server.tls_secret = f"{ing.namespace}/{t.secret_name}"
    return servers, default


def _server_name(host: str) -> str:
    if host.startswith("*."):  # exactly one label, as Kubernetes defines the wildcard
        return "~^[^.]+" + re.escape(host[1:]) + "$"
    return host


def _upstreams(ingresses: tuple[Ingress, ...], services: tuple[Service, ...], pods: tuple[Pod, ...],
               topo: Topology) -> dict[str, tuple[Endpoint, ...]]:
    by_key = {s.key: s for s in services}
    out: dict[str, tuple[Endpoint, ...]] = {}
    backends = [(i.namespace, b) for i in ingresses for b in ([i.default_backend] if i.default_backend else [])]
    backends += [(i.namespace, p.backend) for i in ingresses for r in i.rules for p in r.paths]
    for ns, b in backends:
        name = upstream_name(ns, b)
        svc = by_key.get(f"{ns}/{b.service}")
        if name in out or svc is None:
            continue
        eps = endpoints(svc, pods, topo)
        port = next((p for p in svc.ports if (b.port_number is not None and p.port == b.port_number) or
                     (b.port_name is not None and p.name == b.port_name)), None)
        out[name] = eps.get(port, ()) if port is not None else ()
    return out


def cert_paths(run_dir: str, secret: str) -> tuple[str, str]:
    base = os.path.join(run_dir, "certs", secret.replace("/", "-"))
    return base + ".crt", base + ".key"


def render(ingresses: tuple[Ingress, ...], services: tuple[Service, ...], pods: tuple[Pod, ...], topo: Topology,
           secrets: tuple[Secret, ...], run_dir: str) -> tuple[str, dict[str, str]]:
    """The nginx.conf text and the certificate files it names (path -> PEM text)."""
    servers, default = plan_servers(ingresses)
    upstreams = _upstreams(ingresses, services, pods, topo)
    files: dict[str, str] = {}
    secret_by_key = {s.key: s for s in secrets}
    lines = [
        "# generated by netns-lab from the scenario's Ingress objects; do not edit",
        "user root;",
        "worker_processes 1;",
        f"pid {run_dir}/nginx.pid;",
        f"error_log {run_dir}/error.log notice;",
        "events { worker_connections 1024; }",
        "http {",
        f"  access_log {run_dir}/access.log;",
        *(f"  {kind}_temp_path {run_dir}/tmp/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        "  server_names_hash_bucket_size 128;",
        "  proxy_http_version 1.1;",
        "  proxy_set_header Host $host;",
        "  proxy_set_header X-Real-IP $remote_addr;",
        "  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "  proxy_set_header X-Forwarded-Proto $scheme;",
        "  proxy_set_header X-Forwarded-Host $host;",
        "  proxy_set_header X-Forwarded-Port $server_port;",
        "  proxy_set_header Connection \"\";",
        "  proxy_connect_timeout 2s;",
        "  proxy_next_upstream error timeout;  # a pod that just went away: try another endpoint",
        "  proxy_next_upstream_tries 3;",
    ]
    for name, eps in sorted(upstreams.items()):
        if eps:
            lines.append(f"  upstream {name} {{")
            lines += [f"    server {e.ip}:{e.port} max_fails=0;  # {e.pod}" for e in eps]
            lines.append("  }")
    default_up = upstream_name(*default) if default else None

    def location_body(upstream: str | None) -> list[str]:
        if upstream is None:
            upstream = default_up
            if upstream is None:
                return [f'return 404 "{DEFAULT_404}\\n";']
        if not upstreams.get(upstream):
            return ["return 503;  # the Service has no ready endpoint"]
        return [f"proxy_pass http://{upstream};"]

    for host, server in sorted(servers.items(), key=lambda kv: (kv[0] != "_", kv[0])):
        is_default = host == "_"
        tls = server.tls_secret if server.tls_secret in secret_by_key else None
        lines.append("  server {")
        lines.append(f"    listen 80{' default_server' if is_default else ''};")
        if is_default or tls:
            lines.append(f"    listen 443 ssl{' default_server' if is_default else ''};")
            if tls:
                crt, key = cert_paths(run_dir, tls)
                sec = secret_by_key[tls]
                files[crt] = (sec.get("tls.crt") or "").strip() + "\n"
                files[key] = (sec.get("tls.key") or "").strip() + "\n"
            else:  # ingress-nginx's "Kubernetes Ingress Controller Fake Certificate"
                crt, key = os.path.join(run_dir, "certs", "default-fake.crt"), os.path.join(run_dir, "certs", "default-fake.key")
            lines += [f"    ssl_certificate {crt};", f"    ssl_certificate_key {key};"]
        lines.append(f"    server_name {_server_name(host)};")
        if tls:
            lines.append("    if ($scheme = http) { return 308 https://$host$request_uri; }  # TLS configured: redirect")
        locs = dict(server.locations)
        if "/" not in locs:
            locs["/"] = Location("/", None, "default backend")
        for match in list(locs):
            # nginx answers "/foo" with a 301 to "/foo/" when only a "/foo/" location proxies;
            # Kubernetes has no such redirect, so "/foo" gets the location its rules give it.
            bare = match.removeprefix("= ").rstrip("/")
            if match.endswith("/") and bare and f"= {bare}" not in locs:
                locs[f"= {bare}"] = Location(f"= {bare}", k8s_match(server.paths, bare), f"what Kubernetes routes {bare} to")
        for match, loc in sorted(locs.items()):
            lines.append(f"    location {match} {{  # {loc.source}")
            lines += [f"      {b}" for b in location_body(loc.upstream)]
            lines.append("    }")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n", files
