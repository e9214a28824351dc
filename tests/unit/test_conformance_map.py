"""The conformance map (conformance/sig-network.yaml) is data that must stay true: every
upstream behaviour it says the lab reproduces names tests that exist, and those tests run
in both iptables and nftables mode; the rendered table (conformance/README.md) is the data's.

``UPDATE_GOLDEN=1`` rewrites conformance/README.md from the data.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

MAP = os.path.join(ROOT, "conformance", "sig-network.yaml")
DOC = os.path.join(ROOT, "conformance", "README.md")
STATUSES = ("reproduced", "out-of-scope", "missing")


def entries() -> list[dict[str, Any]]:
    with open(MAP) as fh:
        return yaml.safe_load(fh)  # type: ignore[no-any-return]


def test_every_entry_is_well_formed() -> None:
    seen: set[str] = set()
    for e in entries():
        assert set(e) <= {"name", "source", "conformance", "behaviour", "status", "by", "reason"}, e
        assert e["name"].startswith("[sig-network] ") and e["name"] not in seen, e["name"]
        seen.add(e["name"])
        assert e["status"] in STATUSES and isinstance(e["conformance"], bool) and e["behaviour"], e["name"]
        if e["status"] == "reproduced":
            assert e.get("by"), f"{e['name']}: reproduced by what?"
        else:
            assert e.get("reason") and not e.get("by"), f"{e['name']}: {e['status']} needs a reason and no tests"


def _test_ids() -> list[str]:
    return sorted({b for e in entries() if e["status"] == "reproduced" for b in e["by"] if "::" in b})


def test_every_mapped_test_and_scenario_exists() -> None:
    for e in entries():
        for b in e.get("by") or []:
            path = b.split("::")[0]
            assert os.path.exists(os.path.join(ROOT, path)), f"{e['name']}: {path} does not exist"
            if "::" in b:
                with open(os.path.join(ROOT, path)) as fh:
                    assert re.search(rf"^def {re.escape(b.split('::')[1])}\(", fh.read(), re.M), f"{e['name']}: no {b}"


@pytest.fixture(scope="module")
def collected() -> list[str]:
    """pytest's own collection of every mapped test (what a run would execute)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *_test_ids()],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [ln for ln in proc.stdout.splitlines() if "::" in ln]


def test_every_reproduced_behaviour_runs_in_both_proxy_modes(collected: list[str]) -> None:
    """The mapped tests, as pytest collects them, include an iptables and an nftables case
    (the mode is a parameter of the test or of its lab)."""
    missing = []
    for e in entries():
        if e["status"] != "reproduced":
            continue
        ids = [c for c in collected for b in e["by"] if "::" in b and c.split("[")[0] == b]
        assert ids, f"{e['name']}: none of {e['by']} collected"
        modes = {m for c in ids for m in ("iptables", "nftables") if m in c}
        if modes != {"iptables", "nftables"}:
            missing.append(f"{e['name']}: {sorted(modes)}")
    assert not missing, "\n".join(missing)


def render(data: list[dict[str, Any]]) -> str:
    counts = Counter((e["conformance"], e["status"]) for e in data)
    out = ["# sig-network behaviours this lab reproduces", "",
           "Generated from `sig-network.yaml` by `tests/unit/test_conformance_map.py` (`UPDATE_GOLDEN=1` rewrites it).",
           "Every `[Conformance]` test of sig-network in kubernetes' `test/conformance/testdata/conformance.yaml`,",
           "and the main data-path e2e tests of `test/e2e/network/{service,dns,networking,conntrack,dual_stack}.go`: reproduced",
           "(the tests named run real traffic, in iptables and nftables mode), out of scope (with why), or missing.", "",
           "| | reproduced | out of scope | missing |", "|---|---:|---:|---:|"]
    for conf, label in ((True, "[Conformance]"), (False, "other e2e")):
        out.append(f"| {label} | {counts[(conf, 'reproduced')]} | {counts[(conf, 'out-of-scope')]} | {counts[(conf, 'missing')]} |")
    for status in STATUSES:
        rows = [e for e in data if e["status"] == status]
        out += ["", f"## {status.capitalize()} ({len(rows)})", "", "| upstream test | " + ("by" if status == "reproduced" else "why") + " |",
                "|---|---|"]
        for e in rows:
            what = "<br>".join(f"`{b}`" for b in e["by"]) if status == "reproduced" else " ".join(str(e["reason"]).split())
            out.append(f"| {e['name'].replace('|', '/')} | {what.replace('|', '/')} |")
    return "\n".join(out) + "\n"


def test_the_rendered_table_is_the_data() -> None:
    text = render(entries())
    if os.environ.get("UPDATE_GOLDEN"):
        with open(DOC, "w") as fh:
            fh.write(text)
    with open(DOC) as fh:
        assert fh.read() == text, "conformance/README.md differs from the data (UPDATE_GOLDEN=1 to regenerate)"
