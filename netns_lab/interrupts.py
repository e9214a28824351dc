"""Ctrl-C (SIGINT) and ``kill`` (SIGTERM) as the CLI handles them: the first one raises
:class:`Interrupted` in the main thread, so ``finally`` blocks tear the lab down and the CLI
exits 128 + the signal; later ones are ignored, so that teardown is not itself cut short.

A few short steps must not be cut in two (starting a worker thread that creates namespaces:
cut short, the thread would build on while the main thread removes the lab). They run
``with deferred():`` and a signal that arrives meanwhile is raised right after them. This
module imports nothing of the lab, so any layer may use it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_state = {"got": 0, "defer": 0}  # the first signal received; how many deferring blocks are open


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread (a KeyboardInterrupt: code that handles
    Ctrl-C handles both)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum: int, _frame: object) -> None:
    if _state["got"]:  # already stopping: the teardown under way runs to its end
        return
    _state["got"] = signum
    if not _state["defer"]:
        raise Interrupted(signum)


def install() -> None:
    """Handle SIGINT and SIGTERM as above. A SIGINT that whoever started us ignores (``cmd &``
    in a script, nohup-style) stays ignored, as Python itself leaves it."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def reset() -> None:
    """Forget an earlier interruption (a new command starts)."""
    _state["got"] = 0


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Run the block to its end: a signal that arrives meanwhile is raised after it (only
    with :func:`install`'s handler; Python's default one raises at once). Signals interrupt
    the main thread only: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = _state["got"]  # an interruption already under way is not raised twice
    _state["defer"] += 1
    try:
        yield
    finally:
        _state["defer"] -= 1
    if _state["got"] and not before and not _state["defer"]:
        raise Interrupted(_state["got"])
