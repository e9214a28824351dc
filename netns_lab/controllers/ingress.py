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

No scenario string ever becomes a directive (ingress-nginx's CVE-2021-25742, CVE-2023-5043/5044
and CVE-2025-1974 were that bug). The scenario loader validates every value first; this
renderer checks again, because a model can also come from Python, a state file or a future
path that skips the loader: names and hosts must be Kubernetes names and DNS names
(:func:`_name`, :func:`check_host`), paths a safe character set (:func:`check_path`), paths and file
names are written as nginx quoted strings (:func:`_q`), comments keep printable ASCII only
(:func:`_comment`), and anything else raises :class:`UnsafeValue` instead of being written.
nginx runs unprivileged (no ``user`` directive: the supervisor starts it as ``nobody``) and
writes only under ``logs/`` and ``tmp/`` of the lab's ingress directory.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field

from netns_lab import kernelnames
from netns_lab.controllers.endpoints import Endpoint, endpoints
from netns_lab.controllers.topology import Topology
from netns_lab.model import LOAD_BALANCERS, Ingress, IngressBackend, Pod, Secret, Service

DEFAULT_404 = "default backend - 404"
PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")
# The lab's ingress directory: nginx.conf and certs/ are written by root (the lab and the
# supervisor); logs/ (pid, error and access logs) and tmp/ belong to the unprivileged nginx.
CERTS, LOGS, TMP = "certs", "logs", "tmp"
TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
FAKE_CERT = "default-fake"  # a Secret's files are NS_NAME ('_' is in no Kubernetes name): never this one
# ingress-nginx's dynamic configuration: the Lua balancer (services/lua/, copied into LUA/ of the
# lab's ingress directory), Debian's modules, the shared dict of backends, and the loopback
# port the controller POSTs the backends to (ingress-nginx's status port, 10246).
LUA, BALANCER, MODULES = "lua", "netns_lab_balancer", "/usr/lib/nginx/modules"
LUA_MODULES = ("ndk_http_module.so", "ngx_http_lua_module.so")
SHARED_DICT, CONFIG_PORT = "16m", 10246

# What may reach the configuration unquoted: Kubernetes names (DNS labels and subdomains,
# IANA port names) and hosts (a DNS subdomain, or a one-label wildcard).
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_HOST = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# The widest path the scenario loader accepts (ImplementationSpecific's set): nothing in it
# means anything to nginx's parser, and it is quoted all the same.
# The widest path that may reach nginx.conf (ImplementationSpecific; Exact and Prefix are
# narrower): the loader refuses anything else (scenario/ingress.py), and render checks again.
SAFE_PATH = re.compile(r"/[A-Za-z0-9._\-/~!&()*+,=:@%]*")
_PATH = SAFE_PATH


class UnsafeValue(ValueError):
    """A value that would change nginx.conf's structure (a model that skipped validation)."""


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > 253 or not _NAME.fullmatch(value):
        raise UnsafeValue(f"ingress: {what} {value!r} is not a Kubernetes name; refusing to write it into nginx.conf")
    return value


def check_host(value: object) -> str:
    if not isinstance(value, str) or len(value) > 253 or not _HOST.fullmatch(value):
        raise UnsafeValue(f"ingress: host {value!r} is not a DNS name; refusing to write it into nginx.conf")
    return value


def check_path(value: object, path_type: object) -> str:
    if path_type not in PATH_TYPES:
        raise UnsafeValue(f"ingress: pathType {path_type!r} is not one of {', '.join(PATH_TYPES)}")
    if not isinstance(value, str) or not _PATH.fullmatch(value):
        raise UnsafeValue(f"ingress: path {value!r} has characters nginx.conf must not see; refusing to write it")
    return value


