"""Walk an enclaves tree and load every enclave and partition in it.

The walk (sorted at every level, hidden entries skipped):

* Outside an enclave, a directory whose ``config.yml`` is an enclave document is an enclave,
  and the walk does not descend further; a directory without ``config.yml`` is searched.
* Inside an enclave, the partitions are the ``partitions:`` list when given, otherwise every
  immediate subdirectory holding a ``config.yml``.
* A ``config.yml`` that exists but is broken is an error, never skipped: a typo must not make
  an applied enclave look deleted.

Every problem in the tree is collected before one ``SpecError`` is raised.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from nclav._gc import paused_gc
from nclav.config._source import TreeSource, display, join
from nclav.config._yaml import YamlDocError, compose, format_loc, line_of, to_plain
from nclav.errors import Issue, SpecError
from nclav.model import (
    ENCLAVE_KEYS,
    ID_RULE,
    NAME_RULE,
    PARTITION_KEYS,
    Dns,
    EnclaveConfig,
    Export,
    Import,
    Network,
    PartitionConfig,
    TerraformSettings,
)

if TYPE_CHECKING:
    from yaml.nodes import Node

M = TypeVar("M", bound=BaseModel)

CONFIG = "config.yml"
# (enclave id, partition id or "", top-level key or "", name or "") of something left out of a
# broken document; "*" stands for any id or name the loader could not read.
Broken = tuple[str, str, str, str]
_ENCLAVE_ONLY = frozenset({"region", "cloud", "network", "dns", "identity", "partitions"})
_PARTITION_ONLY = frozenset({"produces", "backend", "terraform", "inputs", "declared_outputs"})
_IGNORED_SUFFIXES = (".tfstate", ".tfstate.backup")
_IGNORED_DIRS = frozenset({"terraform.tfstate.d"})
_ID_RE = re.compile(EnclaveConfig.model_fields["id"].metadata[0].pattern)


def _keys(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(f.alias or n for n, f in model.model_fields.items())


# Known keys of the nested documents, by the top-level key that holds them ("did you mean").
_NESTED_KEYS: dict[str, frozenset[str]] = {
    "imports": _keys(Import),
    "exports": (_keys(Export) - {"export_type"}) | {"type"},
    "network": _keys(Network),
    "dns": _keys(Dns),
    "terraform": _keys(TerraformSettings),
}


def _node_of(raw: bytes) -> Node | None:
    """The YAML node graph of a config, parsed again on demand to place an error on its line.

    Keeping every file's node graph alive instead would cost far more: hundreds of thousands
    of small objects that the garbage collector walks again and again during a large load.
    """
    try:
        return compose(raw)
    except YamlDocError:
        return None


@dataclass(frozen=True, slots=True, eq=False)
class LoadedPartition:
    config: PartitionConfig
    path: str  # display path of its config.yml
    dir: str  # directory relative to the tree root
    files: tuple[tuple[str, str], ...]  # (path relative to dir, sha256) of every partition file
    raw: bytes = field(repr=False, default=b"")

    def node(self) -> Node | None:
        return _node_of(self.raw)

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def has_tf_files(self) -> bool:
        return any("/" not in name and name.endswith((".tf", ".tf.json")) for name, _ in self.files)


@dataclass(frozen=True, slots=True, eq=False)
class LoadedEnclave:
    config: EnclaveConfig
    path: str
    dir: str
    partitions: tuple[LoadedPartition, ...]
    raw: bytes = field(repr=False, default=b"")

    def node(self) -> Node | None:
        return _node_of(self.raw)

    @property
    def id(self) -> str:
        return self.config.id

    def partition(self, partition_id: str) -> LoadedPartition | None:
        for p in self.partitions:
            if p.config.id == partition_id:
                return p
        return None


@dataclass(frozen=True, slots=True, eq=False)
class Desired:
    """A loaded (not yet graph-validated) enclaves tree."""

    enclaves: tuple[LoadedEnclave, ...]
    files_read: tuple[str, ...] = ()  # every file the loader read, relative to the root
    # Only while a broken tree is checked further (see ``load_tree``): what the loader had to
    # leave out, so graph checks do not report its absence. Empty for every tree that loads.
    broken: frozenset[Broken] = frozenset()

    def enclave(self, enclave_id: str) -> LoadedEnclave | None:
        for e in self.enclaves:
            if e.config.id == enclave_id:
                return e
        return None


class _Walk:
    def __init__(self, source: TreeSource) -> None:
        self.source = source
        self.issues: list[Issue] = []
        self.read: list[str] = []
        self.broken: set[Broken] = set()

    # -- reading -------------------------------------------------------------------------

    def _read(self, rel: str) -> bytes | None:
        try:
            data = self.source.read(rel)
        except SpecError as exc:
            self.issues.extend(exc.issues)
            return None
        self.read.append(rel)
        return data

    def _parse(self, rel: str) -> tuple[Any, Node, bytes] | None:
        data = self._read(rel)
        if data is None:
            return None
        where = display(self.source, rel)
        try:
            node = compose(data)
            if node is None:
                self.issues.append(Issue(where, 1, "", "file is empty: expected a mapping"))
                return None
            value = to_plain(node)
        except YamlDocError as exc:
            self.issues.append(Issue(where, exc.line, exc.field, exc.message))
            return None
        if not isinstance(value, dict):
            line = node.start_mark.line + 1
            self.issues.append(Issue(where, line, "", "expected a mapping of keys to values"))
            return None
        return value, node, data

    # -- the walk ------------------------------------------------------------------------

    def walk(self, rel: str) -> list[LoadedEnclave]:
        dirs, files = self.source.listdir(rel)
        if CONFIG in files:
            enclave = self._enclave_at(rel, dirs)
            return [enclave] if enclave else []
        found: list[LoadedEnclave] = []
        for name in dirs:
            found.extend(self.walk(join(rel, name)))
        return found

    def _enclave_at(self, rel: str, subdirs: list[str]) -> LoadedEnclave | None:
        cfg_rel = join(rel, CONFIG)
        where = display(self.source, cfg_rel)
        parsed = self._parse(cfg_rel)
        if parsed is None:
            self.broken.add(("*", "", "", ""))
            return None
        value, node, raw = parsed
        if not (_ENCLAVE_ONLY & value.keys()):
            self.broken.add(("*", "", "", ""))
            hint = (
                "this looks like a partition config outside of any enclave directory"
                if _PARTITION_ONLY & value.keys()
                else "an enclave config needs at least id, name and region"
            )
            self.issues.append(Issue(where, 1, "", f"not an enclave config: {hint}"))
            return None
        eid = _text_id(value)
        config = self._validate(EnclaveConfig, value, node, where, ENCLAVE_KEYS, (eid, ""))
        partitions = self._partitions(rel, subdirs, value, node, where, eid)
        if config is None:
            self.broken.add((eid, "", "", ""))
            return None
        return LoadedEnclave(config, where, rel, tuple(partitions), raw)

    def _partitions(
        self, rel: str, subdirs: list[str], value: dict[str, Any], node: Node, where: str, eid: str
    ) -> list[LoadedPartition]:
        listed = value.get("partitions")
        out: list[LoadedPartition] = []
        if isinstance(listed, list) and listed:
            for i, name in enumerate(listed):
                if not isinstance(name, str) or "/" in name or name in (".", ".."):
                    continue  # reported by the model validation of `partitions`
                part_rel = join(rel, name)
                if not self.source.is_file(join(part_rel, CONFIG)):
                    self.issues.append(
                        Issue(
                            where,
                            line_of(node, ("partitions", i)),
                            f"partitions[{i}]",
                            f"partition directory {name!r} has no {CONFIG}",
                        )
                    )
                    self.broken.add((eid, "*", "", ""))
                    continue
                loaded = self._partition_at(part_rel, self.source.listdir(part_rel), eid)
                if loaded:
                    out.append(loaded)
            return out
        for name in subdirs:
            part_rel = join(rel, name)
            listing = self.source.listdir(part_rel)
            if CONFIG in listing[1]:
                loaded = self._partition_at(part_rel, listing, eid)
                if loaded:
                    out.append(loaded)
        return out

    def _partition_at(
        self, rel: str, listing: tuple[list[str], list[str]], eid: str
    ) -> LoadedPartition | None:
        cfg_rel = join(rel, CONFIG)
        where = display(self.source, cfg_rel)
        parsed = self._parse(cfg_rel)
        if parsed is None:
            self.broken.add((eid, "*", "", ""))
            return None
        value, node, raw = parsed
        if _ENCLAVE_ONLY & value.keys() and not (_PARTITION_ONLY & value.keys()):
            self.broken.add((eid, "*", "", ""))
            self.issues.append(
                Issue(
                    where,
                    1,
                    "",
                    "an enclave config inside another enclave's directory: "
                    "enclaves do not nest (move it out, or make it a partition)",
                )
            )
            return None
        pid = _text_id(value)
        config = self._validate(PartitionConfig, value, node, where, PARTITION_KEYS, (eid, pid))
        files = self._partition_files(rel, "", listing)
        if config is None:
            self.broken.add((eid, pid, "", ""))
            return None
        return LoadedPartition(config, where, rel, files, raw)

    def _partition_files(
        self, rel: str, prefix: str, listing: tuple[list[str], list[str]] | None = None
    ) -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        dirs, files = listing or self.source.listdir(join(rel, prefix) if prefix else rel)
        for name in files:
            if (not prefix and name == CONFIG) or name.endswith(_IGNORED_SUFFIXES):
                continue
            file_rel = join(prefix, name)
            data = self._read(join(rel, file_rel))
            if data is not None:
                out.append((file_rel, hashlib.sha256(data).hexdigest()))
        for name in dirs:
            if name not in _IGNORED_DIRS:
                out.extend(self._partition_files(rel, join(prefix, name)))
        return tuple(out)

    # -- model validation ----------------------------------------------------------------

    def _validate(
        self,
        model: type[M],
        value: dict[str, Any],
        node: Node,
        where: str,
        known: frozenset[str],
        owner: tuple[str, str],
    ) -> M | None:
        """The document as ``model``; when it is invalid, every error is an issue and the
        document is read again without the invalid parts (``_lenient``), so that the graph
        checks still see the rest of it: one bad enum must not hide a broken reference."""
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            for err in errors:
                self.issues.append(_issue_from_pydantic(err, node, where, known))
            return _lenient(model, value, errors, owner, self.broken)


def _issue_from_pydantic(err: Any, node: Node, where: str, known: frozenset[str]) -> Issue:
    loc = tuple(p for p in err["loc"] if p != "[key]")
    kind = err["type"]
    value = err.get("input")
    field_name = format_loc(loc)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        message = f"unknown key {key!r}"
        scope = known if len(loc) == 1 else _NESTED_KEYS.get(str(loc[0]), frozenset())
        if scope:
            close = difflib.get_close_matches(key, sorted(scope), n=1, cutoff=0.6)
            message += (
                f" (did you mean {close[0]!r}?)"
                if close
                else (f"; expected one of: {', '.join(sorted(scope))}")
            )
        return Issue(where, line_of(node, loc, key=True), field_name, message)
    if kind == "missing":
        return Issue(where, line_of(node, loc), field_name, "required field is missing")
    if kind == "enum":
        expected = err.get("ctx", {}).get("expected", "")
        message = f"unknown value {value!r}: expected {expected}"
        if loc == ("backend",) and value == "managed":
            message = "backend 'managed' is no longer supported; use terraform or opentofu"
        return Issue(where, line_of(node, loc), field_name, message)
    if kind == "string_pattern_mismatch":
        pattern = err.get("ctx", {}).get("pattern", "")
        rule = ID_RULE if pattern.startswith("^[A-Za-z0-9]") else NAME_RULE
        return Issue(
            where, line_of(node, loc), field_name, f"{value!r} is not valid: expected {rule}"
        )
    if kind == "string_type":
        got = _describe(value)
        extra = " (inputs take text, numbers or booleans)" if loc[:1] == ("inputs",) else ""
        return Issue(where, line_of(node, loc), field_name, f"expected text, got {got}{extra}")
    if kind in ("tuple_type", "list_type"):
        return Issue(
            where, line_of(node, loc), field_name, f"expected a list, got {_describe(value)}"
        )
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return Issue(
            where, line_of(node, loc), field_name, f"expected a mapping, got {_describe(value)}"
        )
    if kind == "value_error":
        message = str(err.get("ctx", {}).get("error", err["msg"]))
        return Issue(where, line_of(node, loc), field_name, message)
    return Issue(where, line_of(node, loc), field_name, str(err["msg"]))


def _text_id(value: dict[str, Any]) -> str:
    """A document's id as written, or "*" (any) when it is not a valid id."""
    ident = value.get("id")
    return ident if isinstance(ident, str) and _ID_RE.match(ident) else "*"


