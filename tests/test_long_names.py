"""Names Kubernetes accepts work end to end: a 253-character pod name in a 63-character
namespace on a 253-character node (the longest names the API server allows), two pods whose
names share their first 200 characters, 63-character Service, hostname and client names.

Before the kernel-name mapping (netns_lab.kernelnames) the build failed with ``OSError: File
name too long`` creating ``/run/netns/<lab>_<ns>_<pod>``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from netns_lab import kernelnames, state
from tests.conftest import ROOT

pytestmark = pytest.mark.root
INVOKE = os.path.join(os.path.dirname(sys.executable), "invoke")
LAB = "longnames"
NS = "n" * 62 + "s"  # 63: a namespace is a DNS-1123 label
COMMON = ("p" * 62 + ".") * 3 + "q" * 11  # the 200 characters both pod names start with
POD_A, POD_B = COMMON + "a" * 53, COMMON + "b" * 53  # 253: a pod name is a DNS-1123 subdomain
NODE = ("node-" + "x" * 58 + ".") * 3 + "y" * 61  # 253: so is a node name
HEADLESS = "h" + "e" * 62  # 63: a Service name is a DNS-1035 label
SVC = "s" + "v" * 62
HOST_B = "b" + "o" * 62  # 63: spec.hostname is a DNS-1123 label
CLIENT = "c" * 63  # an external client's name is a DNS-1123 label


def _pod(name: str, node: str, labels: dict[str, str], **spec: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"nodeName": node, **spec, "containers": [{"name": "c", "image": "netexec", "ports": [{"containerPort": 8080}]}]}}


def scenario() -> dict[str, object]:
    a, b = f"pod/{NS}/{POD_A}", f"pod/{NS}/{POD_B}"
    return {
        "apiVersion": "netns-lab/v1", "kind": "Scenario", "name": LAB,
        "cluster": {"nodes": [NODE, "node-2"], "network": "vxlan", "external": {"clients": [CLIENT]}},
        "objects": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
            _pod(POD_A, NODE, {"app": "a"}),
            _pod(POD_B, "node-2", {"app": "b"}, hostname=HOST_B, subdomain=HEADLESS),
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": HEADLESS, "namespace": NS},
             "spec": {"clusterIP": "None", "selector": {"app": "b"}, "ports": [{"port": 8080}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SVC, "namespace": NS},
             "spec": {"selector": {"app": "b"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        ],
        "checks": [
            {"matrix": "pod-to-pod"},
            {"matrix": "node-to-pod"},
            {"matrix": "pod-to-node"},
            {"name": "by pod refs", "from": a, "connect": f"{b}:8080",
             "expect": {"result": "ok", "servedBy": [f"{NS}/{POD_B}"], "clientIP": a}},
            {"name": "per-pod DNS name (63-character labels)", "from": a, "resolve": f"{HOST_B}.{HEADLESS}", "type": "A",
             "expect": {"answers": [b]}},
            {"name": "connect by the per-pod name", "from": a, "connect": f"{HOST_B}.{HEADLESS}:8080",
             "expect": {"result": "ok", "servedBy": [f"{NS}/{POD_B}"], "clientIP": a}},
            {"name": "connect through a 63-character Service", "from": a, "connect": f"{SVC}:80",
             "expect": {"result": "ok", "servedBy": [f"{NS}/{POD_B}"]}},
            {"name": "the long-named node's agent from a long-named client", "from": f"external/{CLIENT}",
             "connect": f"node/{NODE}:10250", "expect": {"result": "ok"}},
        ],
    }


def _invoke(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INVOKE, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def _lab_entries(directory: str) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(LAB + "_")] if os.path.isdir(directory) else []


def test_the_longest_names_kubernetes_accepts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(scenario(), width=1000, sort_keys=False))
    try:
        run = _invoke("run-scenario", str(path), "--keep")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "8/8 checks passed (all passed)" in run.stdout, run.stdout
        assert "pod-to-pod matrix: 2/2 pairs connected, source IP preserved in 2/2" in run.stdout

        # every namespace the lab owns is recorded, exists, fits, and starts with the lab's name
        with open(os.path.join(state.STATE_DIR, f"{LAB}.json")) as fh:
            owned = json.load(fh)["namespaces"]
        assert sorted(owned) == sorted(_lab_entries("/run/netns")) and len(owned) == 11
        assert all(len(n) <= kernelnames.NETNS_BUDGET for n in owned)
        assert sum(kernelnames.is_shortened(n) for n in owned) == 4  # 2 pods, the long node, the long client

        # kubectl's columns with the full Kubernetes names, not kernel names
        get = _invoke("get", "-l", LAB, "-k", "pods", "-n", NS, "-o", "wide", timeout=60)
        assert get.returncode == 0, get.stdout + get.stderr
        rows = [line.split() for line in get.stdout.splitlines()[1:]]
        assert sorted(r[0] for r in rows) == [POD_A, POD_B]
        assert {r[0]: r[-1] for r in rows} == {POD_A: NODE, POD_B: "node-2"}
        assert "~" not in get.stdout

        # a real program in the long-named pod, with kubelet's resolv.conf (ip netns exec maps it)
        ex = _invoke("exec", LAB, f"pod/{NS}/{POD_A}", "--", "sh", "-c",
                     f"ip -4 -o addr show dev eth0; getent hosts {HOST_B}.{HEADLESS}", timeout=60)
        assert ex.returncode == 0, ex.stdout + ex.stderr
        ips = {r[-1]: r[-2] for r in rows}  # NODE column last, IP before it
        assert f"inet {ips[NODE]}/24" in ex.stdout
        assert f"{HOST_B}.{HEADLESS}.{NS}.svc.cluster.local" in ex.stdout and ips["node-2"] in ex.stdout

        # where a kernel name is printed, the object's own name is printed with it
        cap = _invoke("capture", "-l", LAB, "-w", f"pod/{NS}/{POD_A}", "-c", "1", "-s", "0.3", timeout=60)
        assert cap.returncode == 0, cap.stdout + cap.stderr
        assert cap.stdout.strip().splitlines()[-1].endswith(f"/eth0 (pod/{NS}/{POD_A})")
    finally:
        down = _invoke("down", LAB, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _lab_entries("/run/netns") == [] and _lab_entries("/etc/netns") == []
    assert not os.path.exists(os.path.join(state.STATE_DIR, f"{LAB}.json"))
