"""``FirestoreStateStore``: the StateStore port on Firestore in native mode.

The collection layout and document encoding are in ``_firestore_docs``. Every compare-and-swap
is one conditional write in Firestore, never a read followed by a blind write:

* a document that must not exist yet is written with ``create()`` (``ALREADY_EXISTS`` lost);
* a change to an existing document is an ``update()`` with a ``last_update_time``
  precondition taken from the read it was decided on (``FAILED_PRECONDITION`` lost), and so is
  a conditional delete;
* writes that must land together (a run and its steps and the run counter; an event and the
  event counter) are one atomic batch, each write with its own precondition.

A lost precondition makes the method read again and decide again (``_retry``): what it decided
may no longer hold (a claim on a step another worker took returns ``None``), or may still
hold (a counter someone else moved). Optimistic preconditions take no locks, unlike
Firestore's read-write transactions, so contending workers never wait on one another's
locks. After ``TRIES`` lost rounds the method raises ``TemporaryError``.

**No read before a write this process can decide without one.** A precondition needs the
document's ``update_time``, which a read gives; but the store remembers, per document, what
it last read or wrote of it and when (``_Memory``: the data and the ``update_time`` of every
snapshot it read and of every write it committed). A read-decide-write decides on that
memory when it has one and writes with its ``update_time`` as precondition: when the
document is as remembered the write lands, one request instead of two (the engine reads a
step, then readies it; claims it, then finishes it; reads an enclave, then writes it; a
counter moves by one commit per event); when it changed meanwhile the precondition fails and
the method reads and decides again, as before. A decision not to write (a step not
claimable, a version that does not match) is never taken on memory: it is read again first.
Reads (``get_*``, ``list_*``) always ask Firestore.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, TypeVar

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from functions_gcp._errors import gcp_errors
from functions_gcp._firestore_docs import (
    COUNTERS,
    DRIFT,
    ENCLAVES,
    EVENT_COUNTER,
    EVENTS,
    IAC_COUNTER,
    IAC_RUNS,
    MUTEXES,
    RUN_COUNTER,
    RUNS,
    STEPS,
    TF_LOCKS,
    TF_STATES,
    doc_fields,
    drift_id,
    quoted,
    read_doc,
    step_doc_id,
)
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
    lease_expired,
    renewed,
    seq_text,
    stuck_ready,
)
from nclav.runtime.timing import backoff
from nclav.state import EnclaveState

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from google.cloud.firestore_v1.base_document import DocumentSnapshot as _Snapshot
    from google.cloud.firestore_v1.document import DocumentReference

    DocumentSnapshot = _Snapshot[DocumentReference]
    from pydantic import JsonValue

T = TypeVar("T")
TRIES = 12  # rounds of read-decide-write before a lost race becomes a TemporaryError
_SPARSE_STEP = ("ready_at", "lease_at")


class _Lost(Exception):
    """A precondition failed: read again and decide again."""


class _Stale(Exception):
    """A decision taken on memory (``_Memory``) that writes nothing: read and decide again."""


_MEMORY_SIZE = 1024  # documents remembered per store (the most recently seen)


class _Seen:
    """A document as this process last read or wrote it: what a snapshot offers the store."""

    __slots__ = ("_data", "update_time")

    def __init__(self, data: dict[str, Any] | None, update_time: Any) -> None:
        self._data = data
        self.update_time = update_time

    @property
    def exists(self) -> bool:
        return self._data is not None

    def to_dict(self) -> dict[str, Any] | None:
        return None if self._data is None else dict(self._data)


class _Memory:
    """Per document path, the last ``_Seen`` of it (the most recent ``_MEMORY_SIZE``)."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> _Seen | None:
        with self._lock:
            return self._seen.get(path)

    def put(self, path: str, seen: _Seen) -> None:
        with self._lock:
            self._seen.pop(path, None)
            self._seen[path] = seen
            while len(self._seen) > _MEMORY_SIZE:
                self._seen.popitem(last=False)

    def forget(self, path: str) -> None:
        with self._lock:
            self._seen.pop(path, None)


