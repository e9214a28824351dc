"""Hostile scenario files are refused cleanly; valid YAML that looks odd is read as Kubernetes reads it.

A scenario file is code someone may download and run as root. Files too large for the
static corpus (tests/bad_scenarios/) or that cannot live in git (a FIFO, bad UTF-8) are
generated here and run as a user would: ``python -m netns_lab run-scenario FILE``, in a child
whose address space is capped at 1 GiB, so a runaway expansion fails (exit 1, MemoryError)
instead of eating the machine, and with a timeout, so a hang fails instead of blocking.
No timing is asserted.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap

import pytest

from netns_lab.errors import ScenarioError
from netns_lab.model import ClusterConfig
from netns_lab.scenario import load_scenario
from netns_lab.scenario.yamlsrc import MAX_ALIAS_NODES, MAX_BYTES, MAX_DEPTH, MAX_NODES
from tests.conftest import ROOT

HEAD = "apiVersion: netns-lab/v1\nkind: Scenario\nname: hym-hostile\n"  # line 4 is the first after HEAD
# Ends every file run as a subprocess: invalid on its own, so that if the hostile part were
# ever accepted the run still stops at load (a wrong message, a failed test) and builds nothing.
NEVER_BUILT = "checks: 5\n"
MEMORY_CAP = 1 << 30


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def refused(file: str, *args: str) -> str:
    """Run the scenario; assert exit 2 with exactly one stderr line; return that line."""
    proc = subprocess.run([sys.executable, "-m", "netns_lab", "run-scenario", file, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, preexec_fn=_cap_memory)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert proc.stdout == ""
    return lines[0]


def write(tmp_path, text: str | bytes, name: str = "s.yaml") -> str:  # type: ignore[no-untyped-def]
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return str(p)


# --- size, expansion, recursion, depth -------------------------------------------------


def test_a_10_mb_file_is_refused_with_its_size_before_reading(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = write(tmp_path, HEAD + "description: " + "x" * (10 << 20) + "\n" + NEVER_BUILT)
    size = os.path.getsize(f)
    line = refused(f)
    assert line.startswith(f"error: {f}:1: Too long: the file is {size} bytes, the limit is {MAX_BYTES} bytes"), line


def test_billion_laughs_is_refused_at_the_alias_that_explodes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = ["x0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    rows += [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    f = write(tmp_path, HEAD + "\n".join(rows) + "\n" + NEVER_BUILT)
    assert os.path.getsize(f) < 1200  # about 1 kB that would become 9^10 strings
    line = refused(f)
    # x5 holds 9^6 (531,441) nodes: the first past the budget; its line is 4 + 5
    want = f"error: {f}:9: x5[0]: Too many: expanding the alias *a4 takes the scenario past {MAX_ALIAS_NODES} YAML nodes made by aliases"
    assert line.startswith(want), line


@pytest.mark.parametrize("body,path", [
    ("objects: &a [*a]", "objects[0]"),
    ("cluster: &c {external: *c}", "cluster.external"),
    ("cluster: &c {nodes: 2, <<: *c}", "cluster.<<"),
    ("objects: &a [[[*a]]]", "objects[0][0][0]"),
], ids=["list", "mapping", "merge", "nested"])
def test_a_cyclic_alias_is_refused(tmp_path, body: str, path: str) -> None:  # type: ignore[no-untyped-def]
    f = write(tmp_path, HEAD + body + "\n" + NEVER_BUILT)
    line = refused(f)
    assert line.startswith(f"error: {f}:4: {path}: Invalid value: *"), line
    assert "the alias is inside the node it refers to" in line


@pytest.mark.parametrize("body", [
    "objects: " + "[" * 10_000 + "]" * 10_000,
    "objects: " + "{a: " * 10_000 + "}" * 10_000,
    "objects:\n" + "- " * 10_000 + "x",
], ids=["flow-lists", "flow-mappings", "block-lists"])
def test_10000_deep_nesting_is_refused_with_its_line(tmp_path, body: str) -> None:  # type: ignore[no-untyped-def]
    f = write(tmp_path, HEAD + body + "\n" + NEVER_BUILT)
    line = refused(f)
    assert line.startswith(f"error: {f}:"), line
    assert int(line.split(":")[2]) in (4, 5)
    assert f"Too deep: nested more than {MAX_DEPTH} levels deep" in line


def test_a_file_of_more_nodes_than_the_budget_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = write(tmp_path, HEAD + "objects: [" + ",".join(["1"] * (MAX_NODES + 10)) + "]\n" + NEVER_BUILT)
    assert os.path.getsize(f) < MAX_BYTES
    line = refused(f)
    assert line.startswith(f"error: {f}:4: Too many: more than {MAX_NODES} YAML nodes"), line


# --- what objects: may read ---------------------------------------------------------------


def test_objects_reads_only_regular_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    os.mkfifo(tmp_path / "pipe.yaml")  # opening it for reading blocked until a writer came
    (tmp_path / "dir.yaml").mkdir()
    for item, what in (("pipe.yaml", "a named pipe (FIFO)"), ("/dev/zero", "a character device"), ("dir.yaml", "a directory"),
                       ("*.yaml", "a directory")):
        f = write(tmp_path, HEAD + f'objects: ["{item}"]\n' + NEVER_BUILT, "s.yml")
        line = refused(f)
        assert line.startswith(f"error: {f}:4: objects[0]: Invalid value: "), line
        assert f"is {what}, not a regular file: only regular files are read" in line


def test_included_files_share_the_scenarios_size_limit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "m").mkdir()
    for i in range(3):  # each within the limit, together over it
        write(tmp_path, f"# {'x' * (MAX_BYTES // 2)}\napiVersion: v1\nkind: Namespace\nmetadata: {{name: n{i}}}\n", f"m/{i}.yaml")
    f = write(tmp_path, HEAD + "objects: [m/*.yaml]\n" + NEVER_BUILT)
    line = refused(f)
    assert line.startswith(f'error: {f}:4: objects[0]: Invalid value: "{tmp_path}/m/1.yaml": Too long: the file is '), line
    assert f"exceeds the limit of {MAX_BYTES} bytes for a scenario and the files it includes" in line


# --- text encodings -----------------------------------------------------------------------


def test_bytes_that_are_not_utf8_are_refused_with_their_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = write(tmp_path, HEAD.encode() + b"description: ok\ncluster: {clusterDomain: caf\xe9.local}\n" + NEVER_BUILT.encode())
    line = refused(f)
    assert line == f"error: {f}:5: not valid YAML: not UTF-8 text (byte 0xe9)", line


@pytest.mark.parametrize("encode", [
    lambda t: b"\xef\xbb\xbf" + t.encode(),  # UTF-8 with a byte-order mark (Notepad)
    lambda t: t.encode("utf-16"),  # UTF-16 with its BOM (PowerShell's `>`)
], ids=["utf8-bom", "utf16"])
def test_a_byte_order_mark_is_read_as_kubectl_reads_it(tmp_path, encode) -> None:  # type: ignore[no-untyped-def]
    s = load_scenario(write(tmp_path, encode(HEAD + "description: café\n")))
    assert (s.name, s.description) == ("hym-hostile", "café")


# --- valid YAML that was refused ------------------------------------------------------------


MERGES = HEAD + textwrap.dedent("""\
    objects:
      - &pod
        apiVersion: v1
        kind: Pod
        metadata: {name: web-1, labels: {app: web, since: 2024-01-01}}
        spec: &spec
          nodeName: node-1
          containers: [{name: web, image: netexec, ports: [{containerPort: 9376}]}]
      - <<: *pod
        metadata: {name: web-2, labels: {app: web}}
      - <<: *pod
        metadata: {name: web-3}
        spec:
          <<: [{nodeName: node-2}, *spec]     # earlier mappings win
      - <<: {kind: Pod, apiVersion: v1, spec: *spec}
        <<: ignored
