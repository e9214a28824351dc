"""The live model survives the state file (another process attaches to a running lab)."""

from __future__ import annotations

import json
import os

from netns_lab import model_io
from netns_lab.scenario import load_scenario
from tests.conftest import ROOT


def test_pods_and_services_round_trip_through_json() -> None:
    for name in ("dns", "clusterip", "headless", "externalname", "nodeport"):
        s = load_scenario(os.path.join(ROOT, "scenarios", f"{name}.yaml"))
        for pod in s.pods:
            assert model_io.load_pod(json.loads(json.dumps(model_io.dump(pod)))) == pod
        for svc in s.services:
            assert model_io.load_service(json.loads(json.dumps(model_io.dump(svc)))) == svc


def test_dns_config_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "s.yaml"
    p.write_text(
        "apiVersion: netns-lab/v1\nkind: Scenario\nname: x\nobjects:\n"
        "  - {apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {dnsPolicy: None, containers: [{name: c, image: x}],"
        " dnsConfig: {nameservers: [1.2.3.4], searches: [a.example], options: [{name: ndots, value: '2'}, {name: edns0}]}}}\n"
    )
    pod = load_scenario(str(p)).pods[0]
    assert pod.dns_config is not None
    assert model_io.load_pod(json.loads(json.dumps(model_io.dump(pod)))) == pod
