"""NetworkPolicy, enforced for real: every upstream e2e case in both dataplanes and both
proxy modes (each case a scenario of scenarios/netpol/, run by ``invoke run-scenario``), and
the semantics users rely on, probed through one shared lab per dataplane: a Service never
bypasses a policy (the rules see the pod address after kube-proxy's DNAT), a node always
reaches its own pods, an established connection survives a policy that starts denying it
(new ones do not), and removing every policy leaves no chain, set or table behind."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from netns_lab.lab import Lab
from netns_lab.probes.connect import probe_one
from tests.conftest import ROOT

pytestmark = pytest.mark.root
INVOKE = os.path.join(os.path.dirname(sys.executable), "invoke")
CASES = sorted(glob.glob(os.path.join(ROOT, "scenarios", "netpol", "[0-9]*.yaml")))
MODEL = os.path.join(ROOT, "tests", "scenarios", "netpol.yaml")
COMBOS = [("iptables", "iptables"), ("iptables", "nftables"), ("nftables", "nftables"), ("nftables", "iptables")]
WORKERS = 3  # labs side by side: a blocked cell costs a 1 s probe timeout, not CPU


SCTP_CASES = sorted(glob.glob(os.path.join(ROOT, "scenarios", "netpol", "sctp", "[0-9]*.yaml")))


def test_every_upstream_case_is_here() -> None:
    """42 cases of the TCP context, the UDP context's three, the SCTP context's three (in the VM)."""
    assert len(CASES) == 45 and len(SCTP_CASES) == 3


def _run_case(path: str, proxy: str, dataplane: str) -> tuple[str, int, str]:
    stem = os.path.basename(path)[:-5]
    name = f"np{'s' if '/sctp/' in path else ''}{stem[:2]}-{proxy[:3]}-{dataplane[:3]}"
    proc = subprocess.run([INVOKE, "run-scenario", os.path.relpath(path, ROOT), "--set", f"name={name}",
                           "--set", f"cluster.proxyMode={proxy}", "--set", f"cluster.networkPolicy={dataplane}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    return stem, proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(("proxy", "dataplane"), COMBOS, ids=[f"proxy-{p}-policy-{d}" for p, d in COMBOS])
def test_upstream_cases_pass(proxy: str, dataplane: str) -> None:
    """Every truth table of every case, in this proxy mode and policy dataplane: the two
    dataplanes render one model, so they must agree with upstream and with each other. The
    cases are pod to pod (no Service), so the proxy mode adds only its filter chains, which
    every case crosses: a mixed pairing (iptables proxy, nftables policy, or the reverse) runs
    every third case, each pairing another third, a third of the CI time each for the check
    that the two sets of chains compose."""
    cases = CASES if proxy == dataplane else CASES[1 + (proxy == "nftables")::3]
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda p: _run_case(p, proxy, dataplane), cases))
    failed = [(stem, rc, out) for stem, rc, out in results if rc != 0 or not out.strip().splitlines()[-1].endswith("(all passed)")]
    assert not failed, "\n\n".join(f"{stem}: exit {rc}\n{out}" for stem, rc, out in failed)
    tables = sum(open(p).read().count("reachability:") for p in cases)
    probed = sum(out.count("pairs as expected") for _s, _rc, out in results)
    assert probed == tables  # every table of every case was probed, none skipped


@pytest.mark.sctp
@pytest.mark.parametrize(("proxy", "dataplane"), COMBOS[::2], ids=[f"proxy-{p}-policy-{d}" for p, d in COMBOS[::2]])
def test_upstream_sctp_cases_pass(proxy: str, dataplane: str) -> None:
    """The SCTP context: SCTP pods (netexec's one-to-one SCTP sockets) and tables probed over SCTP,
    in each dataplane (in the VM: emulated, so the two default pairings only)."""
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda p: _run_case(p, proxy, dataplane), SCTP_CASES))
    failed = [(stem, rc, out) for stem, rc, out in results if rc != 0 or not out.strip().splitlines()[-1].endswith("(all passed)")]
    assert not failed, "\n\n".join(f"{stem}: exit {rc}\n{out}" for stem, rc, out in failed)
    assert sum(out.count("pairs as expected") for _s, _rc, out in results) == sum(open(p).read().count("reachability:") for p in SCTP_CASES)


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    mode = request.param
    with Lab.from_file(MODEL, {"name": f"netpol-{mode[:3]}", "cluster.proxyMode": mode}) as lab:
        yield lab


def policy(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("podSelector", {})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def connects(lab: Lab, src: str, dst: str, port: int = 80) -> bool:
    return probe_one(lab.netns_of(src), dst, port, timeout=1.0).result == "ok"


def test_a_service_never_bypasses_a_policy(lab: Lab) -> None:
    """x/a admits only x/b: through s-x-a's ClusterIP too, since the rules see the pod after DNAT."""
    service_never_bypasses_a_policy(lab)


def service_never_bypasses_a_policy(lab: Lab) -> None:
    svc = lab.ip_of("service/x/s-x-a")
    a = lab.ip_of("pod/x/a")
    assert connects(lab, "pod/x/c", svc) and connects(lab, "pod/y/b", svc)
    lab.apply(policy("only-b", "x", podSelector={"matchLabels": {"pod": "a"}},
                     ingress=[{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]))
    try:
        for src in ("pod/x/c", "pod/y/b", "pod/y/c"):  # x/c and y/b on x/a's node, y/c on the other
            assert not connects(lab, src, svc), f"{src} reached x/a through its Service"
            assert not connects(lab, src, a), f"{src} reached x/a directly"
        assert connects(lab, "pod/x/b", svc) and connects(lab, "pod/x/b", a)
    finally:
        lab.delete("networkpolicy/x/only-b")
    assert connects(lab, "pod/x/c", svc)


@pytest.fixture(scope="module")
def ipvs_lab() -> Iterator[Lab]:
    with Lab.from_file(MODEL, {"name": "netpol-ipvs", "cluster.proxyMode": "ipvs"}) as lab:
        yield lab


@pytest.mark.ipvs
def test_ipvs_a_service_never_bypasses_a_policy(ipvs_lab: Lab) -> None:
    """IPVS DNATs in the input path and sends on through OUTPUT: the policy still sees the pod
    (cali-OUTPUT for a local backend and the client's egress, FORWARD on a remote backend's node)."""
    service_never_bypasses_a_policy(ipvs_lab)


@pytest.mark.ipvs
def test_ipvs_default_deny_and_egress(ipvs_lab: Lab) -> None:
    lab = ipvs_lab
    svc_a, svc_b = lab.ip_of("service/x/s-x-a"), lab.ip_of("service/x/s-x-b")
    assert connects(lab, "pod/y/a", svc_a) and connects(lab, "pod/y/b", svc_b)
    lab.apply(policy("deny", "x", policyTypes=["Ingress"]), policy("no-egress", "y", policyTypes=["Egress"]))
    try:
        for src in ("pod/z/a", "pod/z/b"):  # node-1 and node-2 clients, x/a on node-1, x/b on node-2
            for svc in (svc_a, svc_b):
                assert not connects(lab, src, svc), f"{src} reached {svc} through IPVS"
        assert not connects(lab, "pod/y/c", lab.ip_of("service/z/s-z-a"))  # y's egress, through IPVS
        assert connects(lab, "node/node-1", svc_a)  # a node reaches its own pod through a Service too
        assert not connects(lab, "node/node-2", svc_a)  # another node's connection is x/a's ingress
        assert connects(lab, "pod/z/b", lab.ip_of("service/z/s-z-a"))  # what no policy selects still flows
    finally:
        lab.delete("networkpolicy/x/deny", "networkpolicy/y/no-egress")
    assert connects(lab, "pod/z/a", svc_a)


def test_a_node_always_reaches_its_own_pods(lab: Lab) -> None:
    """Default deny ingress on x/a: its own node still connects (kubelet's probes), another node does not."""
    a = lab.ip_of("pod/x/a")
    own = lab.topology.pod("x/a").node
    other = next(n.name for n in lab.topology.nodes if n.name != own)
    lab.apply(policy("deny", "x", policyTypes=["Ingress"]))
    try:
        assert connects(lab, f"node/{own}", a)
        assert not connects(lab, f"node/{other}", a)
        assert not connects(lab, "pod/y/a", a)
    finally:
        lab.delete("networkpolicy/x/deny")


ECHO_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 9999)); s.listen(8)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    while (data := c.recv(100)):
        c.sendall(data)
