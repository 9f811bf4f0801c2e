"""The documents port: the few conditional operations every document database offers.

A document is a flat ``dict`` of plain values (text, numbers, booleans, bytes, lists of
them) with its key in ``pk`` (partition) and ``sk`` (id within it). Conditions are a tiny
AST (``Cond``) that an adapter turns into its database's own server-side condition
(DynamoDB's ConditionExpression, Cosmos's filter predicate, ...), so a compare-and-swap
stays one request. ``DocumentStateStore`` holds the StateStore's logic over this port once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from nclav.errors import ConflictError, TemporaryError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

Doc = dict[str, Any]
Key = tuple[str, str]  # (pk, sk)
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Cond:
    """``op`` is a comparison (``=``, ``<``, ``<=``), ``in``, ``exists``, ``absent``, or
    ``and`` / ``or`` over ``parts``."""

    op: str
    name: str = ""
    value: Any = None
    parts: tuple[Cond, ...] = ()

    def __and__(self, other: Cond) -> Cond:
        return Cond("and", parts=(self, other))

    def __or__(self, other: Cond) -> Cond:
        return Cond("or", parts=(self, other))


def eq(name: str, value: Any) -> Cond:
    return Cond("=", name, value)


def lt(name: str, value: Any) -> Cond:
    return Cond("<", name, value)


def le(name: str, value: Any) -> Cond:
    return Cond("<=", name, value)


def one_of(name: str, values: Sequence[Any]) -> Cond:
    return Cond("in", name, tuple(values))


def exists(name: str) -> Cond:
    return Cond("exists", name)


def absent(name: str) -> Cond:
    return Cond("absent", name)


def holds(cond: Cond, doc: Mapping[str, Any]) -> bool:
    """Whether ``doc`` meets ``cond`` (an absent document is ``{}``), as a server would judge."""
    if cond.op in ("and", "or"):
        results = (holds(p, doc) for p in cond.parts)
        return all(results) if cond.op == "and" else any(results)
    if cond.op == "exists" or cond.op == "absent":
        return (cond.name in doc) == (cond.op == "exists")
    if cond.name not in doc:
        return False
    found = doc[cond.name]
    if cond.op == "in":
        return found in cond.value
    if isinstance(found, str) != isinstance(cond.value, str):
        return False  # different types never compare (DynamoDB's rule)
    return bool(
        found == cond.value
        if cond.op == "="
        else found < cond.value
        if cond.op == "<"
        else found <= cond.value
    )


@dataclass(frozen=True)
class Put:
    doc: Doc
    when: Cond | None = None


@dataclass(frozen=True)
class Patch:
    """Set fields (``None`` removes one) and add to counters (absent counts as 0); a patch
    of a missing document makes it, unless ``when`` says otherwise."""

    key: Key
    set: Mapping[str, Any] = field(default_factory=dict)
    add: Mapping[str, int | float] = field(default_factory=dict)
    when: Cond | None = None


@dataclass(frozen=True)
class Delete:
    key: Key
    when: Cond | None = None


Write = Put | Patch | Delete


@dataclass(frozen=True)
class Index:
    """The partition and order fields of a query: the table's own (``pk``/``sk``) or an index."""

    name: str
    pk: str
    sk: str


TABLE = Index("", "pk", "sk")


@dataclass(frozen=True)
class Query:
    """One partition of ``index`` in ``sk`` order: those starting with ``prefix`` or
    ``<= upto`` and meeting ``where`` (judged before ``limit``); ``limit`` first ones. Index
    queries may lag writes; ``consistent`` ones (of the table, or of an index on an adapter
    without atomic transactions, see ``Documents.atomic``) do not."""

    partition: str
    index: Index = TABLE
    prefix: str | None = None
    upto: Any = None
    forward: bool = True
    limit: int | None = None
    consistent: bool = False
    where: Cond | None = None


class ConditionFailedError(ConflictError):
    """A conditional write lost. ``item``: the stored document of a single write (``None``:
    none stored); for a transaction, ``reasons`` (one code per write, "None" when fine) and
    ``items`` (the stored documents)."""

    def __init__(
        self,
        message: str,
        *,
        item: Doc | None = None,
        reasons: tuple[str, ...] = (),
        items: tuple[Doc | None, ...] = (),
    ) -> None:
        super().__init__(message)
        self.item = item
        self.reasons = reasons
        self.items = items

    def failed(self, index: int) -> bool:
        """Whether the transaction's write at ``index`` lost its condition."""
        return index < len(self.reasons) and self.reasons[index] == "ConditionalCheckFailed"


