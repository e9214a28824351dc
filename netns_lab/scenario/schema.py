"""A tiny structural schema: field names and types, checked before any semantic rule.

Kubernetes' strict decoding refuses unknown fields and wrong types; doing this once,
generically, keeps each kind's parser about meaning rather than shape. Fields the lab
accepts but does not act on (``resources``, ``imagePullPolicy``...) are declared ``ANY`` so a
real manifest pastes in cleanly while a typo (``contianers``) is still caught.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from netns_lab.errors import ScenarioError

from netns_lab.scenario.yamlsrc import Source, join


class Spec:
    def check(self, src: Source, value: Any, path: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def resolve(self) -> "Spec":
        """The spec itself; a reference (openapi._Ref) answers with what it refers to."""
        return self


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
    kind: str  # string | integer | boolean | int-or-string | number | quantity

    def check(self, src: Source, value: Any, path: str) -> None:
        ok = {
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "int-or-string": isinstance(value, (int, str)) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "quantity": isinstance(value, (int, float, str)) and not isinstance(value, bool),
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
    renamed: dict[str, str] = field(default_factory=dict)  # an old API version's field -> what it is now

    def unknown(self, k: str) -> str:
        """The message for an undeclared field, with the rename or the likely typo."""
        text = f'unknown field "{k}": field not declared in schema {self.where}'
        if k in self.renamed:
            return f"{text} ({self.renamed[k]})"
        close = difflib.get_close_matches(k, [*self.fields, *self.renamed], n=1, cutoff=0.75)
        if close:
            text += f'; did you mean "{close[0]}"?'
            if close[0] in self.renamed:
                text += f" ({self.renamed[close[0]]})"
        return text

    def check(self, src: Source, value: Any, path: str) -> None:
        """Refuse unknown fields and wrong types; then drop null fields (see :func:`unset_nulls`)."""
        if not isinstance(value, dict):
            raise src.error(path, f"Invalid type: expected an object, got {_describe(value)}")
        for k, v in value.items():
            sub = join(path, k)
            spec = self.fields.get(k)
            if spec is None:
                raise src.error(sub, self.unknown(k))
            if v is None:  # null means "unset", as in Kubernetes
                continue
            spec.check(src, v, sub)
        unset_nulls(value)


def unset_nulls(value: dict[str, Any]) -> None:
    """Drop the fields of a checked object whose value is ``null``.

    Kubernetes decodes ``field: null`` as an unset field (its default); the parsers read
    ``raw.get(field, default)``, which would hand them ``None`` (a TypeError or a message
    about "None") if the key stayed. Only fields of declared objects: a null in a map
    (``env: {X: null}``: the variable must not be set) keeps its meaning.
    """
    for k in [k for k, v in value.items() if v is None]:
        del value[k]


def collect(spec: Spec, src: Source, value: Any, path: str) -> list[ScenarioError]:
    """Every structural mistake in ``value`` (not only the first), for kinds whose users
    paste whole manifests from old documentation and deserve the full list at once."""
    if value is None:
        return []
    spec = spec.resolve()
    if isinstance(spec, Obj) and isinstance(value, dict):
        out: list[ScenarioError] = []
        for k, v in value.items():
            sub = join(path, k)
            if k not in spec.fields:
                out.append(src.error(sub, spec.unknown(k)))
            else:
                out += collect(spec.fields[k], src, v, sub)
        unset_nulls(value)
        return out
    if isinstance(spec, ListOf) and isinstance(value, list):
        return [e for i, v in enumerate(value) for e in collect(spec.item, src, v, join(path, i))]
    try:
        spec.check(src, value, path)
    except ScenarioError as exc:
        return [exc]
    return []