"""
ECHO_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 9999), timeout=2)
for line in sys.stdin:
    try:
        c.sendall(line.encode()); print("echo" if c.recv(100) else "closed", flush=True)
    except OSError as exc:
        print(type(exc).__name__, flush=True)
"""


def test_an_established_connection_outlives_a_policy_that_denies_it(lab: Lab) -> None:
    """As in Calico's dataplanes: conntrack accepts a connection's packets before any policy
    is evaluated, so a connection open when a policy starts denying it keeps working; a new
    connection is dropped (README: "NetworkPolicy")."""
    a = lab.ip_of("pod/x/a")
    server = subprocess.Popen(["ip", "netns", "exec", lab.netns_of("pod/x/a"), sys.executable, "-c", ECHO_SERVER],
                              stdout=subprocess.PIPE, text=True)
    client = None
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        client = subprocess.Popen(["ip", "netns", "exec", lab.netns_of("pod/y/b"), sys.executable, "-c", ECHO_CLIENT, a],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert client.stdin is not None and client.stdout is not None

        def say() -> str:
            client.stdin.write("hello\n")  # type: ignore[union-attr]
            client.stdin.flush()  # type: ignore[union-attr]
            return client.stdout.readline().strip()  # type: ignore[union-attr]

        assert say() == "echo"
        lab.apply(policy("deny", "x", policyTypes=["Ingress"]))
        try:
            assert say() == "echo"  # the open connection: still served
            assert not connects(lab, "pod/y/b", a, 9999)  # a new one: dropped
        finally:
            lab.delete("networkpolicy/x/deny")
    finally:
        for proc in (client, server):
            if proc is not None:
                proc.kill()
                proc.wait()


def _leftovers(lab: Lab) -> list[str]:
    out = []
    for node in lab.topology.nodes:
        ns = node.netns
        for cmd in (["iptables-nft-save", "-t", "filter"], ["iptables-legacy-save", "-t", "filter"], ["nft", "list", "tables"],
                    ["ipset", "list", "-n"]):
            text = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True).stdout
            out += [f"{node.name}: {line}" for line in text.splitlines() if "cali" in line]
    return out


