"""``run-scenario`` end to end: the shipped scenarios pass, a wrong expectation fails (1)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.root
INVOKE = os.path.join(os.path.dirname(sys.executable), "invoke")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INVOKE, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("name", ["basic", "underlay"])
def test_shipped_scenario_passes(name: str) -> None:
    proc = _run("run-scenario", name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout
    lines = [l for l in proc.stdout.splitlines() if l.strip().startswith("PASS")]
    assert len(lines) >= 8
    assert "pod-to-pod matrix: 12/12 pairs connected, source IP preserved in 12/12" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].endswith("(all passed)")


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
@pytest.mark.parametrize("name", ["clusterip", "nodeport", "loadbalancer", "external-ips", "changes"])
def test_service_scenarios_pass_in_both_proxy_modes(name: str, mode: str) -> None:
    proc = _run("run-scenario", name, "--set", f"cluster.proxyMode={mode}", "--set", f"name={name}-{mode[:3]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].endswith("(all passed)")


@pytest.mark.parametrize("name", ["dns", "headless", "externalname", "ingress", "ingress-haproxy", "spread"])
def test_discovery_scenarios_pass(name: str) -> None:
    proc = _run("run-scenario", name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].endswith("(all passed)")


@pytest.mark.parametrize("network", ["vxlan", "host-gw"])
def test_dual_stack_scenario_passes_in_both_network_modes(network: str) -> None:
    proc = _run("run-scenario", "dual-stack", "--set", f"cluster.network={network}", "--set", f"name=dual-{network}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pod-to-pod matrix (IPv6): 12/12 pairs connected, source IP preserved in 12/12" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].endswith("(all passed)")


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_bgp_scenario_passes_in_both_proxy_modes(mode: str) -> None:
    """The three promises over BIRD's routes, pods reached from outside, LB IPs by BGP."""
    proc = _run("run-scenario", "bgp", "--set", f"cluster.proxyMode={mode}", "--set", f"name=bgp-{mode[:3]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pod-to-pod matrix: 6/6 pairs connected, source IP preserved in 6/6" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].endswith("(all passed)")


def test_the_underlay_scenario_passes_unchanged_over_bgp() -> None:
    """`bgp` is an option: the host-gw scenario's checks hold when BIRD makes the routes."""
    proc = _run("run-scenario", "underlay", "--set", "cluster.network=bgp", "--set", "name=underlay-bgp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pods, bgp, pod MTU 1500" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].endswith("(all passed)")


def test_every_shipped_scenario_is_run_by_a_test() -> None:
    shipped = {f[:-5] for f in os.listdir(os.path.join(ROOT, "scenarios")) if f.endswith(".yaml")}
    assert shipped == {"basic", "underlay", "clusterip", "nodeport", "loadbalancer", "external-ips", "dns", "headless",
                       "externalname", "ingress", "ingress-haproxy", "spread", "changes",
                       "conformance", "dual-stack", "ipv6", "bgp"}  # ipv6: tests/test_ipv6.py; spread also runs spread out (tests/test_spread.py); conformance: tests/test_conformance.py


def test_a_wrong_expectation_fails_with_exit_1(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = open(os.path.join(ROOT, "scenarios", "basic.yaml")).read()
    # web-1 is listening: expecting a refusal must fail, and say what was seen instead.
    text = text.replace("connect: pod/web-1:9999\n    expect: {result: refused}", "connect: pod/web-1:9376\n    expect: {result: refused}")
    text = text.replace("name: basic\n", "name: basic-wrong\n")
    path = tmp_path / "wrong.yaml"
    path.write_text(text)
    junit, report = tmp_path / "report.xml", tmp_path / "report.json"
    proc = _run("run-scenario", str(path), "--junit", str(junit), "--json", str(report))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fail = [l for l in proc.stdout.splitlines() if l.startswith("  FAIL")]
    assert len(fail) == 1 and "expected refused: got ok (served by web-1)" in fail[0]
    # the same verdicts in JUnit XML (CI systems) and JSON (tools)
    import json
    import xml.etree.ElementTree as ET

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "8" and suite.get("failures") == "1"
    failed = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    assert len(failed) == 1 and "expected refused: got ok" in failed[0].find("failure").get("message")  # type: ignore[union-attr]
    doc = json.loads(report.read_text())
    assert (doc["passed"], doc["failed"]) == (7, 1)
    assert [c["passed"] for c in doc["checks"]].count(False) == 1


def test_keep_status_and_down() -> None:
    proc = _run("run-scenario", "underlay", "--keep", "--set", "name=kept")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        status = _run("status")
        line = next(l for l in status.stdout.splitlines() if l.startswith("kept:"))
        assert "up, 2 nodes, 5 pods, host-gw" in line and "serving" in line  # 4 + the cluster DNS pod
    finally:
        down = _run("down", "kept")
    assert down.returncode == 0 and "removed" in down.stdout
    assert "kept:" not in _run("status").stdout


def test_progress_bars_only_when_asked_or_on_a_terminal() -> None:
    env = {**os.environ, "NETNS_LAB_PROGRESS": "1"}
    proc = subprocess.run([INVOKE, "run-scenario", "basic", "--set", "name=progress"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pod namespaces" in proc.stderr and "5/5" in proc.stderr  # 4 pods + the cluster DNS pod
    assert "Service rules" in proc.stderr
    quiet = _run("run-scenario", "basic", "--set", "name=progress")  # stderr is a pipe: no bars
    assert quiet.returncode == 0 and quiet.stderr == ""
