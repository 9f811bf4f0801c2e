"""YAML to plain values, keeping the text the user wrote and where they wrote it.

PyYAML's constructors resolve ``5432`` to an int, ``0755`` to 493 and ``yes`` to True. nclav's
string fields must keep the literal text, so we compose the node graph with the C parser and
convert it ourselves: every scalar becomes its source text, except the null scalars (``~``,
``null``, empty), which become None. The node graph is kept so that an error found later
(by pydantic or the graph checks) can be placed on its line.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from nclav.errors import Issue

try:  # the C parser is much faster; fall back to the pure-Python one where libyaml is absent
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

_NULL_TAG = "tag:yaml.org,2002:null"
_MAX_NODES = 100_000  # aliases can expand a small file into a huge tree ("billion laughs")


class YamlDocError(Exception):
    """Raised inside this module; the loader turns it into an Issue."""

    def __init__(self, message: str, line: int | None, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.field = field


def compose(data: bytes | str) -> Node | None:
    """Parse one YAML document into its node graph (None for an empty document)."""
    try:
        loader = _Loader(data)
        try:
            return loader.get_single_node()  # type: ignore[no-any-return]
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlDocError(f"invalid YAML: {problem}", mark.line + 1 if mark else None) from exc
    except yaml.YAMLError as exc:
        raise YamlDocError(f"invalid YAML: {exc}", None) from exc


def to_plain(node: Node) -> Any:
    """Convert a node graph to dicts, lists, str and None (scalars keep their source text)."""
    budget = [_MAX_NODES]
    return _convert(node, budget, set())


def _convert(node: Node, budget: list[int], active: set[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise YamlDocError("document too large after expanding aliases", node.start_mark.line + 1)
    if isinstance(node, ScalarNode):
        return None if node.tag == _NULL_TAG else node.value
    ident = id(node)
    if ident in active:
        raise YamlDocError("recursive YAML alias", node.start_mark.line + 1)
    active.add(ident)
    try:
        if isinstance(node, SequenceNode):
            return [_convert(item, budget, active) for item in node.value]
        if isinstance(node, MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL_TAG:
                    raise YamlDocError("mapping keys must be plain text", key_node.start_mark.line + 1)
                key = key_node.value
                if key in out:
                    raise YamlDocError(f"duplicate key {key!r}", key_node.start_mark.line + 1, key)
                out[key] = _convert(value_node, budget, active)
            return out
    finally:
        active.discard(ident)
    raise YamlDocError(f"unsupported YAML node {node.tag}", node.start_mark.line + 1)


def line_of(node: Node | None, loc: tuple[str | int, ...], *, key: bool = False) -> int | None:
    """The 1-based line of the value at ``loc`` (or of its key), or the nearest enclosing one."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        found: Node | None = None
        key_node: Node | None = None
        if isinstance(node, MappingNode):
            for k, v in node.value:
                if isinstance(k, ScalarNode) and k.value == part:
                    key_node, found = k, v
                    break
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            found = node.value[part]
        if found is None:
            return line
        node = found
        line = (key_node if key and key_node is not None else node).start_mark.line + 1
    return line


def issue_at(path: str, node: Node | None, loc: tuple[str | int, ...], message: str) -> Issue:
    return Issue(path, line_of(node, loc), format_loc(loc), message)


def format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