def test_removing_every_policy_leaves_nothing_behind(lab: Lab) -> None:
    lab.apply(policy("deny-all", "x", policyTypes=["Ingress", "Egress"]),
              policy("named", "y", ingress=[{"ports": [{"port": "serve-81-tcp"}], "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]))
    assert _leftovers(lab)  # the rules exist: the check below could fail
    lab.delete("networkpolicy/x/deny-all", "networkpolicy/y/named")
    assert _leftovers(lab) == []
    assert connects(lab, "pod/y/a", lab.ip_of("pod/x/a"))


def test_a_changed_label_takes_effect_in_the_change_that_made_it(lab: Lab) -> None:
    """Policies follow pods' and namespaces' labels at run time, within the one sync."""
    a = lab.ip_of("pod/x/a")
    lab.apply(policy("from-team", "x", podSelector={"matchLabels": {"pod": "a"}},
                     ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]))
    try:
        assert not connects(lab, "pod/z/c", a)
        lab.label("namespace/z", team="blue")
        assert connects(lab, "pod/z/c", a)
        lab.label("namespace/z", team=None)
        assert not connects(lab, "pod/z/c", a)
    finally:
        lab.delete("networkpolicy/x/from-team")


def test_a_wrong_table_fails_and_prints_expected_observed_and_difference(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = open(os.path.join(ROOT, "scenarios", "netpol", "01-deny-ingress.yaml")).read()
    # y/a -> x/a is blocked by the policy: claim it connects
    text = text.replace("      y/a  X   X   X   -", "      y/a  .   X   X   -").replace("np-01-deny-ingress", "np-wrong-table")
    assert "y/a  .   X   X   -" in text
    path = tmp_path / "wrong.yaml"
    path.write_text(text.replace("objects: [model.yaml]", f"objects: [{ROOT}/scenarios/netpol/model.yaml]"))
    proc = subprocess.run([INVOKE, "run-scenario", str(path)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "1 of 72 pairs not as expected" in out
    expected, observed, diff = (out.index(h) for h in ("expected:", "observed:", "difference (X: not as expected):"))
    assert expected < observed < diff
    rows = [l.split() for l in out[diff:].splitlines()[1:11]]
    assert rows[0] == ["-", "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"]
    wrong = [(r[0], rows[0][j]) for r in rows[1:] for j, cell in enumerate(r) if cell == "X"]
    assert wrong == [("y/a", "x/a")]


def test_trace_names_the_policy_rule_that_accepted_and_the_chain_that_dropped(lab: Lab) -> None:
    from netns_lab.probes import trace as tracer

    lab.apply(policy("from-y", "x", podSelector={"matchLabels": {"pod": "a"}},
                     ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]))
    try:
        ok = tracer.trace(lab, "pod/y/b", "service/x/s-x-a:80")
        assert ok.result == "ok" and len(ok.policy) == 1, tracer.render(ok)
        assert "accepted by" in ok.policy[0] and "cali-pi-" in ok.policy[0] and "policy x/from-y, ingress" in ok.policy[0]
        blocked = tracer.trace(lab, "pod/z/b", "service/x/s-x-a:80")
        assert blocked.result != "ok" and len(blocked.policy) == 1, tracer.render(blocked)
        assert "dropped by" in blocked.policy[0] and "cali-tw-" in blocked.policy[0] and "ingress of x/a" in blocked.policy[0]
        assert "network policy: " in tracer.render(blocked)
    finally:
        lab.delete("networkpolicy/x/from-y")


def test_get_networkpolicies_reads_like_kubectl(lab: Lab) -> None:
    import yaml

    from netns_lab import cli

    lab.apply(policy("web", "y", podSelector={"matchLabels": {"pod": "a"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]},
                     egress=[{"ports": [{"port": 53, "protocol": "UDP"}]}]))
    try:
        import io

        out = io.StringIO()
        assert cli.get(lab.name, "networkpolicies", all_namespaces=True, out=out) == 0
        rows = [line.split() for line in out.getvalue().splitlines()]
        assert rows[0] == ["NAMESPACE", "NAME", "POD-SELECTOR", "AGE"] and rows[1][:3] == ["y", "web", "pod=a,tier"]
        out = io.StringIO()
        assert cli.get(lab.name, "netpol", namespace="y", output="yaml", out=out) == 0
        (item,) = yaml.safe_load(out.getvalue())["items"]
        assert item["spec"]["policyTypes"] == ["Ingress", "Egress"]  # defaulted: egress rules are present
        assert item["spec"]["egress"] == [{"ports": [{"protocol": "UDP", "port": 53}]}]
    finally:
        lab.delete("networkpolicy/y/web")