def _q(value: str) -> str:
    """An nginx quoted string, with ``\\`` and ``"`` escaped. ``$`` starts a variable even
    inside quotes (``access_log`` and ``ssl_certificate`` take variables) and nginx has no
    escape for it, so it is refused, as are control characters."""
    if "$" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UnsafeValue(f"ingress: {value!r} cannot be written into nginx.conf")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    """Text for a ``#`` comment, which runs to the end of the line: printable ASCII only."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _location(match: str) -> str:
    """``= /foo`` -> ``= "/foo"``; ``/foo/`` -> ``"/foo/"`` (a path never starts with ``=`` or ``~``)."""
    exact = match.startswith("= ")
    path = match[2:] if exact else match
    if not _PATH.fullmatch(path):
        raise UnsafeValue(f"ingress: location {path!r} has characters nginx.conf must not see")
    return ("= " if exact else "") + _q(path)


def server_address(ip: str, port: int) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise UnsafeValue(f"ingress: endpoint address {ip!r} is not an IP address") from None
    if getattr(addr, "scope_id", None) is not None:  # "fe80::1%<anything>" parses: the scope is free text
        raise UnsafeValue(f"ingress: endpoint address {ip!r} has a scope; pod addresses have none")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise UnsafeValue(f"ingress: endpoint port {port!r} is not a port number")
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


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
    """``NS_SERVICE_PORT``. ingress-nginx joins them with '-', which the names contain too
    (``a-b/c`` and ``a/b-c`` would share one upstream); '_' is in none of them."""
    if backend.port_number is not None:
        if not isinstance(backend.port_number, int) or not 1 <= backend.port_number <= 65535:
            raise UnsafeValue(f"ingress: backend port {backend.port_number!r} is not a port number")
        port = str(backend.port_number)
    else:
        port = _name(backend.port_name, "backend port name")
    return f"{_name(namespace, 'namespace')}_{_name(backend.service, 'backend service name')}_{port}"


def _add(server: Server, ing: Ingress, path: str, path_type: str, upstream: str) -> None:
    path = check_path(path, path_type)
    src = f"{_name(ing.namespace, 'namespace')}/{_name(ing.name, 'Ingress name')}: {path_type} {path}"
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
            host = check_host(rule.host) if rule.host else "_"
            server = servers.setdefault(host, Server(host))
            for p in rule.paths:
                _add(server, ing, p.path, p.path_type, upstream_name(ing.namespace, p.backend))
        for t in ing.tls:
            for host in t.hosts:
                server = servers.setdefault(check_host(host), Server(host))
                if server.tls_secret is None and t.secret_name:
                    server.tls_secret = f"{_name(ing.namespace, 'namespace')}/{_name(t.secret_name, 'TLS secretName')}"
    return servers, default


def _server_name(host: str) -> str:
    if host == "_":
        return host
    if check_host(host).startswith("*."):  # exactly one label, as Kubernetes defines the wildcard
        return "~^[^.]+" + re.escape(host[1:]) + "$"
    return host


def upstreams(ingresses: tuple[Ingress, ...], services: tuple[Service, ...], pods: tuple[Pod, ...],
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


def backends(ingresses: tuple[Ingress, ...], services: tuple[Service, ...], pods: tuple[Pod, ...],
             topo: Topology) -> list[dict[str, object]]:
    """What the controller POSTs to ``/configuration/backends`` (ingress-nginx's shape, cut
    down): each backend (a Service port an Ingress names) with its ready endpoints and its
    balancer (the first Ingress naming it decides, as in ingress-nginx). Every address and
    port is checked again here: the list reaches nginx's Lua, never its configuration."""
    lb: dict[str, str] = {}
    for ing in ingresses:
        named = [b for b in ([ing.default_backend] if ing.default_backend else [])]
        named += [p.backend for r in ing.rules for p in r.paths]
        for b in named:
            lb.setdefault(upstream_name(ing.namespace, b), ing.load_balance)
    out: list[dict[str, object]] = []
    for name, eps in sorted(upstreams(ingresses, services, pods, topo).items()):
        for e in eps:
            server_address(e.ip, e.port)
        balancer = lb.get(name, "round_robin")
        if balancer not in LOAD_BALANCERS:
            raise UnsafeValue(f"ingress: load-balance {balancer!r} is not one of {', '.join(LOAD_BALANCERS)}")
        out.append({"name": name, "endpoints": [{"address": e.ip, "port": e.port} for e in eps], "load-balance": balancer})
    return out


