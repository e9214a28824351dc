"""The ``checks:`` section: what the user expects the network to do, validated up front.

Every reference (``pod/X``, ``node/X``) must name an object of the scenario, so a typo in a
check is a load-time error (exit 2), not a confusing failure after a minute of building.
So is a check that cannot mean anything: a port outside 1-65535 (or spelled in non-ASCII
digits), a name no resolver can send, expectations no outcome meets (``result: refused``
with ``servedBy``), an option its kind of check never reads (``protocol`` on a ping).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from netns_lab.model import Check, ClusterConfig, Expect, ObjectRef, Pod, Service
from netns_lab.store import Objects
from netns_lab.scenario import k8s
from netns_lab.events import describe_all
from netns_lab.scenario.admission import admit
from netns_lab.scenario.schema import ANY, BOOL, INT, INT_OR_STR, STR, ListOf, MapOf, Obj
from netns_lab.scenario.reachability import parse_reachability
from netns_lab.scenario.steps import is_step, parse_step
from netns_lab.scenario.yamlsrc import Source, join

EXPECT = Obj("netns-lab/v1 Check.expect", {"result": STR, "servedBy": ANY, "clientIP": STR, "answers": ListOf(INT_OR_STR),
                                            "status": INT, "body": STR})
CHECK = Obj(
    "netns-lab/v1 Check",
    {
        "name": STR,
        "from": STR,
        "connect": STR,
        "ping": STR,
        "matrix": STR,
        "resolve": STR,
        "type": STR,
        "env": MapOf(ANY),
        "protocol": STR,
        "count": INT,
        "expect": EXPECT,
        "http": STR,
        "address": STR,
        "ca": STR,
        "insecure": BOOL,
        "family": STR,
        "apply": ANY,  # steps (scenario/steps.py): listed so a misspelling gets its "did you mean"
        "delete": ANY,
        "label": ANY,
        "reachability": ANY,  # its own shape (scenario/reachability.py)
    },
)

# Applied with fullmatch (``$`` would accept a trailing newline). ASCII only: ``\d`` would
# also match "٨٠", which int() reads as 80.
_QUERY_NAME = re.compile(r"[A-Za-z0-9_](?:[-A-Za-z0-9_]{0,62})(?:\.[A-Za-z0-9_](?:[-A-Za-z0-9_]{0,62}))*\.?")
MAX_NAME = 253  # a DNS name, without its trailing dot (RFC 1035: 255 octets on the wire)
ACTIONS = ("connect", "ping", "matrix", "resolve", "env", "http")  # and reachability (scenario/reachability.py)
# scheme, host, port (ASCII digits), path (printable ASCII, no space, no fragment)
_URL = re.compile(r'(https?)://([^/:?#]+)(?::([^/]*))?(/[!-"$-~]*)?')
# What each kind of check reads besides name, from and its own key: anything else set on it
# could not change what is probed or judged, so it is refused rather than silently ignored.
OPTIONS = {
    "connect": ("protocol", "count", "expect", "family"),
    "ping": ("count", "expect", "family"),
    "matrix": ("protocol", "family"),
    "resolve": ("type", "protocol", "expect"),
    "env": (),
    "http": ("address", "ca", "insecure", "count", "expect", "family"),
}
FAMILIES = {"ipv4": 4, "ipv6": 6}
RESOLVE_RESULTS = ("ok", "nxdomain", "refused", "servfail", "timeout", "failed")
RECORD_TYPES = ("A", "AAAA", "SRV", "CNAME", "PTR", "TXT")
CONNECT_RESULTS = ("ok", "refused", "timeout", "unreachable", "failed")
PING_RESULTS = ("reply", "no-reply")
PROTOCOLS = ("tcp", "udp", "http")
MATRICES = ("pod-to-pod", "node-to-pod", "pod-to-node")
SOURCE_KINDS = ("pod", "node", "external")
TARGET_KINDS = ("pod", "node", "service", "loadbalancer")
VALUE_KINDS = ("pod", "node", "service", "loadbalancer", "external")


class Refs:
    """Resolves ``kind/[ns/]name`` strings against the objects of one scenario."""

    def __init__(self, cluster: ClusterConfig, pods: tuple[Pod, ...], services: tuple[Service, ...] = (),
                 secrets: tuple[str, ...] = ()) -> None:
        self.cluster = cluster
        self.nodes = set(cluster.nodes)
        self.secrets = set(secrets)
        self.pods = {p.key for p in pods}
        self.pod_objects = {p.key: p for p in pods}
        self.services = {s.key: s for s in services}
        self.clients = set(cluster.external.clients)

    def parse(self, src: Source, path: str, text: str, kinds: tuple[str, ...], allow_ip: bool = False,
              allow_name: bool = False, query_name: bool = False) -> ObjectRef:
        if allow_name and "/" not in text and text != "external":
            try:
                return ObjectRef("ip", str(ipaddress.ip_address(text)))
            except ValueError:
                pass
            if query_name:  # any DNS question name: SRV labels have underscores
                if not _QUERY_NAME.fullmatch(text):
                    raise src.error(path, f'Invalid value: "{text}": not a DNS name (labels of letters, digits, "-" and "_", '
                                          'at most 63 characters each, separated by dots)')
                if len(text.rstrip(".")) > MAX_NAME:
                    raise src.error(path, f'Invalid value: "{text}": must be no more than {MAX_NAME} characters')
            else:
                errs = k8s.host_name(text.lower().rstrip("."))
                if errs:
                    raise src.error(path, f'Invalid value: "{text}": not a host name: {"; ".join(errs)}')
            return ObjectRef("name", text)
        if allow_ip:
            try:
                return ObjectRef("ip", str(ipaddress.ip_address(text)))
            except ValueError:
                pass
        if text == "external" and "external" in kinds:
            return ObjectRef("external", "external")
        kind, sep, rest = text.partition("/")
        if kind == "external" and "external" in kinds and sep:
            if rest not in self.clients:
                raise src.error(path, f'Not found: "{text}": no external client "{rest}" (cluster.external.clients)')
            return ObjectRef("external", rest)
        if not sep or kind not in kinds or not rest:
            want = " or ".join(f"{k}/NAME" for k in kinds) + (" or an IP address" if allow_ip else "")
            hint = ""
            if not sep and allow_ip:
                hint = " (names are looked up by cluster DNS, which this lab does not run yet: use service/NAME)"
            raise src.error(path, f'Invalid value: "{text}": must be {want}{hint}')
        if kind == "node":
            if rest not in self.nodes:
                raise src.error(path, f'Not found: "{text}": no node named "{rest}" in the cluster')
            return ObjectRef("node", rest)
        ns, _, name = rest.rpartition("/")
        ns = ns or "default"
        if kind == "secret" and f"{ns}/{name}" not in self.secrets:
            raise src.error(path, f'Not found: "{text}": no secret "{name}" in namespace "{ns}"')
        if kind == "pod" and f"{ns}/{name}" not in self.pods:
            raise src.error(path, f'Not found: "{text}": no pod "{name}" in namespace "{ns}"')
        if kind == "service":
            svc = self.services.get(f"{ns}/{name}")
            if svc is None:
                raise src.error(path, f'Not found: "{text}": no service "{name}" in namespace "{ns}"')
            if svc.headless:
                raise src.error(path, f'Invalid value: "{text}": a headless Service has no clusterIP to connect to')
        if kind == "loadbalancer":
            svc = self.services.get(f"{ns}/{name}")
            if svc is None:
                raise src.error(path, f'Not found: "{text}": no service "{name}" in namespace "{ns}"')
            if svc.type != "LoadBalancer":
                raise src.error(path, f'Invalid value: "{text}": service "{name}" is of type {svc.type}, it has no load-balancer IP')
        return ObjectRef(kind, name, ns)


def _action(src: Source, raw: dict[str, Any], path: str) -> str:
    present = [a for a in ACTIONS if raw.get(a) is not None]
    if len(present) != 1:
        what = "none" if not present else ", ".join(present)
        raise src.error(path, f"Invalid value: a check needs exactly one of {', '.join(ACTIONS)} (got {what})")
    return present[0]


def parse_checks(src: Source, raw: Any, path: str, refs: Refs, objects: Objects | None = None) -> tuple[Check, ...]:
    """The checks, and the steps between them (admitted against ``objects`` as they will be
    at that point, so the checks after a step see what it made)."""
    if raw is None:
        return ()
    ListOf(ANY).check(src, raw, path)
    out: list[Check] = []
    for i, item in enumerate(raw):
        cpath = join(path, i)
        if objects is not None and is_step(item):
            verb, actions = parse_step(src, item, cpath)
            objects = admit(objects, actions)
            refs = Refs(objects.cluster, objects.pods, objects.services, tuple(s.key for s in objects.secrets))
            out.append(Check(item.get("name") or describe_all(actions), verb, change=actions))
            continue
        if isinstance(item, dict) and item.get("reachability") is not None:
            out.append(parse_reachability(src, item, cpath, refs.pod_objects))
            continue
        CHECK.check(src, item, cpath)
        action = _action(src, item, cpath)
        _options(src, item, cpath, action)
        name = item.get("name") or ""
        protocol = item.get("protocol")
        if protocol is None:
            protocol = "tcp"
        allowed_protocols = ("tcp", "udp") if action == "resolve" else PROTOCOLS
        if protocol not in allowed_protocols:
            raise src.error(join(cpath, "protocol"), f'Unsupported value: "{protocol}": supported values: {", ".join(allowed_protocols)}')
        count = item.get("count")
        if count is None:  # null means unset, as everywhere in a manifest
            count = 1
        if not 1 <= count <= 10000:
            raise src.error(join(cpath, "count"), f"Invalid value: {count}: must be between 1 and 10000, inclusive")
        source = target = None
        port = None
        matrix = None
        if action == "matrix":
            matrix = item["matrix"]
            if matrix not in MATRICES:
                raise src.error(join(cpath, "matrix"), f'Unsupported value: "{matrix}": supported values: {", ".join(MATRICES)}')
            if item.get("from") is not None:
                raise src.error(join(cpath, "from"), "Forbidden: a matrix check runs from every pod or node")
        else:
            if item.get("from") is None:
                raise src.error(join(cpath, "from"), "Required value")
            source = refs.parse(src, join(cpath, "from"), item["from"], SOURCE_KINDS)
        if action == "connect":
            host, sep, port_s = item["connect"].rpartition(":")
            port = _port(port_s) if sep else None
            if port is None:
                raise src.error(join(cpath, "connect"), f'Invalid value: "{item["connect"]}": must be HOST:PORT with PORT 1-65535 '
                                                        '(an IPv6 address in brackets: [fd00:10:244::5]:8080)')
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            elif ":" in host:  # as Go's SplitHostPort: fd00::5:80 could be fd00::5 port 80 or fd00::5:80 without one
                raise src.error(join(cpath, "connect"), f'Invalid value: "{item["connect"]}": an IPv6 address goes in '
                                                        f'brackets: "[{host}]:{port}"')
            target = refs.parse(src, join(cpath, "connect"), host, TARGET_KINDS, allow_ip=True, allow_name=True)
        elif action == "ping":
            target = refs.parse(src, join(cpath, "ping"), item["ping"], TARGET_KINDS, allow_ip=True, allow_name=True)
        url, ca, insecure = None, None, bool(item.get("insecure"))
        if action == "http":
            url = item["http"]
            m = _URL.fullmatch(url)
            if not m:
                raise src.error(join(cpath, "http"), f'Invalid value: "{url}": must be an http:// or https:// URL')
            if m.group(3) is None:
                port = 443 if m.group(1) == "https" else 80
            else:  # written out: "http://x:0/" must not quietly mean port 80
                port = _port(m.group(3))
                if port is None:
                    raise src.error(join(cpath, "http"), f'Invalid value: "{url}": the port must be a number between 1 and 65535, inclusive')
            address = item.get("address") or m.group(2)
            if item.get("address"):
                _host, a_sep, a_port = address.rpartition(":")
                if a_sep and a_port.isascii() and a_port.isdigit():
                    raise src.error(join(cpath, "address"), f'Invalid value: "{address}": names the host to connect to, '
                                    f'without a port; the port is the URL\'s (http://HOST:PORT/...)')
            target = refs.parse(src, join(cpath, "address" if item.get("address") else "http"), address, TARGET_KINDS,
                                allow_ip=True, allow_name=True)
            if item.get("ca") is not None:
                if insecure:
                    raise src.error(join(cpath, "ca"), "Forbidden: ca and insecure are exclusive")
                ca = refs.parse(src, join(cpath, "ca"), item["ca"], ("secret",))
            protocol = "http"
        record_type = "A"
        env: tuple[tuple[str, ObjectRef], ...] = ()
        if action == "resolve":
            target = refs.parse(src, join(cpath, "resolve"), item["resolve"], (), allow_name=True, query_name=True)
            record_type = item.get("type")
            if record_type is None:
                record_type = "A"
            if record_type not in RECORD_TYPES:
                raise src.error(join(cpath, "type"), f'Unsupported value: "{record_type}": supported values: {", ".join(RECORD_TYPES)}')
        if action == "env":
            if source is None or source.kind != "pod":
                raise src.error(join(cpath, "from"), "Invalid value: env checks run in a pod")
            env = _env(src, item["env"], join(cpath, "env"), refs)
        expect = _expect(src, item.get("expect") or {}, join(cpath, "expect"), action, refs)
        family = _family(src, item, cpath, refs, (target, expect.client_ip))
        if not name:
            name = f"{source} GET {url}" if action == "http" else _default_name(action, source, target, port, protocol, matrix)
            name += f" (IPv{family})" if family else ""

        out.append(Check(name, action, source, target, port, protocol, count, matrix, expect, record_type, env, url, ca, insecure,
                         family=family))
    return tuple(out)


def _family(src: Source, item: dict[str, Any], path: str, refs: Refs, objects: tuple[ObjectRef | None, ...]) -> int | None:
    """``family: ipv4 | ipv6``: which address of each object the check means. IPv6 needs a
    dual-stack cluster, a Service with an IPv6 cluster IP, a literal address of that family."""
    raw = item.get("family")
    if raw is None:
        return None
    fpath = join(path, "family")
    if raw not in FAMILIES:
        raise src.error(fpath, f'Unsupported value: "{raw}": supported values: "ipv4", "ipv6"')
    family = FAMILIES[raw]
    if f"IPv{family}" not in refs.cluster.ip_families:
        raise src.error(fpath, f'Invalid value: "{raw}": cluster.ipFamily is {refs.cluster.ip_family}: nothing in this cluster '
                               f'has an IPv{family} address (set cluster.ipFamily: dual)')
    for ref in objects:
        if ref is None:
            continue
        if ref.kind == "ip" and ipaddress.ip_address(ref.name).version != family:
            raise src.error(fpath, f'Invalid value: "{raw}": the check names the IPv{6 if family == 4 else 4} address {ref.name}')
        if ref.kind in ("service", "loadbalancer"):
            svc = refs.services.get(f"{ref.namespace}/{ref.name}")
            families = svc.ip_families if svc is not None and svc.ip_families else ("IPv4",)
            if f"IPv{family}" not in families:
                raise src.error(fpath, f'Invalid value: "{raw}": {ref} has no IPv{family} cluster IP '
                                       f'(its spec.ipFamilies: {", ".join(families)})')
    return family


def _port(text: str) -> int | None:
    """A port written in a check: ASCII digits, 1-65535; None otherwise."""
    port = k8s.ascii_int(text)
    return port if port is not None and not k8s.port_num(port) else None


def _options(src: Source, item: dict[str, Any], path: str, action: str) -> None:
    """Refuse a field the check's kind never reads (``protocol`` on a ping, ``type`` on a
    connect...): the user meant something the probe would silently not do. Null is unset."""
    known = ("name", "from", action, *OPTIONS[action])
    for key, value in item.items():
        if value is None or key in known:
            continue
        if key == "from" or key in ACTIONS:
            continue  # a matrix's "from" and a second action have their own messages
        fields = ", ".join(("name", *(("from",) if action != "matrix" else ()), action, *OPTIONS[action]))
        raise src.error(join(path, key), f"Forbidden: may not be set for {_article(action)} {action} check (its fields: {fields})")


def _article(action: str) -> str:
    return "an" if action in ("env", "http") else "a"  # "an HTTP check"


def _env(src: Source, raw: dict[str, Any], path: str, refs: Refs) -> tuple[tuple[str, ObjectRef], ...]:
    """The variables an env check expects: names kubelet could set (C identifiers), at least one."""
    if not raw:
        raise src.error(path, "Required value: name at least one variable (an empty env check checks nothing)")
    out = []
    for key, value in raw.items():
        vpath = join(path, key)
        errs = k8s.c_identifier(key)
        if errs:
            raise src.error(vpath, f'Invalid value: "{key}": {"; ".join(errs)}')
        out.append((key, _env_value(src, vpath, value, refs)))
    return tuple(out)


def _env_value(src: Source, path: str, raw: object, refs: Refs) -> ObjectRef:
    """An expected variable value; null means the variable must not be set."""
    if raw is None:
        return ObjectRef("unset", "")
    if not isinstance(raw, (str, int)) or isinstance(raw, bool):
        raise src.error(path, "Invalid type: expected a string, a number, an object reference or null (unset)")
    return _value(src, path, raw, refs)


def _value(src: Source, path: str, raw: object, refs: Refs) -> ObjectRef:
    """An expected value: ``service/X``, ``loadbalancer/X``, ``pod/X``, ``node/X``, ``external[/NAME]``
    (their IP) or literal text."""
    text = str(raw)
    kind = text.split("/", 1)[0]
    if text == "external" or ("/" in text and kind in VALUE_KINDS):
        return refs.parse(src, path, text, VALUE_KINDS)
    return ObjectRef("value", text)


def _expect(src: Source, raw: dict[str, Any], path: str, action: str, refs: Refs) -> Expect:
    allowed = {"ping": PING_RESULTS, "resolve": RESOLVE_RESULTS, "env": ("ok",)}.get(action, CONNECT_RESULTS)
    for field in ("status", "body"):
        if raw.get(field) is not None and action != "http":
            raise src.error(join(path, field), f"Forbidden: {field} applies to http checks")
    result = raw.get("result")
    if result is not None and result not in allowed:
        raise src.error(join(path, "result"), f'Unsupported value: "{result}": supported values: {", ".join(allowed)}')
    _consistent(src, raw, path, action, result)
    status = raw.get("status")
    if status is not None and not 100 <= status <= 599:
        raise src.error(join(path, "status"), f"Invalid value: {status}: must be an HTTP status code, between 100 and 599, inclusive")
    served = raw.get("servedBy")
    served_by: tuple[str, ...] | None = None
    if served is not None:
        if action not in ("connect", "http"):
            raise src.error(join(path, "servedBy"), "Forbidden: servedBy applies to connect and http checks")
        items = [served] if isinstance(served, str) else served
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise src.error(join(path, "servedBy"), "Invalid type: expected a pod name or a list of pod names")
        if not items:
            raise src.error(join(path, "servedBy"), "Invalid value: []: must name at least one pod (with an empty list no answer could pass)")
        keys: list[str] = []
        for j, s in enumerate(items):
            ref = refs.parse(src, join(join(path, "servedBy"), j), s if s.startswith("pod/") else f"pod/{s}", ("pod",))
            key = f"{ref.namespace}/{ref.name}"
            if key in keys:
                raise src.error(join(join(path, "servedBy"), j), f'Duplicate value: "{s}"')
            keys.append(key)
        served_by = tuple(keys)
    client_ip = None
    if raw.get("clientIP") is not None:
        if action not in ("connect", "http"):
            raise src.error(join(path, "clientIP"), "Forbidden: clientIP applies to connect and http checks")
        if raw["clientIP"] == "self":
            client_ip = ObjectRef("self", "self")
        else:
            client_ip = refs.parse(src, join(path, "clientIP"), raw["clientIP"], ("pod", "node", "external", "loadbalancer"), allow_ip=True)
    answers = None
    if raw.get("answers") is not None:
        if action != "resolve":
            raise src.error(join(path, "answers"), "Forbidden: answers applies to resolve checks")
        answers = tuple(_value(src, join(join(path, "answers"), i), a, refs) for i, a in enumerate(raw["answers"]))
    if action in ("connect", "http") and result is None and (served_by or client_ip):
        result = "ok"
    return Expect(result=result or ("reply" if action == "ping" else "ok"), served_by=served_by, client_ip=client_ip, answers=answers,
                  status=raw.get("status"), body=raw.get("body"))


# Expectations that only a success can meet: with any other result they contradict it.
_ONLY_ON_SUCCESS = {
    "servedBy": "only a connection that succeeds is served by a pod",
    "clientIP": "only a server that accepts the connection sees a client address",
    "status": "only a request that gets a response has a status",
    "body": "only a request that gets a response has a body",
    "answers": "only a lookup that succeeds has answers",
}


def _consistent(src: Source, raw: dict[str, Any], path: str, action: str, result: str | None) -> None:
    """Refuse ``result: refused`` with ``servedBy`` and the like: no outcome satisfies both."""
    if result is None or result == "ok":
        return
    for field, why in _ONLY_ON_SUCCESS.items():
        if raw.get(field) is not None:
            raise src.error(join(path, field), f'Forbidden: may not be set when result is "{result}": {why}')


def _default_name(action: str, source: ObjectRef | None, target: ObjectRef | None, port: int | None, protocol: str, matrix: str | None) -> str:
    if action == "matrix":
        return f"{matrix} matrix"
    if action == "ping":
        return f"{source} ping {target}"
    if action == "resolve":
        return f"{source} resolve {target}"
    if action == "env":
        return f"{source} environment"
    return f"{source} -> {target}:{port} ({protocol})"
