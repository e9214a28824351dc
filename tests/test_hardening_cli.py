"""Misuse of the CLI must never harm the machine or a running lab (issue 19): lab names are
checked before they become paths, a lab that is up is never rebuilt over, Ctrl-C and SIGTERM
report and tear down, no root means one line and exit 3, malformed ``--set`` means exit 2."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from netns_lab import cleanup, cli, interrupts, procs, state
from netns_lab.errors import LabError, ScenarioError
from netns_lab.realize import netns
from tests.conftest import ROOT

BASIC = os.path.join(ROOT, "scenarios", "basic.yaml")
INVOKE = os.path.join(os.path.dirname(sys.executable), "invoke")
PY = [sys.executable, "-m", "netns_lab"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
NO_CAPS = ["setpriv", "--bounding-set", "-sys_admin,-net_admin", "--inh-caps", "-sys_admin,-net_admin"]


def _run(args: list[str], state_dir: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, NETNS_LAB_STATE_DIR=state_dir, HOME="/nonexistent", **env)
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=full_env, timeout=timeout)


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


@pytest.fixture
def state_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A state dir of our own, readable by user nobody (pytest's tmp_path is not), used by
    the subprocesses (NETNS_LAB_STATE_DIR) and by this process (state.STATE_DIR)."""
    d = tempfile.mkdtemp(prefix="netns-lab-hardening-")
    os.chmod(d, 0o755)
    sd = os.path.join(d, "run")
    monkeypatch.setattr(state, "STATE_DIR", sd)
    yield sd
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def labs_down(state_dir: str) -> Iterator[list[str]]:
    """Names appended here are removed after the test, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        _run(PY + ["down", name], state_dir)


# -- lab names are checked before they become paths ----------------------------------------


def test_down_of_a_path_does_not_remove_what_it_points_at(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Old code: ``down ../../victim`` loaded ``STATE_DIR/../../victim.json`` (not JSON: a
    "corrupt" record) and removed it, and ``rmtree``'d ``STATE_DIR/../../victim``."""
    state_dir = tmp_path / "run" / "netns-lab"
    state_dir.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me\n")
    record = tmp_path / "victim.json"
    record.write_text("not a record\n")
    for args in (PY + ["down", "../../victim"], [INVOKE, "down", "../../victim"]):
        proc = _run(args, str(state_dir))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        line = _one_error_line(proc)
        assert line.startswith('error: down: lab name "../../victim": Invalid value: '), line
        assert (victim / "precious").exists() and record.exists()


