"""``CosmosStateStore``: the StateStore on one Cosmos DB (NoSQL) container, partition key
``/pk``. The layout is in README.md ("The Cosmos store's layout"); every document is
``{id, pk, type, doc, ...}`` with the record's JSON under ``doc`` (or compressed under
``docz``) and the fields the store queries beside it.

Every compare-and-swap is one single-item write conditioned on the etag of the read that
decided it (``MatchConditions.IfNotModified``): a 412 means another writer got there first,
and the store reads again and decides again. Creating a document that must not exist is a
create (409 when it does). IaC-run numbers are a patch ``incr``, atomic on one item; run
numbers go through a turnstile on the run counter (``_take_run_seq``), so runs become
visible in seq order as the engine needs. Transactional batches write a run's steps (one
request per 100) and are never relied on for atomicity there: the local stand-in does not
make them atomic. The one batch whose atomicity counts is ``append_event``'s (the counter's
etag-conditioned replace, then the event's create): atomic on Cosmos, and the stand-in stops
it at the first failed operation. Document ids cannot hold ``/ \\ ? #``, so keys are
escaped (``_id``). Runs, IaC runs, drift records and Terraform documents each share one
logical partition (20 GB, 10,000 RU/s): ample for their volume, and what keeps their
listings single-partition queries.

**Plans.** A run's steps are written before the run document that commits them, each
carrying its plan's token (``plan``), and the run document names that token once the plan is
whole: ``create_run`` writes the steps (creates, in plan order), then the run; ``begin_run``
claims the queued run (``claim``, so two workers never write one run's steps at once), writes
the steps, then commits the run running, naming their plan. ``list_steps`` and the sweeper's
listings read the run document and keep only the steps of the plan it names, so a begin in
progress, one that died mid-write, or a ``create_run`` that died before its run document
shows no steps. A run's plan, once named, never changes: a remembered run document naming
one is as good as a read (``_run_for_steps``). Point reads of a step (``get_step``,
``get_steps``, the claims) are not filtered: a step is only ever addressed by a message sent
after its plan was committed, or found through the filtered listings. ``has_unfinished_steps``
counts every step of the partition: it is asked only of a running run, whose partition holds
its plan alone (a takeover deletes a dead claimant's steps before writing its own).

**Records as items.** A record is its JSON object under ``doc``; above core's
``COMPRESS_ABOVE`` it is zlib-compressed and base64-encoded under ``docz`` instead
(``nclav.runtime.stores.pack_record``: request units grow with an item's size). One whose
compressed form would not fit Cosmos's 2 MB item (``MAX_RECORD_BYTES``) is refused before any
request with ``RecordTooLargeError`` naming the record, never cut or half-written.

**Consistency: the account must be at Strong.** Every compare-and-swap is etag-conditioned,
and Cosmos checks an etag on the write region's current item whatever the consistency level,
so no write ever lands on a stale decision. But the store also decides *not* to write on a
read (a step not claimable, a version that does not match, a mutex someone holds) and
answers questions by queries (``has_unfinished_steps``, ``list_unfinished_runs``, the
sweeper's listings), and the writers are other processes: a worker finishing a step, the
sweeper, the API. Session consistency (the default for a new account) guarantees
read-your-writes only to the client that wrote; another process may read an older version.
A step readied by one worker could then look pending to the worker claiming it (its message
dropped, the step left to the sweeper), and a step handed back ready could look finished to
``has_unfinished_steps`` (the run finalised with a step still to run). Strong consistency
(linearizable reads within the region; infra/azure's ``cosmos_consistency`` default) rules
both out; its reads cost about twice the request units of session reads. Within one process
(the tests, ``nclav serve`` with one client) session consistency gives the same answers.

**No read before a write this process can decide without one.** The store remembers, per
document, what it last read or wrote of it, ``_etag`` included (``_Memory``: every point
read, every full document a query returned, every document a write returned). A
read-decide-write decides on that memory when it has one and writes conditioned on the
remembered etag: when the document is as remembered the write lands, one request instead of
two (the engine reads a step, then readies it; claims it, then finishes it; reads an
enclave, then writes it; takes the run counter and releases it); when it changed meanwhile
the condition fails (412, or 409/404 for a create or a delete) and the method reads and
decides again, as before. A decision not to write (a step not claimable, a version that does
not match, a mutex someone holds) is never taken on memory: it is read again first. Reads
(``get_*``, ``list_*``) always ask Cosmos, but for the plan a remembered run names. A run's
steps are written as transactional batches (up to 100 operations, one request each; never
relied on for atomicity, see above).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core import MatchConditions
from pydantic import BaseModel

from functions_azure._errors import azure_errors
from nclav.errors import ConflictError, NotFoundError, TemporaryError
from nclav.records import (
    AuditEvent,
    DriftRecord,
    IacRun,
    Run,
    RunStatus,
    StepRecord,
    StepStatus,
    TfLock,
    check_finish_status,
    check_run_steps,
    ready_since,
)
from nclav.runtime.stores import (
    claimable,
    claimed,
    finished,
    holds,
    pack_record,
    renewed,
    seq_text,
    unpack_record,
)
from nclav.state import EnclaveState

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from azure.cosmos import ContainerProxy
    from pydantic import JsonValue

Doc = dict[str, Any]
M = TypeVar("M", bound=BaseModel)
# A Cosmos DB item holds at most 2 MB (2,097,152 bytes of its JSON, every property included).
# A compressed record is stored base64 (4 characters per 3 bytes): its compressed bytes get
# at most this much (2,000,000 characters), the item's other properties ~97 KB of room.
MAX_RECORD_BYTES = 1_500_000
ENCLAVES, RUNS, COUNTERS, EVENTS, IAC, DRIFT, TF = (
    "enclaves",
    "runs",
    "counters",
    "events",
    "iac",
    "drift",
    "tf",
)
RUN_SEQ_HOLD_S = 60.0  # a run counter mark older than this was left by a dead process
RUN_SEQ_WAIT_S = 30.0  # how long create_run waits for another run's creation
# A begin_run claim older than this was left by a dead worker (longer than the longest
# function execution, so its owner is gone).
BEGIN_CLAIM_S = 900.0
_ESCAPES = {"~": "~7E", "/": "~2F", "\\": "~5C", "?": "~3F", "#": "~23"}


def _id(text: str) -> str:
    """``text`` as a document id: Cosmos ids cannot hold '/', '\\', '?' or '#'."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def _steps_pk(run_id: str) -> str:
    return f"run:{run_id}"


