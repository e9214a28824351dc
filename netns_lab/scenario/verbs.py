"""kubectl's verbs on a running lab (``apply``, ``delete``, ``label``, ``pod-ready``) as a
request and as admission actions.

The command line turns what the user typed into a *request* (plain JSON: the text of each
file, the references, the ``KEY=VALUE`` words), and the lab's API server
(:mod:`netns_lab.apiserver`) turns the request into actions. Parsing happens on the server
so that a mistake is reported exactly once, in the same words, whoever sends the request;
the files are read by the command line, which has the user's working directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from netns_lab.errors import ScenarioError
from netns_lab.scenario.admission import Action, Apply, Delete, Label, SetReady
from netns_lab.scenario.loader import manifests_of
from netns_lab.scenario.yamlsrc import Source

VERBS = ("apply", "delete", "label", "pod-ready", "reconcile")


def _arg(command: str, text: str) -> Source:
    return Source(f"{command} {text}", text)


def apply(files: Sequence[tuple[str, str]]) -> list[Action]:
    """``kubectl apply -f FILE...``: every manifest of the files (``---`` separated, ``kind:
    List`` too), in order, as one change. ``files``: (name, text) pairs."""
    if not files:
        raise ScenarioError("apply", "", "Required value: at least one manifest file")
    actions: list[Action] = [Apply(src, path, m) for name, text in files for src, m, path in manifests_of(name, text=text)]
    if not actions:
        raise ScenarioError(files[0][0], "", "Required value: the file holds no manifest")
    return actions


def delete(refs: Sequence[str]) -> list[Action]:
    """``kubectl delete KIND/NS/NAME...`` (a namespace takes what is in it)."""
    if not refs:
        raise ScenarioError("delete", "", "Required value: at least one KIND/NAME or KIND/NAMESPACE/NAME")
    return [Delete(_arg("delete", r), "", r) for r in refs]


def label(ref: str, changes: Sequence[str]) -> list[Action]:
    """``kubectl label KIND/NS/NAME KEY=VALUE KEY-``: set or remove labels."""
    src = _arg("label", ref)
    if not changes:
        raise src.error("", "Required value: at least one KEY=VALUE (set) or KEY- (remove)")
    labels: list[tuple[str, str | None]] = []
    for c in changes:
        if "=" in c:
            key, _, value = c.partition("=")
            labels.append((key, value))
        elif c.endswith("-"):
            labels.append((c[:-1], None))
        else:
            raise src.error(c, f'Invalid value: "{c}": must be KEY=VALUE (set the label) or KEY- (remove it)')
    return [Label(src, "", ref, tuple(labels))]


def pod_ready(pod: str, ready: bool) -> list[Action]:
    """A pod's readiness, as its readiness probe would report it."""
    ref = pod if pod.startswith("pod/") else f"pod/{pod}"
    return [SetReady(_arg("pod-ready", pod), "", ref, ready)]


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


def actions(request: dict[str, Any]) -> list[Action]:
    """The actions of one request (``reconcile`` has none). The request comes from a root
    process over a root-only socket, but is checked all the same: a malformed one is an
    error in one line, never a traceback."""
    verb = request.get("verb")
    if verb == "apply":
        files = request.get("files")
        if not isinstance(files, list) or not all(isinstance(f, list) and len(f) == 2 and all(isinstance(x, str) for x in f)
                                                  for f in files):
            raise ScenarioError("request", "files", "Invalid type: expected a list of [name, text] pairs")
        return apply([(name, text) for name, text in files])
    if verb == "delete":
        return delete(_strings(request, "refs"))
    if verb == "label":
        return label(_string(request, "ref"), _strings(request, "changes"))
    if verb == "pod-ready":
        ready = request.get("ready")
        if not isinstance(ready, bool):
            raise ScenarioError("request", "ready", "Invalid type: expected a boolean")
        return pod_ready(_string(request, "pod"), ready)
    if verb == "reconcile":
        return []
    supported = ", ".join(f'"{v}"' for v in VERBS)
    raise ScenarioError("request", "verb", f"Unsupported value: {verb!r}: supported values: {supported}")
