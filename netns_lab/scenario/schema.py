"""A tiny structural schema: field names and types, checked before any semantic rule.

Kubernetes' strict decoding refuses unknown fields and wrong types; doing this once,
generically, keeps each kind's parser about meaning rather than shape. Fields the lab
accepts but does not act on (``resources``, ``imagePullPolicy``...) are declared ``ANY`` so a
real manifest pastes in cleanly while a typo (``contianers``) is still caught.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netns_lab.scenario.yamlsrc import Source, join


class Spec:
    def check(self, src: Source, value: Any, path: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


@dataclass(frozen=True)
class Scalar(Spec):
    kind: str  # string | integer | boolean | int-or-string

    def check(self, src: Source, value: Any, path: str) -> None:
        ok = {
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "int-or-string": isinstance(value, (int, str)) and not isinstance(value, bool),
        }[self.kind]
        if not ok:
            raise src.error(path, f"Invalid type: expected {self.kind}, got {_describe(value)}")


class _Any(Spec):
    def check(self, src: Source, value: Any, path: str) -> None:
        return None


ANY = _Any()
STR = Scalar("string")
INT = Scalar("integer")
BOOL = Scalar("boolean")
INT_OR_STR = Scalar("int-or-string")


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec

    def check(self, src: Source, value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise src.error(path, f"Invalid type: expected a list, got {_describe(value)}")
        for i, v in enumerate(value):
            self.item.check(src, v, join(path, i))


@dataclass(frozen=True)
class MapOf(Spec):
    value: Spec

    def check(self, src: Source, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise src.error(path, f"Invalid type: expected an object, got {_describe(value)}")
        for k, v in value.items():
            self.value.check(src, v, join(path, k))


@dataclass(frozen=True)
class Obj(Spec):
    """An object with known fields; ``where`` names the schema in unknown-field messages."""

    where: str
    fields: dict[str, Spec] = field(default_factory=dict)

    def check(self, src: Source, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise src.error(path, f"Invalid type: expected an object, got {_describe(value)}")
        for k, v in value.items():
            sub = join(path, k)
            spec = self.fields.get(k)
            if spec is None:
                raise src.error(sub, f'unknown field "{k}": field not declared in schema {self.where}')
            if v is None:  # null means "unset", as in Kubernetes
                continue
            spec.check(src, v, sub)


OBJECT_META = Obj(
    "ObjectMeta",
    {
        "name": STR,
        "namespace": STR,
        "labels": MapOf(STR),
        "annotations": MapOf(STR),
        "uid": ANY,
        "generateName": ANY,
        "resourceVersion": ANY,
        "creationTimestamp": ANY,
        "ownerReferences": ANY,
        "finalizers": ANY,
    },
)
