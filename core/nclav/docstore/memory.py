"""``MemoryDocuments``: the documents port in one process's memory, under one lock.

It judges conditions exactly as the port promises (``port.holds``), refuses what a real
database refuses (two writes of one document in a transaction, more than
``max_transaction`` writes), and makes ``DocumentStateStore`` testable with no server: the
state-store contract suite runs it as ``store[documents]``. ``atomic=False`` makes it an
adapter without transactions (``transact`` refused), as Cosmos DB's is: the contract suite runs
that as ``store[documents-ordered]``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Literal

from nclav.docstore.port import ConditionFailedError, after, copied, holds, key_of, target
from nclav.runtime.stores import RecordTooLargeError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nclav.docstore.port import Doc, Key, Query, Write


class MemoryDocuments:
    max_doc_bytes = 350_000
    max_transaction = 100

    def __init__(self, *, atomic: bool = True) -> None:
        self.atomic = atomic
        self._docs: dict[Key, Doc] = {}
        self._lock = threading.Lock()

    def too_large(self, message: str) -> Exception:
        return RecordTooLargeError(message)

    def get(self, key: Key, *, consistent: bool = True) -> Doc | None:
        with self._lock:
            found = self._docs.get(key)
            return copied(found) if found is not None else None

    def batch_get(self, keys: Sequence[Key]) -> list[Doc]:
        with self._lock:
            return [copied(self._docs[k]) for k in dict.fromkeys(keys) if k in self._docs]

    def _failed(self, op: Write) -> bool:
        return op.when is not None and not holds(op.when, self._docs.get(target(op)) or {})

    def _apply(self, op: Write) -> tuple[Doc | None, Doc | None]:
        key = target(op)
        old = self._docs.get(key)
        new = after(op, old)
        if new is None:
            self._docs.pop(key, None)
        else:
            self._docs[key] = new
        return old, new

    def write(self, op: Write, returns: Literal["new", "old"] | None = None) -> Doc:
        with self._lock:
            if self._failed(op):
                stored = self._docs.get(target(op))
                raise ConditionFailedError(
                    "condition failed", item=copied(stored) if stored is not None else None
                )
            old, new = self._apply(op)
            chosen = new if returns == "new" else old if returns == "old" else None
            return copied(chosen) if chosen is not None else {}

    def transact(self, ops: Sequence[Write]) -> None:
        if not self.atomic:
            raise NotImplementedError("no transactions here: the store writes in order")
        keys = [target(op) for op in ops]
        if len(set(keys)) != len(keys) or len(ops) > self.max_transaction:
            raise ValueError("a transaction writes each document once, at most 100 of them")
        with self._lock:
            failed = [self._failed(op) for op in ops]
            if any(failed):
                reasons = tuple("ConditionalCheckFailed" if f else "None" for f in failed)
                items = tuple(self._docs.get(k) for k in keys)
                raise ConditionFailedError(
                    "a condition failed",
                    reasons=reasons,
                    items=tuple(copied(i) if i is not None else None for i in items),
                )
            for op in ops:
                self._apply(op)

    def batch_write(self, puts: Sequence[Doc] = (), deletes: Sequence[Key] = ()) -> None:
        with self._lock:
            for doc in puts:
                self._docs[key_of(doc)] = copied(doc)
            for key in deletes:
                self._docs.pop(key, None)

    def query(self, query: Query) -> list[Doc]:
        index = query.index
        with self._lock:
            found = [
                copied(d)
                for d in self._docs.values()
                if d.get(index.pk) == query.partition
                and _within(d.get(index.sk), query)
                and (query.where is None or holds(query.where, d))
            ]
        found.sort(key=lambda d: (d[index.sk], d["pk"], d["sk"]), reverse=not query.forward)
        return found[: query.limit] if query.limit is not None else found


def _within(sort_key: Any, query: Query) -> bool:
    if sort_key is None:
        return False  # not in the index: sparse indexes hold what has both keys
    if query.prefix is not None and not str(sort_key).startswith(query.prefix):
        return False
    return query.upto is None or sort_key <= query.upto


__all__ = ["MemoryDocuments"]
