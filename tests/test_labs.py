"""Every command in every guided lab (``labs/*/README.md``) runs, in order, as written, and
succeeds: the exercises cannot drift from what the tool does.

A command block is a fenced ``sh`` block; each line is one command (a trailing backslash
continues it). Each README also has the sections a learner needs, questions with answers.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess

import pytest

from tests.conftest import ROOT

LABS = sorted(glob.glob(os.path.join(ROOT, "labs", "*", "README.md")))
SECTIONS = ("## What you will see", "## Commands", "## What to look for", "## Questions", "<details><summary>Answers</summary>")


def commands(readme: str) -> list[str]:
    text = open(readme).read()
    out: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        pending = ""
        for line in block.splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            line = (pending + line).strip()
            pending = ""
            if line and not line.startswith("#"):
                out.append(line)
    return out


def test_the_eleven_guided_labs_exist() -> None:
    names = [os.path.basename(os.path.dirname(r)) for r in LABS]
    assert [n[:2] for n in names] == [f"{i:02d}" for i in range(1, 12)], names
    for readme in LABS:
        text = open(readme).read()
        for section in SECTIONS:
            assert section in text, f"{readme} lacks {section!r}"
        assert commands(readme), f"{readme} has no commands"
        assert os.path.exists(os.path.join(os.path.dirname(readme), "scenario.yaml"))


@pytest.mark.root
@pytest.mark.parametrize("readme", LABS, ids=[os.path.basename(os.path.dirname(r)) for r in LABS])
def test_every_command_of_the_lab_runs(readme: str) -> None:
    cmds = commands(readme)
    script = "set -eo pipefail\n" + "".join(f"echo {_quote('$ ' + c)}\n{c}\n" for c in cmds)
    downs = [c.split()[-1] for c in cmds if re.search(r"invoke down \S+$", c)]
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    finally:
        for name in downs:  # a failed command must not leave its lab behind
            subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "-m", "netns_lab", "down", name],
                           cwd=ROOT, capture_output=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"