def cert_paths(run_dir: str, secret: str) -> tuple[str, str]:
    """``certs/NS_NAME.crt`` and ``.key`` for the Secret ``NS/NAME``: both parts are checked
    Kubernetes names, so the file stays in ``certs/``, and '_' is in neither, so no two
    Secrets share a file. NS/NAME can be 317 characters: a long one is shortened (kernelnames)."""
    namespace, _, name = secret.partition("/")
    base = os.path.join(run_dir, CERTS, kernelnames.fit(f"{_name(namespace, 'namespace')}_{_name(name, 'Secret name')}"))
    return base + ".crt", base + ".key"


def render(ingresses: tuple[Ingress, ...], services: tuple[Service, ...], pods: tuple[Pod, ...], topo: Topology,
           secrets: tuple[Secret, ...], run_dir: str) -> tuple[str, dict[str, str]]:
    """The nginx.conf text and the certificate files it names (path -> PEM text).

    Raises :class:`UnsafeValue` for any value that could change the configuration's structure."""
    if not os.path.isabs(run_dir):
        raise UnsafeValue(f"ingress: run directory {run_dir!r} is not an absolute path")
    servers, default = plan_servers(ingresses)
    files: dict[str, str] = {}
    secret_by_key = {s.key: s for s in secrets}
    logs, tmp = os.path.join(run_dir, LOGS), os.path.join(run_dir, TMP)
    lines = [
        "# generated by netns-lab from the scenario's Ingress objects; do not edit",
        "# no 'user' directive: master and workers run unprivileged (netns_lab/services/ingress.py)",
        "# endpoints are not here: the controller POSTs them to /configuration/backends (no reload)",
        *(f"load_module {_q(os.path.join(MODULES, m))};" for m in LUA_MODULES),
        "worker_processes 1;",
        f"pid {_q(os.path.join(logs, 'nginx.pid'))};",
        f"error_log {_q(os.path.join(logs, 'error.log'))} notice;",
        "events { worker_connections 1024; }",
        "http {",
        f"  access_log {_q(os.path.join(logs, 'access.log'))};",
        *(f"  {kind}_temp_path {_q(os.path.join(tmp, kind))};" for kind in TEMP_KINDS),
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
        f"  lua_package_path {_q(os.path.join(run_dir, LUA, '?.lua') + ';;')};",
        f"  lua_shared_dict configuration_data {SHARED_DICT};",
        f'  init_by_lua_block {{ require("{BALANCER}") }}',
        f'  log_by_lua_block {{ require("{BALANCER}").log() }}',
        "  upstream upstream_balancer {",
        "    server 0.0.0.1:1;  # never used: the balancer below picks the endpoint of each request",
        f'    balancer_by_lua_block {{ require("{BALANCER}").balance() }}',
        "  }",
        "  server {  # the controller's configuration endpoint: the pod's loopback only",
        f"    listen 127.0.0.1:{CONFIG_PORT};",
        "    access_log off;",
        f"    client_max_body_size {SHARED_DICT};",
        f"    client_body_buffer_size {SHARED_DICT};",
        f'    location = /configuration/backends {{ content_by_lua_block {{ require("{BALANCER}").configure() }} }}',
        "    location / { return 404; }",
        "  }",
    ]
    default_up = upstream_name(*default) if default else None

    def location_body(upstream: str | None) -> list[str]:
        if upstream is None:
            upstream = default_up
            if upstream is None:
                return [f'return 404 "{DEFAULT_404}\\n";']
        return [f"set $proxy_upstream_name {_q(upstream)};",
                f'rewrite_by_lua_block {{ require("{BALANCER}").rewrite() }}  # no endpoint: 503',
                "proxy_pass http://upstream_balancer;"]

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
                crt, key = (os.path.join(run_dir, CERTS, f"{FAKE_CERT}.{ext}") for ext in ("crt", "key"))
            lines += [f"    ssl_certificate {_q(crt)};", f"    ssl_certificate_key {_q(key)};"]
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
            lines.append(f"    location {_location(match)} {{  # {_comment(loc.source)}")
            lines += [f"      {b}" for b in location_body(loc.upstream)]
            lines.append("    }")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n", files
