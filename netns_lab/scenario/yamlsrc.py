"""Read YAML into plain Python data while remembering the line of every field.

PyYAML silently keeps the last of two duplicate keys and forgets positions once data is
built; the API server refuses duplicate fields and a user wants to know *where* a mistake
is. So we compose the node tree ourselves and record ``path -> line`` as we convert.

A scenario file is code someone may download and run as root, so reading it is bounded
too: only regular files, at most :data:`MAX_BYTES` for a scenario and every file it
includes, at most :data:`MAX_NODES` YAML nodes written and :data:`MAX_ALIAS_NODES` more
made by expanding aliases (a 1 kB "billion laughs" file otherwise grows until memory runs
out; go-yaml, which Kubernetes uses, likewise limits alias expansion apart from size), at most :data:`MAX_DEPTH` levels of
nesting (PyYAML's composer recurses once per level), and no alias that contains itself.
Each limit is refused with one line naming the file and the line, as any other mistake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from netns_lab.errors import ScenarioError
from netns_lab.scenario.files import MAX_BYTES, Budget, FileRefused, read_text, too_long

MAX_NODES = 500_000  # YAML nodes as written: ~20,000 minimal Services or pods (~22 nodes each)
MAX_ALIAS_NODES = 100_000  # nodes made by expanding aliases, each use counting again
MAX_DEPTH = 100  # nesting levels; real manifests use fewer than 20

_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_YAML + t for t in ("str", "int", "float", "bool", "null")}
_TIMESTAMP, _MERGE = _YAML + "timestamp", _YAML + "merge"
_COLLECTION_TAGS = {_YAML + "seq", _YAML + "map"}


@dataclass
class Source:
    """One YAML document with a line number for each field path in it."""

    file: str
    data: Any
    lines: dict[str, int] = field(default_factory=dict)
    prefix: str = ""  # path of the document inside the scenario, e.g. "objects[2]"

    def line(self, path: str) -> int | None:
        """Line of ``path`` or of its nearest enclosing field that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.lines.get("")

    def error(self, path: str, message: str) -> ScenarioError:
        return ScenarioError(self.file, path, message, self.line(path))


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _tag(tag: str) -> str:
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


