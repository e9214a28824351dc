"""`apply`, `delete`, `label`, `events` and `reconcile` on a running lab, from the command line:
an invalid change is refused whole (exit 2, one line) and leaves the lab byte-identical; a
change killed half way is brought back by the next reconcile; events say what happened."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from netns_lab import model_io, procs, state
from netns_lab.objectlog import ObjectLog
from netns_lab.lab import Lab
from netns_lab.realize import netns
from tests.conftest import ROOT

pytestmark = pytest.mark.root
RUNTIME = os.path.join(ROOT, "tests", "scenarios", "runtime.yaml")
NAME = "rt-cli"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.from_file(RUNTIME, {"name": NAME, "cluster.proxyMode": "nftables"}) as lab:
        yield lab


def cli(*args: str, fault: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **({"NETNS_LAB_FAULT": fault} if fault else {}))
    return subprocess.run([sys.executable, "-m", "netns_lab", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def api_server_pid() -> int:
    """The PID of the lab's API server, started by a no-op change if none runs yet."""
    assert cli("label", NAME, "pod/client", "probed=yes").returncode == 0  # selected by nothing
    st = state.load(NAME)
    assert st is not None
    pids = [p["pid"] for p in st.processes if p["role"] == "apiserver" and procs.owned_by(p["pid"], st.instance)]
    assert len(pids) == 1, st.processes
    return pids[0]


def assert_server_killed(done: subprocess.CompletedProcess[str], pid: int) -> None:
    """The change's process (the lab's API server) died at the fault point; the command says so."""
    assert done.returncode == 3, done.stdout + done.stderr
    assert "its API server stopped before it answered" in done.stderr and "invoke reconcile" in done.stderr, done.stderr
    assert not procs.owned_by(pid, state.load(NAME).instance)  # type: ignore[union-attr]


def snapshot(lab: Lab) -> dict[str, str]:
    """Everything a change could touch: every node's rules (counters aside), the lab's
    namespaces, its recorded objects, the DNS zone and netexec's configuration."""
    out = {}
    for node in lab.topology.nodes:
        for tool in (["nft", "list", "ruleset"], ["iptables-save"]):
            text = subprocess.run(["ip", "netns", "exec", node.netns, *tool], capture_output=True, text=True).stdout
            out[f"{node.name} {tool[0]}"] = re.sub(r"\[\d+:\d+\]|packets \d+ bytes \d+|^#.*$", "", text, flags=re.M)
    out["netns"] = "\n".join(sorted(n for n in os.listdir("/run/netns") if n.startswith(f"{NAME}_")))
    st = state.load(NAME)
    assert st is not None
    out["objects"] = json.dumps(model_io.dump_objects(ObjectLog.read(st.workdir).recorded), sort_keys=True)  # type: ignore[arg-type]
    for f in sorted(f for f in os.listdir(st.workdir) if f.startswith("dns-zone.")) + ["netexec.json"]:  # the zone: snapshot + journal
        with open(os.path.join(st.workdir, f)) as fh:  # (a full sync starts a journal of another number)
            out[re.sub(r"\.\d+\.", ".N.", f)] = re.sub(r"dns-zone\.\d+\.journal", "dns-zone.N.journal", fh.read())
    return out


def manifest(kind: str, name: str, spec: str, ns: str = "default", extra: str = "") -> str:
    api = "networking.k8s.io/v1" if kind in ("Ingress", "IngressClass") else "v1"
    return f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\n{extra}spec: {spec}\n"


