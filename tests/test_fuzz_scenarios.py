"""Property-based fuzzing of the scenario loader and the build, from the shipped scenarios.

A scenario file is code people download and run as root, so whatever it holds, ``run-scenario``
must end in one of its documented exit codes (0 pass, 1 a check failed, 2 invalid, 3 cannot
build here), never with a traceback, and must leave nothing behind. Hypothesis mutates the
shipped scenarios the way a careless or hostile author would: delete a key, swap a value's
type, put ``null``, huge numbers, unicode or long strings in, duplicate objects.

Profiles (``HYPOTHESIS_PROFILE``): ``ci`` (default, a bounded number of examples so CI stays
fast) and ``long`` for a local soak (``HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest
tests/test_fuzz_scenarios.py``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
import traceback
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from netns_lab import cli, state
from tests.conftest import ROOT

pytestmark = pytest.mark.root

_QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
PROFILES = {  # this test's own, not loaded globally: other Hypothesis tests keep theirs
    "ci": settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=_QUIET),
    "long": settings(max_examples=3000, deadline=None, suppress_health_check=_QUIET),
}
PROFILE = PROFILES[os.environ.get("HYPOTHESIS_PROFILE", "ci")]

SCENARIO_DIR = os.path.join(ROOT, "scenarios")
SHIPPED = sorted(f for f in os.listdir(SCENARIO_DIR) if f.endswith(".yaml") and f != "spread.yaml")


def _load(name: str) -> dict[str, Any]:
    with open(os.path.join(SCENARIO_DIR, name)) as fh:
        return yaml.safe_load(fh)  # type: ignore[no-any-return]


BASES = {name: _load(name) for name in SHIPPED}

# Values an author might put anywhere: wrong types, nulls, extremes, unicode, long strings.
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 1, 65536, 2**31, 2**63, 10**30, 1.5, float("inf")]),
    st.integers(),
    st.sampled_from(["", " ", "٨٠", "ü", "\u202e", "😀", "a" * 300, "a" * 5000, "\n", "a\nb", "../../etc/passwd",
                     "/dev/zero", "*", "x; rm -rf /", "${HOME}", "{{ }}", "10.0.0.1", "::1", "0.0.0.0/0"]),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=2),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into the document (mappings by key, lists by index)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, dict[str, Any], list[str]]:
    """A shipped scenario with one to three mutations, and what was done (for the report)."""
    name = draw(st.sampled_from(SHIPPED))
    doc = copy.deepcopy(BASES[name])
    done = []
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _parent(doc, path), path[-1]
        op = draw(st.sampled_from(["delete", "replace", "duplicate", "add-key"]))
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(ODD_VALUES)
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif op == "add-key" and isinstance(parent[key], dict):
            parent[key][draw(st.sampled_from(["extra", "spec", "metadata", "name", "ports", "nodes"]))] = draw(ODD_VALUES)
        else:
            parent[key] = draw(ODD_VALUES)
        done.append(f"{op} {'.'.join(map(str, path))}")
    return name, doc, done


def _owned() -> tuple[set[str], set[str], set[str]]:
    """What the lab machinery owns on this machine right now: netns names, records, resolv.conf dirs."""
    netns = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    etc = set(os.listdir("/etc/netns")) if os.path.isdir("/etc/netns") else set()
    return netns, set(state.all_labs()), etc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A copy of scenarios/ so relative ``objects:`` paths (scenarios/ingress/...) still resolve."""
    d = str(tmp_path_factory.mktemp("fuzz") / "scenarios")
    shutil.copytree(SCENARIO_DIR, d)
    return d


@PROFILE
@given(case=mutated())
def test_mutated_scenarios_end_cleanly(case: tuple[str, dict[str, Any], list[str]], workdir: str) -> None:
    name, doc, done = case
    if isinstance(doc.get("name"), str) and doc["name"] == BASES[name]["name"]:
        doc["name"] = "fz-" + doc["name"][:30]  # never the name of a lab another test keeps up
    path = os.path.join(workdir, "fuzzed.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(doc, fh, allow_unicode=True, sort_keys=False)
    before = _owned()
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = cli.run_scenario(path, out=out)
    except BaseException:  # what a user would see as a traceback
        pytest.fail(f"{name} after {done}: traceback\n{traceback.format_exc()}")
    context = f"{name} after {done}: exit {code}\nstdout: {out.getvalue()[-2000:]}\nstderr: {err.getvalue()[-2000:]}"
    event(f"exit {code}")  # --hypothesis-show-statistics: how many examples got how far
    assert code in (0, 1, 2, 3), context
    assert "Traceback" not in err.getvalue() + out.getvalue(), context
    if code == 2:
        lines = err.getvalue().strip().splitlines()
        assert lines, context
        # one line per mistake, each naming the file first; nothing on stdout
        assert all(line.startswith(f"error: {path}") for line in lines), context
        assert out.getvalue() == "", context
    if code == 3:  # cannot build here: a kernel refusal means the loader let something through
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and " failed" not in lines[0], context  # RealizeError: "<action> <object> failed ..."
    assert _owned() == before, context  # nothing left behind, whatever the outcome
