"""Lifecycle and cleanup: ownership records, SIGKILL at any point, labs side by side."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from netns_lab import procs, state
from netns_lab.errors import LabError
from netns_lab.lab import Lab
from netns_lab.realize import netns
from tests.conftest import ROOT

pytestmark = pytest.mark.root
THREE = os.path.join(ROOT, "tests", "scenarios", "three-nodes.yaml")
BASIC = os.path.join(ROOT, "scenarios", "basic.yaml")
UNDERLAY = os.path.join(ROOT, "scenarios", "underlay.yaml")
INVOKE = os.path.join(os.path.dirname(sys.executable), "invoke")


def _cli(args: list[str], state_dir: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NETNS_LAB_STATE_DIR=state_dir)
    if fault:
        env["NETNS_LAB_FAULT"] = fault
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def _record(state_dir: str, lab: str) -> dict:
    with open(os.path.join(state_dir, f"{lab}.json")) as fh:
        return json.load(fh)


def _alive_with(instance: str) -> list[int]:
    return procs.find_owned(instance) if instance else []


FAULTS = ["state", "nodes", "pod:1", "pod:4", "pods", "routes", "rules", "spawned", "servers", "ready"]


@pytest.mark.parametrize("fault", FAULTS)
def test_sigkill_during_up_leaves_nothing_clean_cannot_remove(fault: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    state_dir = str(tmp_path / "state")
    lab = f"kill-{fault.replace(':', '')}"
    up = _cli([sys.executable, "-m", "netns_lab", "up", THREE, "--set", f"name={lab}"], state_dir, fault)
    assert up.returncode == -signal.SIGKILL, up.stderr
    record = _record(state_dir, lab)
    assert record["phase"] == "building"
    planned = record["namespaces"]
    created = [n for n in planned if netns.exists(n)]
    if fault != "state":
        assert created, "the fault point should come after something was created"
    if fault == "ready":  # netexec was serving: it outlives the builder
        assert _alive_with(record["instance"])
    check = _cli([INVOKE, "clean", "--check"], state_dir)
    assert check.returncode == 1 and lab in check.stdout
    clean = _cli([INVOKE, "clean"], state_dir)
    assert clean.returncode == 0, clean.stderr
    after = _cli([INVOKE, "clean", "--check"], state_dir)
    assert after.returncode == 0, after.stdout
    assert "nothing left behind" in after.stdout
    assert not os.listdir(state_dir)  # record, lock file, lab directory: all gone
    assert not [n for n in planned if netns.exists(n)]  # checked independently of the tool
    assert not _alive_with(record["instance"])


def test_second_up_clears_the_remains_of_the_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state_dir = str(tmp_path / "state")
    args = [sys.executable, "-m", "netns_lab", "up", THREE, "--set", "name=again"]
    try:
        first = _cli(args, state_dir, "ready")
        assert first.returncode == -signal.SIGKILL
        old = _record(state_dir, "again")
        assert _alive_with(old["instance"])
        second = _cli(args, state_dir)
        assert second.returncode == 0, second.stderr
        new = _record(state_dir, "again")
        assert new["phase"] == "up" and new["instance"] != old["instance"]
        assert not _alive_with(old["instance"])  # the orphaned servers of the first run are gone
        assert len(_alive_with(new["instance"])) == 3  # netexec, the DNS supervisor and its server
    finally:
        down = _cli([sys.executable, "-m", "netns_lab", "down", "again"], state_dir)
    assert down.returncode == 0
    assert not [n for n in new["namespaces"] if netns.exists(n)]
    assert not os.path.exists(os.path.join(state_dir, "again.json"))
    assert not os.listdir(state_dir)  # the lock file goes with the lab


def test_two_labs_side_by_side_do_not_interfere() -> None:
    a = Lab.from_file(BASIC, {"name": "side-a"}).up()
    b = Lab.from_file(UNDERLAY, {"name": "side-b"}).up()
    try:
        # Same pod IPs in both labs, separate namespaces: each answers for itself.
        assert a.ip_of("pod/web-1") == b.ip_of("pod/web-1")
        assert a.matrix().ok and b.matrix().ok
        a.down()
        assert not any(netns.exists(n) for n in a.topology.namespaces)
        assert all(netns.exists(n) for n in b.topology.namespaces)
        report = b.matrix()
        assert report.ok, [p.describe() for p in report.failures]
    finally:
        a.down()
        b.down()


def test_cleanup_is_by_record_never_by_name() -> None:
    lookalike = "owned_node-9"  # looks like a namespace of lab "owned", which never made it
    subprocess.run(["ip", "netns", "add", lookalike], check=True)
    try:
        with Lab.from_file(BASIC, {"name": "owned"}) as lab:
            assert lab.matrix().ok
        assert not any(netns.exists(n) for n in lab.topology.namespaces)
        assert netns.exists(lookalike)
    finally:
        subprocess.run(["ip", "netns", "del", lookalike], check=True)


def test_up_refuses_a_namespace_it_does_not_own() -> None:
    foreign = "mine_node-1"  # exactly a name lab "mine" would create
    subprocess.run(["ip", "netns", "add", foreign], check=True)
    try:
        lab = Lab.from_file(BASIC, {"name": "mine"})
        with pytest.raises(LabError, match="mine_node-1' already exists and no netns-lab record owns it"):
            lab.up()
        assert netns.exists(foreign)
        assert not any(netns.exists(n) for n in lab.topology.namespaces if n != foreign)
        assert state.load("mine") is None
    finally:
        subprocess.run(["ip", "netns", "del", foreign], check=True)


def test_stop_refuses_a_process_that_is_not_ours() -> None:
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        assert procs.stop(stranger.pid, "0123456789abcdef") is False
        assert stranger.poll() is None  # still running
    finally:
        stranger.kill()
        stranger.wait()


def test_down_removes_namespaces_processes_and_record() -> None:
    lab = Lab.from_file(BASIC, {"name": "downer"}).up()
    assert lab.state is not None
    instance, path, workdir = lab.state.instance, lab.state.path, lab.state.workdir
    assert len(_alive_with(instance)) == 3  # netexec, the DNS supervisor and its server
    assert all(netns.exists(n) for n in lab.topology.namespaces)
    lab.down()
    assert not any(netns.exists(n) for n in lab.topology.namespaces)
    assert not _alive_with(instance)
    assert not os.path.exists(path) and not os.path.exists(workdir)
    assert not os.path.exists(state.lock_path("downer"))


def test_a_test_run_killed_with_its_labs_up_does_not_fail_the_next_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A lab built under pytest belongs to its run (the plugin marks it temporary): a run killed
    before its teardown leaves the lab up with a dead builder, and the next run's `up` of the
    same name clears those remains instead of refusing the name (CI once failed that way)."""
    assert Lab.temporary_by_default  # set by the plugin for this process
    state_dir = str(tmp_path / "state")
    child = ("import os, signal\nfrom netns_lab.lab import Lab\nLab.temporary_by_default = True\n"
             f"Lab.from_file({BASIC!r}, {{'name': 'killed-test-run'}}).up()\nos.kill(os.getpid(), signal.SIGKILL)\n")
    killed = _cli([sys.executable, "-c", child], state_dir)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    old = _record(state_dir, "killed-test-run")
    assert old["phase"] == "up" and old["temporary"] and _alive_with(old["instance"]), old
    again = _cli([sys.executable, "-c", child.replace("os.kill(os.getpid(), signal.SIGKILL)", "print('rebuilt')")], state_dir)
    try:
        assert again.returncode == 0 and "rebuilt" in again.stdout, again.stderr
        new = _record(state_dir, "killed-test-run")
        assert new["instance"] != old["instance"] and not _alive_with(old["instance"])
    finally:
        down = _cli([sys.executable, "-m", "netns_lab", "down", "killed-test-run"], state_dir)
    assert down.returncode == 0, down.stderr
    assert not [n for n in old["namespaces"] if netns.exists(n)]