POD = "{{nodeName: {node}, containers: [{{name: web, image: netexec, ports: [{{name: http, containerPort: {port}}}]}}]}}"
REFUSED = [
    ("clusterIP is immutable", ["apply", manifest("Service", "web", "{clusterIP: 10.96.0.99, selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}")],
     'spec.clusterIPs[0]: Invalid value: ["10.96.0.99"]: may not change once set'),
    ("unknown kind", ["apply", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"], 'no matches for kind "Deployment"'),
    ("bad label value", ["label", "pod/web-1", "app=not ok!"], 'Invalid value: "not ok!"'),
    ("bad label key", ["label", "pod/web-1", "bad key=x"], 'Invalid value: "bad key"'),
    ("neither set nor remove", ["label", "pod/web-1", "app"], 'Invalid value: "app": must be KEY=VALUE'),
    ("delete of something absent", ["delete", "pod/web-9"], 'Not found: pods "web-9" not found'),
    ("a namespace that does not exist", ["apply", manifest("Pod", "p", POD.format(node="node-1", port=80), ns="nowhere")],
     'Not found: namespaces "nowhere" not found'),
    ("port out of range", ["apply", manifest("Service", "s", "{ports: [{port: 70000}]}")], "must be between 1 and 65535"),
    ("pod ports are immutable", ["apply", manifest("Pod", "web-1", POD.format(node="node-1", port=8080), extra="")],
     "pod updates may not change fields"),
    ("pod nodeName is immutable", ["apply", manifest("Pod", "web-1", POD.format(node="node-2", port=9376))], "pod updates may not change fields"),
    ("the default namespace stays", ["delete", "namespace/default"], "this namespace may not be deleted"),
    ("the lab's DNS stays", ["delete", "pod/kube-system/coredns"], "which the lab runs itself"),
    ("a malformed reference", ["delete", "pod/a/b/c"], "a Pod is named pod/NAMESPACE/NAME or NAME"),
    ("an unknown resource", ["delete", "deployment/web"], "KIND one of namespace, pod"),
    ("a nodePort taken twice", ["apply", manifest("Service", "a", "{type: NodePort, ports: [{port: 80, nodePort: 30222}]}") + "---\n"
                                + manifest("Service", "b", "{type: NodePort, ports: [{port: 80, nodePort: 30222}]}")],
     "provided port is already allocated"),
    ("nodePort on a ClusterIP", ["apply", manifest("Service", "a", "{ports: [{port: 80, nodePort: 30223}]}")], "may not be used when `type` is 'ClusterIP'"),
    ("an unknown field", ["apply", manifest("Service", "a", "{selectr: {app: web}, ports: [{port: 80}]}")], 'unknown field "selectr"'),
    ("not YAML", ["apply", "kind: [Service\n"], "YAML"),
    ("no such node", ["apply", manifest("Pod", "p", POD.format(node="node-9", port=80))], 'spec.nodeName: Not found: "node-9"'),
    ("all or nothing", ["apply", manifest("Service", "fine", "{ports: [{port: 80}]}") + "---\n" + manifest("Pod", "p", "{}")],
     "spec.containers: Required value"),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_an_invalid_change_is_refused_whole_and_changes_nothing(lab: Lab, case: tuple[str, list[str], str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    _name, (verb, *args), expected = case
    if verb == "apply":
        path = tmp_path / "change.yaml"
        path.write_text(args[0])
        args = [str(path)]
    before = snapshot(lab)
    proc = cli(verb, NAME, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert snapshot(lab) == before


def test_changes_from_the_command_line_and_their_events_in_order(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "svc.yaml"
    path.write_text(manifest("Service", "evt", "{selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}"))
    assert cli("apply", NAME, str(path)).returncode == 0
    assert cli("label", NAME, "pod/web-2", "app-").returncode == 0
    assert cli("label", NAME, "pod/web-2", "app=web").returncode == 0
    done = cli("delete", NAME, "service/evt")
    assert done.returncode == 0 and "kube-proxy: Service default/evt: no longer proxied" in done.stdout, done.stdout
    events = cli("events", NAME).stdout.splitlines()
    causes = [re.sub(r"^\S+\s+", "", e).split(": ", 1)[0] for e in events]
    ours = [c for c in dict.fromkeys(causes) if "evt" in c or "web-2" in c]
    assert ours == ["apply Service default/evt", "label pod/web-2 app-", "label pod/web-2 app=web", "delete service/evt"], causes
    assert any("DNS: evt.default.svc.cluster.local. -> " in e for e in events)
    assert any("label pod/web-2 app-: kube-proxy: Service default/web: endpoints 2 -> 1" in e for e in events)


@pytest.mark.parametrize("fault", ["sync:pods", "kube-proxy:node-1", "rules", "sync:cloud-lb"])
def test_a_change_killed_half_way_is_put_right_by_the_next_reconcile(lab: Lab, fault: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name = "k-" + re.sub(r"[^a-z0-9]", "", fault)[:10]
    path = tmp_path / "change.yaml"
    path.write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\n"
                    f"spec: {POD.format(node='node-2', port=9376)}\n---\n"
                    + manifest("Service", name, f"{{selector: {{app: {name}}}, ports: [{{port: 80, targetPort: http}}]}}"))
    server = api_server_pid()
    killed = cli("apply", NAME, str(path), fault=fault)
    assert_server_killed(killed, server)
    assert state.load(NAME).pending  # type: ignore[union-attr]
    fixed = cli("reconcile", NAME)
    assert fixed.returncode == 0, fixed.stderr
    after = Lab.attach(NAME)
    assert not after.state.pending  # type: ignore[union-attr]
    assert after.connect("pod/client", after.ip_of(f"service/{name}"), 80).result == "ok"
    assert after.connect("node/node-2", after.ip_of(f"service/{name}"), 80).result == "ok"
    settled = snapshot(lab)
    assert cli("reconcile", NAME).returncode == 0
    assert snapshot(lab) == settled  # a second full sync finds nothing to change

    plan = after.topology.pod(f"default/{name}")
    server = api_server_pid()
    killed = cli("delete", NAME, f"pod/{name}", f"service/{name}", fault="sync:router")  # everything but the pod's removal
    assert_server_killed(killed, server)
    assert netns.exists(plan.netns)
    assert cli("reconcile", NAME).returncode == 0
    assert not netns.exists(plan.netns)
    assert plan.netns not in state.load(NAME).namespaces  # type: ignore[union-attr]


def test_events_follow_prints_each_change_as_it_happens(lab: Lab) -> None:
    follow = subprocess.Popen([sys.executable, "-m", "netns_lab", "events", NAME, "--follow"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert cli("label", NAME, "pod/client", "followed=yes").returncode == 0
        assert follow.stdout is not None
        fd, seen, deadline = follow.stdout.fileno(), b"", time.monotonic() + 10
        while b"label pod/client followed=yes" not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                seen += os.read(fd, 65536)  # unbuffered: select sees what readline would have hidden
        assert b"label pod/client followed=yes: " in seen, seen[-500:]
        assert follow.poll() is None  # still following
    finally:
        follow.kill()
        follow.wait()
    assert cli("label", NAME, "pod/client", "followed-").returncode == 0


def test_a_change_killed_before_its_objects_were_recorded_never_happened(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "change.yaml"
    path.write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: lost, labels: {{app: lost}}}}\nspec: {POD.format(node='node-2', port=9376)}\n")
    server = api_server_pid()
    killed = cli("apply", NAME, str(path), fault="pending")
    assert_server_killed(killed, server)
    assert state.load(NAME).pending  # type: ignore[union-attr]
    assert cli("reconcile", NAME).returncode == 0
    after = Lab.attach(NAME)
    assert not after.state.pending and all(p.name != "lost" for p in after.pods)  # type: ignore[union-attr]
    assert all(p.name != "lost" for p in after.topology.pods)  # the plan follows the recorded objects
    assert cli("apply", NAME, str(path)).returncode == 0  # and the same change goes through afterwards
    assert cli("delete", NAME, "pod/lost").returncode == 0


def test_reconcile_repairs_what_was_undone_by_hand(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ip = "192.0.2.78"
    path = tmp_path / "svc.yaml"
    path.write_text(manifest("Service", "byhand", f"{{selector: {{app: web}}, externalIPs: [{ip}], ports: [{{name: http, port: 80, targetPort: http}}]}}"))
    assert cli("apply", NAME, str(path)).returncode == 0
    router = lab.topology.router_netns
    web1 = lab.topology.pod("default/web-1")
    subprocess.run(["ip", "-n", router, "route", "del", f"{ip}/32"], check=True)
    subprocess.run(["ip", "-n", web1.netns, "addr", "flush", "dev", "eth0"], check=True)  # a sandbox left half made
    assert lab.connect("external", ip, 80, timeout=1.0).result != "ok"
    fixed = cli("reconcile", NAME)
    assert fixed.returncode == 0, fixed.stderr
    assert "router: externalIP 192.0.2.78 routed to the nodes" in fixed.stdout and "Pod default/web-1: sandbox" in fixed.stdout
    after = Lab.attach(NAME)
    assert str(web1.ip) in after.addresses("pod/web-1")
    assert after.connect("external", ip, 80).result == "ok"
    assert after.connect("pod/client", "pod/web-1", 9376).result == "ok"
    assert cli("delete", NAME, "service/byhand").returncode == 0


def _servers() -> list[int]:
    st = state.load(NAME)
    assert st is not None
    return [p["pid"] for p in st.processes if p["role"] == "apiserver" and procs.owned_by(p["pid"], st.instance)]


def test_the_api_server_is_started_once_recorded_and_replaced_when_killed(lab: Lab) -> None:
    pid = api_server_pid()
    st = state.load(NAME)
    assert st is not None
    sock = os.path.join(st.workdir, "api.sock")
    assert os.stat(sock).st_mode & 0o777 == 0o600
    label = [subprocess.Popen([sys.executable, "-m", "netns_lab", "label", NAME, "pod/client", f"racer{i}=yes"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in label)
    assert _servers() == [pid]  # the running one served them all
    os.kill(pid, signal.SIGKILL)  # a stale socket and a dead PID in the record
    racers = [subprocess.Popen([sys.executable, "-m", "netns_lab", "label", NAME, "pod/client", f"racer{i}-"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in racers), [p.stderr.read() for p in racers if p.stderr]
    servers = _servers()
    assert len(servers) == 1 and servers[0] != pid  # started again, once, and recorded
    assert all(not k.startswith("racer") for k, _ in Lab.attach(NAME).pod("default/client").labels)


def test_the_api_server_follows_changes_made_by_another_process(lab: Lab) -> None:
    api_server_pid()  # warm, with the objects as they are now
    lab.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "inproc"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}})
    done = cli("delete", NAME, "service/inproc")  # it must know the Service another process created
    assert done.returncode == 0 and "Service default/inproc: no longer proxied" in done.stdout, done.stdout + done.stderr
    assert lab.connect("pod/client", "service/web", 80).result == "ok"


def test_the_api_server_answers_only_root_and_well_formed_requests(lab: Lab) -> None:
    api_server_pid()
    st = state.load(NAME)
    assert st is not None
    path = os.path.join(st.workdir, "api.sock")
    as_nobody = subprocess.run(["/usr/bin/python3", "-c", f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({path!r})"],
                               user="nobody", capture_output=True, text=True)
    assert as_nobody.returncode != 0 and "PermissionError" in as_nobody.stderr, as_nobody.stderr
    for raw, expected in [(b"not json", "Invalid value: not JSON"), (b"[1]", "expected a JSON object"),
                          (b'{"verb": "drop-everything"}', 'Unsupported value: \'drop-everything\''),
                          (b'{"verb": "delete", "refs": "service/web"}', "expected a list of strings")]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        reply = json.loads(b"".join(iter(lambda: sock.recv(65536), b"")))
        sock.close()
        assert reply["rc"] == 2 and reply["out"] == "" and expected in reply["err"], reply
        assert reply["err"].count("\n") == 1
    assert lab.connect("pod/client", "service/web", 80).result == "ok"


def test_down_stops_the_api_server() -> None:
    with Lab.from_file(RUNTIME, {"name": "rt-down", "cluster.proxyMode": "iptables"}):
        done = subprocess.run([sys.executable, "-m", "netns_lab", "label", "rt-down", "pod/client", "x=y"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        st = state.load("rt-down")
        assert st is not None
        pid = next(p["pid"] for p in st.processes if p["role"] == "apiserver")
        assert procs.owned_by(pid, st.instance)
        instance = st.instance
    assert not procs.owned_by(pid, instance) and state.load("rt-down") is None


@pytest.mark.parametrize("args, expected", [
    (["apply", "no-such-lab", ""], "at least one manifest file"),  # invoke's comma lists: nothing in them
    (["delete", "no-such-lab", ""], "at least one KIND/NAME"),
    (["label", "no-such-lab", "pod/a", "app"], 'Invalid value: "app": must be KEY=VALUE'),
    (["label", "no-such-lab", "pod/a", ""], "at least one KEY=VALUE"),
])
def test_a_mistake_that_needs_no_lab_is_refused_before_looking_for_one(args: list[str], expected: str) -> None:
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "invoke"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr


def test_delete_with_a_grace_period_from_the_command_line(lab: Lab) -> None:
    """`delete --grace-period S`: the pod is terminating (get pods says so, the EndpointSlice
    shows ready false / serving true / terminating true); the Service's other pods are ready,
    so new connections avoid it; after S seconds the lab's API server removes it. A malformed
    value is one line, exit 2."""
    import yaml

    bad = cli("delete", NAME, "pod/web-2", "--grace-period", "soon")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--grace-period" in bad.stderr, bad.stderr
    cli("apply", NAME, os.path.join(ROOT, "tests", "scenarios", "runtime-extra-pod.yaml"))
    done = cli("delete", NAME, "pod/web-3", "--grace-period", "3")
    assert done.returncode == 0, done.stderr
    pods = cli("get", NAME, "pods").stdout
    assert re.search(r"^web-3\s+1/1\s+Terminating\s", pods, re.M), pods
    slices = yaml.safe_load(cli("get", NAME, "endpointslices", "-o", "yaml").stdout)["items"]
    conds = {e["targetRef"]["name"]: e["conditions"] for sl in slices if sl["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
             for e in sl["endpoints"]}
    assert conds["web-3"] == {"ready": False, "serving": True, "terminating": True}, conds
    assert conds["web-1"] == {"ready": True, "serving": True, "terminating": False}, conds
    web = lab.service("web").cluster_ip
    served = {lab.connect("pod/client", web, 80, timeout=2.0).served_by for _ in range(20)}
    assert served == {"web-1", "web-2"}, served  # the terminating pod takes no new connection
    deadline = time.monotonic() + 15
    while "web-3" in cli("get", NAME, "pods").stdout:
        assert time.monotonic() < deadline, "web-3 was not removed after its grace period"
        time.sleep(0.3)
