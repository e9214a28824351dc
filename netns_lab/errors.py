"""One exception tree for the whole lab, so callers can tell bad input from a kernel refusal.

``ScenarioError`` is the user's fault (exit code 2, nothing built), ``RealizeError`` is the
kernel saying no (with the object and the errno), ``CheckFailed`` is a probe that did not get
what the scenario expected.
"""

from __future__ import annotations

import re


_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


def _visible(text: str) -> str:
    """A file name or field path with its control characters escaped (``a\\nb``): a key such
    as ``"a\\nb"`` in a scenario must not split the one error line into two."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


class LabError(Exception):
    """Base of every error netns-lab raises on purpose."""


class BusyError(LabError):
    """Another process holds the lab's lock (a change, a build, a removal): try again later."""


class ScenarioError(LabError):
    """Invalid scenario input: names the file, the field path and the rule broken.

    ``str()`` is always a single line: ``FILE[:LINE]: PATH: MESSAGE``.
    """

    def __init__(self, file: str, path: str, message: str, line: int | None = None) -> None:
        self.file = file
        self.path = path
        self.message = " ".join(message.split())  # one line, always
        self.line = line
        where = f"{_visible(file)}:{line}" if line else _visible(file)
        text = f"{where}: {_visible(path)}: {self.message}" if path else f"{where}: {self.message}"
        super().__init__(text)


class ScenarioErrors(ScenarioError):
    """Several mistakes found in one pass (as the API server reports every invalid field of
    an object): one line each, in file order."""

    def __init__(self, errors: list[ScenarioError]) -> None:
        first = errors[0]
        super().__init__(first.file, first.path, first.message, first.line)
        self.errors = errors
        self.args = ("\n".join(str(e) for e in errors),)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)

    @staticmethod
    def of(errors: list[ScenarioError]) -> ScenarioError:
        """What to raise for ``errors`` (at least one): a single one as itself, several as one."""
        return errors[0] if len(errors) == 1 else ScenarioErrors(errors)


class RealizeError(LabError):
    """The kernel refused to create or change an object."""

    def __init__(self, obj: str, action: str, errno: int | None, detail: str = "") -> None:
        self.obj = obj
        self.action = action
        self.errno = errno
        self.detail = detail
        msg = f"{action} {obj} failed"
        if errno is not None:
            import os

            msg += f": [errno {errno}] {os.strerror(errno)}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class CheckFailed(LabError):
    """A probe or scenario check did not observe what was expected."""
