"""The ingress controller's pure part: Kubernetes' path rules, and the nginx configuration
they become (the same table the root test sends real requests through)."""

from __future__ import annotations

import os
import subprocess

import pytest

from netns_lab.controllers import ingress as ctl
from netns_lab.controllers.topology import plan
from netns_lab.scenario import load_scenario
from tests.conftest import ROOT
from tests.test_ingress import TABLE


@pytest.mark.parametrize("row", range(len(TABLE)))
def test_k8s_match_follows_the_documentation_table(row: int) -> None:
    paths, request, want = TABLE[row]
    got = ctl.k8s_match([(t, p, s) for t, p, s in paths], request)
    assert (got if got is not None else 404) == want


def _config():  # type: ignore[no-untyped-def]
    s = load_scenario(os.path.join(ROOT, "scenarios", "ingress.yaml"))
    t = plan(s)
    return s, ctl.render(s.ingresses, s.services, s.pods, t, s.secrets, "/run/x/ingress")


def test_render_tls_redirect_default_backend_and_endpoints() -> None:
    s, (conf, files) = _config()
    assert "server_name a.example.com;" in conf and "listen 443 ssl;" in conf
    assert "if ($scheme = http) { return 308 https://$host$request_uri; }" in conf
    assert "location = /a2/exact {" in conf and "location /a1/ {" in conf and "location = /a1 {" in conf
    assert "upstream default-b-http {" in conf and "server 10.244.1.3:8080 max_fails=0;  # default/b-1" in conf
    assert "listen 80 default_server;" in conf and "proxy_pass http://default-fallback-80;" in conf
    assert set(files) == {"/run/x/ingress/certs/default-a-tls.crt", "/run/x/ingress/certs/default-a-tls.key"}
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in conf and "X-Real-IP $remote_addr" in conf


def test_wildcard_host_is_one_label_and_nginx_accepts_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from netns_lab.model import Ingress, IngressBackend, IngressPath, IngressRule

    s, _ = _config()
    wild = Ingress("w", rules=(IngressRule("*.w.example.com", (IngressPath("/", "Prefix", IngressBackend("b", None, "http")),)),))
    conf, files = ctl.render((*s.ingresses, wild), s.services, s.pods, plan(s), s.secrets, str(tmp_path))
    assert r"server_name ~^[^.]+\.w\.example\.com$;" in conf
    for path, text in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=fake",
                    "-keyout", str(tmp_path / "certs" / "default-fake.key"), "-out", str(tmp_path / "certs" / "default-fake.crt")],
                   check=True, capture_output=True)
    (tmp_path / "nginx.conf").write_text(conf)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    test = subprocess.run(["nginx", "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True)
    assert test.returncode == 0, test.stderr
