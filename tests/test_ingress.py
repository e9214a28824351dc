"""Ingress through real nginx, from a client outside the cluster via the LB IP.

* Kubernetes' path-matching table (the "Examples" of the Ingress documentation), one host
  per row, each request answered by the right Service's pod or by the built-in 404;
* TLS: the certificate presented matches the host (SNI), verifies with the lab CA; a host
  without TLS is plain HTTP and HTTPS to it gets the controller's fake certificate;
* endpoint changes and Ingress changes under a steady stream of requests: none fails;
* the Ingress manifest users copy from old blog posts: one clear line per mistake, nothing built;
* hostile strings (a path or host written to inject nginx directives) are refused at load, and
  nginx, master and workers, runs unprivileged in the controller pod's namespace.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from netns_lab.lab import Lab
from netns_lab.probes.http import get
from tests.conftest import ROOT

pytestmark = pytest.mark.root
INGRESS = os.path.join(ROOT, "scenarios", "ingress.yaml")

# (paths as (pathType, path, service)), request path, expected Service or 404 — the rows of
# https://kubernetes.io/docs/concepts/services-networking/ingress/#examples
TABLE = [
    ([("Prefix", "/", "s1")], "/anything/at/all", "s1"),
    ([("Exact", "/foo", "s1")], "/foo", "s1"),
    ([("Exact", "/foo", "s1")], "/bar", 404),
    ([("Exact", "/foo", "s1")], "/foo/", 404),
    ([("Exact", "/foo/", "s1")], "/foo", 404),
    ([("Prefix", "/foo", "s1")], "/foo", "s1"),
    ([("Prefix", "/foo", "s1")], "/foo/", "s1"),
    ([("Prefix", "/foo/", "s1")], "/foo", "s1"),
    ([("Prefix", "/foo/", "s1")], "/foo/", "s1"),
    ([("Prefix", "/aaa/bb", "s1")], "/aaa/bbb", 404),
    ([("Prefix", "/aaa/bbb", "s1")], "/aaa/bbb", "s1"),
    ([("Prefix", "/aaa/bbb/", "s1")], "/aaa/bbb", "s1"),
    ([("Prefix", "/aaa/bbb", "s1")], "/aaa/bbb/", "s1"),
    ([("Prefix", "/aaa/bbb", "s1")], "/aaa/bbb/ccc", "s1"),
    ([("Prefix", "/aaa/bbb", "s1")], "/aaa/bbbxyz", 404),
    ([("Prefix", "/", "s1"), ("Prefix", "/aaa", "s2")], "/aaa/ccc", "s2"),
    ([("Prefix", "/", "s1"), ("Prefix", "/aaa", "s2"), ("Prefix", "/aaa/bbb", "s3")], "/aaa/bbb", "s3"),
    ([("Prefix", "/", "s1"), ("Prefix", "/aaa", "s2"), ("Prefix", "/aaa/bbb", "s3")], "/ccc", "s1"),
    ([("Prefix", "/aaa", "s1")], "/ccc", 404),
    ([("Prefix", "/foo", "s1"), ("Exact", "/foo", "s2")], "/foo", "s2"),
]


def _paths_scenario(tmp: str) -> str:
    objects: list[dict] = []  # type: ignore[type-arg]
    for s in ("s1", "s2", "s3"):
        objects.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{s}-1", "labels": {"app": s}},
                        "spec": {"containers": [{"name": "c", "image": "netexec", "ports": [{"containerPort": 8080}]}]}})
        objects.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": s},
                        "spec": {"selector": {"app": s}, "ports": [{"port": 80, "targetPort": 8080}]}})
    rules = []
    for i, (paths, _req, _want) in enumerate(TABLE):
        rules.append({"host": f"row{i:02d}.paths.test", "http": {"paths": [
            {"path": p, "pathType": t, "backend": {"service": {"name": svc, "port": {"number": 80}}}} for t, p, svc in paths]}})
    objects.append({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "haproxy"},
                    "spec": {"controller": "haproxy-ingress.github.io/controller"}})
    for name, cls in (("table", "nginx"), ("table-haproxy", "haproxy")):  # the same rules, one copy per controller
        objects.append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
                        "spec": {"ingressClassName": cls, "rules": rules}})
    path = os.path.join(tmp, "ingress-paths.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump({"apiVersion": "netns-lab/v1", "kind": "Scenario", "name": "ingress-paths", "cluster": {"nodes": 2},
                        "objects": objects}, fh, sort_keys=False)
    return path


def test_the_kubernetes_path_matching_table_on_both_controllers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Lab.from_file(_paths_scenario(str(tmp_path))) as lab:
        ext = lab.netns_of("external")
        wrong = []
        for service in ("ingress-nginx/ingress-nginx", "haproxy-ingress/haproxy-ingress"):
            lb = lab.ip_of(f"loadbalancer/{service}")
            for i, (paths, request, want) in enumerate(TABLE):
                r = get(ext, f"http://row{i:02d}.paths.test{request}", lb)
                got = r.status if r.status != 200 else r.served_by.rsplit("-", 1)[0]  # type: ignore[union-attr]
                if got != want:
                    wrong.append(f"{service} row {i}: {paths} GET {request}: got {got}, want {want} ({r.body[:60]!r})")
                if want == 404 and r.body != "default backend - 404\n":
                    wrong.append(f"{service} row {i}: 404 body {r.body[:60]!r}")
        assert not wrong, "\n".join(wrong)
        assert len(TABLE) >= 12


@pytest.fixture(scope="module")
def ingress_lab():  # type: ignore[no-untyped-def]
    with Lab.from_file(INGRESS) as lab:
        yield lab


def test_tls_sni_certificates_and_plain_http(ingress_lab: Lab) -> None:
    lab = ingress_lab
    ext, lb = lab.netns_of("external"), lab.ip_of("loadbalancer/ingress-nginx/ingress-nginx")
    ca = lab.secret("a-tls").get("ca.crt")
    r = get(ext, "https://a.example.com/a1", lb, ca_pem=ca)
    assert r.result == "ok" and r.status == 200 and r.served_by == "a1-1"
    assert "a.example.com" in r.cert_names and r.cert_subject == "a.example.com"
    # the backend got the client's address from nginx (Local policy kept it up to nginx)
    assert r.client_ip == lab.ip_of("external")
    # b.example.com has no TLS: plain HTTP works, HTTPS meets the fake default certificate
    assert get(ext, "http://b.example.com/x", lb).served_by == "b-1"
    bad = get(ext, "https://b.example.com/x", lb, ca_pem=ca)
    assert bad.result == "tls-error"
    fake = get(ext, "https://b.example.com/x", lb, insecure=True)
    assert fake.result == "ok"
    cert = subprocess.run(["ip", "netns", "exec", ext, "openssl", "s_client", "-connect", f"{lb}:443", "-servername", "b.example.com"],
                          input="", capture_output=True, text=True, timeout=20).stdout
    assert "Kubernetes Ingress Controller Fake Certificate" in cert
    # and without the lab CA, the real certificate does not verify (no trust by accident)
    assert get(ext, "https://a.example.com/a1", lb).result == "tls-error"


def _nginx_in(netns: str, name: str = "nginx") -> dict[int, dict[str, str]]:
    """Every ``name`` process in the network namespace ``netns`` (however it got there): pid ->
    its /proc status fields."""
    inode = os.stat(f"/run/netns/{netns}").st_ino
    out = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            if os.stat(f"/proc/{e}/ns/net").st_ino != inode:
                continue
            with open(f"/proc/{e}/status") as fh:
                status = dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)
        except OSError:
            continue
        if status.get("Name") == name and not status.get("State", "").startswith("Z"):
            out[int(e)] = status
    return out


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read().strip()


HOST_PORT_START = _read("/proc/sys/net/ipv4/ip_unprivileged_port_start")  # this process: the host's namespace


def test_nginx_master_and_workers_are_not_root(ingress_lab: Lab) -> None:
    """No process of the controller runs as uid or gid 0; it binds 80 and 443 because its own
    namespace lets unprivileged processes do so (the host's setting is untouched); it writes
    only under logs/ and tmp/; its private keys are its own, mode 0600; and it serves."""
    lab = ingress_lab
    netns = lab.netns_of("pod/ingress-nginx/ingress-nginx-controller")
    procs = _nginx_in(netns)
    assert len(procs) >= 2, procs  # the master and at least one worker
    for pid, status in procs.items():
        uids, gids = status["Uid"].split(), status["Gid"].split()  # real, effective, saved, filesystem
        assert "0" not in uids and "0" not in gids, (pid, status["Uid"], status["Gid"])
        assert "0" not in status.get("Groups", "").split(), (pid, status["Groups"])
    pod_port_start = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
                                    capture_output=True, text=True, check=True).stdout.strip()
    assert pod_port_start == "0"
    assert _read("/proc/sys/net/ipv4/ip_unprivileged_port_start") == HOST_PORT_START
    uid = int(next(iter(procs.values()))["Uid"].split()[1])
    from netns_lab.services.controller_pod import NGINX_USER, nginx_ids

    assert uid == nginx_ids()[0]
    if os.environ.get("CI"):  # provisioned machines have nginx's own user (labs/provision.sh)
        import pwd

        assert pwd.getpwuid(uid).pw_name == NGINX_USER
    run_dir = lab.ingress_dir
    for sub in ("logs", "tmp"):
        st = os.stat(os.path.join(run_dir, sub))
        assert st.st_uid == uid and st.st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(run_dir, "logs", "nginx.pid")).st_uid == uid
    root_owned = {e for e in os.listdir(run_dir) if os.stat(os.path.join(run_dir, e)).st_uid == 0}
    assert root_owned == {"nginx.conf", "backends.json", "reloaded", "dynamic", "refused", "certs", "lua"}  # nginx wrote nothing else here
    assert os.stat(run_dir).st_uid == 0 and os.stat(os.path.join(run_dir, "certs")).st_uid == 0
    for name in os.listdir(os.path.join(run_dir, "certs")):
        st = os.stat(os.path.join(run_dir, "certs", name))
        assert st.st_uid == uid and st.st_mode & 0o777 == 0o600, name
    r = get(lab.netns_of("external"), "https://a.example.com/a1", lab.ip_of("loadbalancer/ingress-nginx/ingress-nginx"),
            ca_pem=lab.secret("a-tls").get("ca.crt"))
    assert r.result == "ok" and r.status == 200 and r.served_by == "a1-1"


def _stream(lab: Lab, url: str, seconds: float, rate: float, during: list[tuple[float, object]],
            done: list[float] | None = None, service: str = "ingress-nginx/ingress-nginx") -> list[tuple[float, object]]:
    """GETs at ``rate`` per second for ``seconds`` (each a new connection) to the controller
    behind ``service``, each with the time it started; run the actions at their times
    (``done``: when each action returned)."""
    ext, lb = lab.netns_of("external"), lab.ip_of(f"loadbalancer/{service}")
    out = []
    t0 = time.monotonic()
    todo = sorted(during, key=lambda x: x[0])  # type: ignore[arg-type, return-value]

    def act(fn: object) -> float:
        fn()  # type: ignore[operator]
        return time.monotonic() - t0

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as actor:
        acts = []
        i = 0
        while time.monotonic() - t0 < seconds:
            while todo and time.monotonic() - t0 >= todo[0][0]:
                acts.append(actor.submit(act, todo.pop(0)[1]))
            out.append((time.monotonic() - t0, pool.submit(get, ext, url, lb, None, False, 5.0)))
            i += 1
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        if done is not None:
            done.extend(a.result() for a in acts)
        for a in acts:
            a.result()
        return [(t, f.result()) for t, f in out]


def _netexec_pod(name: str, app: str, node: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "netexec", "ports": [{"name": "web", "containerPort": 8080}]}]}}


def test_scaling_a_backend_under_load_drops_nothing_and_never_reloads(ingress_lab: Lab) -> None:
    """60 requests/s for 30 s to b.example.com; b goes from 1 to 2, then 4 pods, then the
    original 2 are deleted (1 -> 2 -> 4 -> 2). Every request must succeed, and nginx is never
    reloaded: each change is a POST to its Lua balancer (same master, same worker). A new pod
    serves within a second of its change; a removed one serves nothing started after it."""
    lab = ingress_lab
    netns = lab.netns_of("pod/ingress-nginx/ingress-nginx-controller")
    pids, reloads, updates = set(_nginx_in(netns)), lab.ingress_reloads(), lab.ingress_dynamic_updates()
    results = scale_b_under_load(lab, 30.0, "ingress-nginx/ingress-nginx")
    print(f"{lab.ingress_reloads() - reloads} nginx reloads, {lab.ingress_dynamic_updates() - updates} dynamic updates")
    assert len(results) >= 50 * 30
    assert lab.ingress_reloads() == reloads and set(_nginx_in(netns)) == pids  # no reload: the same processes
    assert lab.ingress_dynamic_updates() - updates == 4


def scale_b_under_load(lab: Lab, seconds: float, service: str) -> list[tuple[float, object]]:
    """b.example.com at 60 requests/s while its Service goes 1 -> 2 -> 4 -> 2 pods; asserts
    that no request failed, that a new pod served within a second of its change and that a
    removed one served nothing started after its change. The requests, for more checks."""
    actions = [
        (3.0, lambda: lab.apply(_netexec_pod("b-2", "b", "node-1"))),
        (8.0, lambda: lab.apply(_netexec_pod("b-3", "b", "node-1"), _netexec_pod("b-4", "b", "node-2"))),
        (14.0, lambda: lab.delete("pod/b-1")),
        (18.0, lambda: lab.delete("pod/b-2")),
    ]
    done: list[float] = []
    results = _stream(lab, "http://b.example.com/load", seconds, 60.0, actions, done, service)  # type: ignore[arg-type]
    failed = [(round(t, 2), r.result, r.status, r.detail) for t, r in results if r.result != "ok" or r.status != 200]  # type: ignore[attr-defined]
    print(f"{len(results)} requests in {seconds:.0f} s, {len(failed)} failed; changes done at {[round(d, 2) for d in done]} s")
    assert not failed, failed[:5]
    assert {r.served_by for t, r in results if t > 20} == {"b-3", "b-4"}  # type: ignore[attr-defined]
    assert {r.served_by for t, r in results if t < 2.5} == {"b-1"}  # type: ignore[attr-defined]
    for pod, change in (("b-2", done[0]), ("b-3", done[1]), ("b-4", done[1])):  # new: within a second
        first = min(t for t, r in results if r.served_by == pod)  # type: ignore[attr-defined]
        assert first - change < 1.0, (pod, first, change)
    for pod, change in (("b-1", done[2]), ("b-2", done[3])):  # removed: nothing started after the change
        assert not [t for t, r in results if t > change and r.served_by == pod], pod  # type: ignore[attr-defined]
    return results


def test_ewma_by_annotation_and_the_balancer_s_own_view(ingress_lab: Lab) -> None:
    """``nginx.ingress.kubernetes.io/load-balance: ewma`` reaches the Lua balancer (its own
    GET on the configuration endpoint says so), and the backend serves from both pods."""
    lab = ingress_lab
    ing = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": "site-e", "annotations": {"nginx.ingress.kubernetes.io/load-balance": "ewma"}},
           "spec": {"rules": [{"host": "e.example.com", "http": {"paths": [
               {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "e", "port": {"number": 80}}}}]}}]}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "e"},
           "spec": {"selector": {"app": "e"}, "ports": [{"port": 80, "targetPort": "web"}]}}
    lab.apply(_netexec_pod("e-1", "e", "node-1"), _netexec_pod("e-2", "e", "node-2"), svc, ing)
    try:
        netns = lab.netns_of("pod/ingress-nginx/ingress-nginx-controller")
        seen = subprocess.run(["ip", "netns", "exec", netns, "curl", "-s", "http://127.0.0.1:10246/configuration/backends"],
                              capture_output=True, text=True, check=True).stdout
        backend = json.loads(seen)["backends"]["default_e_80"]
        assert backend["lb"] == "ewma" and len(backend["endpoints"]) == 2, seen
        ext, lb = lab.netns_of("external"), lab.ip_of("loadbalancer/ingress-nginx/ingress-nginx")
        answers = [get(ext, "http://e.example.com/x", lb) for _ in range(40)]
        assert all(r.result == "ok" and r.status == 200 for r in answers)
        assert {r.served_by for r in answers} == {"e-1", "e-2"}
    finally:
        lab.delete("ingress/site-e", "service/e", "pod/e-1", "pod/e-2")


def test_an_ingress_change_reloads_gracefully(ingress_lab: Lab) -> None:
    """A new path on a live host, under load: no request fails and the path serves at once."""
    lab = ingress_lab
    changed = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "site-b"}, "spec": {
        "defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}},
        "rules": [{"host": "b.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "b", "port": {"name": "http"}}}},
            {"path": "/new", "pathType": "Exact", "backend": {"service": {"name": "a2", "port": {"number": 80}}}}]}}]}}
    reloads = lab.ingress_reloads()
    results = _stream(lab, "http://b.example.com/load", 6.0, 60.0, [(2.0, lambda: lab.apply(changed))])
    assert all(r.result == "ok" and r.status == 200 for _t, r in results)  # type: ignore[attr-defined]
    assert lab.ingress_reloads() == reloads + 1  # a rule change is a reload (counted), a graceful one
    r = get(lab.netns_of("external"), "http://b.example.com/new", lab.ip_of("loadbalancer/ingress-nginx/ingress-nginx"))
    assert r.served_by == "a2-1"


BLOG_POST = """\
apiVersion: netns-lab/v1
kind: Scenario
name: old-ingress
objects:
  - {apiVersion: v1, kind: Pod, metadata: {name: web, labels: {app: web}}, spec: {containers: [{name: c, image: netexec, ports: [{containerPort: 80}]}]}}
  - {apiVersion: v1, kind: Service, metadata: {name: web}, spec: {selector: {app: web}, ports: [{port: 80}]}}
  - apiVersion: extensions/v1beat1
    kind: Ingress
    metadata:
      name: web
    spec:
      tls:
        - hosts:
            - 203.0.113.50
          secretName: web-tls
      rules:
        - hosts: web.example.com
          http:
            paths:
              - path: /
                backend:
                  serviceName: web
                  sercvicePort: 80
"""


def test_the_old_blog_post_manifest_gets_one_line_per_mistake(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "old.yaml"
    path.write_text(BLOG_POST)
    before = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    proc = subprocess.run([sys.executable, "-m", "netns_lab", "run-scenario", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert all(line.startswith(f"error: {path}:") for line in lines), lines
    text = "\n".join(lines)
    assert len(lines) == 4, text
    assert 'objects[2].apiVersion: Invalid value: "extensions/v1beat1": no matches for kind "Ingress"' in lines[0]
    assert "use apiVersion networking.k8s.io/v1" in lines[0] and "backend.service.port.number" in lines[0]
    assert 'objects[2].spec.tls[0].hosts[0]: Invalid value: "203.0.113.50": must be a DNS name, not an IP address' in text
    assert 'objects[2].spec.rules[0].hosts: unknown field "hosts"' in text and 'did you mean "host"?' in text
    assert 'backend.sercvicePort: unknown field "sercvicePort"' in text and 'did you mean "servicePort"?' in text
    assert proc.stdout == ""
    assert (sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []) == before  # nothing built


HOSTILE_LAB = "ing-hostile"
HOSTILE_BASE = {
    "apiVersion": "netns-lab/v1", "kind": "Scenario", "name": HOSTILE_LAB, "cluster": {"nodes": 1},
    "objects": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
         "spec": {"containers": [{"name": "c", "image": "netexec", "ports": [{"containerPort": 8080}]}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
    ],
}
LOG = "{tmp}/injected.log"  # where an injected access_log would make nginx create a file
# (where the hostile string goes, the string, the error the one line must hold)
HOSTILE = [
    ("path:ImplementationSpecific", "/a { return 418; }", 'paths[0].path: Invalid value: "/a { return 418; }": cannot be used with pathType ImplementationSpecific'),
    ("path:ImplementationSpecific", "/a {} access_log " + LOG + "; location /b", "cannot be used with pathType ImplementationSpecific"),
    ("path:ImplementationSpecific", "/a\naccess_log " + LOG + ";", 'Invalid value: "/a\\naccess_log '),
    ("path:Prefix", "/a;return 418", 'paths[0].path: Invalid value: "/a;return 418": cannot be used with pathType Prefix'),
    ("path:Exact", "/a{", 'Invalid value: "/a{": cannot be used with pathType Exact'),
    ("path:Prefix", "/a\n}\nserver { listen 8080; access_log " + LOG + "; }", "cannot be used with pathType Prefix"),
    ("host", "a.example.com;\naccess_log " + LOG, 'rules[0].host: Invalid value: "a.example.com;\\naccess_log'),
    ("host", "*.example.com { return 418; }", "rules[0].host: Invalid value:"),
    ("tls-host", "a.example.com\n}", 'tls[0].hosts[0]: Invalid value: "a.example.com\\n}"'),
    ("tls-secret", "../../" + LOG, "tls[0].secretName: Invalid value:"),
    ("port-name", "http;return", 'service.port.name: Invalid value: "http;return"'),
]


def _hostile_scenario(tmp: str, where: str, value: str) -> str:
    value = value.replace("{tmp}", tmp)
    path, ptype, host = "/", "Prefix", "a.example.com"
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    spec: dict = {}  # type: ignore[type-arg]
    if where.startswith("path:"):
        path, ptype = value, where.split(":", 1)[1]
    elif where == "host":
        host = value
    elif where == "tls-host":
        spec["tls"] = [{"hosts": [value]}]
    elif where == "tls-secret":
        spec["tls"] = [{"hosts": [host], "secretName": value}]
    elif where == "port-name":
        backend = {"service": {"name": "web", "port": {"name": value}}}
    spec["rules"] = [{"host": host, "http": {"paths": [{"path": path, "pathType": ptype, "backend": backend}]}}]
    doc = {**HOSTILE_BASE, "objects": [*HOSTILE_BASE["objects"],  # type: ignore[list-item]
                                       {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"}, "spec": spec}]}
    out = os.path.join(tmp, "hostile.yaml")
    with open(out, "w") as fh:
        yaml.safe_dump(doc, fh, sort_keys=False)
    return out


def _lab_remains(lab: str) -> list[str]:
    netns = [n for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else []) if n.startswith(lab)]
    records = [f for f in (os.listdir("/run/netns-lab") if os.path.isdir("/run/netns-lab") else []) if f.startswith(lab)]
    return netns + records


@pytest.mark.parametrize(("where", "value", "message"), HOSTILE, ids=[f"{w}-{i}" for i, (w, _v, _m) in enumerate(HOSTILE)])
def test_a_hostile_ingress_string_is_refused_and_builds_nothing(tmp_path, where: str, value: str, message: str) -> None:  # type: ignore[no-untyped-def]
    """Strings written to become nginx directives (a block, an access_log writing a host file,
    a newline ending a comment or a statement): exit 2, one line naming the field, no lab, no file."""
    path = _hostile_scenario(str(tmp_path), where, value)
    assert not _lab_remains(HOSTILE_LAB)
    proc = subprocess.run([sys.executable, "-m", "netns_lab", "run-scenario", path], capture_output=True, text=True, timeout=120)
    try:
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}:"), proc.stderr
        assert message in lines[0], lines[0]
        assert proc.stdout == ""
        assert not os.path.exists(LOG.format(tmp=tmp_path))
        assert not _lab_remains(HOSTILE_LAB)
    finally:
        if _lab_remains(HOSTILE_LAB):  # only when it was built (old code): leave nothing behind
            subprocess.run([sys.executable, "-m", "netns_lab", "down", HOSTILE_LAB], capture_output=True, timeout=120)


def _live_nginx() -> set[int]:
    """Running nginx processes (zombies not counted)."""
    out = set()
    for e in os.listdir("/proc"):
        try:
            with open(f"/proc/{e}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        if "(nginx)" in stat and stat.rsplit(")", 1)[1].split()[0] != "Z":
            out.add(int(e))
    return out


def test_a_killed_controller_leaves_nothing_behind() -> None:
    """nginx hides the lab's token (it overwrites its environment with its title) and its
    workers outlive a SIGKILLed master: cleanup still finds them, by the lab's namespaces."""
    before = _live_nginx()
    lab = Lab.from_file(INGRESS, {"name": "ing-kill"}).up()
    try:
        assert len(_live_nginx() - before) >= 2  # master + worker
        supervisor = next(p["pid"] for p in lab.state.processes if p["role"] == "ingress")  # type: ignore[union-attr]
        os.kill(supervisor, 9)
        time.sleep(0.5)
        assert _live_nginx() - before  # the worker survived its master
        check = subprocess.run([sys.executable, "-m", "netns_lab", "clean", "--check"], capture_output=True, text=True, timeout=60)
        assert check.returncode == 1 and "ing-kill: process" in check.stdout
    finally:
        lab.down()
    assert not _live_nginx() - before
