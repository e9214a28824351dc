"""networking.k8s.io/v1 Ingress and IngressClass, and v1 Secrets: the API server's rules.

Ingress manifests are the ones users most often copy from old blog posts (removed API
versions, renamed fields, typos), so an Ingress is checked whole and every mistake is
reported, one line each, instead of only the first.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
import ssl
import tempfile
from typing import Any

from netns_lab.controllers.ingress import SAFE_PATH
from netns_lab.errors import ScenarioError, ScenarioErrors
from netns_lab.model import LOAD_BALANCERS, Ingress, IngressBackend, IngressClass, IngressPath, IngressRule, IngressTLS, Secret, Service
from netns_lab.scenario import k8s
from netns_lab.scenario.manifests import metadata
from netns_lab.controllers.system import FAMILIES, family_of
from netns_lab.scenario import openapi
from netns_lab.scenario.openapi import OBJECT_META
from netns_lab.scenario.schema import ANY, INT_OR_STR, STR, ListOf, Obj, collect
from netns_lab.scenario.yamlsrc import Source, join

API = "networking.k8s.io/v1"
LAB_CLASS = "nginx"
LOAD_BALANCE = "nginx.ingress.kubernetes.io/load-balance"
PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")
_RENAMED = {
    "serviceName": f"removed with extensions/v1beta1: in {API} it is service.name",
    "servicePort": f"removed with extensions/v1beta1: in {API} it is service.port.number (or service.port.name)",
}
INGRESS = openapi.kind("io.k8s.api.networking.v1.Ingress", {
    "io.k8s.api.networking.v1.IngressBackend": _RENAMED,
    "io.k8s.api.networking.v1.IngressSpec": {"backend": f"removed with extensions/v1beta1: in {API} it is spec.defaultBackend"},
})
# The removed extensions/v1beta1 shape: a manifest written for it is checked against it, so
# its typos are reported as typos, next to the one message that says how to convert it.
_OLD_BACKEND = Obj("io.k8s.api.extensions.v1beta1.IngressBackend", {"serviceName": STR, "servicePort": INT_OR_STR, "resource": ANY})
INGRESS_V1BETA1 = Obj("io.k8s.api.extensions.v1beta1.Ingress", {
    "apiVersion": STR, "kind": STR, "metadata": OBJECT_META, "status": ANY,
    "spec": Obj("io.k8s.api.extensions.v1beta1.IngressSpec", {
        "ingressClassName": STR,
        "backend": _OLD_BACKEND,
        "rules": ListOf(Obj("io.k8s.api.extensions.v1beta1.IngressRule", {
            "host": STR,
            "http": Obj("io.k8s.api.extensions.v1beta1.HTTPIngressRuleValue", {
                "paths": ListOf(Obj("io.k8s.api.extensions.v1beta1.HTTPIngressPath", {"path": STR, "pathType": STR, "backend": _OLD_BACKEND})),
            }),
        })),
        "tls": ListOf(Obj("io.k8s.api.extensions.v1beta1.IngressTLS", {"hosts": ListOf(STR), "secretName": STR})),
    }),
})
INGRESS_CLASS = openapi.kind("io.k8s.api.networking.v1.IngressClass")
SECRET = openapi.kind("io.k8s.api.core.v1.Secret")
_WILDCARD = re.compile(r"\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")  # fullmatch: no trailing newline
# The API server's own path rules for Exact and Prefix (validateIngressHTTPPath).
_INVALID_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_PATH_SUFFIXES = ("/..", "/.")
# ingress-nginx's strict-validate-path-type (on by default since controller 1.12, after
# CVE-2023-5043/5044 and CVE-2025-1974): Exact and Prefix paths are letters, digits and
# '.', '_', '-', '/' only (internal/ingress/inspector/rules.go, validPathType).
STRICT_PATH = re.compile(r"/[A-Za-z0-9._\-/]*")
# ImplementationSpecific reaches nginx.conf too (ingress-nginx's CVE-2021-25742 class); the lab
# serves it as a plain prefix, so it gets RFC 3986 path characters without any that mean
# something to nginx's configuration parser: no quotes, whitespace, control characters, ';',
# '{', '}', '$' (variables), '#' (comments) or '\\' (escapes).
SPECIFIC_PATH = SAFE_PATH  # one definition, the renderer's


def quoted(value: str) -> str:
    """``value`` in double quotes with control characters escaped, as the API server's
    ``Invalid value: "..."`` (Go's %q) shows it: a hostile newline is seen, not obeyed."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085")


def path_errors(path: str, path_type: str) -> list[str]:
    """Why ``path`` cannot be used with ``path_type`` (the API server's rules, then
    ingress-nginx's strict ones); empty when it can. The renderer checks SAFE_PATH again."""
    if not path.startswith("/"):
        return ["must be an absolute path"]
    errs: list[str] = []
    if path_type in ("Exact", "Prefix"):
        errs += [f"must not contain '{seq}'" for seq in _INVALID_PATH_SEQUENCES if seq in path]
        errs += [f"cannot end with '{suffix}'" for suffix in _INVALID_PATH_SUFFIXES if path.endswith(suffix)]
        if not errs and not STRICT_PATH.fullmatch(path):
            errs.append(f"cannot be used with pathType {path_type} (ingress-nginx's strict-validate-path-type allows only "
                        "letters, digits, '/', '.', '_' and '-')")
    elif not SPECIFIC_PATH.fullmatch(path):
        errs.append(f"cannot be used with pathType {path_type}: the lab's ingress-nginx serves it as a plain prefix of letters, "
                    "digits and -._~/!&()*+,=:@% (no whitespace, quotes, control characters, ';', '{', '}', '$', '#' or '\\')")
    return errs


def ingress_version_error(src: Source, base: str, version: str) -> ScenarioError:
    """Removed or misspelled apiVersion for kind Ingress: what to write instead."""
    removed = version in ("extensions/v1beta1", "networking.k8s.io/v1beta1")
    why = "removed in Kubernetes 1.22" if removed else "no such API version"
    return src.error(join(base, "apiVersion"), f'Invalid value: "{version}": no matches for kind "Ingress" in version "{version}" '
                     f"({why}): use apiVersion {API}, where backend.serviceName is backend.service.name, "
                     "backend.servicePort is backend.service.port.number (or .name), and every path needs a pathType")


def _host_errors(src: Source, path: str, host: str) -> list[ScenarioError]:
    """A host is a DNS-1123 subdomain or a one-label wildcard (``*.example.com``), never an
    IP address; it becomes an nginx ``server_name``, so nothing else may pass."""
    try:
        ipaddress.ip_address(host)
        return [src.error(path, f"Invalid value: {quoted(host)}: must be a DNS name, not an IP address")]
    except ValueError:
        pass
    if host.startswith("*"):
        errs = [] if _WILDCARD.fullmatch(host) else [
            "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of "
            "lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com')"]
        if len(host) > 253:
            errs.insert(0, "must be no more than 253 characters")
    else:
        errs = k8s.dns1123_subdomain(host)
    return [src.error(path, f'Invalid value: {quoted(host)}: {"; ".join(errs)}')] if errs else []


def _backend(src: Source, raw: dict[str, Any], path: str, errors: list[ScenarioError]) -> IngressBackend | None:
    svc = raw.get("service")
    if raw.get("resource") is not None:
        if svc:
            errors.append(src.error(path, "Invalid value: cannot set both service and resource backends"))
        else:
            errors.append(src.error(join(path, "resource"), "Unsupported value: resource backends are served by none of the lab's controllers"))
        return None
    if not svc:
        errors.append(src.error(join(path, "service"), "Required value: service or resource is required"))
        return None
    name = svc.get("name")
    if not name:
        errors.append(src.error(join(path, "service.name"), "Required value"))
    else:
        errs = k8s.dns1035_label(name) if isinstance(name, str) else []  # another type: the schema says so
        if errs:
            errors.append(src.error(join(path, "service.name"), f'Invalid value: {quoted(str(name))}: {"; ".join(errs)}'))
    port = svc.get("port") or {}
    number, pname = port.get("number"), port.get("name")
    ppath = join(path, "service.port")
    if number is not None and pname:
        errors.append(src.error(ppath, "Invalid value: cannot set both port name & port number"))
    elif number is None and not pname:
        errors.append(src.error(ppath, "Required value: port name or number is required"))
    elif number is not None and not 1 <= number <= 65535:
        errors.append(src.error(join(ppath, "number"), f"Invalid value: {number}: must be between 1 and 65535, inclusive"))
    elif pname and isinstance(pname, str) and (errs := k8s.port_name(pname)):  # IANA_SVC_NAME, as the API server checks
        errors.append(src.error(join(ppath, "name"), f'Invalid value: {quoted(pname)}: {"; ".join(errs)}'))
    return IngressBackend(name or "", number, pname or None)


def _hosts(src: Source, spec: dict[str, Any], spath: str) -> list[ScenarioError]:
    """Host rules shared by every version: rules[].host and tls[].hosts are DNS names."""
    out: list[ScenarioError] = []
    for i, rule in enumerate(spec.get("rules") if isinstance(spec.get("rules"), list) else []):
        if isinstance(rule, dict) and isinstance(rule.get("host"), str) and rule["host"]:
            out += _host_errors(src, join(join(join(spath, "rules"), i), "host"), rule["host"])
    for i, t in enumerate(spec.get("tls") if isinstance(spec.get("tls"), list) else []):
        for j, h in enumerate((t.get("hosts") or []) if isinstance(t, dict) else []):
            if isinstance(h, str):
                out += _host_errors(src, join(join(join(join(spath, "tls"), i), "hosts"), j), h)
    return out


def _raise(errors: list[ScenarioError]) -> None:
    errors.sort(key=lambda e: e.line or 0)
    raise ScenarioErrors.of(errors)


def parse_ingress(src: Source, obj: dict[str, Any], base: str) -> Ingress:
    version = str(obj.get("apiVersion"))
    spec_raw = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if version != API:  # one message for the version, then the manifest's own mistakes
        errors = [ingress_version_error(src, base, version), *collect(INGRESS_V1BETA1, src, obj, base),
                  *_hosts(src, spec_raw, join(base, "spec"))]
        _raise(errors)
    errors = collect(INGRESS, src, obj, base)
    if errors:  # the API server decodes (types, fields) before it validates meaning: a wrong type ends here
        _raise(errors)
    try:
        name, namespace, labels = metadata(src, obj, base, namespaced=True)
        errs = k8s.dns1123_subdomain(name)
        if errs:
            errors.append(src.error(join(base, "metadata.name"), f'Invalid value: "{name}": {"; ".join(errs)}'))
    except ScenarioError as exc:
        errors.append(exc)
        name, namespace = "", "default"
    spath = join(base, "spec")
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    default = None
    if isinstance(spec.get("defaultBackend"), dict):
        default = _backend(src, spec["defaultBackend"], join(spath, "defaultBackend"), errors)
    rules: list[IngressRule] = []
    raw_rules = spec.get("rules") if isinstance(spec.get("rules"), list) else []
    if not raw_rules and default is None and not spec.get("backend"):
        errors.append(src.error(spath, "Invalid value: either `defaultBackend` or `rules` must be specified"))
    for i, rule in enumerate(raw_rules):
        rpath = join(join(spath, "rules"), i)
        if not isinstance(rule, dict):
            continue
        host = rule.get("host") or None
        paths: list[IngressPath] = []
        http = rule.get("http") if isinstance(rule.get("http"), dict) else None
        if http is not None:
            raw_paths = http.get("paths") if isinstance(http.get("paths"), list) else []
            if not raw_paths:
                errors.append(src.error(join(rpath, "http.paths"), "Required value"))
            for j, p in enumerate(raw_paths):
                ppath = join(join(rpath, "http.paths"), j)
                if not isinstance(p, dict):
                    continue
                ptype = p.get("pathType")
                path = p.get("path") or ("/" if ptype == "ImplementationSpecific" else "")
                if not ptype:
                    errors.append(src.error(join(ppath, "pathType"), "Required value: pathType must be specified"))
                elif ptype not in PATH_TYPES:
                    errors.append(src.error(join(ppath, "pathType"), f'Unsupported value: "{ptype}": supported values: '
                                            + ", ".join(f'"{t}"' for t in PATH_TYPES)))
                if not isinstance(path, str) or not path.startswith("/"):
                    errors.append(src.error(join(ppath, "path"), f"Invalid value: {quoted(str(path))}: must be an absolute path"))
                elif ptype in PATH_TYPES:  # every rule broken, one line each, as the API server lists them
                    errors += [src.error(join(ppath, "path"), f"Invalid value: {quoted(path)}: {why}") for why in path_errors(path, ptype)]
                backend = _backend(src, p["backend"], join(ppath, "backend"), errors) if isinstance(p.get("backend"), dict) else None
                if p.get("backend") is None:
                    errors.append(src.error(join(ppath, "backend"), "Required value"))
                if backend is not None and ptype in PATH_TYPES and isinstance(path, str):
                    paths.append(IngressPath(path, ptype, backend))
        rules.append(IngressRule(host if isinstance(host, str) else None, tuple(paths)))
    tls: list[IngressTLS] = []
    for i, t in enumerate(spec.get("tls") if isinstance(spec.get("tls"), list) else []):  # its hosts are checked by _hosts
        if not isinstance(t, dict):
            continue
        hosts = [h for h in (t.get("hosts") or []) if isinstance(h, str)]
        secret_name = t.get("secretName") or None
        if isinstance(secret_name, str) and (errs := k8s.dns1123_subdomain(secret_name)):  # validateTLSSecretName
            errors.append(src.error(join(join(join(spath, "tls"), i), "secretName"), f'Invalid value: {quoted(secret_name)}: {"; ".join(errs)}'))
        tls.append(IngressTLS(tuple(hosts), secret_name))
    class_name = spec.get("ingressClassName") if isinstance(spec.get("ingressClassName"), str) else None
    errors += _hosts(src, spec, spath)
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    load_balance = annotations.get(LOAD_BALANCE, "round_robin") if isinstance(annotations, dict) else "round_robin"
    if load_balance not in LOAD_BALANCERS:  # ingress-nginx's annotation parser refuses the rest
        errors.append(src.error(join(join(base, "metadata.annotations"), LOAD_BALANCE),
                                f"Unsupported value: {quoted(str(load_balance))}: supported values: "
                                + ", ".join(f'"{v}"' for v in LOAD_BALANCERS)))
    if errors:
        _raise(errors)
    return Ingress(name, namespace, class_name, default, tuple(rules), tuple(tls), labels, load_balance)


def parse_ingress_class(src: Source, obj: dict[str, Any], base: str) -> IngressClass:
    INGRESS_CLASS.check(src, obj, base)
    name, _ns, labels = metadata(src, obj, base, namespaced=False)
    controller = (obj.get("spec") or {}).get("controller")
    if not controller:
        raise src.error(join(base, "spec.controller"), "Required value")
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return IngressClass(name, controller, annotations.get("ingressclass.kubernetes.io/is-default-class") == "true", labels)


def parse_secret(src: Source, obj: dict[str, Any], base: str) -> Secret:
    SECRET.check(src, obj, base)
    name, namespace, labels = metadata(src, obj, base, namespaced=True)
    errs = k8s.dns1123_subdomain(name)
    if errs:
        raise src.error(join(base, "metadata.name"), f'Invalid value: "{name}": {"; ".join(errs)}')
    stype = obj.get("type") or "Opaque"
    data: dict[str, str] = {}
    for key, value in (obj.get("data") or {}).items():
        try:
            data[key] = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise src.error(join(join(base, "data"), key), "Invalid value: must be base64-encoded text (data holds base64; "
                            "stringData takes plain text)") from None
    data.update(obj.get("stringData") or {})
    if stype == "kubernetes.io/tls":
        for key in ("tls.crt", "tls.key"):
            if key not in data:
                raise src.error(join(base, f"data[{key}]"), "Required value")
        problem = tls_pair_problem(data["tls.crt"], data["tls.key"], data.get("ca.crt"))
        if problem:
            raise src.error(join(base, "data"), f"Invalid value: {problem}")
    return Secret(name, namespace, stype, tuple(sorted(data.items())), labels)


def tls_pair_problem(cert: str, key: str, ca: str | None = None) -> str | None:
    """Why a certificate/key pair is unusable (does not parse, or the key is not the
    certificate's), or None. OpenSSL itself decides, through the ssl module."""
    with tempfile.TemporaryDirectory() as tmp:
        cpath, kpath = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
        with open(cpath, "w") as fh:
            fh.write(cert)
        with open(kpath, "w") as fh:
            fh.write(key)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cpath, kpath)
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            if "KEY_VALUES_MISMATCH" in reason.upper():
                return "tls.key is not the private key of the certificate in tls.crt"
            return f"tls.crt / tls.key do not parse as a PEM certificate and private key ({reason})"
        if ca:
            try:
                ssl.create_default_context(cadata=ca)
            except ssl.SSLError as exc:
                return f"ca.crt does not parse as a PEM certificate ({exc.reason or exc})"
    return None


