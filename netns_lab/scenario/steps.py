"""Scenario steps: ``apply:``, ``delete:`` and ``label:`` entries between checks.

A step is parsed into admission actions (:mod:`netns_lab.scenario.admission`) and admitted
against the objects as they will be at that point of the run, so a step that the API server
would refuse (an immutable field, a missing namespace, a bad label) is a load-time error
(exit 2, nothing built), and the checks after it may refer to what it creates.
"""

from __future__ import annotations

from typing import Any

from netns_lab.scenario.admission import Action, Apply, Delete, Label
from netns_lab.scenario.schema import ANY, STR, ListOf, MapOf, Obj
from netns_lab.scenario.yamlsrc import Source, join

STEPS = ("apply", "delete", "label")
STEP = Obj("netns-lab/v1 Step", {"name": STR, "apply": ListOf(ANY), "delete": ListOf(STR), "label": MapOf(MapOf(ANY))})


def is_step(item: Any) -> bool:
    return isinstance(item, dict) and any(item.get(k) is not None for k in STEPS)


def parse_step(src: Source, item: dict[str, Any], path: str) -> tuple[str, tuple[Action, ...]]:
    """(verb, actions) of one step entry; exactly one verb per entry."""
    present = [k for k in STEPS if item.get(k) is not None]
    others = [k for k in item if k not in (*STEPS, "name") and item[k] is not None]
    if len(present) != 1 or others:
        extra = others[0] if others else present[1]
        raise src.error(join(path, extra), f"Forbidden: a step is exactly one of {', '.join(STEPS)}, with an optional name")
    verb = present[0]
    STEP.check(src, item, path)
    vpath = join(path, verb)
    raw = item[verb]
    if not raw:
        raise src.error(vpath, "Required value: nothing to " + verb)
    if verb == "apply":
        return verb, tuple(Apply(src, join(vpath, i), m) for i, m in enumerate(raw))
    if verb == "delete":
        return verb, tuple(Delete(src, join(vpath, i), ref) for i, ref in enumerate(raw))
    actions: list[Action] = []
    for ref, labels in raw.items():
        lpath = join(vpath, ref)
        if not labels:
            raise src.error(lpath, "Required value: at least one label to set (KEY: VALUE) or remove (KEY: null)")
        for key, value in labels.items():
            if value is not None and not isinstance(value, str):
                raise src.error(join(lpath, key), f"Invalid type: expected a string (quote it: \"{value}\") or null to remove the label")
        actions.append(Label(src, lpath, ref, tuple(labels.items())))
    return verb, tuple(actions)
