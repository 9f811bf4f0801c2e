"""``CosmosDocuments``: core's documents port (``nclav.docstore.port``) on one Cosmos DB
(NoSQL) container, partition key ``/pk``.

**Items.** A document ``(pk, sk)`` is the item ``{id: escaped sk, pk, sk, **fields}`` (ids
cannot hold ``/ \\ ? #``: ``item_id``); the docstore's partition is Cosmos's logical
partition. A field Cosmos reserves (``id``, ``ttl``, or starting ``_`` / ``~``) is stored as
``~name``; bytes (the compressed ``docz``) have no JSON form and are stored as ``{"b64":
...}``; a ``None`` field is no field (a patch sets it to null, which reads back as absent).
The TTL field (``expires_at``, epoch seconds) also sets Cosmos's per-item ``ttl`` (seconds
from the write, plus ``TTL_GRACE_S``: deletion is housekeeping, never a decision), honoured
when the container has TTL on (``create_container``: ``default_ttl=-1``).

**Writes: one server-side conditional request where Cosmos has one.** A patch of at most
10 operations (Cosmos's limit) is ``patch_item`` with its condition as the filter predicate
(412: lost); an unconditional put is an upsert, a create-only put a create (409: lost), an
unconditional delete a delete. Cosmos has no other conditions, so every other write is
judged here on the document as last seen and sent with that sighting's etag
(``MatchConditions.IfNotModified``; a create when none was there): a 412/404/409 reads again
and judges again. ``self.memory`` keeps, per document, what this process last read or wrote of
it with its etag (every point read, query result and write response), so a read-decide-write
of a document the engine just read costs one request; a decision *not* to write is only ever
taken on a fresh read. A patch whose condition admits no document (``absent("pk") | ...``:
the partition mutex) is a create first when memory does not say one is there.

**No transactions** (``atomic = False``): a transactional batch holds one partition key and
the local stand-in does not make even that atomic, so ``DocumentStateStore`` never calls
``transact``; ``batch_write`` uses batches as an optimisation only. **Consistency: the
account must be at Strong** (infra/azure's ``cosmos_consistency``): the store decides on
reads and queries other processes' writes, and ``consistent`` index queries (cross-partition)
are then consistent too.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import time
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from azure.core import MatchConditions

from functions_azure._errors import azure_errors
from nclav.docstore import layout as lay
from nclav.docstore.layout import TTL_ATTRIBUTE
from nclav.docstore.port import (
    ConditionFailedError,
    Delete,
    Patch,
    Put,
    Remembered,
    absent,
    after,
    doc_size,
    holds,
    key_of,
    target,
)
from nclav.docstore.runs import RUN_COUNTER
from nclav.errors import (
    ConfigurationError,
    ConflictError,
    NclavError,
    NotFoundError,
    TemporaryError,
)
from nclav.runtime.stores import RecordTooLargeError
from nclav.runtime.timing import backoff

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from azure.cosmos import ContainerProxy

    from nclav.docstore.port import Cond, Doc, Key, Query, Write

# A Cosmos DB item holds at most 2 MB (2,097,152 bytes of JSON): a compressed record is stored
# base64 (4 characters per 3 bytes), so 1.5 MB of it takes 2,000,000, leaving ~97 KB of room.
MAX_DOC_BYTES = 1_500_000
PATCH_OPS_MAX = 10  # operations in one patch (the service's limit)
TRIES = 12  # rounds of read-judge-write before a lost race becomes a TemporaryError
TTL_GRACE_S = 86_400  # an expired document (a lapsed lease's) stays a day, as DynamoDB's TTL lags
_MEMORY_SIZE = 1024  # documents remembered per adapter (the most recently seen)
_BATCH = 100  # operations in one transactional batch; ids in one ARRAY_CONTAINS query
ID_MAX_BYTES = 1023  # of an item id (Cosmos DB's service quotas)
_ESCAPES = {"~": "~7E", "/": "~2F", "\\": "~5C", "?": "~3F", "#": "~23"}
_Seen = tuple["Doc | None", "str | None"]  # (the document or None, its etag)
_Batched = tuple["Key", "Doc | None"]  # a batch's upsert (the document) or delete (None)
_BATCH_BYTES = 1_500_000  # of a transactional batch's 2 MB request
_CREATE = absent("pk")  # a put's condition that only "no document" meets


def item_id(sk: str) -> str:
    """``sk`` as an item id: Cosmos ids cannot hold '/', '\\', '?' or '#', nor pass 1,023
    bytes (nclav's longest, a step's, is about 160: ids are at most 63 characters)."""
    escaped = "".join(_ESCAPES.get(ch, ch) for ch in sk)
    if len(escaped.encode()) > ID_MAX_BYTES:
        raise NclavError(
            f"the state key {sk[:80]!r}... is {len(escaped.encode())} bytes as a Cosmos DB "
            f"item id; at most {ID_MAX_BYTES} are allowed"
        )
    return escaped


def _field(name: str) -> str:
    """A document field's property name: Cosmos's own names get a ``~``."""
    return f"~{name}" if name in ("id", "ttl") or name.startswith(("_", "~")) else name


def _prop(name: str) -> str:
    """A field as a property reference in Cosmos SQL (any name, safely quoted)."""
    return f"c[{json.dumps(_field(name))}]"


def _value(value: Any) -> Any:
    return {"b64": base64.b64encode(value).decode()} if isinstance(value, bytes) else value


def _ttl(expires_at: Any) -> int | None:
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        return None
    return max(1, math.ceil(expires_at - time.time())) + TTL_GRACE_S


def to_item(doc: Doc) -> Doc:
    """A document as the item that stores it (``None`` fields left out)."""
    item = {_field(k): _value(v) for k, v in doc.items() if v is not None}
    item["id"] = item_id(str(doc["sk"]))
    ttl = _ttl(doc.get(TTL_ATTRIBUTE))
    if ttl is not None:
        item["ttl"] = ttl
    return item


def to_doc(item: Doc) -> Doc:
    """The document an item stores: no system properties, no null fields, bytes decoded."""
    doc: Doc = {}
    for name, value in item.items():
        if value is None or name in ("id", "ttl") or name.startswith("_"):
            continue
        if isinstance(value, dict) and "b64" in value:
            value = base64.b64decode(value["b64"])
        doc[name[1:] if name.startswith("~") else name] = value
    return doc


def where_sql(cond: Cond, literal: Callable[[Any], str], *, in_and: bool = False) -> str:
    """``cond`` as a Cosmos SQL condition; ``literal`` writes a value (inline or a parameter).

    Cosmos, like ``port.holds``, never matches ``=``/``<``/``<=`` across types. Parentheses
    only where precedence needs them (an OR within an AND): the stand-in's parser takes time
    exponential in their depth (seconds at 5 levels)."""
    if cond.op == "and":
        return " AND ".join(where_sql(p, literal, in_and=True) for p in cond.parts)
    prop = _prop(cond.name)
    if cond.op == "or":
        sql = " OR ".join(where_sql(p, literal) for p in cond.parts)
    elif cond.op == "absent":
        sql = f"NOT IS_DEFINED({prop}) OR IS_NULL({prop})"
    elif cond.op == "exists":
        return f"IS_DEFINED({prop}) AND NOT IS_NULL({prop})"
    elif cond.op == "in":
        return f"{prop} IN ({', '.join(literal(v) for v in cond.value)})" if cond.value else "false"
    else:
        return f"{prop} {cond.op} {literal(cond.value)}"
    return f"({sql})" if in_and else sql


def _admits_none(when: Cond | None) -> bool:
    """Whether ``when`` names "no document" as one way to hold (``absent("pk") | ...``)."""
    if when is None:
        return False
    return when == _CREATE or (when.op == "or" and any(_admits_none(p) for p in when.parts))


def _patch_ops(op: Patch) -> list[dict[str, Any]]:
    def path(name: str) -> str:  # a JSON pointer
        return "/" + _field(name).replace("~", "~0").replace("/", "~1")

    ops = [{"op": "set", "path": path(k), "value": _value(v)} for k, v in op.set.items()]
    ops += [{"op": "incr", "path": path(k), "value": v} for k, v in op.add.items()]
    if TTL_ATTRIBUTE in op.set:
        ops.append({"op": "set", "path": "/ttl", "value": _ttl(op.set[TTL_ATTRIBUTE]) or -1})
    return ops


class CosmosDocuments:
    atomic = False
    max_doc_bytes = MAX_DOC_BYTES
    max_transaction = 100

    def __init__(self, container: ContainerProxy) -> None:
        self.container = container
        self.memory: Remembered[Key, _Seen] = Remembered(_MEMORY_SIZE)

    def too_large(self, message: str) -> Exception:
        return RecordTooLargeError(message)

    # -- reads: every one is remembered ------------------------------------------------------

    def _seen(self, item: Any) -> Doc:
        """Remember an item as Cosmos returned it; its document."""
        doc = to_doc(dict(item))
        self.memory.put(key_of(doc), (doc, item.get("_etag")))
        return dict(doc)

    def _read(self, key: Key) -> _Seen:
        """A fresh point read, remembered."""
        try:
            with azure_errors(f"cosmos read {key[0]}/{key[1]}"):
                item = self.container.read_item(item_id(key[1]), partition_key=key[0])
        except NotFoundError:
            self.memory.put(key, (None, None))
            return None, None
        return self._seen(item), item.get("_etag")

    def get(self, key: Key, *, consistent: bool = True) -> Doc | None:
        return self._read(key)[0]

    def batch_get(self, keys: Sequence[Key]) -> list[Doc]:
        by_partition: dict[str, list[str]] = {}
        for pk, sk in dict.fromkeys(keys):
            by_partition.setdefault(pk, []).append(sk)
        found: list[Doc] = []
        for pk, sks in by_partition.items():
            if len(sks) == 1:
                doc = self._read((pk, sks[0]))[0]
                found += [doc] if doc is not None else []
                continue
            for start in range(0, len(sks), _BATCH):
                chunk = sks[start : start + _BATCH]
                sql = "SELECT * FROM c WHERE c.pk = @pk AND ARRAY_CONTAINS(@ids, c.id)"
                ids = [item_id(sk) for sk in chunk]
                docs = self._query(sql, {"@pk": pk, "@ids": ids}, pk)
                for sk in set(chunk) - {str(d["sk"]) for d in docs}:
                    self.memory.put((pk, sk), (None, None))
                found += docs
        return found

    def _query(self, sql: str, params: dict[str, Any], partition: str | None) -> list[Doc]:
        """``sql`` in one partition, or across all when ``None``; the documents, remembered."""
        scope: dict[str, Any] = (
            {"partition_key": partition}
            if partition is not None
            else {"enable_cross_partition_query": True}
        )
        parameters = [{"name": k, "value": v} for k, v in params.items()]
        with azure_errors(f"cosmos query {partition or '*'}"):
            items = list(self.container.query_items(sql, parameters=parameters, **scope))
        return [self._seen(item) for item in items]

    def query(self, query: Query) -> list[Doc]:
        index, params = query.index, {"@p": query.partition}

        def literal(value: Any) -> str:
            name = f"@v{len(params)}"
            params[name] = _value(value)
            return name

        sk = _prop(index.sk)
        parts = [f"{_prop(index.pk)} = @p", f"IS_DEFINED({sk})", f"NOT IS_NULL({sk})"]
        if query.prefix is not None:
            parts.append(f"STARTSWITH({sk}, {literal(query.prefix)})")
        if query.upto is not None:
            parts.append(f"{sk} <= {literal(query.upto)}")
        if query.where is not None:
            parts.append(where_sql(query.where, literal, in_and=True))
        if query.limit is not None and query.limit <= 0:
            return []
        # A table query is one partition, and so is an index of the table's own partitions
        # (``pk``); another index query spans them (Strong: consistent). The gateway serves a
        # cross-partition query itself only without TOP and ORDER BY (with them the SDK is
        # refused, asks for a query plan, then queries each partition key range): one that
        # wants every match is sorted here instead, one request per page.
        one = index.name == "" or index.pk == "pk"
        if not one and query.limit is None:
            found = self._query(f"SELECT * FROM c WHERE {' AND '.join(parts)}", params, None)
            found.sort(key=lambda d: (d[index.sk], d["pk"], d["sk"]), reverse=not query.forward)
            return found
        top = f"TOP {int(query.limit)} " if query.limit is not None else ""
        order = "ASC" if query.forward else "DESC"
        sql = f"SELECT {top}* FROM c WHERE {' AND '.join(parts)} ORDER BY {sk} {order}"
        return self._query(sql, params, query.partition if one else None)

    # -- writes ----------------------------------------------------------------------------

    def write(self, op: Write, returns: Literal["new", "old"] | None = None) -> Doc:
        if isinstance(op, Patch) and _admits_none(op.when):
            seen = self.memory.get(op.key)
            if seen is None or seen[0] is None:  # most likely none there (a free mutex)
                return self._put(Put(after(op, None) or {}, _CREATE), returns, patch=op)
        if returns != "old":
            if isinstance(op, Patch) and len(_patch_ops(op)) <= PATCH_OPS_MAX:
                return self._patch(op, returns)
            if isinstance(op, Put) and (op.when is None or op.when == _CREATE):
                return self._put(op, returns)
            if isinstance(op, Delete) and op.when is None:
                self._delete(op.key, None)
                return {}
        return self._decide(op, returns, fresh=False)

    def _patch(self, op: Patch, returns: Literal["new"] | None) -> Doc:
        """One ``patch_item`` conditioned on ``when`` (filter predicate, literals inline)."""
        options: dict[str, Any] = {}
        if op.when is not None:
            options["filter_predicate"] = f"FROM c WHERE {where_sql(op.when, json.dumps)}"
        try:
            with azure_errors(f"cosmos patch {op.key[0]}/{op.key[1]}"):
                item = self.container.patch_item(
                    item_id(op.key[1]), op.key[0], _patch_ops(op), **options
                )
        except ConflictError:  # 412: the condition does not hold (or the item changed)
            self.memory.forget(op.key)
            return self._decide(op, returns, fresh=True)
        except NotFoundError:
            self.memory.put(op.key, (None, None))
            if op.when is not None and not holds(op.when, {}):
                raise ConditionFailedError("condition failed", item=None) from None
            return self._decide(op, returns, fresh=False)  # creates it (judged on none)
        doc = self._seen(item)
        return doc if returns == "new" else {}

    def _put(
        self, op: Put, returns: Literal["new", "old"] | None, patch: Patch | None = None
    ) -> Doc:
        """An upsert, or a create when ``when`` says none may be there (409: judged on a read,
        or the ``patch`` this create stands for is sent after all)."""
        item = to_item(op.doc)
        try:
            with azure_errors(f"cosmos put {op.doc['pk']}/{op.doc['sk']}"):
                if op.when is None:
                    done = self.container.upsert_item(item)
                else:
                    done = self.container.create_item(item)
        except ConflictError:
            self.memory.forget(key_of(op.doc))
            if patch is not None and returns != "old" and len(_patch_ops(patch)) <= PATCH_OPS_MAX:
                return self._patch(patch, returns)
            if patch is not None:
                return self._decide(patch, returns, fresh=True)
            return self._decide(op, returns, fresh=True)
        doc = self._seen(done)
        return doc if returns == "new" else {}

    def _decide(self, op: Write, returns: Literal["new", "old"] | None, *, fresh: bool) -> Doc:
        """Judge ``op`` on memory (unless ``fresh``), else on a fresh read, and write it
        conditioned on what it was judged on; a lost write reads and judges again."""
        key = target(op)
        for attempt in range(TRIES):
            seen = None if fresh else self.memory.get(key)
            if seen is None:
                seen, fresh = self._read(key), True
            old, etag = seen
            new = after(op, old)
            failed = op.when is not None and not holds(op.when, old or {})
            if (failed or (old is None and new is None)) and not fresh:
                fresh = True  # nothing to write: only ever decided on a fresh read
                continue
            if failed:
                raise ConditionFailedError("condition failed", item=old)
            try:
                self._commit(key, old, new, etag)
            except (ConflictError, NotFoundError):
                self.memory.forget(key)
                if fresh:
                    time.sleep(backoff(attempt + 1, 0.01, 1.0, jitter=0.5))
                fresh = True
                continue
            chosen = new if returns == "new" else old if returns == "old" else None
            return dict(chosen) if chosen is not None else {}
        raise TemporaryError(f"write {key[0]}/{key[1]}: lost {TRIES} races", retry_after_s=1.0)

    def _commit(self, key: Key, old: Doc | None, new: Doc | None, etag: str | None) -> None:
        """Leave ``new`` where ``old`` (with ``etag``) was seen; raises ConflictError or
        NotFoundError when the item is no longer as seen."""
        if old is None and new is None:
            return  # none there (just read), none left
        if old is None and new is not None:
            with azure_errors(f"cosmos create {key[0]}/{key[1]}"):
                self._seen(self.container.create_item(to_item(new)))
        elif new is None:
            self._delete(key, etag)
        else:
            with azure_errors(f"cosmos replace {key[0]}/{key[1]}"):
                item = self.container.replace_item(
                    item_id(key[1]),
                    to_item(new),
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            self._seen(item)

    def _delete(self, key: Key, etag: str | None) -> None:
        """A delete conditioned on ``etag`` (404 and 412 raise), or unconditional (404 fine)."""
        condition: dict[str, Any] = (
            {} if etag is None else {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        )
        try:
            with azure_errors(f"cosmos delete {key[0]}/{key[1]}"):
                self.container.delete_item(item_id(key[1]), partition_key=key[0], **condition)
        except NotFoundError:
            if etag is not None:
                raise
        self.memory.put(key, (None, None))

    def transact(self, ops: Sequence[Write]) -> None:
        raise NotImplementedError("Cosmos DB has no cross-partition transactions")

    def batch_write(self, puts: Sequence[Doc] = (), deletes: Sequence[Key] = ()) -> None:
        """Per partition, transactional batches of at most 100 upserts and deletes and ~1.5 MB
        (one request each, never relied on for atomicity); a failed batch (a delete of a missing
        item fails it) is written again one operation at a time."""
        by_partition: dict[str, list[_Batched]] = {}
        for doc in puts:
            by_partition.setdefault(str(doc["pk"]), []).append((key_of(doc), doc))
        for key in deletes:
            by_partition.setdefault(key[0], []).append((key, None))
        for pk, writes in by_partition.items():
            for chunk in _chunks(writes):
                for key, _ in chunk:
                    self.memory.forget(key)
                operations = [
                    ("upsert", (to_item(put),)) if put is not None else ("delete", (item_id(k[1]),))
                    for k, put in chunk
                ]
                try:
                    with azure_errors(f"cosmos batch {pk} ({len(chunk)})"):
                        self.container.execute_item_batch(operations, partition_key=pk)
                except (ConflictError, NotFoundError):
                    for key, put in chunk:
                        if put is None:
                            self._delete(key, None)
                        else:
                            self.write(Put(put))


def _chunks(writes: list[_Batched]) -> list[list[_Batched]]:
    """``writes`` in batches Cosmos takes: 100 operations, 2 MB of request (base64 included)."""
    chunks: list[list[_Batched]] = [[]]
    size = 0
    for write in writes:
        grows = doc_size(write[1]) * 4 // 3 if write[1] is not None else 100
        if len(chunks[-1]) == _BATCH or (chunks[-1] and size + grows > _BATCH_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(write)
        size += grows
    return [c for c in chunks if c]


def require_strong(client: Any, endpoint: str) -> None:
    """Refuse an account below Strong consistency (the store's decisions need it: README.md).

    The client read the account's default level when it was made (no request here). A local
    stand-in on a loopback address (one process, and it says Session) is let through."""
    from azure.cosmos.http_constants import HttpHeaders

    level = client.client_connection.default_headers.get(HttpHeaders.ConsistencyLevel)
    if level == "Strong" or urlsplit(endpoint).hostname in ("127.0.0.1", "localhost", "::1"):
        return
    raise ConfigurationError(
        f"the Cosmos DB account at {endpoint} is at {level} consistency: the state store needs "
        "Strong (infra/azure's cosmos_consistency; a weaker level lets a worker decide on a "
        "step another process has already changed)"
    )


def create_container(database: Any, name: str) -> ContainerProxy:
    """Create (or keep) the store's container: partitioned on ``/pk``, per-item TTL on; and
    its counters (a deployment step, like DynamoDB's table): a store's first run and event
    then find theirs, no 404 and create first."""
    from azure.cosmos import PartitionKey

    with azure_errors(f"cosmos create container {name}"):
        container: ContainerProxy = database.create_container_if_not_exists(
            name, partition_key=PartitionKey("/pk"), default_ttl=-1
        )
    for key in (RUN_COUNTER, (lay.COUNTER, lay.EVENTS)):
        with contextlib.suppress(ConflictError), azure_errors(f"cosmos create {key}"):
            container.create_item(to_item({"pk": key[0], "sk": key[1], "n": 0}))
    return container


__all__ = [
    "MAX_DOC_BYTES",
    "CosmosDocuments",
    "create_container",
    "item_id",
    "require_strong",
    "to_doc",
    "to_item",
]