BAD_NAMES = ["../../tmp/x", "rb\n", "Upper", "a" * 41, "-x", ""]
COMMANDS = [
    ["down", "{}"],
    ["exec", "{}", "pod/web-1", "--", "true"],
    ["get", "{}", "pods"],
    ["trace", "{}", "--from", "pod/a", "--to", "b:80"],
    ["capture", "{}", "pod/a"],
    ["pod-ready", "{}", "a"],
    ["apply", "{}", BASIC],
    ["delete", "{}", "pod/a"],
    ["label", "{}", "pod/a", "x=y"],
    ["events", "{}"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_command_checks_the_lab_name(command: list[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    for bad in BAD_NAMES[:3]:
        proc = _run(PY + [a.replace("{}", bad) for a in command], str(tmp_path))
        assert proc.returncode == 2, (bad, proc.stdout + proc.stderr)
        line = _one_error_line(proc)
        assert line.startswith(f"error: {command[0]}: lab name {json.dumps(bad)}: Invalid value: "), line
    assert not os.listdir(tmp_path)  # no lock, no record: nothing was created


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_no_path_is_built_from_an_invalid_name(bad: str) -> None:
    for fn in (state.state_path, state.lock_path, state.load, cleanup.leftovers):
        with pytest.raises(ScenarioError, match="lab name"):
            fn(bad)
    with pytest.raises(ScenarioError, match="lab name"):
        _ = state.LabState(lab=bad, instance="", scenario="").workdir


def test_status_skips_files_that_are_not_lab_names(state_dir: str) -> None:
    os.makedirs(state_dir)
    for f in ("..json", "rb\n.json", "Up.json", "ok.json", "locked.lock"):
        with open(os.path.join(state_dir, f), "w") as fh:
            fh.write("{}")
    assert state.all_labs() == ["locked", "ok"]


def test_a_name_with_a_trailing_newline_is_refused_at_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``re.match('^...$')`` accepts "rb\\n": the lab built namespaces named ``rb\\n__net``."""
    scenario = tmp_path / "rb.yaml"
    scenario.write_text('apiVersion: netns-lab/v1\nkind: Scenario\nname: "rb\\n"\ncluster: {nodes: 1}\n')
    proc = _run(PY + ["up", str(scenario)], str(tmp_path / "state"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert ": name: Invalid value: " in _one_error_line(proc)
    assert not (tmp_path / "state").exists()


# -- --set ---------------------------------------------------------------------------------


@pytest.mark.parametrize("item", ["=1", "a..b=1", "noequals", ".a=1", "a.=1", "a b=1", "a=[1", "a=*x", "a={b: 1"])
def test_malformed_set_is_one_line_exit_2(item: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = _run(PY + ["up", BASIC, "--set", item], str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert _one_error_line(proc).startswith(f"error: --set {item}: "), proc.stderr
    assert not os.listdir(tmp_path)


def test_set_into_a_string_is_one_line_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = _run(PY + ["up", BASIC, "--set", "name.x=1"], str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "name" in _one_error_line(proc)
    assert not os.listdir(tmp_path)


def test_parse_overrides_reads_yaml_values() -> None:
    assert cli.parse_overrides(["cluster.nodes=3", "cluster.network=host-gw", "x="]) == {
        "cluster.nodes": 3, "cluster.network": "host-gw", "x": None}
    with pytest.raises(ScenarioError, match=r'^--set "a\\nb=1": '):
        cli.parse_overrides(["a\nb=1"])  # still one line


# -- _guard: no traceback for an interruption or an OSError --------------------------------


@pytest.mark.parametrize("exc, code, text", [
    (KeyboardInterrupt(), 130, "interrupted by SIGINT"),
    (interrupts.Interrupted(signal.SIGTERM), 143, "interrupted by SIGTERM"),
    (PermissionError(13, "Permission denied", "/run/netns-lab/x.lock"), 3, "error: boom: Permission denied (EACCES): /run/netns-lab/x.lock"),
    (OSError(16, "Device or resource busy", "/run/netns/x"), 3, "error: boom: Device or resource busy (EBUSY): /run/netns/x"),
])
def test_guard_maps_interruptions_and_os_errors(exc: BaseException, code: int, text: str, capsys) -> None:  # type: ignore[no-untyped-def]
    @cli._guard
    def boom() -> int:
        raise exc

    assert boom() == code
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(text), err


# -- the lock ------------------------------------------------------------------------------


def test_one_holder_at_a_time_and_the_file_goes_with_the_lab(state_dir: str) -> None:
    first = state.acquire("locky")
    assert first is not None
    assert state.acquire("locky") is None  # another open file description: refused, not waited for
    assert state.holder("locky") == os.getpid()
    with pytest.raises(LabError, match="lab locky is being built or removed by process"):
        cleanup.remove_lab("locky", wait=0.1)
    first.release()
    assert cleanup.leftovers("locky").lock  # a lock file without a lab is a leftover
    found = cleanup.remove_lab("locky")
    assert found.lock and not os.path.exists(state.lock_path("locky"))
    assert cleanup.leftovers("locky").empty


def test_a_waiter_never_holds_a_removed_lock_file(state_dir: str) -> None:
    first = state.acquire("locky")
    assert first is not None
    first.release(remove=True)  # as down does: the file goes, unlinked while still held
    second = state.acquire("locky")
    assert second is not None and os.fstat(second.fd).st_ino == os.stat(state.lock_path("locky")).st_ino
    second.release(remove=True)


# -- privileges ----------------------------------------------------------------------------

NEEDS_ROOT = [
    ["run-scenario", BASIC, "--set", "name=hardening-priv"],
    ["up", BASIC, "--set", "name=hardening-priv"],
    ["down", "hardening-priv"],
    ["clean"],
    ["clean", "--check"],
    ["exec", "hardening-priv", "pod/web-1", "--", "true"],
    ["pod-ready", "hardening-priv", "web-1"],
    ["apply", "hardening-priv", BASIC],
    ["delete", "hardening-priv", "pod/web-1"],
    ["label", "hardening-priv", "pod/web-1", "x=y"],
    ["status"],
    ["get", "hardening-priv", "pods"],  # no root needed, but this lab is not up: one line, exit 3
    ["trace", "hardening-priv", "--from", "pod/client-1", "--to", "pod/web-1:9376"],
    ["capture", "hardening-priv", "pod/web-1"],
]


@pytest.mark.root
@pytest.mark.parametrize("who", ["nobody", "root-without-caps"])
@pytest.mark.parametrize("command", NEEDS_ROOT, ids=[" ".join(c[:2]) for c in NEEDS_ROOT])
def test_without_privileges_every_command_says_so_in_one_line(who: str, command: list[str], state_dir: str) -> None:
    prefix = NOBODY if who == "nobody" else NO_CAPS
    invoke = ["trace", "--lab", *command[1:]] if command[0] == "trace" else command  # invoke's flags
    for args in (PY + command, [INVOKE, *invoke]):
        proc = _run(prefix + args, state_dir)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        line = _one_error_line(proc)
        if command[0] != "get":
            assert ("needs root" if who == "nobody" else "needs CAP_SYS_ADMIN and CAP_NET_ADMIN") in line, line
    assert not os.path.exists(state_dir)  # nothing was created on the way to the refusal


@pytest.mark.root
def test_without_privileges_status_does_not_guess_and_get_graph_gen_cert_work(state_dir: str, labs_down: list[str]) -> None:
    labs_down.append("hardening-seen")
    up = _run(PY + ["up", BASIC, "--set", "name=hardening-seen"], state_dir)
    assert up.returncode == 0, up.stderr
    for prefix, needs in ((NOBODY, "needs root"), (NO_CAPS, "needs CAP_SYS_ADMIN")):
        status = _run(prefix + PY + ["status"], state_dir)
        assert status.returncode == 3 and needs in _one_error_line(status)
        assert "hardening-seen: up" in status.stdout and "cannot tell" in status.stdout, status.stdout
        assert "no servers" not in status.stdout
        get = _run(prefix + PY + ["get", "hardening-seen", "pods"], state_dir)
        assert get.returncode == 0 and "web-1" in get.stdout, get.stderr
        graph = _run(prefix + PY + ["graph", BASIC], state_dir)
        assert graph.returncode == 0 and "digraph" in graph.stdout, graph.stderr
        certs = os.path.join(os.path.dirname(state_dir), f"certs-{prefix[1]}")
        os.makedirs(certs)
        os.chmod(certs, 0o777)
        cert = _run(prefix + PY + ["gen-cert", "a.example.com", "--out", certs], state_dir)
        assert cert.returncode == 0 and os.path.exists(os.path.join(certs, "tls.crt")), cert.stderr
    status = _run(PY + ["status"], state_dir)
    assert status.returncode == 0 and "serving" in status.stdout


# -- a lab that is up is never rebuilt over ------------------------------------------------


def _record(state_dir: str, lab: str) -> dict:
    with open(os.path.join(state_dir, f"{lab}.json")) as fh:
        return json.load(fh)


def _nothing_left(state_dir: str, lab: str, record: dict) -> None:
    assert not [n for n in record["namespaces"] if netns.exists(n)]
    assert not procs.find_owned(record["instance"])
    assert cleanup.leftovers(lab).empty  # no record, no lock file, no directory
    check = _run(PY + ["clean", "--check"], state_dir)
    assert check.returncode == 0 and "nothing left behind" in check.stdout, check.stdout


@pytest.mark.root
def test_up_of_a_lab_that_is_up_refuses_and_the_lab_still_serves(state_dir: str, labs_down: list[str]) -> None:
    from netns_lab.lab import Lab

    labs_down.append("refuse-up")
    first = _run(PY + ["up", BASIC, "--set", "name=refuse-up"], state_dir)
    assert first.returncode == 0, first.stderr
    before = _record(state_dir, "refuse-up")
    servers = sorted(procs.find_owned(before["instance"]))
    assert len(servers) == 3
    for args in (PY + ["up", BASIC, "--set", "name=refuse-up"], PY + ["run-scenario", BASIC, "--set", "name=refuse-up"],
                 [INVOKE, "up", BASIC, "--set", "name=refuse-up"]):
        again = _run(args, state_dir)
        assert again.returncode == 3, again.stdout + again.stderr
        line = _one_error_line(again)
        assert line.startswith("error: lab refuse-up is already up (since ") and f"process {before['owner_pid']}" in line, line
        assert "`invoke down refuse-up` or another `name`" in line, line
    after = _record(state_dir, "refuse-up")
    assert after["instance"] == before["instance"] and after["phase"] == "up"
    assert sorted(procs.find_owned(before["instance"])) == servers  # the same processes, alive
    assert all(netns.exists(n) for n in before["namespaces"])
    lab = Lab.attach("refuse-up")
    probe = lab.connect("pod/client-1", "pod/web-2", 9376)
    assert probe.result == "ok" and probe.served_by == "web-2", probe
    down = _run(PY + ["down", "refuse-up"], state_dir)
    assert down.returncode == 0, down.stderr
    _nothing_left(state_dir, "refuse-up", before)


@pytest.mark.root
def test_two_concurrent_run_scenarios_exactly_one_proceeds(state_dir: str, labs_down: list[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Both start at once; the lab's checks take ~30 s, so whichever gets the lab holds it
    while the other looks (building: the lock; checking: the record, its owner alive). The
    one that proceeded is then interrupted, so the test does not wait for its checks."""
    labs_down.append("race-run")
    scenario = tmp_path / "race.yaml"
    scenario.write_text(SLOW.format(name="race-run"))
    env = dict(os.environ, NETNS_LAB_STATE_DIR=state_dir)
    args = PY + ["run-scenario", str(scenario)]
    runs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=_sigint_default) for _ in range(2)]
    deadline = time.monotonic() + 120
    while all(p.poll() is None for p in runs) and time.monotonic() < deadline:
        time.sleep(0.02)
    done = [p for p in runs if p.poll() is not None]
    assert len(done) == 1, "neither run was refused"
    going = next(p for p in runs if p is not done[0])
    going.send_signal(signal.SIGINT)  # it proceeded; stop it rather than wait for its checks
    results = [(p.wait(timeout=120), *p.communicate()) for p in (done[0], going)]
    assert [r[0] for r in results] == [3, 130], results
    refused = results[0]
    lines = refused[2].splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: lab race-run is "), refused
    assert "Traceback" not in refused[1] + refused[2]
    assert not os.path.exists(os.path.join(state_dir, "race-run.json"))
    assert cleanup.leftovers("race-run").empty
    check = _run(PY + ["clean", "--check"], state_dir)
    assert check.returncode == 0 and "nothing left behind" in check.stdout, check.stdout


@pytest.mark.root
def test_a_killed_build_is_cleared_by_the_next_up_and_down_removes_the_lock(state_dir: str, labs_down: list[str]) -> None:
    labs_down.append("killed-up")
    args = PY + ["up", BASIC, "--set", "name=killed-up"]
    killed = _run(args, state_dir, NETNS_LAB_FAULT="servers")
    assert killed.returncode == -signal.SIGKILL
    old = _record(state_dir, "killed-up")
    assert old["phase"] == "building" and not state.alive(old["owner_pid"], old["owner_start"])
    again = _run(args, state_dir)
    assert again.returncode == 0, again.stderr
    new = _record(state_dir, "killed-up")
    assert new["instance"] != old["instance"] and not procs.find_owned(old["instance"])
    down = _run(PY + ["down", "killed-up"], state_dir)
    assert down.returncode == 0, down.stderr
    assert not os.path.exists(os.path.join(state_dir, "killed-up.lock"))
    _nothing_left(state_dir, "killed-up", new)


@pytest.mark.root
def test_a_killed_run_scenario_is_remains_but_a_kept_lab_is_not(state_dir: str, labs_down: list[str]) -> None:
    """run-scenario without --keep meant its lab to go with it: SIGKILLed during the checks, its
    lab is remains that the next run clears. `--keep` (like `up`) means keep it: refused."""
    labs_down.append("killed-run")
    env = dict(os.environ, NETNS_LAB_STATE_DIR=state_dir)
    args = PY + ["run-scenario", BASIC, "--set", "name=killed-run"]
    run = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    record = os.path.join(state_dir, "killed-run.json")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        if os.path.exists(record) and _record(state_dir, "killed-run").get("phase") == "up":
            break
        time.sleep(0.01)
    run.kill()
    run.communicate()
    old = _record(state_dir, "killed-run")
    assert old["phase"] == "up" and old["temporary"], old  # killed with its lab up
    again = _run(args, state_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not procs.find_owned(old["instance"])  # the dead run's servers were stopped
    kept = _run(args + ["--keep"], state_dir)
    assert kept.returncode == 0, kept.stderr
    refused = _run(args, state_dir)
    assert refused.returncode == 3 and "is already up" in _one_error_line(refused)
    down = _run(PY + ["down", "killed-run"], state_dir)
    assert down.returncode == 0, down.stderr
    assert cleanup.leftovers("killed-run").empty


# -- Ctrl-C and SIGTERM --------------------------------------------------------------------

SLOW = """apiVersion: netns-lab/v1
kind: Scenario
name: {name}
cluster: {{nodes: 1, network: host-gw}}
objects:
  - {{apiVersion: v1, kind: Pod, metadata: {{name: a}}, spec: {{containers: [{{name: c, image: netexec, ports: [{{containerPort: 80}}]}}]}}}}
  - {{apiVersion: v1, kind: Pod, metadata: {{name: b}}, spec: {{containers: [{{name: c, image: netexec, ports: [{{containerPort: 80}}]}}]}}}}
checks:
  - {{name: quick, from: pod/a, connect: pod/b:80, expect: {{result: ok, servedBy: [b]}}}}
  - {{name: quick too, from: pod/b, connect: pod/a:80, expect: {{result: ok, servedBy: [a]}}}}
""" + "".join(f"  - {{{{name: slow {i}, from: pod/a, ping: 10.244.0.{200 + i}, expect: {{{{result: no-reply}}}}}}}}\n" for i in range(30))


MANY = """apiVersion: netns-lab/v1
kind: Scenario
name: {name}
cluster: {{nodes: 3, network: vxlan}}
objects:
""" + "".join(f"  - {{{{apiVersion: v1, kind: Pod, metadata: {{{{name: p{i}}}}}, spec: {{{{containers: [{{{{name: c, image: netexec, "
              f"ports: [{{{{containerPort: 80}}}}]}}}}]}}}}}}}}\n" for i in range(60))


def _sigint_default() -> None:
    """In the child: SIGINT as a terminal's Ctrl-C finds it, even if this test run ignores it
    (started with ``&`` by a script): an ignored SIGINT is, rightly, left ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_file(path: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


@pytest.mark.root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_the_checks_prints_them_and_tears_down(sig: int, state_dir: str, tmp_path, labs_down) -> None:  # type: ignore[no-untyped-def]
    name = f"intr-checks-{sig}"
    labs_down.append(name)
    scenario = tmp_path / "slow.yaml"
    scenario.write_text(SLOW.format(name=name))
    env = dict(os.environ, NETNS_LAB_STATE_DIR=state_dir)
    proc = subprocess.Popen(PY + ["run-scenario", str(scenario)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "PASS" in line:
            break
    record = _record(state_dir, name)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    out = "".join(seen) + out
    assert proc.returncode == 128 + sig, out + err
    assert "PASS  quick: " in out and "slow 29" not in out
    assert "interrupted after " in out and " of 32 checks" in out, out
    assert err.splitlines()[-1] == f"interrupted by {signal.Signals(sig).name}" and "Traceback" not in err, err
    _nothing_left(state_dir, name, record)


@pytest.mark.root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_up_tears_down(sig: int, state_dir: str, tmp_path, labs_down: list[str]) -> None:  # type: ignore[no-untyped-def]
    name = f"intr-up-{sig}"
    labs_down.append(name)
    scenario = tmp_path / "many.yaml"  # enough pods that the build lasts long enough to interrupt
    scenario.write_text(MANY.format(name=name))
    env = dict(os.environ, NETNS_LAB_STATE_DIR=state_dir)
    proc = subprocess.Popen(PY + ["up", str(scenario)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
    path = os.path.join(state_dir, f"{name}.json")
    _wait_for_file(path, proc)
    deadline = time.monotonic() + 30  # signal once something exists: the first namespaces
    while True:
        try:
            record = _record(state_dir, name)
            if any(netns.exists(n) for n in record["namespaces"]):
                break
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.002)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, out + err
    assert err.splitlines() == [f"interrupted by {signal.Signals(sig).name}"], err
    _nothing_left(state_dir, name, record)
