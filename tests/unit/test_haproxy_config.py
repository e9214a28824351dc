"""The HAProxy controller's pure part: server slots, the IngressClass that picks a
controller, haproxy.cfg as HAProxy itself reads it, and no scenario string becoming a
directive (the same hostile strings as nginx's renderer meets)."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator

import pytest

from netns_lab.controllers import haproxy as ctl
from netns_lab.controllers.endpoints import Endpoint
from netns_lab.controllers.ingress import UnsafeValue
from netns_lab.controllers.system import HAPROXY, NGINX, family_of
from netns_lab.controllers.topology import plan
from netns_lab.model import Ingress, IngressBackend, IngressClass, IngressPath, IngressRule, IngressTLS, Secret
from netns_lab.scenario import load_scenario
from tests.conftest import ROOT
from tests.unit.test_ingress_config import HOSTILE


def ep(i: int) -> Endpoint:
    return Endpoint(f"default/p{i}", f"10.244.1.{i}", 8080, "node-1")


def test_slots_keep_what_stays_and_grow_by_reload_only() -> None:
    rng = random.Random(3)
    slots = ctl.fresh_slots((ep(1), ep(2)))
    assert slots == (("10.244.1.1", 8080), ("10.244.1.2", 8080), None, None)
    for _ in range(200):
        eps = tuple(ep(i) for i in rng.sample(range(1, 9), rng.randrange(0, 7)))
        planned = ctl.slot_changes(slots, eps)
        if planned is None:
            assert len(eps) > len(slots)
            slots = ctl.fresh_slots(eps)
            continue
        new, changed = planned
        assert {s for s in new if s is not None} == {(e.ip, e.port) for e in eps}
        for i, s in enumerate(slots):  # an endpoint that stays keeps its slot
            if s is not None and s in new:
                assert new[i] == s
        assert changed == [(i, new[i]) for i in range(len(new)) if new[i] != slots[i]]
        slots = new


def test_the_ingress_class_picks_the_controller() -> None:
    h = IngressClass("haproxy", HAPROXY.controller)
    other = IngressClass("traefik", "traefik.io/ingress-controller")
    assert family_of(Ingress("a", class_name="haproxy"), {"haproxy": h}) is HAPROXY
    assert family_of(Ingress("a", class_name="nginx"), {}) is NGINX  # the lab's built-in class
    assert family_of(Ingress("a"), {}) is NGINX  # no default class: ingress-nginx, as before
    assert family_of(Ingress("a"), {"haproxy": IngressClass("haproxy", HAPROXY.controller, default=True)}) is HAPROXY
    assert family_of(Ingress("a", class_name="traefik"), {"traefik": other}) is None
    assert family_of(Ingress("a", class_name="missing"), {}) is None


def _scenario_config(run_dir: str) -> tuple[str, dict[str, str]]:
    s = load_scenario(os.path.join(ROOT, "scenarios", "ingress-haproxy.yaml"))
    ings = tuple(i for i in s.ingresses if i.class_name == "haproxy")
    backends = ctl.backends(ings, s.services, s.pods, plan(s))
    return ctl.render(ings, {n: ctl.fresh_slots(e) for n, e in backends.items()}, s.secrets, run_dir)


def test_haproxy_accepts_the_configuration(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "haproxy"
    conf, files = _scenario_config(str(run_dir))
    for path, text in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
    key, crt = run_dir / "certs" / "k", run_dir / "certs" / "c"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=fake",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    (run_dir / "certs" / f"{ctl.FAKE}.pem").write_text(crt.read_text() + key.read_text())
    (run_dir / "logs").mkdir()
    (run_dir / "haproxy.cfg").write_text(conf)
    check = subprocess.run(["haproxy", "-c", "-f", str(run_dir / "haproxy.cfg")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "use_backend default_a1_80 if { var(txn.host) -m str a.example.com } { path -m beg /a1/ }" in conf
    assert conf.index("{ path -m str /a2/exact }") < conf.index("{ path -m beg /a2/ }")  # longest first
    assert "http-request redirect scheme https code 308 if !{ ssl_fc } { var(txn.host) -m str a.example.com }" in conf


CRT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----"


def test_the_bundle_takes_only_certificates_from_tls_crt_and_the_first_key() -> None:
    other = "-----BEGIN RSA PRIVATE KEY-----\nEVIL\n-----END RSA PRIVATE KEY-----"
    pem = ctl.pem_bundle(Secret("s", "default", "kubernetes.io/tls", (("tls.crt", CRT + "\n" + other), ("tls.key", KEY + "\n" + other))))
    assert pem == CRT + "\n" + KEY + "\n"
    with pytest.raises(UnsafeValue):
        ctl.pem_bundle(Secret("s", "default", "kubernetes.io/tls", (("tls.crt", "junk"), ("tls.key", KEY))))


def test_a_named_host_never_falls_through_to_other_hosts_rules() -> None:
    """foo.example.com has /a only; the wildcard and the host-less rules must not answer its
    other paths (nginx: the host's own server block, then the default backend)."""
    b = IngressBackend("web", 80)
    ings = (Ingress("x", class_name="haproxy", rules=(
        IngressRule("foo.example.com", (IngressPath("/a", "Prefix", b),)),
        IngressRule("*.example.com", (IngressPath("/b", "Prefix", IngressBackend("other", 80)),)),
        IngressRule(None, (IngressPath("/", "Prefix", IngressBackend("any", 80)),))),
        tls=(IngressTLS(("tls-only.example.com",), None),)),)
    conf, _ = ctl.render(ings, {}, (), "/r")
    uses = [line.strip() for line in conf.splitlines() if line.strip().startswith("use_backend")]
    foo = [i for i, u in enumerate(uses) if "-m str foo.example.com" in u]
    assert uses[foo[-1]] == f"use_backend {ctl.NO_BACKEND} if {{ var(txn.host) -m str foo.example.com }}"
    assert foo[-1] < min(i for i, u in enumerate(uses) if "default_other_80" in u or "default_any_80" in u)
    assert f"use_backend {ctl.NO_BACKEND} if {{ var(txn.host) -m str tls-only.example.com }}" in uses


def _statements(conf: str) -> Iterator[tuple[str, int]]:
    """HAProxy reads a line at a time: its first word is the keyword, then the arguments
    (a '#' starts a comment). Structure: (keyword, number of words) per line."""
    for line in conf.splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            yield words[0], len(words)


def _render(**values: object) -> str:
    v: dict[str, object] = {"name": "web", "namespace": "default", "host": "a.example.com", "path": "/a", "service": "web",
                            "secret": "a-tls", "run_dir": "/run/netns-lab/x/haproxy", "ip": "10.244.1.2", **values}
    backend = IngressBackend(v["service"], 80)  # type: ignore[arg-type]
    ing = Ingress(v["name"], v["namespace"], "haproxy", None,  # type: ignore[arg-type]
                  (IngressRule(v["host"], (IngressPath(v["path"], "Prefix", backend),)),),  # type: ignore[arg-type]
                  (IngressTLS((v["host"],), v["secret"]),))  # type: ignore[arg-type]
    secret = Secret(v["secret"], v["namespace"], "kubernetes.io/tls", (("tls.crt", CRT), ("tls.key", KEY)))  # type: ignore[arg-type]
    name = f"{v['namespace']}_{v['service']}_80"
    conf, _files = ctl.render((ing,), {name: ((str(v["ip"]), 8080), None)}, (secret,), str(v["run_dir"]))
    return conf


@pytest.mark.parametrize("field", ["name", "namespace", "host", "path", "service", "secret", "run_dir", "ip"])
@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_string_never_becomes_a_directive(field: str, value: str) -> None:
    baseline = list(_statements(_render()))
    try:
        conf = _render(**{field: value})
    except UnsafeValue:
        return
    assert list(_statements(conf)) == baseline, conf
