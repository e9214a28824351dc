"""Kernel names for Kubernetes names (netns_lab.kernelnames): bounded, deterministic, distinct,
and unchanged for every name short enough to be used as it is."""

from __future__ import annotations

import os
import re

import pytest

from netns_lab import kernelnames
from netns_lab.controllers import topology
from netns_lab.controllers.ingress import cert_paths
from netns_lab.scenario import k8s, load_scenario

NAME_MAX = 255  # a path component: /run/netns/NAME, /etc/netns/NAME
LAB = "a" * 40  # the longest lab name the loader accepts
NS = "n" * 62 + "s"  # the longest namespace name (a DNS-1123 label)
COMMON = ("p" * 62 + ".") * 3 + "q" * 11  # 200 characters two pod names share
POD_A, POD_B = COMMON + "a" * 53, COMMON + "b" * 53  # the longest pod names (DNS-1123 subdomains)
NODE = ("node-" + "x" * 58 + ".") * 3 + "y" * 61  # the longest node name


def test_the_fixtures_are_names_kubernetes_accepts() -> None:
    assert len(POD_A) == len(NODE) == 253 and len(NS) == 63
    assert not k8s.dns1123_subdomain(POD_A) and not k8s.dns1123_subdomain(NODE) and not k8s.dns1123_label(NS)


@pytest.mark.parametrize(("got", "want"), [
    (topology.pod_netns("basic", "default", "web-1"), "basic_default_web-1"),
    (topology.pod_netns("rr", "default", "p0"), "rr_default_p0"),
    (topology.pod_netns("dns", "kube-system", "coredns"), "dns_kube-system_coredns"),
    (topology.node_netns("clusterip", "node-1"), "clusterip_node-1"),
    (topology.node_netns("lab04", "node-1"), "lab04_node-1"),
    (topology.client_netns("basic", "external"), "basic__ext"),
    (topology.client_netns("basic", "office"), "basic__ext-office"),
    (topology.underlay_netns("basic"), "basic__net"),
])
def test_short_names_are_unchanged(got: str, want: str) -> None:
    """The names the README, the labs and running labs use stay exactly what they were."""
    assert got == want


def test_a_name_of_exactly_the_budget_is_unchanged_and_one_more_is_shortened() -> None:
    fits = "x" * kernelnames.NETNS_BUDGET
    assert kernelnames.fit(fits) == fits
    longer = fits + "y"
    short = kernelnames.fit(longer)
    assert len(short) <= kernelnames.NETNS_BUDGET and short != longer and kernelnames.is_shortened(short)
    assert not kernelnames.is_shortened(fits)


@pytest.mark.parametrize("lab", ["x", "hln-long", LAB])
def test_the_longest_names_fit_the_budget_and_keep_the_lab_prefix(lab: str) -> None:
    names = [topology.pod_netns(lab, NS, POD_A), topology.node_netns(lab, NODE), topology.client_netns(lab, "c" * 63)]
    for name in names:
        assert len(name) <= kernelnames.NETNS_BUDGET < NAME_MAX
        assert name.startswith(lab + "_")  # ownership: no other lab's name can be produced
        assert re.fullmatch(r"[a-z0-9._-]+~[0-9a-f]{10}", name), name  # no "/", nothing a shell or ip(8) minds
        assert name.count("~") == 1


def test_deterministic_across_calls_and_processes() -> None:
    """The same object gets the same name in every process (state files, spread labs' other
    machines): the hash is SHA-256, not Python's per-process randomised hash()."""
    first = topology.pod_netns("lab", NS, POD_A)
    assert first == topology.pod_netns("lab", NS, POD_A)
    import subprocess
    import sys

    code = f"from netns_lab.controllers.topology import pod_netns; print(pod_netns('lab', {NS!r}, {POD_A!r}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout.strip()
    assert other == first


def test_names_sharing_a_long_prefix_are_distinct() -> None:
    a, b = topology.pod_netns("lab", NS, POD_A), topology.pod_netns("lab", NS, POD_B)
    assert a != b
    # the readable parts are equal (they share 200 characters): only the hash of the full name tells them apart
    assert a.split("~")[0] == b.split("~")[0]
    many = {topology.pod_netns("lab", NS, COMMON + f"-{i}") for i in range(2000)}
    assert len(many) == 2000


def test_a_shortened_name_never_equals_an_unchanged_one() -> None:
    """``~`` is not a character of any Kubernetes or lab name, so a pod cannot be named so as
    to take another object's shortened namespace."""
    short = topology.pod_netns("lab", NS, POD_A)
    tail = short.split("_")[-1]  # what stands where the pod name stood
    assert "~" in tail and k8s.dns1123_subdomain(tail) and k8s.dns1123_label(tail)  # no object can be named so


