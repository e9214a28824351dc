"""Fault points for tests: ``NETNS_LAB_FAULT=STEP`` makes the process SIGKILL itself when it
reaches ``STEP`` (``state``, ``pod:3``, ``rules``, ``kube-proxy:node-2``...), so a test can
prove that a build or a change killed at that instant leaves nothing ``clean`` or the next
reconcile does not put right. Unset (always, outside tests), it costs one dict lookup."""

from __future__ import annotations

import os
import signal

ENV = "NETNS_LAB_FAULT"


def fault(step: str, counter: dict[str, int] | None = None) -> None:
    want = os.environ.get(ENV)
    if not want:
        return
    if counter is not None:
        counter[step] = counter.get(step, 0) + 1
        step = f"{step}:{counter[step]}"
    if want == step:
        os.kill(os.getpid(), signal.SIGKILL)