""")


def test_merge_keys_with_overrides_are_accepted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = write(tmp_path, MERGES.replace("    <<: ignored\n", "    metadata: {name: web-4}\n"))
    pods = {p.name: p for p in load_scenario(f).pods}
    assert [n for n in pods if n.startswith("web-")] == ["web-1", "web-2", "web-3", "web-4"]
    assert pods["web-1"].labels == (("app", "web"), ("since", "2024-01-01"))  # a date is text, as Kubernetes reads it
    assert pods["web-2"].labels == (("app", "web"),)  # the explicit metadata replaces the merged one
    assert pods["web-3"].labels == ()
    assert (pods["web-1"].node_name, pods["web-3"].node_name, pods["web-4"].node_name) == ("node-1", "node-2", "node-1")
    assert pods["web-3"].containers == pods["web-1"].containers


def test_two_merge_keys_in_one_mapping_are_a_duplicate_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = write(tmp_path, MERGES)
    with pytest.raises(ScenarioError) as err:
        load_scenario(f)
    assert str(err.value) == f'{f}:19: objects[3].<<: duplicate field "<<"'


NULLS = HEAD + textwrap.dedent("""\
    description: null
    cluster:
      nodes: null
      network: null
      proxyMode: null
      nodeCIDR: null
      podCIDR: null
      serviceCIDR: null
      clusterDomain: null
      dnsIP: null
      nodePortRange: null
      mtu: null
      ipvsScheduler: null
      ipvsLegacyPing: null
      ingressServiceType: null
      external: {cidr: null, clients: null, loadBalancerPool: null, healthCheckIntervalSeconds: null}
    objects: null
    checks:
      - {name: null, from: node/node-1, ping: node/node-2, count: null, protocol: null, expect: null}
      - {from: node/node-1, resolve: kubernetes.default.svc.cluster.local, type: null, expect: {result: null, answers: null}}