_LENIENT_ROUNDS = 4  # dropping a part can reveal no new error in practice; a bound all the same


def _lenient(
    model: type[M],
    value: dict[str, Any],
    errors: list[Any],
    owner: tuple[str, str],
    broken: set[Broken],
) -> M | None:
    """``value`` validated again without the parts that failed, recording each left-out part
    in ``broken``; None when a required field itself is invalid (nothing to identify it by).

    Only ever used to check the rest of a tree that already has errors: its result is never
    planned or applied (``load_tree`` raises the SpecError in every case)."""
    doc = dict(value)
    for _ in range(_LENIENT_ROUNDS):
        for err in errors:
            loc = tuple(p for p in err["loc"] if p != "[key]")
            if not loc or not isinstance(loc[0], str):
                return None
            key = loc[0]
            inner = doc.get(key)
            if len(loc) >= 2 and isinstance(inner, list) and isinstance(loc[1], int):
                if 0 <= loc[1] < len(inner) and inner[loc[1]] is not _GONE:
                    item = inner[loc[1]]
                    name = _item_name(key, item)
                    inner = list(inner)
                    inner[loc[1]] = _GONE
                    doc[key] = inner
                    broken.add((*_scope(owner, key), key, name))
                continue
            if len(loc) >= 2 and isinstance(inner, dict) and loc[1] in inner:
                doc[key] = {k: v for k, v in inner.items() if k != loc[1]}
                broken.add((*_scope(owner, key), key, "*"))
                continue
            field_info = model.model_fields.get(key) or next(
                (f for f in model.model_fields.values() if f.alias == key), None
            )
            if field_info is None:  # an unknown key: leaving it out is the whole fix
                doc.pop(key, None)
                continue
            if field_info.is_required():
                return None
            doc.pop(key, None)
            broken.add((*_scope(owner, key), key, "*"))
        doc = {
            k: [i for i in v if i is not _GONE] if isinstance(v, list) else v
            for k, v in doc.items()
        }
        try:
            return model.model_validate(doc)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
    return None


