"""Read YAML into plain Python data while remembering the line of every field.

PyYAML silently keeps the last of two duplicate keys and forgets positions once data is
built; the API server refuses duplicate fields and a user wants to know *where* a mistake
is. So we compose the node tree ourselves and record ``path -> line`` as we convert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from netns_lab.errors import ScenarioError


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


def _convert(loader: yaml.SafeLoader, node: yaml.Node, path: str, lines: dict[str, int], file: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            if not isinstance(key, str):
                key = str(key)
            sub = join(path, key)
            if key in out:
                raise ScenarioError(file, sub, f'duplicate field "{key}"', knode.start_mark.line + 1)
            out[key] = _convert(loader, vnode, sub, lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, join(path, i), lines, file) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_documents(file: str, text: str | None = None) -> list[Source]:
    """Parse every YAML document of ``file`` (``---`` separated) into a :class:`Source`."""
    if text is None:
        try:
            with open(file, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            raise ScenarioError(file, "", "no such file") from None
        except IsADirectoryError:
            raise ScenarioError(file, "", "is a directory, not a scenario file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError(file, "", f"cannot read file: {exc}") from None
    loader = yaml.SafeLoader(text)
    docs: list[Source] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[str, int] = {}
            docs.append(Source(file, _convert(loader, node, "", lines, file), lines))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "syntax error"
        raise ScenarioError(file, "", f"not valid YAML: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(file, "", f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    return docs