class _Alias:
    """Where the file says ``*name``: the composer returns the anchored node itself, which loses
    the position of the reference and hides repeated use; this keeps both for the converter."""

    __slots__ = ("node", "anchor", "line")

    def __init__(self, node: yaml.Node, anchor: str, line: int) -> None:
        self.node, self.anchor, self.line = node, anchor, line


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the composer bounded in depth and size."""

    def __init__(self, text: str, file: str, budget: Budget) -> None:
        super().__init__(text)
        self.file = file
        self.budget = budget
        self.depth = 0
        self.composed = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()
            if event.anchor not in self.anchors:
                raise yaml.composer.ComposerError(None, None, f"found undefined alias {event.anchor!r}", event.start_mark)
            return _Alias(self.anchors[event.anchor], event.anchor, event.start_mark.line + 1)
        line = self.peek_event().start_mark.line + 1
        self.composed += 1
        if self.budget.nodes + self.composed > MAX_NODES:
            raise ScenarioError(self.file, "", f"Too many: more than {MAX_NODES} YAML nodes; the limit is {MAX_NODES} for a "
                                "scenario and the files it includes", line)
        if self.depth >= MAX_DEPTH:
            raise ScenarioError(self.file, "", f"Too deep: nested more than {MAX_DEPTH} levels deep, the limit", line)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Converter:
    """Composed nodes -> plain data and ``path -> line``, refusing what would harm: aliases
    expanded past the node budget, nesting past :data:`MAX_DEPTH` once expanded, an alias
    inside the node it names (PyYAML builds ``&a [*a]`` as a list containing itself)."""

    def __init__(self, loader: _Loader, file: str, lines: dict[str, int], budget: Budget) -> None:
        self.loader, self.file, self.lines, self.budget = loader, file, lines, budget
        self.open: set[int] = set()  # ids of the collections being converted, outermost first
        self.outer: tuple[_Alias, str] | None = None  # the outermost alias being expanded, and its path

    def fail(self, path: str, message: str, line: int) -> ScenarioError:
        return ScenarioError(self.file, path, message, line)

    def target(self, alias: _Alias, path: str) -> yaml.Node:
        if id(alias.node) in self.open:
            raise self.fail(path, f"Invalid value: *{alias.anchor}: the alias is inside the node it refers to "
                            "(a recursive structure has no end)", alias.line)
        return alias.node

    def count(self, path: str, line: int) -> None:
        if self.outer is not None:  # a node an alias repeats: the expansion budget
            self.budget.alias_nodes += 1
            if self.budget.alias_nodes <= MAX_ALIAS_NODES:
                return
            alias, apath = self.outer
            raise self.fail(apath, f"Too many: expanding the alias *{alias.anchor} takes the scenario past {MAX_ALIAS_NODES} YAML "
                            "nodes made by aliases, the limit (aliases count each time they are used)", alias.line)
        self.budget.nodes += 1
        if self.budget.nodes <= MAX_NODES:
            return
        raise self.fail(path, f"Too many: more than {MAX_NODES} YAML nodes; the limit is {MAX_NODES} for a scenario and "
                        "the files it includes", line)

    def value(self, node: yaml.Node | _Alias, path: str, depth: int) -> Any:
        if isinstance(node, _Alias):
            self.lines[path] = node.line  # where the user wrote *name
            target = self.target(node, path)
            if self.outer is not None:
                return self.value_of(target, path, depth)
            self.outer = (node, path)
            try:
                return self.value_of(target, path, depth)
            finally:
                self.outer = None
        self.lines[path] = node.start_mark.line + 1
        return self.value_of(node, path, depth)

    def value_of(self, node: yaml.Node, path: str, depth: int) -> Any:
        line = node.start_mark.line + 1
        self.count(path, line)
        if depth > MAX_DEPTH:
            raise self.fail(path, f"Too deep: nested more than {MAX_DEPTH} levels deep once aliases are expanded, the limit", line)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if node.tag not in _COLLECTION_TAGS:
            raise self.fail(path, f'Invalid value: YAML tag "{_tag(node.tag)}" is not supported (only plain lists and mappings)', line)
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.value(item, join(path, i), depth + 1) for i, item in enumerate(node.value)]
            return self.mapping(node, path, depth)
        finally:
            self.open.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, path: str) -> Any:
        if node.tag in (_TIMESTAMP, _MERGE):  # as Kubernetes reads them: text (2024-01-01 is a label value)
            return node.value
        if node.tag not in _SCALAR_TAGS:
            raise self.fail(path, f'Invalid value: YAML tag "{_tag(node.tag)}" is not supported '
                            "(only strings, numbers, booleans and null)", node.start_mark.line + 1)
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError) as exc:  # an integer of more than 4300 digits: Python will not read it
            shown = node.value if len(node.value) <= 40 else node.value[:40] + "..."
            why = f"too large ({len(node.value)} characters)" if "digits" in str(exc) else str(exc)
            raise self.fail(path, f'Invalid value: "{shown}": {why}', node.start_mark.line + 1) from None

    def key(self, knode: yaml.Node | _Alias, path: str) -> str:
        """A field name: a string; a number or boolean written as a key is the text written
        (``80: x`` is field "80", as the JSON Kubernetes decodes has only string keys)."""
        node = self.target(knode, path) if isinstance(knode, _Alias) else knode
        line = (knode.line if isinstance(knode, _Alias) else node.start_mark.line + 1)
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(path, "Invalid type: a field name must be a string, not a list or an object", line)
        self.count(path, line)
        value = self.scalar(node, path)
        if isinstance(value, str):
            return value
        if value is None or isinstance(value, (bool, int, float)):
            return node.value
        raise self.fail(path, f"Invalid type: a field name must be a string, got {type(value).__name__}", line)

    def pairs(self, node: yaml.MappingNode, path: str) -> tuple[list[tuple[str, yaml.Node | _Alias, int]], list[yaml.Node | _Alias]]:
        """The explicit ``(key, value node, line)`` entries of a mapping (duplicates refused, as the
        API server does) and the values of its merge key (``<<``)."""
        explicit: list[tuple[str, yaml.Node | _Alias, int]] = []
        seen: set[str] = set()
        merges: list[yaml.Node | _Alias] = []
        for knode, vnode in node.value:
            kline = knode.line if isinstance(knode, _Alias) else knode.start_mark.line + 1
            if isinstance(knode, yaml.ScalarNode) and knode.tag == _MERGE:
                key = "<<"
            else:
                key = self.key(knode, path)
            if key in seen:
                raise self.fail(join(path, key), f'duplicate field "{key}"', kline)
            seen.add(key)
            if key == "<<" and isinstance(knode, yaml.ScalarNode) and knode.tag == _MERGE:
                merges.append(vnode)
            else:
                explicit.append((key, vnode, kline))
        return explicit, merges

    def merged(self, value: yaml.Node | _Alias, path: str, depth: int) -> list[tuple[str, yaml.Node | _Alias, int]]:
        """The entries a merge key brings, in precedence order: a mapping's own entries first,
        then what its own ``<<`` brings; of a list of mappings, earlier mappings first (YAML's
        merge-key rule). Keys may repeat; the first wins."""
        line = value.line if isinstance(value, _Alias) else value.start_mark.line + 1
        node = self.target(value, path) if isinstance(value, _Alias) else value
        if depth > MAX_DEPTH:
            raise self.fail(path, f"Too deep: merge keys nested more than {MAX_DEPTH} levels deep, the limit", line)
        self.count(path, line)
        if isinstance(node, yaml.SequenceNode) and node.tag in _COLLECTION_TAGS:
            self.open.add(id(node))
            try:
                out: list[tuple[str, yaml.Node | _Alias, int]] = []
                for i, item in enumerate(node.value):
                    inner = self.target(item, join(path, i)) if isinstance(item, _Alias) else item
                    if not isinstance(inner, yaml.MappingNode):
                        raise self.fail(join(path, i), "Invalid value: a merge key (<<) takes a mapping or a list of mappings",
                                        item.line if isinstance(item, _Alias) else item.start_mark.line + 1)
                    out += self.merged(item, join(path, i), depth + 1)
                return out
            finally:
                self.open.discard(id(node))
        if not isinstance(node, yaml.MappingNode) or node.tag not in _COLLECTION_TAGS:
            raise self.fail(path, "Invalid value: a merge key (<<) takes a mapping or a list of mappings", line)
        self.open.add(id(node))
        try:
            explicit, merges = self.pairs(node, path)
            out = list(explicit)
            for m in merges:
                out += self.merged(m, path, depth + 1)
            return out
        finally:
            self.open.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: str, depth: int) -> dict[str, Any]:
        explicit, merges = self.pairs(node, path)
        out: dict[str, Any] = {}
        for key, vnode, _line in explicit:
            out[key] = self.value(vnode, join(path, key), depth + 1)
        # Keys a merge brings yield to the mapping's own keys, then to earlier merges.
        for m in merges:
            for key, vnode, _line in self.merged(m, join(path, "<<"), depth + 1):
                if key not in out:
                    out[key] = self.value(vnode, join(path, key), depth + 1)
        return out


def load_documents(file: str, text: str | None = None, budget: Budget | None = None) -> list[Source]:
    """Parse every YAML document of ``file`` (``---`` separated) into a :class:`Source`.

    ``budget`` is shared by the files of one scenario; each call on its own gets a fresh one.
    """
    budget = budget if budget is not None else Budget()
    if text is None:
        text = read_text(file, budget)
    else:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_BYTES - budget.bytes:
            raise FileRefused(file, too_long(size, budget), 1)
        budget.bytes += size
    loader: _Loader | None = None
    docs: list[Source] = []
    try:
        loader = _Loader(text, file, budget)  # the reader refuses control characters here
        while loader.check_node():
            node = loader.get_node()
            loader.composed = 0  # the converter counts them again, aliases expanded, into the budget
            if node is None:
                continue
            lines: dict[str, int] = {}
            docs.append(Source(file, _Converter(loader, file, lines, budget).value(node, "", 0), lines))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "syntax error"
        raise ScenarioError(file, "", f"not valid YAML: {problem}", line) from None
    except yaml.reader.ReaderError as exc:  # a control character: name it and its line
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise ScenarioError(file, "", f"not valid YAML: unacceptable character {char}: {exc.reason}", line) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(file, "", f"not valid YAML: {exc}") from None
    except RecursionError:  # the limits above keep well inside Python's; a last guard all the same
        raise ScenarioError(file, "", f"Too deep: YAML nested too deeply to read (the limit is {MAX_DEPTH} levels)", 1) from None
    finally:
        if loader is not None:
            loader.dispose()
    return docs