_GONE = object()  # a list item left out by ``_lenient`` (removed once a round is done)


def _scope(owner: tuple[str, str], key: str) -> tuple[str, str]:
    """Import aliases share one namespace per enclave: record them at the enclave."""
    return (owner[0], "") if key == "imports" else owner


def _item_name(key: str, item: object) -> str:
    field_name = {"imports": "alias", "exports": "name"}.get(key)
    if field_name and isinstance(item, dict):
        name = item.get(field_name)
        if isinstance(name, str) and name:
            return name
    return "*"


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def load_tree(source: TreeSource) -> Desired:
    """Load every enclave and partition of ``source``; raise one SpecError listing all issues."""
    walk = _Walk(source)
    try:
        with paused_gc():
            enclaves = walk.walk("")
    except SpecError as exc:  # listing a directory failed: nothing sensible can follow
        raise SpecError([*walk.issues, *exc.issues]) from None
    if walk.issues:
        issues = list(walk.issues)
        # Check the references and templates of what did load, so every problem is reported
        # at once. Graph problems that only echo a loader error are left out (``broken``).
        from nclav.graph import validate_graph

        try:
            with paused_gc():
                validate_graph(Desired(tuple(enclaves), tuple(walk.read), frozenset(walk.broken)))
        except SpecError as exc:
            issues.extend(i for i in exc.issues if i not in walk.issues)
        unique = list(dict.fromkeys(issues))
        raise SpecError(sorted(unique, key=lambda i: (i.path, i.line or 0)))
    return Desired(tuple(enclaves), tuple(walk.read))


__all__ = ["CONFIG", "Broken", "Desired", "LoadedEnclave", "LoadedPartition", "load_tree"]
