"""``FirestoreDocuments``: core's documents port (``nclav.docstore.port``) on Firestore.

Every document of the store lives in one collection, ``<p>docs`` (``<p>``: the collection
prefix, ``NCLAV_COLLECTION_PREFIX``); a key ``(pk, sk)`` is the document id
``quote(pk) + " " + quote(sk)`` (percent-quoted: ``/`` in step ids and Terraform state keys
would be a path separator) and the fields ``pk`` and ``sk`` as well, so a partition is a query
``pk == p order by sk`` and an index one ``<index pk> == p order by <index sk>`` (the composite
indexes in infra/gcp/firestore.tf).

Firestore has no server-side condition but "does not exist" and "unchanged since": a
condition is judged here, on the document as last read, and the write carries that read's
``last_update_time`` as its precondition (``create()`` when none was there), so the
compare-and-swap stays atomic; a lost precondition reads again and judges again. **No read
before a write this process can decide without one**: ``self.memory`` keeps, per document, what
this process last read or wrote of it and when; a write is first judged on that memory (one
request instead of two), and a judgement that the condition fails is never final until made on
a fresh read; a condition that holds on no document first tries ``create()`` (a free mutex),
and an unconditional counter patch is a server-side ``Increment`` (no read, no lost race). A
transaction is one ``WriteBatch`` with a precondition per conditional write.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.base_query import FieldFilter

from functions_gcp._errors import gcp_errors
from nclav.docstore.port import (
    ConditionFailedError,
    Delete,
    Patch,
    Put,
    Remembered,
    after,
    holds,
    target,
)
from nclav.errors import ConflictError, NotFoundError, TemporaryError
from nclav.runtime.stores import RecordTooLargeError
from nclav.runtime.timing import backoff

if TYPE_CHECKING:
    from collections.abc import Sequence

    from google.cloud.firestore_v1.document import DocumentReference

    from nclav.docstore.port import Doc, Key, Query, Write

# A Firestore document holds at most 1 MiB (1,048,576 bytes) with its name and field names:
# a record's JSON gets this much after compression, the rest keeps ~48 KB of room.
MAX_DOC_BYTES = 1_000_000
TRIES = 12  # rounds of read-judge-write before a lost race becomes a TemporaryError
_MEMORY_SIZE = 1024  # documents remembered per store (the most recently seen)
_BATCH = 500  # writes in one Firestore commit
_Seen = tuple["Doc | None", Any]  # (the document or None, its update_time)


def doc_id(key: Key) -> str:
    return f"{quote(key[0], safe='')} {quote(key[1], safe='')}"


def _creates(op: Write) -> bool:
    """A put that must find no document: Firestore's own ``create()``, no read."""
    return isinstance(op, Put) and op.when is not None and op.when.op == "absent"


def _counts(op: Write) -> bool:
    """An unconditional patch of one counter (its new value comes back from the server)."""
    return isinstance(op, Patch) and op.when is None and len(op.add) == 1


def _blind(op: Write) -> bool:
    """A write with no condition and nothing to return needs no read."""
    return op.when is None


class _Lost(Exception):
    """A precondition failed: read again and judge again."""


