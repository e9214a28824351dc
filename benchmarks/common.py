"""Helpers the benchmarks share."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

SETTLE_S = 3.0  # the kernel frees a deleted namespace asynchronously: not billed to the next point


def run_child(script: str, args: list[str]) -> dict[str, Any]:
    """One measurement point in a fresh process (``script --child ...``): its last stdout line, as JSON."""
    time.sleep(SETTLE_S)
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def until_answered(netns: str, fqdn: str, change: Callable[[], object], want: str | None = None,
                   timeout: float = 30.0) -> tuple[float, float | None]:
    """Run ``change`` while a pod asks for ``fqdn`` again and again, as a client waiting for a
    new Service would; (seconds ``change`` took, seconds until the name answered (with ``want``,
    if given), None if it never did)."""
    from netns_lab.probes.resolve import resolve

    seen: list[float] = []

    def poll() -> None:
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            r = resolve(netns, fqdn, "A", timeout=0.5)
            if r.result == "ok" and (want is None or r.answers == (want,)):
                seen.append(time.perf_counter())
                return
            time.sleep(0.002)

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.05)
    start = time.perf_counter()
    change()
    took = time.perf_counter() - start
    poller.join()
    return took, (seen[0] - start if seen else None)