class ContendedError(TemporaryError):
    """A transaction cancelled because other transactions held its documents at that moment."""


class Documents(Protocol):
    """A document database: conditional writes are atomic and server-side.

    ``atomic``: whether ``transact`` is all-or-nothing across partitions. An adapter whose
    database cannot promise that (Cosmos DB: a batch holds one partition key, and the local
    stand-in does not make even that atomic) says ``False``: ``DocumentStateStore`` then
    never calls ``transact`` and writes in an order every reader tolerates, keeps no
    documents that only a transaction could keep in step (the unfinished-runs copies, the
    steps-left count), and asks for ``consistent`` index queries instead, which such an
    adapter must answer consistently.
    """

    atomic: bool
    max_doc_bytes: int  # the most a packed record may take in a document
    max_transaction: int  # writes in one ``transact``

    def too_large(self, message: str) -> Exception:
        """The error for a record that cannot fit a document."""
        ...

    def get(self, key: Key, *, consistent: bool = True) -> Doc | None: ...

    def batch_get(self, keys: Sequence[Key]) -> list[Doc]:
        """Consistent reads, in no particular order; missing ones are absent."""
        ...

    def write(self, op: Write, returns: Literal["new", "old"] | None = None) -> Doc:
        """One conditional write; the document after (``new``) or before (``old``) it, else
        ``{}``. Raises ``ConditionFailedError`` with the stored document."""
        ...

    def transact(self, ops: Sequence[Write]) -> None:
        """All of ``ops`` or none (at most ``max_transaction``)."""
        ...

    def batch_write(self, puts: Sequence[Doc] = (), deletes: Sequence[Key] = ()) -> None:
        """Unconditional puts and deletes, not atomic together."""
        ...

    def query(self, query: Query) -> list[Doc]: ...


def doc_size(value: Any) -> int:
    """An upper estimate of a document's (or value's) stored size, names included."""
    if isinstance(value, dict):
        return 3 + sum(len(k.encode()) + 1 + doc_size(v) for k, v in value.items())
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, list | tuple):
        return 3 + sum(1 + doc_size(v) for v in value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return len(repr(value)) // 2 + 2
    return 1


def key_of(doc: Mapping[str, Any]) -> Key:
    return str(doc["pk"]), str(doc["sk"])


def target(op: Write) -> Key:
    """The key of the document ``op`` writes."""
    return key_of(op.doc) if isinstance(op, Put) else op.key


def copied(doc: Mapping[str, Any]) -> Doc:
    """``doc`` with its own lists (a caller changing it changes no one else's)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in doc.items()}


def after(op: Write, old: Doc | None) -> Doc | None:
    """The document ``op`` leaves where ``old`` was (``None``: none), as the port defines it:
    a put's ``None`` fields absent, a patch's ``None`` removing one, additions from 0."""
    if isinstance(op, Put):
        return copied({k: v for k, v in op.doc.items() if v is not None})
    if isinstance(op, Delete):
        return None
    new: Doc = copied(old) if old is not None else {"pk": op.key[0], "sk": op.key[1]}
    for name, value in op.set.items():
        if value is None:
            new.pop(name, None)
        else:
            new[name] = value
    for name, delta in op.add.items():
        new[name] = new.get(name, 0) + delta
    return new


class Remembered(Generic[K, V]):
    """The values of the ``size`` keys put most recently; thread-safe (an adapter's memory of
    the documents it last saw, which lease-renewing threads write as well)."""

    def __init__(self, size: int = 1024) -> None:
        self._seen: OrderedDict[K, V] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._seen.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._seen.pop(key, None)
            self._seen[key] = value
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)

    def forget(self, key: K) -> None:
        with self._lock:
            self._seen.pop(key, None)


__all__ = [
    "TABLE",
    "Cond",
    "ConditionFailedError",
    "ContendedError",
    "Delete",
    "Doc",
    "Documents",
    "Index",
    "Key",
    "Patch",
    "Put",
    "Query",
    "Remembered",
    "Write",
    "absent",
    "after",
    "copied",
    "doc_size",
    "eq",
    "exists",
    "holds",
    "key_of",
    "le",
    "lt",
    "one_of",
    "target",
]