class _Batch:
    """A write batch that remembers, once committed, what each document now holds."""

    def __init__(self, store: FirestoreStateStore) -> None:
        self._store = store
        self._batch = store._db.batch()  # noqa: SLF001
        self._writes: list[tuple[DocumentReference, dict[str, Any] | None]] = []

    def create(self, ref: DocumentReference, fields: dict[str, Any]) -> None:
        self._batch.create(ref, fields)
        self._writes.append((ref, fields))

    def update(self, ref: DocumentReference, fields: dict[str, Any], option: Any) -> None:
        # Every update here replaces the whole document (``_replacing``): what it holds after
        # is ``fields`` without the fields deleted.
        self._batch.update(ref, fields, option=option)
        kept = {k: v for k, v in fields.items() if v is not firestore.DELETE_FIELD}
        self._writes.append((ref, kept))

    def delete(self, ref: DocumentReference, option: Any) -> None:
        self._batch.delete(ref, option=option)
        self._writes.append((ref, None))

    def commit(self, what: str) -> None:
        """Commit; a lost precondition becomes ``_Lost``.

        Lost: a ``create()`` of a document that exists, an update whose ``last_update_time``
        no longer matches, or one whose document was deleted since the read
        (``FAILED_PRECONDITION``, or ``NOT_FOUND`` where the service says so): the store only
        updates documents it has read (or remembers) as existing, so each means someone else
        wrote first.
        """
        memory = self._store._memory  # noqa: SLF001
        try:
            with gcp_errors(what):
                results = self._batch.commit()
        except (ConflictError, NotFoundError) as exc:
            for ref, _ in self._writes:
                memory.forget(ref.path)
            raise _Lost(str(exc)) from exc
        for (ref, data), result in zip(self._writes, results, strict=False):
            if data is None:
                memory.put(ref.path, _Seen(None, None))
            else:
                memory.put(ref.path, _Seen(data, result.update_time))


def _retry(what: str, attempt: Callable[[bool], T]) -> T:
    """Run ``attempt(fresh)`` until it does not lose a race. The first attempt may decide on
    memory (``fresh`` False); after a decision on memory turned out stale, or a lost race,
    it reads (``fresh`` True). A stale memory is no race: it neither waits nor counts."""
    fresh = False
    lost = 0
    while True:
        try:
            return attempt(fresh)
        except _Stale:
            fresh = True
        except _Lost:
            if not fresh:
                fresh = True  # maybe decided on a memory someone has changed since
                continue
            lost += 1
            if lost >= TRIES:
                break
            time.sleep(backoff(lost, 0.01, 1.0, jitter=0.5))
    raise TemporaryError(f"{what}: lost {TRIES} races in a row", retry_after_s=1.0)


def _step_fields(step: StepRecord, order: int, run_seq: int) -> dict[str, Any]:
    """A step document (every field, so a write replaces the whole document)."""
    fields: dict[str, Any] = {
        **doc_fields(step.model_dump_json(), f"step {step.run_id}/{step.step_id}"),
        "version": step.version,
        "order": order,
        "run_seq": run_seq,
        "final": step.status.final,
    }
    if step.status == StepStatus.READY:
        fields["ready_at"] = ready_since(step)
    if step.status == StepStatus.RUNNING and step.lease_expires_at is not None:
        fields["lease_at"] = step.lease_expires_at
    return fields


def _replacing(fields: dict[str, Any], sparse: Sequence[str]) -> dict[str, Any]:
    """``fields`` as an ``update()`` that also removes the sparse fields it does not set."""
    return {**dict.fromkeys(sparse, firestore.DELETE_FIELD), **fields}


def _step(snap: Any) -> StepRecord:
    data = snap.to_dict() or {}
    return StepRecord.model_validate_json(read_doc(data))


