"""YAML to plain values, keeping the text the user wrote and where they wrote it.

PyYAML's constructors resolve ``5432`` to an int, ``0755`` to 493 and ``yes`` to True. nclav's
string fields must keep the literal text, so we compose the node graph with the C parser and
convert it ourselves: every scalar becomes its source text, except the plain (unquoted) null
scalars (``~``, ``null``, empty), which become None. ``line_of`` places an error found later
(by pydantic or the graph checks) on its line.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, cast

from nclav.errors import Issue

if TYPE_CHECKING:
    import yaml
    from yaml.nodes import Node, ScalarNode

# PyYAML is imported when a document is first parsed (``compose``), not with this module:
# every process importing the plan or the records would pay for it (a cloud function's cold
# start included). Nodes are told apart by their ``id`` ("scalar", "sequence", "mapping").

_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_NULL_TAG = "tag:yaml.org,2002:null"
_MAX_NODES = 100_000  # aliases can expand a small file into a huge tree ("billion laughs")
_MAX_DEPTH = 64  # far deeper than any config; also stops recursive aliases


class YamlDocError(Exception):
    """Raised inside this module; the loader turns it into an Issue."""

    def __init__(self, message: str, line: int | None, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.field = field


_TAGS = {
    "scalar": "tag:yaml.org,2002:str",
    "sequence": "tag:yaml.org,2002:seq",
    "mapping": "tag:yaml.org,2002:map",
}


@functools.cache
def _text_loader() -> Any:
    """The loader class: PyYAML's base loader, which resolves no implicit types (every plain
    scalar stays text; the cheapest), from the C parser where libyaml is available."""
    try:
        from yaml import CBaseLoader as Loader
    except ImportError:  # pragma: no cover - depends on how PyYAML was built
        from yaml import BaseLoader as Loader  # type: ignore[assignment]

    class _TextLoader(Loader):
        """Tags every untagged node by its kind alone: no implicit typing, no path resolvers."""

        def resolve(self, kind: type[Node], value: object, implicit: object) -> str:
            return _TAGS[_kind(kind)]

    return _TextLoader


def compose(data: bytes | str) -> Node | None:
    """Parse one YAML document into its node graph (None for an empty document)."""
    import yaml

    try:
        loader = _text_loader()(data)
        try:
            return cast("Node | None", loader.get_single_node())
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlDocError(f"invalid YAML: {problem}", mark.line + 1 if mark else 1) from exc
    except yaml.reader.ReaderError as exc:
        # Invalid UTF-8, NUL or another control character: PyYAML only gives an offset
        # (bytes for the C reader and undecodable input, characters otherwise).
        raise YamlDocError(_reader_message(exc), _line_at(data, exc)) from exc
    except yaml.YAMLError as exc:
        raise YamlDocError(f"invalid YAML: {_first_line(exc)}", 1) from exc
    except RecursionError as exc:  # a deeply nested flow collection, before our depth check
        raise YamlDocError("invalid YAML: nesting too deep", 1) from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n", 1)[0] or type(exc).__name__


def _reader_message(exc: yaml.reader.ReaderError) -> str:
    char = exc.character
    if isinstance(char, bytes):
        what = f"byte 0x{char[0]:02x}" if char else "byte"
    elif isinstance(char, int):
        undecodable = any(w in str(exc.reason) for w in ("UTF", "byte", "octet"))
        what = f"byte 0x{char:02x}" if undecodable else f"character U+{char:04X}"
    else:
        what = f"character U+{ord(char):04X}" if isinstance(char, str) and char else "character"
    reason = str(exc.reason).rstrip(".")
    return f"invalid YAML: unacceptable {what}: {reason}"


def _line_at(data: bytes | str, exc: yaml.reader.ReaderError) -> int:
    """The 1-based line holding a reader error's offset."""
    position = max(int(exc.position or 0), 0)
    if isinstance(data, str):
        return data.count("\n", 0, position) + 1
    if isinstance(exc.character, str):  # the pure-Python reader counts decoded characters
        return data.decode("utf-8", "replace").count("\n", 0, position) + 1
    return data.count(b"\n", 0, position) + 1


def to_plain(node: Node) -> Any:
    """Convert a node graph to dicts, lists, str and None (scalars keep their source text)."""
    budget = [_MAX_NODES]
    return _convert(node, budget, 0)


def _kind(node: Node | type[Node]) -> str:
    """ "scalar", "sequence" or "mapping": a node's kind, told without importing PyYAML."""
    return str(getattr(node, "id", ""))


def _is_null(node: ScalarNode) -> bool:
    return (not node.style and node.value in _NULLS) or node.tag == _NULL_TAG


def _convert(node: Node, budget: list[int], depth: int) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise YamlDocError("document too large after expanding aliases", node.start_mark.line + 1)
    if _kind(node) == "scalar":
        value = node.value
        # plain style is '' in libyaml and None in the Python parser; "!!null x" is null too
        if _is_null(cast("ScalarNode", node)):
            return None
        return value
    if depth > _MAX_DEPTH:
        raise YamlDocError("nesting too deep (or a recursive alias)", node.start_mark.line + 1)
    depth += 1
    if _kind(node) == "sequence":
        return [_convert(item, budget, depth) for item in node.value]
    if _kind(node) == "mapping":
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if _kind(key_node) != "scalar" or _is_null(key_node):
                raise YamlDocError("mapping keys must be plain text", key_node.start_mark.line + 1)
            key = key_node.value
            if key in out:
                raise YamlDocError(f"duplicate key {key!r}", key_node.start_mark.line + 1, key)
            out[key] = _convert(value_node, budget, depth)
        return out
    raise YamlDocError(f"unsupported YAML node {node.tag}", node.start_mark.line + 1)


def line_of(node: Node | None, loc: tuple[str | int, ...], *, key: bool = False) -> int | None:
    """The 1-based line of the value at ``loc`` (or of its key), or the nearest enclosing one."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        found: Node | None = None
        key_node: Node | None = None
        if _kind(node) == "mapping":
            for k, v in node.value:
                if _kind(k) == "scalar" and k.value == part:
                    key_node, found = k, v
                    break
        elif _kind(node) == "sequence" and isinstance(part, int) and 0 <= part < len(node.value):
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
