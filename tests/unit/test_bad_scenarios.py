"""Every malformed scenario in tests/bad_scenarios/ is refused the same way: exit code 2,
one line naming the file, the field path and the rule broken, and nothing built.

Each file states the message it must produce on its first line (``# expect: ...``).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

BAD = sorted(glob.glob(os.path.join(ROOT, "tests", "bad_scenarios", "*.yaml")))


def _expected(path: str) -> str:
    with open(path) as fh:
        first = fh.readline()
    assert first.startswith("# expect: "), f"{path} lacks its '# expect:' line"
    return first[len("# expect: ") :].strip()


def _machine_state() -> tuple[list[str], list[str]]:
    run_netns = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    labs = sorted(os.listdir("/run/netns-lab")) if os.path.isdir("/run/netns-lab") else []
    return run_netns, labs


def test_there_are_enough_cases() -> None:
    assert len(BAD) >= 15


@pytest.mark.parametrize("path", BAD, ids=[os.path.basename(p)[:-5] for p in BAD])
def test_bad_scenario_is_refused_with_one_clear_line(path: str) -> None:
    rel = os.path.relpath(path, ROOT)
    before = _machine_state()
    proc = subprocess.run(
        [sys.executable, "-m", "netns_lab", "run-scenario", rel], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith(f"error: {rel}"), line  # the file, first
    assert _expected(path) in line  # the field path and the rule
    assert proc.stdout == ""
    assert _machine_state() == before  # nothing built, nothing recorded


def test_missing_file_is_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "netns_lab", "run-scenario", "no/such/scenario.yaml"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: no/such/scenario.yaml: no such file"