class FirestoreDocuments:
    atomic = True
    max_doc_bytes = MAX_DOC_BYTES
    max_transaction = 100

    def __init__(self, client: firestore.Client, prefix: str = "") -> None:
        self.client = client
        self.collection = client.collection(f"{prefix}docs")
        self.memory: Remembered[str, _Seen] = Remembered(_MEMORY_SIZE)

    def too_large(self, message: str) -> Exception:
        return RecordTooLargeError(message)

    def ref(self, key: Key) -> DocumentReference:
        return self.collection.document(doc_id(key))

    # -- reads: every one is remembered ------------------------------------------------------

    def _remember(self, snap: Any) -> Doc | None:
        data: Doc | None = snap.to_dict() if snap.exists else None
        self.memory.put(snap.reference.path, (data, snap.update_time))
        return data

    def read(self, refs: Sequence[DocumentReference]) -> dict[str, _Seen]:
        """Fresh snapshots of ``refs`` by path (one request), remembered."""
        with gcp_errors("read documents"):
            snaps = list(self.client.get_all(list(refs)))
        found: dict[str, _Seen] = {}
        for snap in snaps:
            found[snap.reference.path] = (self._remember(snap), snap.update_time)
        return found

    def get(self, key: Key, *, consistent: bool = True) -> Doc | None:
        ref = self.ref(key)
        return self.read([ref])[ref.path][0]

    def batch_get(self, keys: Sequence[Key]) -> list[Doc]:
        unique = list(dict.fromkeys(keys))
        found: list[Doc] = []
        for start in range(0, len(unique), _BATCH):
            seen = self.read([self.ref(k) for k in unique[start : start + _BATCH]])
            found += [doc for doc, _ in seen.values() if doc is not None]
        return found

    def query(self, query: Query) -> list[Doc]:
        index = query.index
        q: Any = self.collection.where(filter=FieldFilter(index.pk, "==", query.partition))
        if query.prefix is not None:
            q = q.where(filter=FieldFilter(index.sk, ">=", query.prefix))
            q = q.where(filter=FieldFilter(index.sk, "<", query.prefix + "\uffff"))
        if query.upto is not None:
            q = q.where(filter=FieldFilter(index.sk, "<=", query.upto))
        direction = firestore.Query.ASCENDING if query.forward else firestore.Query.DESCENDING
        q = q.order_by(index.sk, direction=direction)
        if query.limit is not None and query.where is None:
            q = q.limit(query.limit)
        with gcp_errors(f"query {query.partition}"):
            found = [d for d in (self._remember(s) for s in q.stream()) if d is not None]
        if query.where is not None:  # judged here: the condition AST has no Firestore form
            found = [d for d in found if holds(query.where, d)][: query.limit]
        return found

    # -- writes ----------------------------------------------------------------------------

    def write(self, op: Write, returns: Literal["new", "old"] | None = None) -> Doc:
        fresh = False
        if returns is None and (_blind(op) or _creates(op)):
            try:
                self._commit([op], {})
                return {}
            except _Lost:
                fresh = True  # a create lost: judge the condition on a fresh read
        path = self.ref(target(op)).path
        if not fresh and self.memory.get(path) is None:
            if _counts(op) and returns == "new":
                return self._increment(op)
            if not isinstance(op, Delete) and op.when is not None and holds(op.when, {}):
                try:  # most likely none there yet (a free mutex): create it, no read
                    self._commit([op], {path: (None, None)})
                    return after(op, None) or {} if returns == "new" else {}
                except _Lost:
                    fresh = True
        old = self._decide([op], fresh=fresh)[0]
        chosen = after(op, old) if returns == "new" else old if returns == "old" else None
        return dict(chosen) if chosen is not None else {}

    def _increment(self, op: Write) -> Doc:
        """An unconditional counter patch not in memory: a server-side ``Increment``, no
        read; the document after it is the key, the fields set and the counter's new value
        (a counter document holds nothing else)."""
        assert isinstance(op, Patch)  # noqa: S101 - _counts said so
        ((name, _),) = op.add.items()
        result = self._commit([op], {})[0]
        value = _helpers.decode_value(result.transform_results[0], self.client)
        fields = {k: v for k, v in op.set.items() if v is not None}
        return {"pk": op.key[0], "sk": op.key[1], **fields, name: value}

    def transact(self, ops: Sequence[Write]) -> None:
        keys = [target(op) for op in ops]
        if len(set(keys)) != len(keys) or len(ops) > self.max_transaction:
            raise ValueError("a transaction writes each document once, at most 100 of them")
        fresh = False
        if all(_blind(op) or _creates(op) for op in ops):
            try:
                self._commit(ops, {})
                return
            except _Lost:
                fresh = True  # a create lost: judge every condition on a fresh read
        self._decide(ops, fresh=fresh)

    def batch_write(self, puts: Sequence[Doc] = (), deletes: Sequence[Key] = ()) -> None:
        ops: list[Write] = [Put(d) for d in puts]
        ops += [Delete(k) for k in deletes]
        for start in range(0, len(ops), _BATCH):
            self._commit(ops[start : start + _BATCH], {})

    def _decide(self, ops: Sequence[Write], *, fresh: bool = False) -> list[Doc | None]:
        """Judge ``ops``' conditions on memory (unless ``fresh``), then on fresh reads, and
        commit them with a precondition each; the documents they found."""
        refs = [self.ref(target(op)) for op in ops]
        lost = 0
        while True:
            seen: dict[str, _Seen] = {}
            if not fresh:
                # On memory, a transaction's creates and blind writes need no judging.
                needed = [
                    r.path
                    for op, r in zip(ops, refs, strict=True)
                    if len(ops) == 1 or not (_blind(op) or _creates(op))
                ]
                for path in needed:
                    remembered = self.memory.get(path)
                    if remembered is None:
                        break
                    seen[path] = remembered
                else:
                    fresh = not self._holds(ops, seen, final=False)
                if len(seen) < len(needed):
                    fresh = True
            if fresh:
                seen = self.read(refs)
                self._holds(ops, seen, final=True)
            # A transaction's unconditional writes stay blind; a single write is judged
            # (and conditional) even without a condition, as it returns what it found.
            judged = {
                self.ref(target(op)).path for op in ops if op.when is not None or len(ops) == 1
            }
            try:
                self._commit(ops, {p: s for p, s in seen.items() if p in judged})
                return [seen[r.path][0] if r.path in seen else None for r in refs]
            except _Lost:
                if fresh:
                    lost += 1
                    if lost >= TRIES:
                        break
                    time.sleep(backoff(lost, 0.01, 1.0, jitter=0.5))
                fresh = True
        raise TemporaryError(f"write {refs[0].id}: lost {TRIES} races in a row", retry_after_s=1.0)

    def _holds(self, ops: Sequence[Write], seen: dict[str, _Seen], *, final: bool) -> bool:
        """Whether every condition holds on ``seen``; when ``final``, raise if not."""
        paths = [self.ref(target(op)).path for op in ops]
        failed = [
            op.when is not None and p in seen and not holds(op.when, seen[p][0] or {})
            for op, p in zip(ops, paths, strict=True)
        ]
        if not any(failed) or not final:
            return not any(failed)
        items = tuple(seen[p][0] for p in paths)
        if len(ops) == 1:
            raise ConditionFailedError("condition failed", item=items[0])
        reasons = tuple("ConditionalCheckFailed" if f else "None" for f in failed)
        raise ConditionFailedError("a condition failed", reasons=reasons, items=items)

    def _commit(self, ops: Sequence[Write], seen: dict[str, _Seen]) -> list[Any]:
        """One atomic batch of ``ops``; a write whose document is in ``seen`` is conditional
        on it (created when it saw none, else unchanged since); the others are blind."""
        batch = self.client.batch()
        leaves: list[tuple[DocumentReference, Any]] = []  # what each leaves; ... unknown
        for op in ops:
            ref = self.ref(target(op))
            known = seen.get(ref.path)
            if known is None:
                new = self._blind_write(batch, ref, op)
            else:
                old, update_time = known
                new = after(op, old)
                option = self.client.write_option(last_update_time=update_time)
                if old is None and new is not None:
                    batch.create(ref, new)
                elif old is not None and new is None:
                    batch.delete(ref, option=option)
                elif old is not None and new is not None:
                    gone = dict.fromkeys(old.keys() - new.keys(), firestore.DELETE_FIELD)
                    batch.update(ref, {**gone, **new}, option=option)
                else:  # none there, none left: still none when this commits
                    batch.delete(ref, option=self.client.write_option(exists=False))
            leaves.append((ref, new))
        try:
            with gcp_errors(f"write {leaves[0][0].id}"):
                results = batch.commit()
        except (ConflictError, NotFoundError) as exc:
            for ref, _ in leaves:
                self.memory.forget(ref.path)
            raise _Lost(str(exc)) from exc
        for (ref, new), result in zip(leaves, results, strict=False):
            if new is ...:
                self.memory.forget(ref.path)
            else:
                self.memory.put(ref.path, (new, result.update_time if new is not None else None))
        return list(results)

    def _blind_write(self, batch: Any, ref: DocumentReference, op: Write) -> Any:
        """An unconditional write (or ``create()``); what it leaves, ``...`` when unknown."""
        if isinstance(op, Put):
            new = after(op, None)
            if _creates(op):
                batch.create(ref, new)
            else:
                batch.set(ref, new)
            return new
        if isinstance(op, Delete):
            batch.delete(ref)
            return None
        fields: dict[str, Any] = {"pk": op.key[0], "sk": op.key[1]}
        fields |= {k: firestore.DELETE_FIELD if v is None else v for k, v in op.set.items()}
        fields |= {k: firestore.Increment(v) for k, v in op.add.items()}
        batch.set(ref, fields, merge=True)
        return ...


__all__ = ["MAX_DOC_BYTES", "TRIES", "FirestoreDocuments", "doc_id"]
