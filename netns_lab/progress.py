"""Progress bars for long work (hundreds of pod namespaces, thousands of Service rules), with rich.

The lab reports ``(phase, done, total)``; this turns that into rich bars on stderr when a
person is watching (stderr is a terminal, or ``NETNS_LAB_PROGRESS=1``) and into nothing
otherwise, so logs and pipes stay clean.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

Report = Callable[[str, int, int], None]
ENV = "NETNS_LAB_PROGRESS"


def wanted() -> bool:
    setting = os.environ.get(ENV)
    if setting is not None:
        return setting not in ("", "0", "no")
    return sys.stderr.isatty()


@contextlib.contextmanager
def bars() -> Iterator[Report | None]:
    """``with bars() as report: lab.progress = report`` (``report`` is None when not wanted)."""
    if not wanted():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, force_terminal=sys.stderr.isatty() or None, width=100)
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as prog:
        tasks: dict[str, object] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = prog.add_task(phase, total=total)
            prog.update(tasks[phase], completed=done, total=total)  # type: ignore[arg-type]

        yield report
