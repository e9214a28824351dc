"""kubectl's verbs on a running lab (``apply``, ``delete``, ``label``, ``pod-ready``,
``reconcile``) as a request and as admission actions.

The command line turns what the user typed into a *request* (plain JSON: the text of each
file, the references, the ``KEY=VALUE`` words) and checks what needs no lab (:func:`check`:
a missing argument, a malformed label word), so such a mistake is exit 2 before anything
else. The lab's API server (:mod:`netns_lab.apiserver`) turns the request into actions
(:func:`actions`), parsing the manifests there. The files are read by the command line, which
has the user's working directory. This module imports admission and the YAML parser only
when it builds actions: the command line never needs them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from netns_lab.errors import ScenarioError
from netns_lab.model import MAX_GRACE_PERIOD

if TYPE_CHECKING:
    from netns_lab.scenario.admission import Action

VERBS = ("apply", "delete", "label", "pod-ready", "reconcile")


def label_pairs(ref: str, changes: Sequence[str]) -> tuple[tuple[str, str | None], ...]:
    """``KEY=VALUE`` (set) and ``KEY-`` (remove) words as (key, value or None)."""
    if not changes:
        raise ScenarioError(f"label {ref}", "", "Required value: at least one KEY=VALUE (set) or KEY- (remove)")
    labels: list[tuple[str, str | None]] = []
    for c in changes:
        if "=" in c:
            key, _, value = c.partition("=")
            labels.append((key, value))
        elif c.endswith("-"):
            labels.append((c[:-1], None))
        else:
            raise ScenarioError(f"label {ref}", c, f'Invalid value: "{c}": must be KEY=VALUE (set the label) or KEY- (remove it)')
    return tuple(labels)


def _strings(request: dict[str, Any], key: str) -> list[str]:
    value = request.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ScenarioError("request", key, "Invalid type: expected a list of strings")
    return value


def _string(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str):
        raise ScenarioError("request", key, "Invalid type: expected a string")
    return value


def check(request: dict[str, Any]) -> None:
    """What can be wrong with a request without looking at the lab: the verb, the shape of
    each field, a missing argument, a malformed label word. ``files`` may be names (the
    command line, before reading them) or [name, text] pairs (the API server)."""
    verb = request.get("verb")
    if verb == "apply":
        files = request.get("files")
        if not isinstance(files, list) or not all(
                isinstance(f, str) or (isinstance(f, list) and len(f) == 2 and all(isinstance(x, str) for x in f)) for f in files):
            raise ScenarioError("request", "files", "Invalid type: expected a list of [name, text] pairs")
        if not files:
            raise ScenarioError("apply", "", "Required value: at least one manifest file")
    elif verb == "delete":
        if not _strings(request, "refs"):
            raise ScenarioError("delete", "", "Required value: at least one KIND/NAME or KIND/NAMESPACE/NAME")
        grace = request.get("gracePeriod")
        if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool) or not 0 <= grace <= MAX_GRACE_PERIOD):
            raise ScenarioError("delete", "--grace-period", f"Invalid value: {grace!r}: must be a number of seconds from 0 to {MAX_GRACE_PERIOD}")
    elif verb == "label":
        label_pairs(_string(request, "ref"), _strings(request, "changes"))
    elif verb == "pod-ready":
        _string(request, "pod")
        if not isinstance(request.get("ready"), bool):
            raise ScenarioError("request", "ready", "Invalid type: expected a boolean")
    elif verb != "reconcile":
        supported = ", ".join(f'"{v}"' for v in VERBS)
        raise ScenarioError("request", "verb", f"Unsupported value: {verb!r}: supported values: {supported}")


def actions(request: dict[str, Any]) -> list[Action]:
    """The actions of one request (``reconcile`` has none), after :func:`check`. The request
    comes from a root process over a root-only socket, but is checked all the same: a
    malformed one is an error in one line, never a traceback."""
    from netns_lab.scenario.admission import Apply, Delete, Label, SetReady
    from netns_lab.scenario.loader import manifests_of
    from netns_lab.scenario.yamlsrc import Source

    check(request)
    verb = request["verb"]
    if verb == "apply":
        files = request["files"]
        if not all(isinstance(f, list) for f in files):
            raise ScenarioError("request", "files", "Invalid type: expected a list of [name, text] pairs")
        out: list[Action] = [Apply(src, path, m) for name, text in files for src, m, path in manifests_of(name, text=text)]
        if not out:
            raise ScenarioError(files[0][0], "", "Required value: the file holds no manifest")
        return out
    if verb == "delete":
        now = time.time()
        return [Delete(Source(f"delete {r}", r), "", r, grace=request.get("gracePeriod"), now=now) for r in request["refs"]]
    if verb == "label":
        ref = request["ref"]
        return [Label(Source(f"label {ref}", ref), "", ref, label_pairs(ref, request["changes"]))]
    if verb == "pod-ready":
        pod = request["pod"]
        ref = pod if pod.startswith("pod/") else f"pod/{pod}"
        return [SetReady(Source(f"pod-ready {pod}", pod), "", ref, request["ready"])]
    return []