class FirestoreStateStore:
    def __init__(self, client: firestore.Client, prefix: str = "") -> None:
        self._db = client
        self._p = prefix
        self._memory = _Memory()

    # -- paths -----------------------------------------------------------------------------

    def _col(self, name: str) -> Any:
        return self._db.collection(f"{self._p}{name}")

    def _run_ref(self, run_id: str) -> DocumentReference:
        return self._col(RUNS).document(run_id)  # type: ignore[no-any-return]

    def _steps(self, run_id: str) -> Any:
        return self._run_ref(run_id).collection(f"{self._p}{STEPS}")

    def _step_ref(self, run_id: str, step_id: str) -> DocumentReference:
        return self._steps(run_id).document(step_doc_id(step_id))  # type: ignore[no-any-return]

    def _seen(self, snap: DocumentSnapshot) -> DocumentSnapshot:
        """Remember a snapshot read from Firestore (see the module doc); returns it."""
        data = snap.to_dict() if snap.exists else None
        self._memory.put(snap.reference.path, _Seen(data, snap.update_time))
        return snap

    def _get(self, ref: DocumentReference, what: str) -> DocumentSnapshot:
        with gcp_errors(what):
            return self._seen(ref.get())

    def _snap(self, ref: DocumentReference, what: str, fresh: bool) -> tuple[Any, bool]:
        """(the document, whether it is from memory): from memory unless ``fresh``."""
        if not fresh:
            seen = self._memory.get(ref.path)
            if seen is not None:
                return seen, True
        return self._get(ref, what), False

    def _query(self, query: Any, what: str) -> list[DocumentSnapshot]:
        with gcp_errors(what):
            return [self._seen(s) for s in query.stream()]

    def _batch(self) -> _Batch:
        return _Batch(self)

    def _option(self, snap: Any) -> Any:
        return self._db.write_option(last_update_time=snap.update_time)

    def _update(self, ref: DocumentReference, snap: Any, fields: dict[str, Any], what: str) -> None:
        batch = self._batch()
        batch.update(ref, fields, option=self._option(snap))
        batch.commit(what)

    def _create(self, ref: DocumentReference, fields: dict[str, Any], what: str) -> None:
        batch = self._batch()
        batch.create(ref, fields)
        batch.commit(what)

    def _delete(self, ref: DocumentReference, snap: Any, what: str) -> None:
        batch = self._batch()
        batch.delete(ref, option=self._option(snap))
        batch.commit(what)

    def _write(self, ref: DocumentReference, snap: Any, fields: dict[str, Any], what: str) -> None:
        """Create ``ref`` if ``snap`` saw none, else replace it if unchanged since ``snap``."""
        if snap.exists:
            self._update(ref, snap, fields, what)
        else:
            self._create(ref, fields, what)

    def _counter(self, batch: _Batch, name: str, what: str, fresh: bool) -> int:
        """Add the next value of counter ``name`` to ``batch``, conditional on the value read
        (or remembered: a stale one loses the precondition and the batch is retried)."""
        ref = self._col(COUNTERS).document(name)
        snap, _ = self._snap(ref, what, fresh)
        value = int((snap.to_dict() or {}).get("value", 0)) + 1
        if snap.exists:
            batch.update(ref, {"value": value}, option=self._option(snap))
        else:
            batch.create(ref, {"value": value})
        return value

    def ping(self) -> None:
        self._get(self._col(COUNTERS).document(RUN_COUNTER), "ping")

    # -- enclaves ----------------------------------------------------------------------------

    def get_enclave(self, enclave_id: str) -> tuple[EnclaveState, int] | None:
        snap = self._get(self._col(ENCLAVES).document(enclave_id), f"get enclave {enclave_id}")
        if not snap.exists:
            return None
        data = snap.to_dict() or {}
        return EnclaveState.model_validate_json(read_doc(data)), int(data["version"])

    def list_enclaves(self) -> list[EnclaveState]:
        snaps = self._query(self._col(ENCLAVES).order_by("__name__"), "list enclaves")
        return [EnclaveState.model_validate_json(read_doc(s.to_dict() or {})) for s in snaps]

    def _versioned(
        self, ref: DocumentReference, what: str, expected: int | None, write: Callable[[Any], None]
    ) -> None:
        """``write(snapshot)`` if the document's version is ``expected`` (None: no document);
        a conflict is only ever decided on a fresh read."""
        name = ref.id
        for fresh in (False, True):
            snap, remembered = self._snap(ref, what, fresh)
            version = int((snap.to_dict() or {})["version"]) if snap.exists else None
            if version != expected:
                if remembered:
                    continue
                raise ConflictError(f"enclave {name}: expected version {expected}, found {version}")
            try:
                write(snap)
                return
            except _Lost as exc:
                if remembered:
                    continue
                raise ConflictError(f"enclave {name}: changed since version {expected}") from exc
        raise AssertionError("unreachable: the fresh round returns or raises")

    def put_enclave(self, state: EnclaveState, expected_version: int | None) -> int:
        what = f"put enclave {state.enclave_id}"
        ref = self._col(ENCLAVES).document(state.enclave_id)
        fields = doc_fields(state.model_dump_json(by_alias=True), f"enclave {state.enclave_id}")
        new_version = (expected_version or 0) + 1

        def write(snap: Any) -> None:
            self._write(
                ref,
                snap,
                _replacing({**fields, "version": new_version}, ("doc", "docz"))
                if snap.exists
                else {**fields, "version": new_version},
                what,
            )

        self._versioned(ref, what, expected_version, write)
        return new_version

    def delete_enclave(self, enclave_id: str, expected_version: int) -> None:
        what = f"delete enclave {enclave_id}"
        ref = self._col(ENCLAVES).document(enclave_id)
        self._versioned(ref, what, expected_version, lambda snap: self._delete(ref, snap, what))

    # -- runs ----------------------------------------------------------------------------

    def _run_fields(self, run: Run) -> dict[str, Any]:
        fields: dict[str, Any] = {
            **doc_fields(run.model_dump_json(exclude={"seq"}), f"run {run.id}"),
            "seq": run.seq,
            "status": run.status.value,
        }
        if not run.status.final:
            fields["unfinished_seq"] = run.seq
        return fields

    def _run(self, snap: Any) -> Run:
        data = snap.to_dict() or {}
        return Run.model_validate_json(read_doc(data)).model_copy(update={"seq": int(data["seq"])})

    def _add_steps(self, batch: _Batch, run: Run, steps: Sequence[StepRecord]) -> None:
        for order, step in enumerate(steps):
            stored = step.model_copy(update={"version": 1})
            batch.create(self._step_ref(run.id, step.step_id), _step_fields(stored, order, run.seq))

    def create_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        check_run_steps(run, steps)
        what = f"create run {run.id}"
        ref = self._run_ref(run.id)

        def attempt(fresh: bool) -> Run:
            # A new run's id is new: its create (conditional on no such document) says
            # whether it exists; only after a lost commit is it read to tell.
            if fresh and self._get(ref, what).exists:
                raise ConflictError(f"run {run.id} already exists")
            batch = self._batch()
            stored = run.model_copy(update={"seq": self._counter(batch, RUN_COUNTER, what, fresh)})
            batch.create(ref, {**self._run_fields(stored), "begun": bool(steps)})
            self._add_steps(batch, stored, steps)
            batch.commit(what)
            return stored

        return _retry(what, attempt)

    def get_run(self, run_id: str) -> Run | None:
        snap = self._get(self._run_ref(run_id), f"get run {run_id}")
        return self._run(snap) if snap.exists else None

    def list_runs(self, limit: int = 50, status: RunStatus | None = None) -> list[Run]:
        if limit <= 0:
            return []
        query = self._col(RUNS)
        if status is not None:
            query = query.where(filter=FieldFilter("status", "==", status.value))
        query = query.order_by("seq", direction=firestore.Query.DESCENDING).limit(limit)
        return [self._run(s) for s in self._query(query, "list runs")]

    def _change_run(
        self,
        run: Run,
        what: str,
        check: Callable[[Run, bool], None],
        steps: Sequence[StepRecord] = (),
    ) -> Run:
        """Replace the run if ``check(stored run, it has steps)`` passes, adding ``steps``."""
        ref = self._run_ref(run.id)

        def attempt(fresh: bool) -> Run:
            snap, remembered = self._snap(ref, what, fresh)
            try:
                if not snap.exists:
                    raise NotFoundError(f"run not found: {run.id}")
                stored = self._run(snap)
                begun = bool((snap.to_dict() or {}).get("begun"))
                check(stored, begun)
            except (NotFoundError, ConflictError):
                if remembered:
                    raise _Stale from None
                raise
            updated = run.model_copy(update={"seq": stored.seq})
            fields = _replacing(self._run_fields(updated), ("doc", "docz", "unfinished_seq"))
            fields["begun"] = begun or bool(steps)
            batch = self._batch()
            batch.update(ref, fields, option=self._option(snap))
            self._add_steps(batch, updated, steps)
            batch.commit(what)
            return updated

        return _retry(what, attempt)

    def update_run(self, run: Run, expect: RunStatus | None = None) -> Run:
        def check(stored: Run, _begun: bool) -> None:
            if stored.status.final:
                raise ConflictError(f"run {run.id} is already {stored.status}")
            if expect is not None and stored.status != expect:
                raise ConflictError(f"run {run.id} is {stored.status}, not {expect}")

        return self._change_run(run, f"update run {run.id}", check)

    def begin_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        check_run_steps(run, steps)

        def check(stored: Run, begun: bool) -> None:
            if stored.status != RunStatus.QUEUED or begun:
                raise ConflictError(f"run {run.id} has already begun")

        # The step creates are conditional too: a concurrent begin loses on the run's
        # precondition or on a step's create, and either way the batch changes nothing.
        return self._change_run(run, f"begin run {run.id}", check, steps)

    def list_unfinished_runs(self) -> list[Run]:
        query = self._col(RUNS).where(filter=FieldFilter("unfinished_seq", ">", 0))
        snaps = self._query(query.order_by("unfinished_seq"), "list unfinished runs")
        return [self._run(s) for s in snaps]

    # -- steps ---------------------------------------------------------------------------

    def list_steps(self, run_id: str) -> list[StepRecord]:
        snaps = self._query(self._steps(run_id).order_by("order"), f"list steps of {run_id}")
        return [_step(s) for s in snaps]

    def get_step(self, run_id: str, step_id: str) -> StepRecord | None:
        snap = self._get(self._step_ref(run_id, step_id), f"get step {run_id}/{step_id}")
        return _step(snap) if snap.exists else None

    def get_steps(self, run_id: str, step_ids: Sequence[str]) -> dict[str, StepRecord]:
        refs = [self._step_ref(run_id, step_id) for step_id in dict.fromkeys(step_ids)]
        if not refs:
            return {}
        with gcp_errors(f"get {len(refs)} steps of {run_id}"):  # one batched read
            snaps = [self._seen(snap) for snap in self._db.get_all(refs)]
        found = (_step(snap) for snap in snaps if snap.exists)
        return {step.step_id: step for step in found}

    def has_unfinished_steps(self, run_id: str) -> bool:
        query = self._steps(run_id).where(filter=FieldFilter("final", "==", False)).limit(1)
        return bool(self._query(query, f"unfinished steps of {run_id}"))

    def _change_step(
        self,
        run_id: str,
        step_id: str,
        what: str,
        decide: Callable[[StepRecord | None], tuple[StepRecord | None, T]],
    ) -> T:
        """Read the step, let ``decide`` return (the new step or ``None``, the result), and
        write the new step conditionally; on a lost race read and decide again."""
        ref = self._step_ref(run_id, step_id)

        def attempt(fresh: bool) -> T:
            snap, remembered = self._snap(ref, what, fresh)
            current = _step(snap) if snap.exists else None
            try:
                new, result = decide(current)
            except (NotFoundError, ConflictError):
                if remembered:
                    raise _Stale from None
                raise
            if new is None:
                if remembered:
                    raise _Stale  # "nothing to write" is decided on a fresh read only
                return result
            data = snap.to_dict() or {}
            fields = _step_fields(new, int(data["order"]), int(data["run_seq"]))
            self._update(ref, snap, _replacing(fields, ("doc", "docz", *_SPARSE_STEP)), what)
            return result

        return _retry(what, attempt)

    def claim_step(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> StepRecord | None:
        def decide(step: StepRecord | None) -> tuple[StepRecord | None, StepRecord | None]:
            if step is None or not claimable(step, now):
                return None, None
            new = claimed(step, owner, lease_s, now)
            return new, new

        return self._change_step(run_id, step_id, f"claim step {run_id}/{step_id}", decide)

    def renew_lease(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> bool:
        def decide(step: StepRecord | None) -> tuple[StepRecord | None, bool]:
            if step is None or not holds(step, owner):
                return None, False
            return renewed(step, lease_s, now), True

        return self._change_step(run_id, step_id, f"renew lease {run_id}/{step_id}", decide)

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

        def decide(step: StepRecord | None) -> tuple[StepRecord | None, StepRecord | None]:
            if step is None or not holds(step, owner):
                return None, None
            new = finished(step, status, error, now, not_before)
            return new, new

        return self._change_step(run_id, step_id, f"finish step {run_id}/{step_id}", decide)

    def update_step(self, step: StepRecord, expected_version: int) -> StepRecord:
        def decide(stored: StepRecord | None) -> tuple[StepRecord | None, StepRecord]:
            if stored is None:
                raise NotFoundError(f"step not found: {step.run_id}/{step.step_id}")
            if stored.version != expected_version:
                raise ConflictError(
                    f"step {step.step_id}: expected version {expected_version}, "
                    f"found {stored.version}"
                )
            new = step.model_copy(update={"version": expected_version + 1})
            return new, new

        what = f"update step {step.run_id}/{step.step_id}"
        return self._change_step(step.run_id, step.step_id, what, decide)

    def _steps_by(self, field: str, upto: float, what: str) -> list[tuple[int, int, StepRecord]]:
        group = self._db.collection_group(f"{self._p}{STEPS}")
        snaps = self._query(group.where(filter=FieldFilter(field, "<=", upto)), what)
        found = []
        for snap in snaps:
            data = snap.to_dict() or {}
            found.append((int(data["run_seq"]), int(data["order"]), _step(snap)))
        found.sort(key=lambda t: (t[0], t[1]))
        return found

    def list_expired_leases(self, now: float) -> list[StepRecord]:
        found = self._steps_by("lease_at", now, "list expired leases")
        return [s for _, _, s in found if lease_expired(s, now)]

    def list_stuck_ready_steps(self, older_than: float) -> list[StepRecord]:
        found = self._steps_by("ready_at", older_than, "list stuck ready steps")
        return [s for _, _, s in found if stuck_ready(s, older_than)]

    # -- audit events ----------------------------------------------------------------------

    def append_event(self, event: AuditEvent) -> AuditEvent:
        what = "append event"

        def attempt(fresh: bool) -> AuditEvent:
            batch = self._batch()
            seq = self._counter(batch, EVENT_COUNTER, what, fresh)
            stored = event.model_copy(update={"seq": seq})
            fields = {
                **doc_fields(stored.model_dump_json(exclude={"seq"}), "event"),
                "seq": stored.seq,
                "enclave_id": stored.enclave_id,
                "run_id": stored.run_id,
            }
            batch.create(self._col(EVENTS).document(seq_text(stored.seq)), fields)
            batch.commit(what)
            return stored

        return _retry(what, attempt)

    def list_events(
        self, enclave_id: str | None = None, limit: int = 100, *, run_id: str | None = None
    ) -> list[AuditEvent]:
        if limit <= 0:
            return []
        query = self._col(EVENTS)
        if enclave_id is not None:
            query = query.where(filter=FieldFilter("enclave_id", "==", enclave_id))
        if run_id is not None:
            query = query.where(filter=FieldFilter("run_id", "==", run_id))
        query = query.order_by("seq", direction=firestore.Query.DESCENDING).limit(limit)
        events = []
        for snap in self._query(query, "list events"):
            data = snap.to_dict() or {}
            event = AuditEvent.model_validate_json(read_doc(data))
            events.append(event.model_copy(update={"seq": int(data["seq"])}))
        events.reverse()
        return events

    # -- IaC runs ----------------------------------------------------------------------------

    def put_iac_run(self, run: IacRun) -> None:
        what = f"put IaC run {run.id}"
        ref = self._col(IAC_RUNS).document(run.id)

        def attempt(fresh: bool) -> None:
            snap, _ = self._snap(ref, what, fresh)
            batch = self._batch()
            if snap.exists:  # a replacement keeps its insertion number (ties keep their order)
                order = int(str((snap.to_dict() or {})["sort"]).rsplit("#", 1)[1])
            else:
                order = self._counter(batch, IAC_COUNTER, what, fresh)
            fields = {
                **doc_fields(run.model_dump_json(), f"IaC run {run.id}"),
                "partition": f"{run.enclave_id}/{run.partition_id}",
                "sort": f"{run.started_at}#{seq_text(order)}",
            }
            if snap.exists:
                batch.update(ref, _replacing(fields, ("doc", "docz")), option=self._option(snap))
            else:
                batch.create(ref, fields)
            batch.commit(what)

        _retry(what, attempt)

    def get_iac_run(self, run_id: str) -> IacRun | None:
        snap = self._get(self._col(IAC_RUNS).document(run_id), f"get IaC run {run_id}")
        return IacRun.model_validate_json(read_doc(snap.to_dict() or {})) if snap.exists else None

    def list_iac_runs(self, enclave_id: str, partition_id: str, limit: int = 100) -> list[IacRun]:
        if limit <= 0:
            return []
        query = (
            self._col(IAC_RUNS)
            .where(filter=FieldFilter("partition", "==", f"{enclave_id}/{partition_id}"))
            .order_by("sort", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        snaps = self._query(query, f"list IaC runs of {enclave_id}/{partition_id}")
        return [IacRun.model_validate_json(read_doc(s.to_dict() or {})) for s in snaps]

    # -- drift -------------------------------------------------------------------------------

    def put_drift(self, record: DriftRecord) -> None:
        fields = {
            **doc_fields(record.model_dump_json(), "drift record"),
            "enclave_id": record.enclave_id,
            "partition_id": record.partition_id,
        }
        ref = self._col(DRIFT).document(drift_id(record.enclave_id, record.partition_id))
        with gcp_errors("put drift"):
            ref.set(fields)

    def get_drift(self, enclave_id: str, partition_id: str) -> DriftRecord | None:
        ref = self._col(DRIFT).document(drift_id(enclave_id, partition_id))
        snap = self._get(ref, "get drift")
        return (
            DriftRecord.model_validate_json(read_doc(snap.to_dict() or {})) if snap.exists else None
        )

    def delete_drift(self, enclave_id: str, partition_id: str) -> None:
        with gcp_errors("delete drift"):
            self._col(DRIFT).document(drift_id(enclave_id, partition_id)).delete()

    def list_drift(self, enclave_id: str | None = None) -> list[DriftRecord]:
        query = self._col(DRIFT)
        if enclave_id is not None:
            query = query.where(filter=FieldFilter("enclave_id", "==", enclave_id))
        records = [
            DriftRecord.model_validate_json(read_doc(s.to_dict() or {}))
            for s in self._query(query, "list drift")
        ]
        return sorted(records, key=lambda r: (r.enclave_id, r.partition_id))

    # -- Terraform locks and state pointers ----------------------------------------------------

    def lock(self, key: str, info: Mapping[str, JsonValue]) -> TfLock | None:
        what = f"lock {key}"
        ref = self._col(TF_LOCKS).document(quoted(key))

        def attempt(_fresh: bool) -> TfLock | None:
            try:
                self._create(ref, {"key": key, "info": json.dumps(dict(info))}, what)
                return None
            except _Lost:
                holder = self.get_lock(key)
                if holder is None:  # released between our create and our read
                    raise
                return holder

        return _retry(what, attempt)

    def unlock(self, key: str, lock_id: str | None) -> TfLock | None:
        what = f"unlock {key}"
        ref = self._col(TF_LOCKS).document(quoted(key))

        def attempt(fresh: bool) -> TfLock | None:
            snap, remembered = self._snap(ref, what, fresh)
            if not snap.exists:
                if remembered:
                    raise _Stale
                return None
            holder = TfLock(key=key, info=json.loads((snap.to_dict() or {})["info"]))
            if lock_id is not None and lock_id != holder.lock_id:
                if remembered:
                    raise _Stale
                return holder
            self._delete(ref, snap, what)
            return None

        return _retry(what, attempt)

    def get_lock(self, key: str) -> TfLock | None:
        snap = self._get(self._col(TF_LOCKS).document(quoted(key)), f"get lock {key}")
        if not snap.exists:
            return None
        return TfLock(key=key, info=json.loads((snap.to_dict() or {})["info"]))

    def get_tf_state(self, key: str) -> str | None:
        snap = self._get(self._col(TF_STATES).document(quoted(key)), f"get state {key}")
        return str((snap.to_dict() or {})["blob_key"]) if snap.exists else None

    def _state_fields(self, key: str, blob_key: str) -> dict[str, Any]:
        return {"key": key, "enclave_id": key.split("/", 1)[0], "blob_key": blob_key}

    def set_tf_state(self, key: str, blob_key: str | None) -> None:
        ref = self._col(TF_STATES).document(quoted(key))
        self._memory.forget(ref.path)  # an unconditional write: nothing to remember it by
        with gcp_errors(f"set state {key}"):
            if blob_key is None:
                ref.delete()
            else:
                ref.set(self._state_fields(key, blob_key))

    def list_tf_states(self, enclave_id: str) -> list[str]:
        query = self._col(TF_STATES).where(filter=FieldFilter("enclave_id", "==", enclave_id))
        keys = [str((s.to_dict() or {})["key"]) for s in self._query(query, "list states")]
        return sorted(k for k in keys if k.startswith(f"{enclave_id}/"))

    def swap_tf_state(self, key: str, expected: str | None, blob_key: str) -> bool:
        what = f"swap state {key}"
        ref = self._col(TF_STATES).document(quoted(key))

        def attempt(fresh: bool) -> bool:
            snap, remembered = self._snap(ref, what, fresh)
            current = str((snap.to_dict() or {})["blob_key"]) if snap.exists else None
            if current != expected:
                if remembered:
                    raise _Stale
                return False
            self._write(ref, snap, self._state_fields(key, blob_key), what)
            return True

        return _retry(what, attempt)

    # -- partition mutex -------------------------------------------------------------------------

    def acquire_partition(self, key: str, owner: str, lease_s: float, now: float) -> bool:
        what = f"acquire partition {key}"
        ref = self._col(MUTEXES).document(quoted(key))

        def attempt(fresh: bool) -> bool:
            snap, remembered = self._snap(ref, what, fresh)
            data = snap.to_dict() or {}
            if snap.exists and data["owner"] != owner and float(data["expires_at"]) > now:
                if remembered:
                    raise _Stale
                return False
            self._write(ref, snap, {"owner": owner, "expires_at": now + lease_s}, what)
            return True

        return _retry(what, attempt)

    def release_partition(self, key: str, owner: str) -> bool:
        what = f"release partition {key}"
        ref = self._col(MUTEXES).document(quoted(key))

        def attempt(fresh: bool) -> bool:
            snap, remembered = self._snap(ref, what, fresh)
            if not snap.exists or (snap.to_dict() or {})["owner"] != owner:
                if remembered:
                    raise _Stale
                return False
            self._delete(ref, snap, what)
            return True

        return _retry(what, attempt)


def open_store(project: str, database: str = "(default)", prefix: str = "") -> FirestoreStateStore:
    """A store over a new client (``FIRESTORE_EMULATOR_HOST`` points it at an emulator)."""
    return FirestoreStateStore(firestore.Client(project=project, database=database), prefix)


__all__ = ["FirestoreStateStore", "open_store"]