def check_ingress_refs(ing: Ingress, src: Source, base: str, services: tuple[Service, ...], secrets: dict[str, Secret],
                        classes: dict[str, IngressClass]) -> None:
    """What an Ingress points at must exist: its class (served by one of the lab's controllers),
    each backend Service and port, and each TLS Secret (of type kubernetes.io/tls)."""
    spath = join(base, "spec")
    if ing.class_name is None and len([c for c in classes.values() if c.default]) > 1:
        raise src.error(join(spath, "ingressClassName"), "Forbidden: more than one IngressClass is marked as the default "
                        "(ingressclass.kubernetes.io/is-default-class): name one")
    if family_of(ing, classes) is None:
        cls = classes.get(ing.class_name or "")
        why = "does not exist" if cls is None else f"belongs to controller {cls.controller}, which the lab does not run"
        served = "; ".join(f"{f.controller} ({f.namespace}/{f.pod})" for f in FAMILIES)
        raise src.error(join(spath, "ingressClassName"), f'Not found: "{ing.class_name}": this IngressClass {why}; the lab runs '
                        f'{served}, and class "{LAB_CLASS}" is ingress-nginx\'s without an IngressClass')
    by_key = {s.key: s for s in services}
    backends = [("defaultBackend", ing.default_backend)] if ing.default_backend else []
    for i, rule in enumerate(ing.rules):
        backends += [(f"rules[{i}].http.paths[{j}].backend", p.backend) for j, p in enumerate(rule.paths)]
    for where, b in backends:
        bpath = join(spath, where)
        svc = by_key.get(f"{ing.namespace}/{b.service}")
        if svc is None:
            raise src.error(join(bpath, "service.name"), f'Not found: service "{b.service}" in namespace "{ing.namespace}"')
        if b.port_number is not None and all(p.port != b.port_number for p in svc.ports):
            raise src.error(join(bpath, "service.port.number"), f'Not found: {b.port_number}: service "{b.service}" has no such port '
                            f"(ports: {', '.join(str(p.port) for p in svc.ports) or 'none'})")
        if b.port_name is not None and all(p.name != b.port_name for p in svc.ports):
            raise src.error(join(bpath, "service.port.name"), f'Not found: "{b.port_name}": service "{b.service}" has no port of that name')
    for i, t in enumerate(ing.tls):
        if t.secret_name is None:
            continue
        secret = secrets.get(f"{ing.namespace}/{t.secret_name}")
        tpath = join(join(join(spath, "tls"), i), "secretName")
        if secret is None:
            raise src.error(tpath, f'Not found: secret "{t.secret_name}" in namespace "{ing.namespace}"')
        if secret.type != "kubernetes.io/tls":
            raise src.error(tpath, f'Invalid value: "{t.secret_name}": secret type is {secret.type}, must be kubernetes.io/tls')