def test_the_same_names_in_other_places_map_differently() -> None:
    """Lab, namespace and pod each count: equal pod names in two namespaces or two labs, and a
    node and a pod, never share a namespace."""
    names = {
        topology.pod_netns("lab", NS, POD_A),
        topology.pod_netns("lab", NS[:-1] + "t", POD_A),
        topology.pod_netns("lab2", NS, POD_A),
        topology.node_netns("lab", POD_A),
        topology.client_netns("lab", "c" * 63),
        topology.client_netns("lab", "c" * 62 + "d"),
    }
    assert len(names) == 6


def test_the_pod_name_stays_readable_in_a_long_namespace() -> None:
    """The room before the hash is shared: a 63-character namespace does not hide the pod."""
    name = topology.pod_netns("hln", NS, "checkout-" + "z" * 244)
    lab, ns_part, pod_part = name.split("~")[0].split("_")
    assert lab == "hln" and ns_part and pod_part.startswith("checkout-")
    assert topology.pod_netns("hln", "default", "p" * 253).startswith("hln_default_ppp")


def test_a_longer_lab_name_than_the_loader_allows_is_refused() -> None:
    with pytest.raises(ValueError):
        kernelnames.netns("a" * 41, "default", "web")


def test_plan_with_the_longest_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A plan of 253-character pods on a 253-character node: every namespace fits, all differ."""
    text = f"""
apiVersion: netns-lab/v1
kind: Scenario
name: {LAB}
cluster: {{nodes: [{NODE}, node-2], external: {{clients: [{"c" * 63}]}}}}
objects:
  - {{apiVersion: v1, kind: Namespace, metadata: {{name: {NS}}}}}
  - {{apiVersion: v1, kind: Pod, metadata: {{name: {POD_A}, namespace: {NS}}}, spec: {{nodeName: {NODE}, containers: [{{name: c, image: netexec}}]}}}}
  - {{apiVersion: v1, kind: Pod, metadata: {{name: {POD_B}, namespace: {NS}}}, spec: {{nodeName: {NODE}, containers: [{{name: c, image: netexec}}]}}}}
"""
    (tmp_path / "long.yaml").write_text(text)
    topo = topology.plan(load_scenario(str(tmp_path / "long.yaml")))
    assert len(set(topo.namespaces)) == len(topo.namespaces)
    assert all(len(n) <= kernelnames.NETNS_BUDGET and n.startswith(LAB + "_") for n in topo.namespaces)
    assert topo.node(NODE).netns == topology.node_netns(LAB, NODE)
    assert topo.pod(f"{NS}/{POD_A}").name == POD_A  # the plan keeps the real names for every output
    assert all(len(n.uplink) <= 15 for n in topo.nodes) and all(len(p.host_veth) <= 15 for p in topo.pods)


def test_a_hash_collision_is_refused_at_load(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """40 bits make a collision astronomically unlikely; if one happens it is one line at load,
    not EEXIST half way through the build."""
    from netns_lab.errors import ScenarioError

    monkeypatch.setattr(topology, "pod_netns", lambda lab, ns, pod: f"{lab}_{ns}_same~0000000000")
    text = """
apiVersion: netns-lab/v1
kind: Scenario
name: clash
objects:
  - {apiVersion: v1, kind: Pod, metadata: {name: a}, spec: {containers: [{name: c, image: netexec}]}}
  - {apiVersion: v1, kind: Pod, metadata: {name: b}, spec: {containers: [{name: c, image: netexec}]}}
"""
    (tmp_path / "clash.yaml").write_text(text)
    with pytest.raises(ScenarioError, match='"pod/default/b": its network namespace name .* is also that of "pod/default/a"'):
        load_scenario(str(tmp_path / "clash.yaml"))  # the loader plans, so the scenario is refused before any build


def test_ingress_certificate_files_fit_a_file_name() -> None:
    """A TLS Secret's name is a DNS-1123 subdomain (253): NS-NAME.crt must still be a valid file name."""
    crt, key = cert_paths("/run/x/ingress", f"{NS}/{POD_A}")
    assert len(os.path.basename(crt)) <= NAME_MAX and len(os.path.basename(key)) <= NAME_MAX
    assert not kernelnames.is_shortened(cert_paths("/run/x/ingress", "default/a-tls")[0])  # short names as they were
    assert cert_paths("/run/x/ingress", f"{NS}/{POD_A}") != cert_paths("/run/x/ingress", f"{NS}/{POD_B}")
