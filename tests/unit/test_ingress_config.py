"""The ingress controller's pure part: Kubernetes' path rules, and the nginx configuration
they become (the same table the root test sends real requests through); and the renderer's
own guard: no string of the model, however it got there, becomes an nginx directive."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterator

import pytest

from netns_lab.controllers import ingress as ctl
from netns_lab.controllers.endpoints import Endpoint
from netns_lab.controllers.topology import plan
from netns_lab.model import Ingress, IngressBackend, IngressPath, IngressRule, IngressTLS, Secret, Service, ServicePort
from netns_lab.scenario import load_scenario
from netns_lab.services.ingress import install_lua
from tests.conftest import ROOT
from tests.test_ingress import TABLE


@pytest.mark.parametrize("row", range(len(TABLE)))
def test_k8s_match_follows_the_documentation_table(row: int) -> None:
    paths, request, want = TABLE[row]
    got = ctl.k8s_match([(t, p, s) for t, p, s in paths], request)
    assert (got if got is not None else 404) == want


def _config(run_dir: str = "/run/x/ingress"):  # type: ignore[no-untyped-def]
    s = load_scenario(os.path.join(ROOT, "scenarios", "ingress.yaml"))
    t = plan(s)
    return s, ctl.render(s.ingresses, s.services, s.pods, t, s.secrets, run_dir)


def test_render_tls_redirect_default_backend_and_endpoints() -> None:
    s, (conf, files) = _config()
    assert "server_name a.example.com;" in conf and "listen 443 ssl;" in conf
    assert "if ($scheme = http) { return 308 https://$host$request_uri; }" in conf
    assert 'location = "/a2/exact" {' in conf and 'location "/a1/" {' in conf and 'location = "/a1" {' in conf
    assert "10.244.1.3" not in conf  # endpoints are posted to the Lua balancer, never written here
    backends = {b["name"]: b for b in ctl.backends(s.ingresses, s.services, s.pods, plan(s))}
    assert backends["default_b_http"]["endpoints"] == [{"address": "10.244.1.3", "port": 8080}]
    assert backends["default_b_http"]["load-balance"] == "round_robin"
    assert "listen 80 default_server;" in conf and 'set $proxy_upstream_name "default_fallback_80";' in conf
    assert "proxy_pass http://upstream_balancer;" in conf and "balancer_by_lua_block" in conf
    assert "listen 127.0.0.1:10246;" in conf  # the configuration endpoint: the pod's loopback only
    assert set(files) == {"/run/x/ingress/certs/default_a-tls.crt", "/run/x/ingress/certs/default_a-tls.key"}
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in conf and "X-Real-IP $remote_addr" in conf


def test_nginx_runs_unprivileged_and_writes_only_under_logs_and_tmp() -> None:
    _s, (conf, _files) = _config()
    assert "user " not in conf  # the supervisor starts nginx unprivileged; no directive may ask for root
    assert 'pid "/run/x/ingress/logs/nginx.pid";' in conf and 'error_log "/run/x/ingress/logs/error.log" notice;' in conf
    assert 'access_log "/run/x/ingress/logs/access.log";' in conf
    assert 'proxy_temp_path "/run/x/ingress/tmp/proxy";' in conf


def test_wildcard_host_is_one_label_and_nginx_accepts_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "a dir; with a space"  # quoted paths: nginx reads this one literally
    s, _ = _config()
    wild = Ingress("w", rules=(IngressRule("*.w.example.com", (IngressPath("/", "Prefix", IngressBackend("b", None, "http")),
                                                                IngressPath("/x(y)*!&+,=:@~%41", "ImplementationSpecific",
                                                                            IngressBackend("b", None, "http")))),))
    conf, files = ctl.render((*s.ingresses, wild), s.services, s.pods, plan(s), s.secrets, str(run_dir))
    assert r"server_name ~^[^.]+\.w\.example\.com$;" in conf
    for path, text in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=fake",
                    "-keyout", str(run_dir / "certs" / "default-fake.key"), "-out", str(run_dir / "certs" / "default-fake.crt")],
                   check=True, capture_output=True)
    (run_dir / "nginx.conf").write_text(conf)
    for sub in ("logs", "tmp"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    install_lua(str(run_dir))  # init_by_lua loads the balancer while nginx -t reads the file
    test = subprocess.run(["nginx", "-e", str(run_dir / "logs" / "error.log"), "-t", "-c", str(run_dir / "nginx.conf")],
                          capture_output=True, text=True)
    assert test.returncode == 0, test.stderr
    assert sorted(os.listdir(run_dir)) == ["certs", "logs", "lua", "nginx.conf", "tmp"]  # nothing written elsewhere in it


# -- no string becomes a directive -----------------------------------------------------------
def _statements(conf: str) -> Iterator[tuple[str, int, str]]:
    """nginx's own tokenizer (ngx_conf_read_token), reduced to the structure: for each
    statement its directive, its number of arguments and how it ends (';' or '{'), and '}'.
    Comments run from a '#' at the start of a token to the end of the line; quoted strings
    ("..." or '...') are one token, with backslash escapes; '${' does not end a word; the
    body of a ``*_by_lua_block`` is Lua (ngx_http_lua's own reader), kept whole."""
    i, n = 0, len(conf)
    words: list[str] = []
    while i < n:
        c = conf[i]
        if c in " \t\r\n":
            i += 1
        elif c == "#":
            end = conf.find("\n", i)
            i = n if end < 0 else end
        elif c == "{" and words and words[0].endswith("_by_lua_block"):  # Lua, not nginx: one opaque block
            depth, j = 1, i + 1
            while depth:
                depth += {"{": 1, "}": -1}.get(conf[j], 0)
                j += 1
            yield (words[0], len(words) - 1, "lua " + conf[i + 1:j - 1].strip())
            words, i = [], j
        elif c in ";{":
            yield (words[0] if words else "", len(words) - 1, c)
            words, i = [], i + 1
        elif c == "}":
            assert not words, f"'}}' after {words}"
            yield ("}", 0, "}")
            i += 1
        elif c in "\"'":
            j, buf = i + 1, []
            while j < n and conf[j] != c:
                if conf[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(conf[j])
                j += 1
            words.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < n and conf[j] not in " \t\r\n;{":
                if conf[j] == "\\":
                    j += 1
                elif conf[j] == "$" and conf[j + 1:j + 2] == "{":
                    j = conf.find("}", j) if "}" in conf[j:] else n - 1
                j += 1
            words.append(conf[i:j])
            i = j
    assert not words, f"unterminated statement {words}"


DEFAULTS: dict[str, object] = {
    "namespace": "default", "name": "web", "host": "a.example.com", "path": "/a", "path_type": "Prefix",
    "service": "web", "port_name": "http", "port_number": None, "default_service": "fallback", "tls_host": "a.example.com",
    "secret": "a-tls", "run_dir": "/run/netns-lab/x/ingress", "ip": "10.244.1.2",
}
HOSTILE = [
    "/a { return 418; }",
    "/a {} access_log /tmp/netns-lab-hostile.log; location /b",
    "/a;\naccess_log /tmp/netns-lab-hostile.log;",
    '/a"; return 418; "',
    "/a'; return 418; '",
    "x\nreturn 418;",
    "x\r\n}\nserver { listen 8080; }\n#",
    "x#\nreturn 418;",
    "/${host}",
    "/$host",
    "x\\",
    "x y",
    "/a\x00b",
    "/a\u2028return 418;",
]
# Every field of the model that reaches nginx.conf or a path in it (model class.field -> the
# value that carries it here); and the ones that do not, said once, so a new field must be
# placed in one or the other.
REACHES = {
    "Ingress.name": "name", "Ingress.namespace": "namespace", "IngressRule.host": "host", "IngressPath.path": "path",
    "IngressPath.path_type": "path_type", "IngressBackend.service": "service", "IngressBackend.port_name": "port_name",
    "IngressBackend.port_number": "port_number", "IngressTLS.hosts": "tls_host", "IngressTLS.secret_name": "secret",
    "Secret.name": "secret", "Secret.namespace": "namespace",
    "Endpoint.ip": "ip",  # into the backends the controller POSTs to the Lua balancer (checked as an IP address)
}
ELSEWHERE = {
    "Ingress.class_name": "picks the controller, never written",
    "Ingress.default_backend": "its service is 'default_service', its port a number",
    "Ingress.rules": "structure", "Ingress.tls": "structure", "IngressRule.paths": "structure", "IngressPath.backend": "structure",
    "Secret.type": "never written", "Secret.data": "PEM text, written to the certificate files, never into nginx.conf",
    "Ingress.labels": "never written (selectors and kubectl read them)", "Secret.labels": "never written",
    "Endpoint.port": "an int, checked", "Endpoint.node": "never written", "Endpoint.ready": "a bool",
    "Endpoint.serving": "a bool (not written: the controller gets ready endpoints)",
    "Endpoint.terminating": "a bool (not written: the controller gets ready endpoints)",
    "Endpoint.pod": "never written (the backends carry address and port)",
    "Ingress.load_balance": "into the backends only, one of LOAD_BALANCERS (checked again there), never nginx.conf",
}


def test_every_model_field_is_classified() -> None:
    fields = {f"{cls.__name__}.{f.name}" for cls in (Ingress, IngressRule, IngressPath, IngressBackend, IngressTLS, Secret, Endpoint)
              for f in dataclasses.fields(cls)}
    assert fields == set(REACHES) | set(ELSEWHERE)


def _render(monkeypatch: pytest.MonkeyPatch, **values: object) -> str:
    """Build the model directly (no validation) with ``values`` in place of the defaults."""
    v = {**DEFAULTS, **values}
    backend = IngressBackend(v["service"], v["port_number"], None if v["port_number"] is not None else v["port_name"])  # type: ignore[arg-type]
    ing = Ingress(v["name"], v["namespace"], None, IngressBackend(v["default_service"], 80),  # type: ignore[arg-type]
                  (IngressRule(v["host"], (IngressPath(v["path"], v["path_type"], backend),)),),  # type: ignore[arg-type]
                  (IngressTLS((v["tls_host"],), v["secret"]),))  # type: ignore[arg-type]
    port = ServicePort(80, name=v["port_name"]) if v["port_number"] is None else ServicePort(80)  # type: ignore[arg-type]
    services = (Service(v["service"], v["namespace"], ports=(port,)), Service(v["default_service"], v["namespace"], ports=(ServicePort(80),)))  # type: ignore[arg-type]
    secret = Secret(v["secret"], v["namespace"], "kubernetes.io/tls", (("tls.crt", "CRT"), ("tls.key", "KEY")))  # type: ignore[arg-type]
    endpoint = Endpoint("default/web-1", v["ip"], 8080, "node-1")  # type: ignore[arg-type]
    monkeypatch.setattr(ctl, "endpoints", lambda svc, _pods, _topo: {p: (endpoint,) for p in svc.ports})
    conf, _files = ctl.render((ing,), services, (), None, (secret,), v["run_dir"])  # type: ignore[arg-type]
    ctl.backends((ing,), services, (), None)  # type: ignore[arg-type]  # raises UnsafeValue for a hostile address
    return conf


FIELDS = sorted(set(REACHES.values()) | {"default_service", "run_dir"})
CASES = [(f, v, "Prefix") for f in FIELDS if f != "path" for v in HOSTILE]
CASES += [("path", v, t) for t in ("Prefix", "Exact", "ImplementationSpecific") for v in HOSTILE]
CASES += [("port_number", "80; return 418", "Prefix"), ("port_number", "80\n}", "Prefix"),
          ("run_dir", "/run/netns-lab/x y; access_log /tmp/h", "Prefix")]


@pytest.mark.parametrize(("field", "value", "path_type"), CASES, ids=[f"{f}-{t}-{i}" for i, (f, _v, t) in enumerate(CASES)])
def test_a_hostile_string_never_becomes_a_directive(monkeypatch: pytest.MonkeyPatch, field: str, value: str, path_type: str) -> None:
    """Each string field in turn holds a hostile value (the model is built directly, as if the
    loader had been skipped): the renderer refuses it (UnsafeValue), or writes it where it
    cannot act (a quoted string), so the statements are those of the same model with a
    harmless value."""
    baseline = list(_statements(_render(monkeypatch, path_type=path_type)))
    try:
        conf = _render(monkeypatch, **{"path_type": path_type, field: value})
    except ctl.UnsafeValue:
        return
    assert list(_statements(conf)) == baseline, conf


def test_a_hostile_path_type_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ctl.UnsafeValue):
        _render(monkeypatch, path_type="Prefix; return 418")


def test_the_harmless_values_render(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard does not refuse what the loader accepts: the baseline itself, a wildcard, IPv6."""
    assert 'location = "/a" {' in _render(monkeypatch)
    assert "server_name ~^[^.]+\\.b\\.example\\.com$;" in _render(monkeypatch, host="*.b.example.com")
    _render(monkeypatch, ip="fd00:10:244::2")  # an IPv6 endpoint is no UnsafeValue


def test_secret_files_never_collide() -> None:
    """'a-b/c' and 'a/b-c' were one file (ingress-nginx's '-' join); a Secret default/fake was
    the fake certificate's file."""
    assert ctl.cert_paths("/r", "a-b/c") != ctl.cert_paths("/r", "a/b-c")
    assert ctl.cert_paths("/r", "default/fake")[0] != f"/r/certs/{ctl.FAKE_CERT}.crt"
    assert ctl.upstream_name("a-b", IngressBackend("c", 80)) != ctl.upstream_name("a", IngressBackend("b-c", 80))
    with pytest.raises(ctl.UnsafeValue):
        ctl.cert_paths("/r", "default/../../etc/x")
