"""HAProxy as an ingress controller, as haproxy-ingress configures it (pure): the Ingresses of
its classes -> ``haproxy.cfg``, and each backend's *server slots*.

Kubernetes' rules, on HAProxy's terms (the same 20-row table as nginx passes, tests/test_ingress.py):

* one frontend on :80 and :443 (TLS: one ``crt-list``, a certificate per host by SNI, the
  fake certificate first, so it answers what matches no host);
* a host is matched on the Host header without its port, lower-cased; ``*.example.com``
  matches exactly one label. A host named by some rule gets only its own rules (and the
  default backend); other hosts get the rules without a host;
* for one host, the longest matching path wins and Exact beats Prefix of the same length:
  the ``use_backend`` lines are written longest path first, Exact before Prefix; ``Prefix
  /foo`` is ``path /foo`` or ``path_beg /foo/`` (element-wise: not ``/foobar``);
  ImplementationSpecific is a plain ``path_beg``;
* no match: the default backend (the first ``spec.defaultBackend``) or a built-in 404;
* hosts listed under ``tls`` redirect plain HTTP with a 308; ``X-Forwarded-For`` is added
  (``option forwardfor``), ``X-Forwarded-Proto`` says https behind TLS.

Endpoints are not rendered into fixed lines: each backend has *slots* (``server s1 ...``),
a multiple of :data:`SLOTS_STEP` at least as many as its endpoints; an endpoint change fills
or empties slots through HAProxy's runtime API (``set server B/S addr A port P`` then
``state ready``; an emptied slot goes to ``state maint``), as haproxy-ingress does, and only
a backend that outgrows its slots needs a reload (with more slots). :func:`slot_changes`
plans that, keeping every endpoint that stays in its slot.

Nothing from a scenario becomes a directive: names and hosts must be Kubernetes names and DNS
names, paths the same safe set nginx's renderer allows (``SAFE_PATH``), and each reaches the
file as an ACL *value*, never as part of a keyword; anything else raises :class:`UnsafeValue`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from netns_lab.controllers.ingress import (
    DEFAULT_404,
    UnsafeValue,
    check_host,
    check_path,
    server_address,
    upstreams,
    cert_paths,
    plan_servers,
    upstream_name,
)
from netns_lab.controllers.endpoints import Endpoint
from netns_lab.controllers.topology import Topology
from netns_lab.model import Ingress, Pod, Secret, Service

SLOTS_STEP = 4  # slots per backend grow in steps of this (haproxy-ingress: backend-server-slots-increment)
CERTS, LOGS = "certs", "logs"  # root's certificates (given to haproxy's user) and haproxy's own directory
FAKE = "default-fake"  # the certificate for unknown names (ingress-nginx's "Fake Certificate"), first in the crt-list
ADMIN_SOCKET = "admin.sock"  # under LOGS: the worker's runtime API (expose-fd listeners: seamless reloads)
MASTER_SOCKET = "master.sock"  # under LOGS: the master's CLI (-S), which the lab uses: "@1 CMD" reaches the current worker
NO_BACKEND = "be_default_404"
_BACKEND = re.compile(r"[a-z0-9][-a-z0-9._]*")

Slots = tuple[tuple[str, int] | None, ...]  # per slot: the endpoint it serves, or None (maint)


@dataclass(frozen=True)
class Route:
    host: str  # "_" for rules without a host
    path_type: str
    path: str
    backend: str


def _backend(name: str) -> str:
    """A backend name: ``upstream_name`` joins checked Kubernetes names with '_'; checked again."""
    if not _BACKEND.fullmatch(name):
        raise UnsafeValue(f"ingress: backend {name!r} is not NS_SERVICE_PORT; refusing to write it into haproxy.cfg")
    return name


def _acl_host(host: str) -> str:
    """The condition on ``var(txn.host)`` for ``host`` (already checked by :func:`_host`)."""
    if host.startswith("*."):  # exactly one label: a regex built from [a-z0-9.-] only
        return "{ var(txn.host) -m reg ^[^.]+" + host[1:].replace(".", "\\.") + "$ }"
    return "{ var(txn.host) -m str " + host + " }"


def _acl_paths(path_type: str, path: str) -> list[str]:
    """One or two conditions (alternatives) for one Kubernetes path."""
    if path_type == "Exact":
        return ["{ path -m str " + path + " }"]
    if path_type == "ImplementationSpecific":
        return ["{ path -m beg " + path + " }"]
    p = path.rstrip("/") or "/"
    if p == "/":
        return [""]
    return ["{ path -m str " + p + " }", "{ path -m beg " + p + "/ }"]


def _order(r: Route) -> tuple[int, int]:
    """Longest path first; Exact before Prefix of the same length (Kubernetes' tie rule)."""
    length = len(r.path.rstrip("/") or "/") if r.path_type == "Prefix" else len(r.path)
    return (-length, 0 if r.path_type == "Exact" else 1)


def slot_count(endpoints: int) -> int:
    return max(SLOTS_STEP, math.ceil(endpoints / SLOTS_STEP) * SLOTS_STEP)


def slot_changes(current: Slots, endpoints: tuple[Endpoint, ...]) -> tuple[Slots, list[tuple[int, tuple[str, int] | None]]] | None:
    """The slots after ``endpoints`` replace what ``current`` serves, and the slots that change
    (index, new endpoint or None), or None when they do not fit (a reload with more slots).
    An endpoint that stays keeps its slot: its open connections are not disturbed."""
    want = [(e.ip, e.port) for e in endpoints]
    if len(set(want)) > len(current):
        return None
    keep = set(want)
    new: list[tuple[str, int] | None] = [s if s in keep else None for s in current]
    placed = {s for s in new if s is not None}
    for ep in want:
        if ep not in placed:
            new[new.index(None)] = ep
            placed.add(ep)
    return tuple(new), [(i, new[i]) for i in range(len(new)) if new[i] != current[i]]


def fresh_slots(endpoints: tuple[Endpoint, ...], size: int = 0) -> Slots:
    eps = list(dict.fromkeys((e.ip, e.port) for e in endpoints))
    return tuple(eps + [None] * (max(size, slot_count(len(eps))) - len(eps)))


def routes(ingresses: tuple[Ingress, ...]) -> tuple[list[Route], str | None, dict[str, str | None]]:
    """Every (host, path) rule in matching order, the default backend, and each host's TLS
    Secret (NS/NAME, or None for a host without TLS)."""
    servers, default = plan_servers(ingresses)
    out: list[Route] = []
    tls: dict[str, str | None] = {}
    for host, server in servers.items():
        tls[host] = server.tls_secret
        for ptype, path, backend in server.paths:
            out.append(Route(host, ptype, check_path(path, ptype), backend))
    # exact hosts, then wildcards, then the rules without a host; in each, Kubernetes' order
    out.sort(key=lambda r: ((r.host == "_") * 2 + r.host.startswith("*."), r.host, *_order(r)))
    return out, (upstream_name(*default) if default else None), tls


def backends(ingresses: tuple[Ingress, ...], services: tuple[Service, ...], pods: tuple[Pod, ...],
             topo: Topology) -> dict[str, tuple[Endpoint, ...]]:
    """Backend name -> its ready endpoints (each address checked)."""
    ups = upstreams(ingresses, services, pods, topo)
    for eps in ups.values():
        for e in eps:
            server_address(e.ip, e.port)
    return ups


_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
_KEY = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)