def _packed(model: BaseModel, what: str, **options: Any) -> Doc:
    """A record as an item's fields: its JSON as the object ``doc``, or, above core's
    ``COMPRESS_ABOVE``, zlib-compressed and base64-encoded as ``docz`` (never both). Raises
    ``RecordTooLargeError`` naming ``what`` when even that would not fit in an item."""
    packed = pack_record(
        model.model_dump_json(**options), what, max_bytes=MAX_RECORD_BYTES, where="a Cosmos DB item"
    )
    if isinstance(packed, str):
        return {"doc": json.loads(packed)}
    return {"docz": base64.b64encode(packed).decode()}


def _record(cls: type[M], doc: Doc) -> M:
    """The record ``_packed`` stored in ``doc``."""
    if "docz" in doc:
        return cls.model_validate_json(unpack_record(base64.b64decode(doc["docz"])))
    return cls.model_validate(doc["doc"])


def _plain(doc: Doc) -> Doc:
    """``doc`` without the system properties Cosmos adds (``_etag``, ``_rid``, ``_ts``, ...)."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


_MEMORY_SIZE = 1024  # documents remembered per store (the most recently seen)
_BATCH_MAX = 100  # operations in one transactional batch (the service's limit)
EVENT_COUNTER = "counter"  # the event counter's id, in the events partition
_MISSING: Doc = {}  # remembered as absent


class _Memory:
    """Per (partition key, id), the document as this process last read or wrote it (the most
    recent ``_MEMORY_SIZE``); ``_MISSING`` when it was found absent or deleted."""

    def __init__(self) -> None:
        self._docs: OrderedDict[tuple[str, str], Doc] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, pk: str, doc_id: str) -> Doc | None:
        with self._lock:
            return self._docs.get((pk, doc_id))

    def put(self, pk: str, doc_id: str, doc: Doc) -> None:
        with self._lock:
            self._docs.pop((pk, doc_id), None)
            self._docs[(pk, doc_id)] = doc
            while len(self._docs) > _MEMORY_SIZE:
                self._docs.popitem(last=False)

    def forget(self, pk: str, doc_id: str) -> None:
        with self._lock:
            self._docs.pop((pk, doc_id), None)


class CosmosStateStore:
    def __init__(self, container: ContainerProxy) -> None:
        self.container = container
        self._memory = _Memory()

    # -- single documents ----------------------------------------------------------------------

    def _seen(self, doc: Doc) -> Doc:
        """Remember a whole document as Cosmos returned it (see the module doc)."""
        if "_etag" in doc and "id" in doc and "pk" in doc:
            self._memory.put(str(doc["pk"]), str(doc["id"]), dict(doc))
        return doc

    def _read(self, pk: str, doc_id: str) -> Doc | None:
        try:
            with azure_errors(f"cosmos read {pk}/{doc_id}"):
                return self._seen(dict(self.container.read_item(doc_id, partition_key=pk)))
        except NotFoundError:
            self._memory.put(pk, doc_id, _MISSING)
            return None

    def _known(self, pk: str, doc_id: str, fresh: bool) -> tuple[Doc | None, bool]:
        """(the document or None, whether from memory): from memory unless ``fresh``."""
        if not fresh:
            doc = self._memory.get(pk, doc_id)
            if doc is not None:
                return (dict(doc) if doc else None), True
        return self._read(pk, doc_id), False

    def _create(self, doc: Doc) -> Doc:
        """Raises ``ConflictError`` if the document exists."""
        try:
            with azure_errors(f"cosmos create {doc['pk']}/{doc['id']}"):
                return self._seen(dict(self.container.create_item(doc)))
        except ConflictError:
            self._memory.forget(str(doc["pk"]), str(doc["id"]))
            raise

    def _replace(self, doc: Doc, etag: str) -> Doc:
        """Raises ``ConflictError`` if the document changed since ``etag`` was read
        (``NotFoundError`` if it was deleted)."""
        try:
            with azure_errors(f"cosmos replace {doc['pk']}/{doc['id']}"):
                return self._seen(
                    dict(
                        self.container.replace_item(
                            doc["id"], doc, etag=etag, match_condition=MatchConditions.IfNotModified
                        )
                    )
                )
        except (ConflictError, NotFoundError):
            self._memory.forget(str(doc["pk"]), str(doc["id"]))
            raise

    def _delete(self, pk: str, doc_id: str, etag: str | None = None) -> None:
        condition: dict[str, Any] = (
            {} if etag is None else {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        )
        try:
            with azure_errors(f"cosmos delete {pk}/{doc_id}"):
                self.container.delete_item(doc_id, partition_key=pk, **condition)
        except (ConflictError, NotFoundError):
            self._memory.forget(pk, doc_id)
            raise
        self._memory.put(pk, doc_id, _MISSING)

    def _upsert(self, doc: Doc) -> None:
        with azure_errors(f"cosmos upsert {doc['pk']}/{doc['id']}"):
            self._seen(dict(self.container.upsert_item(doc)))

    def _batch(self, pk: str, kind: str, docs: Sequence[Doc]) -> None:
        """``kind`` ("create" or "upsert") every doc of partition ``pk``, a transactional
        batch per ``_BATCH_MAX``: one request each instead of one per document. A create
        of a document that exists raises ``ConflictError`` (nothing after it is written)."""
        for start in range(0, len(docs), _BATCH_MAX):
            chunk = docs[start : start + _BATCH_MAX]
            operations = [(kind, (doc,)) for doc in chunk]
            with azure_errors(f"cosmos batch {kind} {pk} ({len(chunk)})"):
                results = self.container.execute_item_batch(operations, partition_key=pk)
            for result in results:
                body = result.get("resourceBody") if isinstance(result, dict) else None
                if isinstance(body, dict):
                    self._seen(dict(body))

    def _query(self, sql: str, partition: str | None, **parameters: Any) -> list[Any]:
        """``sql`` in one partition (``@pk`` is its key), or across all when None."""
        if partition is not None:
            parameters["pk"] = partition
        params = [{"name": f"@{k}", "value": v} for k, v in parameters.items()]
        scope: dict[str, Any] = (
            {"partition_key": partition}
            if partition is not None
            else {"enable_cross_partition_query": True}
        )
        with azure_errors(f"cosmos query {partition or '*'}"):
            found = list(self.container.query_items(sql, parameters=params, **scope))
        for doc in found:
            if isinstance(doc, dict):
                self._seen(doc)
        return found

    def _next(self, counter: str) -> int:
        """The next number of ``counter`` (1, 2, ...): one atomic patch ``incr``."""
        for _ in range(2):
            try:
                with azure_errors(f"cosmos counter {counter}"):
                    done = self.container.patch_item(
                        counter, COUNTERS, [{"op": "incr", "path": "/n", "value": 1}]
                    )
                return int(done["n"])
            except NotFoundError:
                with contextlib.suppress(ConflictError):  # (created meanwhile)
                    self._create({"id": counter, "pk": COUNTERS, "type": "counter", "n": 0})
        raise ConflictError(f"counter {counter} could not be created")

    def ping(self) -> None:
        with azure_errors("cosmos ping"):
            self.container.read()

    # -- enclaves ----------------------------------------------------------------------------

    def get_enclave(self, enclave_id: str) -> tuple[EnclaveState, int] | None:
        doc = self._read(ENCLAVES, _id(enclave_id))
        if doc is None:
            return None
        return _record(EnclaveState, doc), int(doc["version"])

    def list_enclaves(self) -> list[EnclaveState]:
        docs = self._query("SELECT * FROM c WHERE c.pk = @pk", ENCLAVES)
        states = [_record(EnclaveState, d) for d in docs]
        return sorted(states, key=lambda s: s.enclave_id)

    def put_enclave(self, state: EnclaveState, expected_version: int | None) -> int:
        doc_id = _id(state.enclave_id)
        new = {
            "id": doc_id,
            "pk": ENCLAVES,
            "type": "enclave",
            "version": (expected_version or 0) + 1,
            **_packed(state, f"enclave {state.enclave_id}", by_alias=True),
        }
        for fresh in (False, True):  # a conflict is only ever decided on a fresh read
            current, remembered = self._known(ENCLAVES, doc_id, fresh)
            version = int(current["version"]) if current else None
            if version != expected_version:
                if remembered:
                    continue
                raise ConflictError(
                    f"enclave {state.enclave_id}: expected version {expected_version}, "
                    f"found {version}"
                )
            try:
                if current is None:
                    self._create(new)
                else:
                    self._replace(new, current["_etag"])
            except (ConflictError, NotFoundError) as exc:
                if remembered:
                    continue
                raise ConflictError(
                    f"enclave {state.enclave_id}: changed meanwhile (expected {expected_version})"
                ) from exc
            return int(new["version"])
        raise AssertionError("unreachable: the fresh round returns or raises")

    def delete_enclave(self, enclave_id: str, expected_version: int) -> None:
        for fresh in (False, True):
            current, remembered = self._known(ENCLAVES, _id(enclave_id), fresh)
            version = int(current["version"]) if current else None
            if current is None or version != expected_version:
                if remembered:
                    continue
                raise ConflictError(
                    f"enclave {enclave_id}: expected version {expected_version}, found {version}"
                )
            try:
                self._delete(ENCLAVES, current["id"], current["_etag"])
            except (ConflictError, NotFoundError) as exc:
                if remembered:
                    continue
                raise ConflictError(f"enclave {enclave_id}: changed meanwhile") from exc
            return

    # -- runs ----------------------------------------------------------------------------

    def _run_doc(self, run: Run, seq: int, step_count: int, plan: str | None) -> Doc:
        """The run document; ``plan`` is the token of the steps it commits (``list_steps``)."""
        doc = {
            "id": _id(run.id),
            "pk": RUNS,
            "type": "run",
            "seq": seq,
            "status": str(run.status),
            "final": run.status.final,
            "steps": step_count,
            **_packed(run, f"run {run.id}", exclude={"seq"}),
        }
        if plan is not None:
            doc["plan"] = plan
        return doc

    @staticmethod
    def _run_from(doc: Doc) -> Run:
        return _record(Run, doc).model_copy(update={"seq": int(doc["seq"])})

    def _fresh_step_docs(self, steps: Sequence[StepRecord], plan: str) -> list[Doc]:
        return [
            self._step_doc(step.model_copy(update={"version": 1}), position, plan)
            for position, step in enumerate(steps)
        ]

    def _write_steps(self, run_id: str, steps: Sequence[StepRecord], plan: str) -> None:
        self._batch(_steps_pk(run_id), "upsert", self._fresh_step_docs(steps, plan))

    def _create_steps(self, run_id: str, steps: Sequence[StepRecord], plan: str) -> None:
        """Create the steps in plan order; ``ConflictError`` at the first that exists (two
        creators of one run meet at its first step, so the loser writes nothing)."""
        try:
            self._batch(_steps_pk(run_id), "create", self._fresh_step_docs(steps, plan))
        except ConflictError as exc:
            raise ConflictError(f"run {run_id} already exists") from exc

    def _step_doc(self, step: StepRecord, position: int, plan: str | None) -> Doc:
        doc = {
            "id": _id(step.step_id),
            "pk": _steps_pk(step.run_id),
            "type": "step",
            "pos": position,
            "run_id": step.run_id,
            "status": str(step.status),
            "final": step.status.final,
            "lease_expires_at": step.lease_expires_at,
            "ready_at": ready_since(step) if step.status == StepStatus.READY else None,
            **_packed(step, f"step {step.run_id}/{step.step_id}"),
        }
        if plan is not None:
            doc["plan"] = plan
        return doc

    def create_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        # Steps first, the run document last: a run is seen only with its whole plan, as
        # DynamoDB's store does for plans too big for one transaction.
        check_run_steps(run, steps)
        # With steps, a run that exists must be told before its step partition is written;
        # without (a run planned when it begins), the run document's create tells.
        if steps and self._read(RUNS, _id(run.id)) is not None:
            raise ConflictError(f"run {run.id} already exists")
        plan = uuid.uuid4().hex if steps else None
        if plan is not None:
            self._create_steps(run.id, steps, plan)
        seq = self._take_run_seq(run.id)
        try:
            self._create(self._run_doc(run, seq, len(steps), plan))
        except ConflictError as exc:
            raise ConflictError(f"run {run.id} already exists") from exc
        finally:
            self._release_run_seq(run.id)
        return run.model_copy(update={"seq": seq})

    def _take_run_seq(self, run_id: str) -> int:
        """The next run seq, holding the run counter until the run document is written.

        Runs must become visible in seq order (the engine's ``kick`` starts a queued run
        when no earlier unfinished run blocks it: a later run seen before an earlier one
        would jump the queue). Without a transaction, the counter document is the turnstile:
        taking a number marks it ``pending`` (etag-conditioned), the run document is created,
        and ``_release_run_seq`` clears the mark; the next creator waits for it. A mark left
        by a process that died is taken over after ``RUN_SEQ_HOLD_S``.
        """
        deadline = time.monotonic() + RUN_SEQ_WAIT_S
        fresh = False
        while True:
            doc, remembered = self._known(COUNTERS, "runs", fresh)
            fresh = True  # a remembered counter is tried once; then it is read
            if doc is None:
                with contextlib.suppress(ConflictError):  # (created meanwhile)
                    self._create({"id": "runs", "pk": COUNTERS, "type": "counter", "n": 0})
                    fresh = False  # created just now: the remembered one is current
                continue
            held = doc.get("pending") and time.time() - float(doc.get("since", 0)) < RUN_SEQ_HOLD_S
            if not held:
                seq = int(doc["n"]) + 1
                new = {**_plain(doc), "n": seq, "pending": run_id, "since": time.time()}
                try:
                    self._replace(new, doc["_etag"])
                except (ConflictError, NotFoundError):
                    continue
                return seq
            if remembered:
                continue  # held as remembered: read it before waiting
            if time.monotonic() > deadline:
                raise TemporaryError(
                    f"run {run_id}: run creation is busy (run {doc['pending']} is being created)"
                )
            time.sleep(0.01)

    def _release_run_seq(self, run_id: str) -> None:
        fresh = False
        while True:
            doc, remembered = self._known(COUNTERS, "runs", fresh)
            fresh = True
            if doc is None or doc.get("pending") != run_id:
                if remembered:
                    continue
                return  # taken over meanwhile (we were too slow): nothing of ours to clear
            try:
                self._replace({**_plain(doc), "pending": None}, doc["_etag"])
                return
            except (ConflictError, NotFoundError):
                continue

    def get_run(self, run_id: str) -> Run | None:
        doc = self._read(RUNS, _id(run_id))
        return None if doc is None else self._run_from(doc)

    def list_runs(self, limit: int = 50, status: RunStatus | None = None) -> list[Run]:
        if limit <= 0:
            return []
        where = "c.pk = @pk" + (" AND c.status = @status" if status is not None else "")
        extra = {"status": str(status)} if status is not None else {}
        docs = self._query(
            f"SELECT TOP {int(limit)} * FROM c WHERE {where} ORDER BY c.seq DESC",
            RUNS,
            **extra,
        )
        return [self._run_from(d) for d in docs]

    def update_run(self, run: Run, expect: RunStatus | None = None) -> Run:
        fresh = False
        while True:
            doc, remembered = self._known(RUNS, _id(run.id), fresh)
            fresh = True
            if doc is None:
                if remembered:
                    continue
                raise NotFoundError(f"run not found: {run.id}")
            stored = self._run_from(doc)
            refused = stored.status.final or (expect is not None and stored.status != expect)
            if refused and remembered:
                continue  # refused on memory: read it first
            if stored.status.final:
                raise ConflictError(f"run {run.id} is already {stored.status}")
            if expect is not None and stored.status != expect:
                raise ConflictError(f"run {run.id} is {stored.status}, not {expect}")
            try:
                new = self._run_doc(run, stored.seq, int(doc["steps"]), doc.get("plan"))
                self._replace(new, doc["_etag"])
            except ConflictError:
                continue  # changed meanwhile: decide again on what it is now
            return run.model_copy(update={"seq": stored.seq})

    def begin_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        check_run_steps(run, steps)
        doc, remembered = self._known(RUNS, _id(run.id), False)
        if remembered and (
            doc is None
            or self._run_from(doc).status != RunStatus.QUEUED
            or int(doc["steps"])
            or doc.get("claim")
        ):
            doc = self._read(RUNS, _id(run.id))  # refused on memory: read it first
        if doc is None:
            raise NotFoundError(f"run not found: {run.id}")
        stored = self._run_from(doc)
        if stored.status != RunStatus.QUEUED or int(doc["steps"]):
            raise ConflictError(f"run {run.id} has already begun")
        # Claim the queued run first (so two workers never write one run's steps at once),
        # write the steps, then commit: the run document turns running, naming its steps.
        # A claim left by a worker that died mid-write is taken over after BEGIN_CLAIM_S,
        # and its partial plan deleted first.
        previous = doc.get("claim")
        if previous and time.time() - float(doc.get("claim_since", 0)) < BEGIN_CLAIM_S:
            raise ConflictError(f"run {run.id} is being begun by another worker")
        token = uuid.uuid4().hex
        try:
            claimed = self._replace(
                {**_plain(doc), "claim": token, "claim_since": time.time()}, doc["_etag"]
            )
        except (ConflictError, NotFoundError) as exc:
            if remembered:  # maybe only our memory was stale: decide on a fresh read
                return self.begin_run(run, steps)
            raise ConflictError(f"run {run.id} has already begun") from exc
        if previous:
            self._delete_steps(run.id)
        self._write_steps(run.id, steps, token)
        try:
            self._replace(self._run_doc(run, stored.seq, len(steps), token), claimed["_etag"])
        except (ConflictError, NotFoundError) as exc:
            # Changed meanwhile (cancelled): our steps belong to no plan. Remove them unless
            # another worker has taken the claim over (then they are its steps now).
            now = self._read(RUNS, _id(run.id))
            if now is None or now.get("claim") in (None, token):
                self._delete_steps(run.id)
            raise ConflictError(f"run {run.id} changed while it was begun") from exc
        return run.model_copy(update={"seq": stored.seq})

    def _delete_steps(self, run_id: str) -> None:
        pk = _steps_pk(run_id)
        for doc_id in self._query("SELECT VALUE c.id FROM c WHERE c.pk = @pk", pk):
            with contextlib.suppress(NotFoundError):
                self._delete(pk, str(doc_id))

    def list_unfinished_runs(self) -> list[Run]:
        docs = self._query("SELECT * FROM c WHERE c.pk = @pk AND c.final = false", RUNS)
        return sorted((self._run_from(d) for d in docs), key=lambda r: r.seq)

    # -- steps ---------------------------------------------------------------------------

    def _run_for_steps(self, run_id: str) -> Doc | None:
        """The run document that says which of its partition's steps are its plan: the one
        remembered when it names a plan (a run's plan, once committed, never changes), else
        read."""
        known = self._memory.get(RUNS, _id(run_id))
        if known and known.get("plan"):
            return dict(known)
        return self._read(RUNS, _id(run_id))

    def list_steps(self, run_id: str) -> list[StepRecord]:
        # The run document first: steps are written before the run names them, so every
        # step of the plan it names exists by the time it is read.
        run = self._run_for_steps(run_id)
        if run is None:
            return []  # steps without a run: a create_run that never finished
        docs = self._query("SELECT * FROM c WHERE c.pk = @pk", _steps_pk(run_id))
        mine = sorted(
            (d for d in docs if d.get("plan") == run.get("plan")), key=lambda d: int(d["pos"])
        )
        return [_record(StepRecord, d) for d in mine]

    def get_step(self, run_id: str, step_id: str) -> StepRecord | None:
        doc = self._read(_steps_pk(run_id), _id(step_id))
        return None if doc is None else _record(StepRecord, doc)

    def get_steps(self, run_id: str, step_ids: Sequence[str]) -> dict[str, StepRecord]:
        ids = [_id(step_id) for step_id in dict.fromkeys(step_ids)]
        if not ids:
            return {}
        sql = "SELECT * FROM c WHERE c.pk = @pk AND ARRAY_CONTAINS(@ids, c.id)"
        found = (_record(StepRecord, d) for d in self._query(sql, _steps_pk(run_id), ids=ids))
        return {step.step_id: step for step in found}

    def has_unfinished_steps(self, run_id: str) -> bool:
        pk = _steps_pk(run_id)
        found = self._query("SELECT VALUE COUNT(1) FROM c WHERE c.pk = @pk AND c.final = false", pk)
        return bool(found and found[0])

    def _change(
        self, run_id: str, step_id: str, decide: Callable[[StepRecord], StepRecord | None]
    ) -> StepRecord | None:
        """Read the step, let ``decide(step)`` return it changed (or None: leave it), and
        write it conditioned on the etag read; again from the read when another writer won."""
        fresh = False
        while True:
            doc, remembered = self._known(_steps_pk(run_id), _id(step_id), fresh)
            fresh = True
            if doc is None:
                if remembered:
                    continue  # "nothing to write" is decided on a fresh read only
                return None
            new = decide(_record(StepRecord, doc))
            if new is None:
                if remembered:
                    continue
                return None
            try:
                self._replace(self._step_doc(new, int(doc["pos"]), doc.get("plan")), doc["_etag"])
            except (ConflictError, NotFoundError):
                continue
            return new

    def claim_step(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> StepRecord | None:
        def decide(step: StepRecord) -> StepRecord | None:
            return claimed(step, owner, lease_s, now) if claimable(step, now) else None

        return self._change(run_id, step_id, decide)

    def renew_lease(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> bool:
        def decide(step: StepRecord) -> StepRecord | None:
            return renewed(step, lease_s, now) if holds(step, owner) else None

        return self._change(run_id, step_id, decide) is not None

    def finish_step(
        self,
        run_id: str,
        step_id: str,
        owner: str,
        status: StepStatus,
        error: str | None,
        now: float,
        *,
        not_before: float | None = None,
    ) -> StepRecord | None:
        check_finish_status(status)

        def decide(step: StepRecord) -> StepRecord | None:
            return finished(step, status, error, now, not_before) if holds(step, owner) else None

        return self._change(run_id, step_id, decide)

    def update_step(self, step: StepRecord, expected_version: int) -> StepRecord:
        new = step.model_copy(update={"version": expected_version + 1})
        for fresh in (False, True):  # a refusal is only ever decided on a fresh read
            doc, remembered = self._known(_steps_pk(step.run_id), _id(step.step_id), fresh)
            stored = None if doc is None else _record(StepRecord, doc)
            if stored is None or stored.version != expected_version:
                if remembered:
                    continue
                if stored is None:
                    raise NotFoundError(f"step not found: {step.run_id}/{step.step_id}")
                raise ConflictError(
                    f"step {step.step_id}: expected version {expected_version}, "
                    f"found {stored.version}"
                )
            assert doc is not None
            try:
                self._replace(self._step_doc(new, int(doc["pos"]), doc.get("plan")), doc["_etag"])
            except (ConflictError, NotFoundError) as exc:
                if remembered:
                    continue
                raise ConflictError(f"step {step.step_id}: changed meanwhile") from exc
            return new
        raise AssertionError("unreachable: the fresh round returns or raises")

    def _steps_where(self, condition: str, **parameters: Any) -> list[StepRecord]:
        """Steps of every run matching ``condition``: oldest run first, each in plan order.

        The sweeper's two listings, the store's only cross-partition queries."""
        docs = self._query(
            f"SELECT * FROM c WHERE c.type = 'step' AND {condition}", None, **parameters
        )
        runs = {run_id: self._run_for_steps(run_id) for run_id in {d["run_id"] for d in docs}}
        # Only the steps of a plan their run names: not those of a begin_run still writing
        # (or of one that died), nor of a create_run that never wrote its run.
        mine = []
        for d in docs:
            run = runs[d["run_id"]]
            if run is not None and run.get("plan") == d.get("plan"):
                mine.append((int(run["seq"]), int(d["pos"]), d))
        mine.sort(key=lambda m: (m[0], m[1]))
        return [_record(StepRecord, d) for _, _, d in mine]

    def list_expired_leases(self, now: float) -> list[StepRecord]:
        return self._steps_where(
            "c.status = @running AND c.lease_expires_at <= @now",
            running=str(StepStatus.RUNNING),
            now=now,
        )

    def list_stuck_ready_steps(self, older_than: float) -> list[StepRecord]:
        return self._steps_where(
            "c.status = @ready AND c.ready_at <= @older",
            ready=str(StepStatus.READY),
            older=older_than,
        )

    # -- audit events ----------------------------------------------------------------------

    def append_event(self, event: AuditEvent) -> AuditEvent:
        """One transactional batch in the events partition: the event counter moved by one
        (conditioned on its remembered etag) and the event created with that number. A
        batch stops at its first failed operation (424 for the rest, on the stand-in too), so
        a lost counter writes no event; the counter is then read and the batch sent again.
        """
        body = _packed(event, f"event {event.kind.value}", exclude={"seq"})
        fresh = False
        while True:
            counter, _ = self._known(EVENTS, EVENT_COUNTER, fresh)
            fresh = True
            if counter is None:
                self._create_event_counter()
                fresh = False  # created (or found) just now: remembered
                continue
            seq = int(counter["n"]) + 1
            doc = {
                "id": seq_text(seq),
                "pk": EVENTS,
                "type": "event",
                "seq": seq,
                "enclave_id": event.enclave_id,
                "run_id": event.run_id,
                **body,
            }
            moved = {**_plain(counter), "n": seq}
            operations: list[Any] = [
                ("replace", (EVENT_COUNTER, moved), {"if_match_etag": counter["_etag"]}),
                ("create", (doc,)),
            ]
            try:
                with azure_errors(f"cosmos append event {seq}"):
                    results = self.container.execute_item_batch(operations, partition_key=EVENTS)
            except (ConflictError, NotFoundError):
                self._memory.forget(EVENTS, EVENT_COUNTER)
                continue  # the counter moved (or the number was taken): read it, try again
            for result in results:
                found = result.get("resourceBody") if isinstance(result, dict) else None
                if isinstance(found, dict):
                    self._seen(dict(found))
            return event.model_copy(update={"seq": seq})

    def _create_event_counter(self) -> None:
        """The events partition's counter, continuing a counter of an older layout (one
        document in the counters partition) when there is one."""
        legacy = self._read(COUNTERS, "events")
        first = {"id": EVENT_COUNTER, "pk": EVENTS, "type": "counter", "n": 0}
        if legacy is not None:
            first["n"] = int(legacy["n"])
        try:
            self._create(first)
        except ConflictError:
            self._read(EVENTS, EVENT_COUNTER)  # created meanwhile: remember it

    def list_events(
        self, enclave_id: str | None = None, limit: int = 100, *, run_id: str | None = None
    ) -> list[AuditEvent]:
        if limit <= 0:
            return []
        where, extra = "c.pk = @pk AND c.type = 'event'", {}
        if enclave_id is not None:
            where, extra["enclave"] = where + " AND c.enclave_id = @enclave", enclave_id
        if run_id is not None:
            where, extra["run"] = where + " AND c.run_id = @run", run_id
        docs = self._query(
            f"SELECT TOP {int(limit)} * FROM c WHERE {where} ORDER BY c.seq DESC",
            EVENTS,
            **extra,
        )
        events = [_record(AuditEvent, d).model_copy(update={"seq": int(d["seq"])}) for d in docs]
        return events[::-1]

    # -- IaC runs ------------------------------------------------------------------------------

    def put_iac_run(self, run: IacRun) -> None:
        # A run this process wrote before keeps its number (remembered); one it has not seen
        # is most likely new (a new id per terraform run): numbered and created without a
        # read, and read only when the create finds it exists.
        remembered = self._memory.get(IAC, _id(run.id))
        current = dict(remembered) if remembered else None
        doc = {
            "id": _id(run.id),
            "pk": IAC,
            "type": "iac_run",
            "n": 0,
            "enclave_id": run.enclave_id,
            "partition_id": run.partition_id,
            "started_at": run.started_at,
            **_packed(run, f"IaC run {run.id}"),
        }
        if current is None:
            doc["n"] = self._next("iac")
            try:
                self._create(doc)
                return
            except ConflictError:
                current = self._read(IAC, _id(run.id))
        self._upsert({**doc, "n": int(current["n"]) if current else doc["n"]})

    def get_iac_run(self, run_id: str) -> IacRun | None:
        doc = self._read(IAC, _id(run_id))
        return None if doc is None else _record(IacRun, doc)

    def list_iac_runs(self, enclave_id: str, partition_id: str, limit: int = 100) -> list[IacRun]:
        docs = self._query(
            "SELECT * FROM c WHERE c.pk = @pk AND c.enclave_id = @e AND c.partition_id = @p",
            IAC,
            e=enclave_id,
            p=partition_id,
        )
        docs.sort(key=lambda d: (d["started_at"], int(d["n"])), reverse=True)
        return [_record(IacRun, d) for d in docs[: max(limit, 0)]]

    # -- drift ---------------------------------------------------------------------------------

    def put_drift(self, record: DriftRecord) -> None:
        self._upsert(
            {
                "id": _id(f"{record.enclave_id}/{record.partition_id}"),
                "pk": DRIFT,
                "type": "drift",
                "enclave_id": record.enclave_id,
                "partition_id": record.partition_id,
                **_packed(record, "drift record"),
            }
        )

    def get_drift(self, enclave_id: str, partition_id: str) -> DriftRecord | None:
        doc = self._read(DRIFT, _id(f"{enclave_id}/{partition_id}"))
        return None if doc is None else _record(DriftRecord, doc)

    def delete_drift(self, enclave_id: str, partition_id: str) -> None:
        with contextlib.suppress(NotFoundError):
            self._delete(DRIFT, _id(f"{enclave_id}/{partition_id}"))

    def list_drift(self, enclave_id: str | None = None) -> list[DriftRecord]:
        if enclave_id is None:
            docs = self._query("SELECT * FROM c WHERE c.pk = @pk", DRIFT)
        else:
            docs = self._query(
                "SELECT * FROM c WHERE c.pk = @pk AND c.enclave_id = @e",
                DRIFT,
                e=enclave_id,
            )
        docs.sort(key=lambda d: (d["enclave_id"], d["partition_id"]))
        return [_record(DriftRecord, d) for d in docs]

    # -- Terraform locks and state pointers ----------------------------------------------------

    def lock(self, key: str, info: Mapping[str, JsonValue]) -> TfLock | None:
        while True:
            try:
                self._create(
                    {"id": _id(f"lock:{key}"), "pk": TF, "type": "lock", "info": dict(info)}
                )
                return None
            except ConflictError:
                holder = self.get_lock(key)
                if holder is not None:
                    return holder  # (else released meanwhile: try again)

    def unlock(self, key: str, lock_id: str | None) -> TfLock | None:
        fresh = False
        while True:
            doc, remembered = self._known(TF, _id(f"lock:{key}"), fresh)
            fresh = True
            if doc is None:
                if remembered:
                    continue
                return None
            holder = TfLock(key=key, info=doc["info"])
            if lock_id is not None and lock_id != holder.lock_id:
                if remembered:
                    continue
                return holder
            try:
                self._delete(TF, doc["id"], doc["_etag"])
                return None
            except (ConflictError, NotFoundError):
                continue

    def get_lock(self, key: str) -> TfLock | None:
        doc = self._read(TF, _id(f"lock:{key}"))
        return None if doc is None else TfLock(key=key, info=doc["info"])

    def _state_doc(self, key: str, blob_key: str) -> Doc:
        return {
            "id": _id(f"state:{key}"),
            "pk": TF,
            "type": "state",
            "key": key,
            "enclave_id": key.split("/", 1)[0],
            "blob_key": blob_key,
        }

    def get_tf_state(self, key: str) -> str | None:
        doc = self._read(TF, _id(f"state:{key}"))
        return None if doc is None else str(doc["blob_key"])

    def set_tf_state(self, key: str, blob_key: str | None) -> None:
        if blob_key is not None:
            self._upsert(self._state_doc(key, blob_key))
            return
        with contextlib.suppress(NotFoundError):
            self._delete(TF, _id(f"state:{key}"))

    def list_tf_states(self, enclave_id: str) -> list[str]:
        docs = self._query(
            "SELECT c.key FROM c WHERE c.pk = @pk AND c.type = 'state' AND c.enclave_id = @e",
            TF,
            e=enclave_id,
        )
        return sorted(str(d["key"]) for d in docs if str(d["key"]).startswith(f"{enclave_id}/"))

    def swap_tf_state(self, key: str, expected: str | None, blob_key: str) -> bool:
        for fresh in (False, True):  # "no" is only ever decided on a fresh read
            doc, remembered = self._known(TF, _id(f"state:{key}"), fresh)
            current = None if doc is None else str(doc["blob_key"])
            if current != expected:
                if remembered:
                    continue
                return False
            try:
                if doc is None:
                    self._create(self._state_doc(key, blob_key))
                else:
                    self._replace(self._state_doc(key, blob_key), doc["_etag"])
            except (ConflictError, NotFoundError):
                if remembered:
                    continue
                return False
            return True
        return False

    # -- partition mutex -------------------------------------------------------------------------

    def acquire_partition(self, key: str, owner: str, lease_s: float, now: float) -> bool:
        doc_id = _id(f"mutex:{key}")
        new = {"id": doc_id, "pk": TF, "type": "mutex", "owner": owner, "until": now + lease_s}
        # Unknown here: most likely free (released), so created without a read first.
        known = self._memory.get(TF, doc_id)
        fresh = known is None
        if known is None:
            try:
                self._create(new)
                return True
            except ConflictError:
                pass
        while True:
            doc, remembered = self._known(TF, doc_id, fresh)
            fresh = True
            try:
                if doc is None:
                    self._create(new)
                    return True
                if doc["owner"] != owner and float(doc["until"]) > now:
                    if remembered:
                        continue
                    return False
                self._replace(new, doc["_etag"])
                return True
            except (ConflictError, NotFoundError):
                continue

    def release_partition(self, key: str, owner: str) -> bool:
        doc_id = _id(f"mutex:{key}")
        fresh = False
        while True:
            doc, remembered = self._known(TF, doc_id, fresh)
            fresh = True
            if doc is None or doc["owner"] != owner:
                if remembered:
                    continue
                return False
            try:
                self._delete(TF, doc_id, doc["_etag"])
                return True
            except (ConflictError, NotFoundError):
                continue


def create_container(database: Any, name: str) -> ContainerProxy:
    """Create (or keep) the store's container, partitioned on ``/pk``."""
    from azure.cosmos import PartitionKey

    with azure_errors(f"cosmos create container {name}"):
        container: ContainerProxy = database.create_container_if_not_exists(
            name, partition_key=PartitionKey("/pk")
        )
    # The counters, made with the container (a deployment step, like its table for
    # DynamoDB): a store's first run, event and IaC run then find theirs.
    counters = [(COUNTERS, "runs"), (COUNTERS, "iac"), (EVENTS, EVENT_COUNTER)]
    for pk, counter in counters:
        with contextlib.suppress(ConflictError), azure_errors(f"cosmos create counter {counter}"):
            container.create_item({"id": counter, "pk": pk, "type": "counter", "n": 0})
    return container


if TYPE_CHECKING:
    from nclav.ports import StateStore

    def _implements(adapter: CosmosStateStore) -> StateStore:  # mypy proves the port is implemented
        return adapter


__all__ = ["CosmosStateStore", "create_container"]
