"""The structural schemas of Kubernetes objects, from Kubernetes' own OpenAPI definitions.

Field names, types, and which fields exist at all come from the JSON schemas that the
``kubernetes-validate`` package ships for each Kubernetes version (generated from the API
server's OpenAPI document, "strict" variant: no undeclared field). They are turned into the
lab's small :mod:`~netns_lab.scenario.schema` specs, so every kind keeps the lab's one-line
``FILE:LINE: PATH: MESSAGE`` errors and "did you mean" hints, and a new kind needs only its
semantic rules. Which version: :data:`KUBERNETES_VERSION` (the one the lab follows).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from netns_lab.scenario.schema import ANY, BOOL, INT, INT_OR_STR, STR, ListOf, MapOf, Obj, Scalar, Spec

KUBERNETES_VERSION = "1.34.0"
NUMBER = Scalar("number")
QUANTITY = Scalar("quantity")  # resource.Quantity: "100m", 1, 0.5
_PREFIX = "#/$defs/"


@functools.cache
def definitions() -> dict[str, Any]:
    """Every definition of the pinned version (about 700), read once per process (~20 ms)."""
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
    with (base / "_definitions.json").open() as fh:
        return json.load(fh)["$defs"]  # type: ignore[no-any-return]


class _Ref(Spec):
    """A definition built on first use: some definitions refer to themselves (JSONSchemaProps)."""

    def __init__(self, name: str, renamed: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]) -> None:
        self.name, self.renamed = name, renamed

    @functools.cached_property
    def spec(self) -> Spec:
        return _build(self.name, self.renamed)

    def check(self, src, value, path):  # type: ignore[no-untyped-def]
        return self.spec.check(src, value, path)

    def resolve(self) -> Spec:
        return self.spec.resolve()


def _types(node: dict[str, Any]) -> set[str]:
    t = node.get("type", ())
    return ({t} if isinstance(t, str) else set(t)) - {"null"}


def _spec(node: dict[str, Any], where: str, renamed: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]) -> Spec:
    ref = node.get("$ref")
    if ref is not None:
        return schema(ref[len(_PREFIX):], renamed)
    if "oneOf" in node:
        kinds = set().union(*(_types(o) for o in node["oneOf"]))
        return QUANTITY if "number" in kinds else INT_OR_STR if kinds == {"string", "integer"} else ANY
    types = _types(node)
    if types == {"object"} or "properties" in node:
        if "properties" in node:
            names = dict(renamed)
            fields = {k: _spec(v, f"{where}.{k}", renamed) for k, v in node["properties"].items()}
            return Obj(where, fields, dict(names.get(where, ())))
        extra = node.get("additionalProperties")
        return MapOf(_spec(extra, where, renamed)) if isinstance(extra, dict) else ANY
    if types == {"array"}:
        return ListOf(_spec(node.get("items", {}), where, renamed))
    return {"string": STR, "integer": INT, "boolean": BOOL, "number": NUMBER}.get(next(iter(types), ""), ANY) if len(types) == 1 else ANY


def _build(name: str, renamed: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]) -> Spec:
    return _spec(definitions()[name], name, renamed)


@functools.cache
def schema(name: str, renamed: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()) -> Spec:
    """The spec of definition ``name`` (``io.k8s.api.core.v1.Service``). ``renamed``: per
    definition, fields of an older API version and what they are now, for the hint."""
    return _Ref(name, renamed)


def kind(name: str, renamed: dict[str, dict[str, str]] | None = None) -> Spec:
    """``kind("io.k8s.api.core.v1.Pod")``, with optional renamed-field hints per definition."""
    frozen = tuple(sorted((d, tuple(sorted(f.items()))) for d, f in (renamed or {}).items()))
    return schema(name, frozen)


OBJECT_META = kind("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