def pem_bundle(secret: Secret) -> str:
    """What HAProxy reads for a TLS Secret: the certificates of ``tls.crt`` (only those: a key
    pasted there too would be the one HAProxy takes) and the first private key of ``tls.key``."""
    certs = _CERT.findall(secret.get("tls.crt") or "")
    key = _KEY.search(secret.get("tls.key") or "")
    if not certs or key is None:
        raise UnsafeValue(f"ingress: secret {secret.key} has no PEM certificate and private key")
    return "\n".join(certs) + "\n" + key.group(0) + "\n"


def _server(i: int, slot: tuple[str, int] | None) -> str:
    if slot is None:  # an empty slot: an address HAProxy accepts, never used while in maint
        return f"    server s{i + 1} 127.0.0.1:1 disabled"
    return f"    server s{i + 1} {server_address(*slot)}"


def render(ingresses: tuple[Ingress, ...], slots: dict[str, Slots], secrets: tuple[Secret, ...],
           run_dir: str) -> tuple[str, dict[str, str]]:
    """``haproxy.cfg`` and the files it names (crt-list and PEM bundles: path -> text)."""
    if not os.path.isabs(run_dir):
        raise UnsafeValue(f"ingress: run directory {run_dir!r} is not an absolute path")
    rules, default, tls_of = routes(ingresses)
    by_key = {s.key: s for s in secrets}
    certs, logs = os.path.join(run_dir, CERTS), os.path.join(run_dir, LOGS)
    files: dict[str, str] = {}
    crt_list = [os.path.join(certs, f"{FAKE}.pem")]
    tls_hosts: list[str] = []
    for host, secret in sorted(tls_of.items()):
        if host == "_" or secret is None or secret not in by_key:
            continue
        tls_hosts.append(check_host(host))
        crt, _key = cert_paths(run_dir, secret)
        pem = crt.removesuffix(".crt") + ".pem"
        files[pem] = pem_bundle(by_key[secret])
        crt_list.append(f"{pem} {host}")
    files[os.path.join(certs, "crt-list")] = "\n".join(crt_list) + "\n"
    for path in files:
        if any(c in path for c in " \n\t#\\'\""):
            raise UnsafeValue(f"ingress: file {path!r} cannot be named in haproxy.cfg")
    lines = [
        "# generated by netns-lab from the Ingresses of HAProxy's classes; do not edit",
        "# endpoints change through the runtime API (set server ... addr/state), not this file",
        "global",
        f"    pidfile {os.path.join(logs, 'haproxy.pid')}",
        f"    stats socket {os.path.join(logs, ADMIN_SOCKET)} mode 600 level admin expose-fd listeners",
        "    maxconn 4096",
        "    hard-stop-after 30s",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    option forwardfor",
        "    option redispatch",
        "    retries 2",
        "frontend ingress",
        "    bind :80",
        f"    bind :443 ssl crt-list {os.path.join(certs, 'crt-list')}",
        "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower",
        "    http-request del-header X-Real-IP  # a client's own would pass for the client address",
        "    http-request set-header X-Forwarded-Proto https if { ssl_fc }",
        "    http-request set-header X-Forwarded-Proto http if !{ ssl_fc }",
    ]
    for host in tls_hosts:
        lines.append(f"    http-request redirect scheme https code 308 if !{{ ssl_fc }} {_acl_host(host)}")
    fallback = default or NO_BACKEND
    by_host: dict[str, list[Route]] = {}
    for r in rules:
        by_host.setdefault(r.host, []).append(r)
    # Every host an Ingress names (in a rule or only under tls) is nginx's server block of its
    # own: its rules, then its unmatched paths to the default backend, before any other host's
    # rules can see the request. Exact hosts before wildcards; the rules without a host last.
    for host in sorted((h for h in tls_of if h != "_"), key=lambda h: (h.startswith("*."), h)):
        cond = _acl_host(check_host(host))
        for r in by_host.get(host, []):
            lines += [f"    use_backend {_backend(r.backend)} if {cond} {p}".rstrip() for p in _acl_paths(r.path_type, r.path)]
        lines.append(f"    use_backend {fallback} if {cond}")
    for r in by_host.get("_", []):
        lines += [f"    use_backend {_backend(r.backend)} if {p}" if p else f"    use_backend {_backend(r.backend)}"
                  for p in _acl_paths(r.path_type, r.path)]
    lines.append(f"    default_backend {fallback}")
    lines += [f"backend {NO_BACKEND}", f'    http-request return status 404 content-type text/plain string "{DEFAULT_404}\\n"']
    named = {r.backend for r in rules} | ({default} if default else set())
    for name in sorted(named | set(slots)):
        lines += [f"backend {_backend(name)}", "    balance roundrobin"]
        lines += [_server(i, s) for i, s in enumerate(slots.get(name) or fresh_slots(()))]
    return "\n".join(lines) + "\n", files
