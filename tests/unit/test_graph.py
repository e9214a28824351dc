"""`graph` draws every shipped scenario from its file alone (no root, nothing built)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from netns_lab.scenario import load_scenario
from tests.conftest import ROOT

SCENARIOS = sorted(glob.glob(os.path.join(ROOT, "scenarios", "*.yaml")))


def _graph(path: str, out: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "netns_lab", "graph", path, "--out", out], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", SCENARIOS, ids=[os.path.basename(p)[:-5] for p in SCENARIOS])
def test_graph_svg_png_and_mermaid_name_every_pod_and_service(path: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    scenario = load_scenario(path)
    svg, png, mmd = tmp_path / "g.svg", tmp_path / "g.png", tmp_path / "g.mmd"
    for out in (svg, png, mmd):
        _graph(path, str(out))
    root = ET.parse(svg).getroot()  # valid XML
    assert root.tag.endswith("svg")
    text = " ".join(t for t in root.itertext())
    for pod in scenario.pods:
        assert pod.key in text
    for svc in scenario.services:
        assert f"Service {svc.key}" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mermaid = mmd.read_text()
    assert mermaid.startswith("flowchart LR") and all(p.key in mermaid for p in scenario.pods)
    assert not os.path.exists(f"/run/netns-lab/{scenario.name}.json")  # nothing was built


def test_graph_shows_which_pods_each_network_policy_selects(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from netns_lab import graph as g
    from netns_lab.controllers.topology import plan

    text = open(os.path.join(ROOT, "tests", "scenarios", "netpol.yaml")).read().replace(
        "objects: [../../scenarios/netpol/model.yaml]",
        f"objects:\n  - {ROOT}/scenarios/netpol/model.yaml\n"
        "  - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: p, namespace: y},"
        " spec: {podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, c]}]}}}\n")
    path = tmp_path / "np.yaml"
    path.write_text(text)
    scenario = load_scenario(str(path))
    dot = g.dot(plan(scenario), scenario.pods, scenario.services, scenario.network_policies)
    assert 'NetworkPolicy y/p\\npod in (a,c) (Ingress)' in dot
    selected = sorted(line.split(" -> ")[1].split(" ")[0] for line in dot.splitlines() if "selects" in line)
    assert selected == ["n_y_a", "n_y_c"]
    _graph(str(path), str(tmp_path / "np.svg"))
    assert "NetworkPolicy y/p" in (tmp_path / "np.svg").read_text()