""")


def test_null_in_an_optional_field_means_the_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = load_scenario(write(tmp_path, NULLS))
    assert s.cluster == ClusterConfig()
    assert s.description == ""
    ping, resolve = s.checks
    assert (ping.count, ping.protocol, ping.expect.result, ping.name) == (1, "tcp", "reply", "node/node-1 ping node/node-2")
    assert (resolve.record_type, resolve.expect.result) == ("A", "ok")


def test_null_for_the_cluster_section_or_a_required_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert load_scenario(write(tmp_path, HEAD + "cluster: null\n")).cluster == ClusterConfig()
    for falsy in ("[]", "0", "''", "false"):
        with pytest.raises(ScenarioError, match=r":4: cluster: Invalid type: expected an object"):
            load_scenario(write(tmp_path, HEAD + f"cluster: {falsy}\n"))
    with pytest.raises(ScenarioError, match=r':1: kind: Required value: supported values: "Scenario"$'):
        load_scenario(write(tmp_path, "kind: null\napiVersion: netns-lab/v1\nname: x\n"))


# --- --set ------------------------------------------------------------------------------------


@pytest.mark.parametrize("item,why", [
    ("name.x=1", 'Invalid value: name is string "hym-hostile", not an object: it has no field x'),
    ("cluster.nodes.x=1", "Invalid value: cluster.nodes is integer 2, not an object: it has no field x"),
    ("objects.x=1", "Invalid value: objects is a list, not an object: it has no field x"),
    ("objects=&a [*a]", "Invalid value: the value contains itself (a recursive alias)"),
    ("cluster..mtu=1", ""),
    ("=1", ""),
])
def test_a_malformed_override_is_one_line(tmp_path, item: str, why: str) -> None:  # type: ignore[no-untyped-def]
    f = write(tmp_path, HEAD + "cluster: {nodes: 2}\nobjects: []\n" + NEVER_BUILT)
    line = refused(f, "--set", item)
    assert line.startswith(f"error: --set {item.split('=')[0]}="), line
    assert why in line


@pytest.mark.parametrize("key,value,why", [
    ("name.x", 1, 'name is string "x", not an object'),
    ("a..b", 1, "a field path is names separated by single dots"),
    ("", 1, "a field path is names separated by single dots"),
    ("cluster.", True, "a field path is names separated by single dots"),
])
def test_apply_overrides_refuses_paths_through_non_mappings(tmp_path, key, value, why) -> None:  # type: ignore[no-untyped-def]
    f = write(tmp_path, "apiVersion: netns-lab/v1\nkind: Scenario\nname: x\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(f, {key: value})
    shown = str(value).lower() if isinstance(value, bool) else value
    assert str(err.value).startswith(f"--set {key}={shown}: Invalid value: "), str(err.value)
    assert why in str(err.value)


def test_overrides_create_missing_and_null_sections(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = write(tmp_path, "apiVersion: netns-lab/v1\nkind: Scenario\nname: x\ncluster:\n")
    s = load_scenario(f, {"cluster.mtu": 1400, "cluster.external.healthCheckIntervalSeconds": 2})
    assert (s.cluster.mtu, s.cluster.external.health_check_interval) == (1400, 2.0)


def test_a_large_honest_scenario_is_not_mistaken_for_an_attack(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """5,000 Services written out (~110,000 YAML nodes, no alias) load: the node budget for
    what is written is separate from, and larger than, the one for what aliases expand to."""
    services = "".join(f"  - {{apiVersion: v1, kind: Service, metadata: {{name: s{i}}}, spec: {{selector: {{app: x}}, "
                       f"ports: [{{port: 80, targetPort: 8080}}]}}}}\n" for i in range(5000))
    f = write(tmp_path, HEAD + "cluster: {nodes: 1}\nobjects:\n" + services)
    s = load_scenario(f)
    assert sum(1 for svc in s.services if svc.namespace == "default" and svc.name.startswith("s")) == 5000
