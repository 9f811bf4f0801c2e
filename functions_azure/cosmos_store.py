"""``CosmosStateStore``: the StateStore on one Cosmos DB (NoSQL) container, partition key
``/pk``. The layout is in README.md ("The Cosmos store's layout"); every document is
``{id, pk, type, doc, ...}`` with the record's JSON under ``doc`` and the fields the store
queries beside it.

Every compare-and-swap is one single-item write conditioned on the etag of the read that
decided it (``MatchConditions.IfNotModified``): a 412 means another writer got there first,
and the store reads again and decides again. Creating a document that must not exist is a
create (409 when it does). Event and IaC-run numbers are a patch ``incr``, atomic on one
item; run numbers go through a turnstile on the run counter (``_take_run_seq``), so runs
become visible in seq order as the engine needs. Transactional batches are never relied
on: the local stand-in does not make them atomic. Document ids cannot hold ``/ \\ ? #``,
so keys are escaped (``_id``). Runs, IaC runs, drift records and Terraform documents each
share one logical partition (20 GB, 10,000 RU/s): ample for their volume, and what keeps
their listings single-partition queries.

Known gaps (issue 16, next session):

* ``create_run`` writes the steps (creates, in plan order) and then the run document, so a
  run is never seen with part of its plan; a process dying in between leaves steps no run
  refers to, and the run id taken. ``begin_run`` claims the queued run, writes the steps,
  then commits the run as running: while it writes, the run is still queued and its steps
  already readable (the sweeper could list them as stuck ready steps before the commit).
  Readers checking a plan token, as DynamoDB's store does, would close that window.
* Items are not compressed: a document above Cosmos's 2 MB limit fails with the service's
  413 (``AzureServiceError``) instead of a clear error naming the record.
* ``has_unfinished_steps`` and the listings are queries: exact for the writer's own client
  (session consistency); other processes need the account at Strong or Bounded Staleness
  consistency, or the read of their own write's session token, for the same guarantee.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions

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
    iso_time,
    ready_since,
)
from nclav.state import EnclaveState

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from azure.cosmos import ContainerProxy
    from pydantic import JsonValue

Doc = dict[str, Any]
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


def _json(model: Any, **options: Any) -> Any:
    return json.loads(model.model_dump_json(**options))


def _plain(doc: Doc) -> Doc:
    """``doc`` without the system properties Cosmos adds (``_etag``, ``_rid``, ``_ts``, ...)."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def _claimable(step: StepRecord, now: float) -> bool:
    if step.status == StepStatus.READY:
        return step.not_before is None or step.not_before <= now
    if step.status == StepStatus.RUNNING:
        return step.lease_expires_at is not None and step.lease_expires_at <= now
    return False


class CosmosStateStore:
    def __init__(self, container: ContainerProxy) -> None:
        self.container = container

    # -- single documents ----------------------------------------------------------------------

    def _read(self, pk: str, doc_id: str) -> Doc | None:
        try:
            with azure_errors(f"cosmos read {pk}/{doc_id}"):
                return dict(self.container.read_item(doc_id, partition_key=pk))
        except NotFoundError:
            return None

    def _create(self, doc: Doc) -> Doc:
        """Raises ``ConflictError`` if the document exists."""
        with azure_errors(f"cosmos create {doc['pk']}/{doc['id']}"):
            return dict(self.container.create_item(doc))

    def _replace(self, doc: Doc, etag: str) -> Doc:
        """Raises ``ConflictError`` if the document changed since ``etag`` was read."""
        with azure_errors(f"cosmos replace {doc['pk']}/{doc['id']}"):
            return dict(
                self.container.replace_item(
                    doc["id"], doc, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            )

    def _delete(self, pk: str, doc_id: str, etag: str | None = None) -> None:
        condition: dict[str, Any] = (
            {} if etag is None else {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        )
        with azure_errors(f"cosmos delete {pk}/{doc_id}"):
            self.container.delete_item(doc_id, partition_key=pk, **condition)

    def _upsert(self, doc: Doc) -> None:
        with azure_errors(f"cosmos upsert {doc['pk']}/{doc['id']}"):
            self.container.upsert_item(doc)

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
            return list(self.container.query_items(sql, parameters=params, **scope))

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
        return EnclaveState.model_validate(doc["doc"]), int(doc["version"])

    def list_enclaves(self) -> list[EnclaveState]:
        docs = self._query("SELECT * FROM c WHERE c.pk = @pk", ENCLAVES)
        states = [EnclaveState.model_validate(d["doc"]) for d in docs]
        return sorted(states, key=lambda s: s.enclave_id)

    def put_enclave(self, state: EnclaveState, expected_version: int | None) -> int:
        doc_id = _id(state.enclave_id)
        current = self._read(ENCLAVES, doc_id)
        version = int(current["version"]) if current else None
        if version != expected_version:
            raise ConflictError(
                f"enclave {state.enclave_id}: expected version {expected_version}, found {version}"
            )
        new = {
            "id": doc_id,
            "pk": ENCLAVES,
            "type": "enclave",
            "version": (version or 0) + 1,
            "doc": _json(state, by_alias=True),
        }
        try:
            if current is None:
                self._create(new)
            else:
                self._replace(new, current["_etag"])
        except ConflictError as exc:
            raise ConflictError(
                f"enclave {state.enclave_id}: changed meanwhile (expected {expected_version})"
            ) from exc
        return int(new["version"])

    def delete_enclave(self, enclave_id: str, expected_version: int) -> None:
        current = self._read(ENCLAVES, _id(enclave_id))
        version = int(current["version"]) if current else None
        if current is None or version != expected_version:
            raise ConflictError(
                f"enclave {enclave_id}: expected version {expected_version}, found {version}"
            )
        try:
            self._delete(ENCLAVES, current["id"], current["_etag"])
        except (ConflictError, NotFoundError) as exc:
            raise ConflictError(f"enclave {enclave_id}: changed meanwhile") from exc

    # -- runs ----------------------------------------------------------------------------

    def _run_doc(self, run: Run, seq: int, step_count: int) -> Doc:
        return {
            "id": _id(run.id),
            "pk": RUNS,
            "type": "run",
            "seq": seq,
            "status": str(run.status),
            "final": run.status.final,
            "steps": step_count,
            "doc": _json(run, exclude={"seq"}),
        }

    @staticmethod
    def _run_from(doc: Doc) -> Run:
        return Run.model_validate({**doc["doc"], "seq": doc["seq"]})

    def _write_steps(self, run_id: str, steps: Sequence[StepRecord]) -> None:
        for position, step in enumerate(steps):
            self._upsert(self._step_doc(step.model_copy(update={"version": 1}), position))

    def _create_steps(self, run_id: str, steps: Sequence[StepRecord]) -> None:
        """Create the steps in plan order; ``ConflictError`` at the first that exists (two
        creators of one run meet at its first step, so the loser writes nothing)."""
        for position, step in enumerate(steps):
            try:
                self._create(self._step_doc(step.model_copy(update={"version": 1}), position))
            except ConflictError as exc:
                raise ConflictError(f"run {run_id} already exists") from exc

    def _step_doc(self, step: StepRecord, position: int) -> Doc:
        return {
            "id": _id(step.step_id),
            "pk": _steps_pk(step.run_id),
            "type": "step",
            "pos": position,
            "run_id": step.run_id,
            "status": str(step.status),
            "final": step.status.final,
            "lease_expires_at": step.lease_expires_at,
            "ready_at": ready_since(step) if step.status == StepStatus.READY else None,
            "doc": _json(step),
        }

    def create_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        # Steps first, the run document last: a run is seen only with its whole plan, as
        # DynamoDB's store does for plans too big for one transaction.
        check_run_steps(run, steps)
        if self._read(RUNS, _id(run.id)) is not None:
            raise ConflictError(f"run {run.id} already exists")
        self._create_steps(run.id, steps)
        seq = self._take_run_seq(run.id)
        try:
            self._create(self._run_doc(run, seq, len(steps)))
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
        while True:
            doc = self._read(COUNTERS, "runs")
            if doc is None:
                with contextlib.suppress(ConflictError):  # (created meanwhile)
                    self._create({"id": "runs", "pk": COUNTERS, "type": "counter", "n": 0})
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
            if time.monotonic() > deadline:
                raise TemporaryError(
                    f"run {run_id}: run creation is busy (run {doc['pending']} is being created)"
                )
            time.sleep(0.01)

    def _release_run_seq(self, run_id: str) -> None:
        while True:
            doc = self._read(COUNTERS, "runs")
            if doc is None or doc.get("pending") != run_id:
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
        while True:
            doc = self._read(RUNS, _id(run.id))
            if doc is None:
                raise NotFoundError(f"run not found: {run.id}")
            stored = self._run_from(doc)
            if stored.status.final:
                raise ConflictError(f"run {run.id} is already {stored.status}")
            if expect is not None and stored.status != expect:
                raise ConflictError(f"run {run.id} is {stored.status}, not {expect}")
            try:
                self._replace(self._run_doc(run, stored.seq, int(doc["steps"])), doc["_etag"])
            except ConflictError:
                continue  # changed meanwhile: decide again on what it is now
            return run.model_copy(update={"seq": stored.seq})

    def begin_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        check_run_steps(run, steps)
        doc = self._read(RUNS, _id(run.id))
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
            raise ConflictError(f"run {run.id} has already begun") from exc
        if previous:
            self._delete_steps(run.id)
        self._write_steps(run.id, steps)
        try:
            self._replace(self._run_doc(run, stored.seq, len(steps)), claimed["_etag"])
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

    def _step_docs(self, run_id: str) -> list[Doc]:
        pk = _steps_pk(run_id)
        docs = self._query("SELECT * FROM c WHERE c.pk = @pk", pk)
        return sorted(docs, key=lambda d: int(d["pos"]))

    def list_steps(self, run_id: str) -> list[StepRecord]:
        return [StepRecord.model_validate(d["doc"]) for d in self._step_docs(run_id)]

    def get_step(self, run_id: str, step_id: str) -> StepRecord | None:
        doc = self._read(_steps_pk(run_id), _id(step_id))
        return None if doc is None else StepRecord.model_validate(doc["doc"])

    def get_steps(self, run_id: str, step_ids: Sequence[str]) -> dict[str, StepRecord]:
        ids = [_id(step_id) for step_id in dict.fromkeys(step_ids)]
        if not ids:
            return {}
        sql = "SELECT * FROM c WHERE c.pk = @pk AND ARRAY_CONTAINS(@ids, c.id)"
        found = (
            StepRecord.model_validate(d["doc"])
            for d in self._query(sql, _steps_pk(run_id), ids=ids)
        )
        return {step.step_id: step for step in found}

    def has_unfinished_steps(self, run_id: str) -> bool:
        pk = _steps_pk(run_id)
        found = self._query("SELECT VALUE COUNT(1) FROM c WHERE c.pk = @pk AND c.final = false", pk)
        return bool(found and found[0])

    def _change(self, run_id: str, step_id: str, decide: Any) -> StepRecord | None:
        """Read the step, let ``decide(step)`` return its new fields (or None: leave it), and
        write them conditioned on the etag read; again from the read when another writer won."""
        while True:
            doc = self._read(_steps_pk(run_id), _id(step_id))
            if doc is None:
                return None
            step = StepRecord.model_validate(doc["doc"])
            update = decide(step)
            if update is None:
                return None
            new = step.model_copy(update={**update, "version": step.version + 1})
            try:
                self._replace(self._step_doc(new, int(doc["pos"])), doc["_etag"])
            except (ConflictError, NotFoundError):
                continue
            return new

    def claim_step(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> StepRecord | None:
        def decide(step: StepRecord) -> dict[str, Any] | None:
            if not _claimable(step, now):
                return None
            return {
                "status": StepStatus.RUNNING,
                "attempts": step.attempts + 1,
                "lease_owner": owner,
                "lease_expires_at": now + lease_s,
                "not_before": None,
                "started_at": iso_time(now),
            }

        return self._change(run_id, step_id, decide)

    @staticmethod
    def _holds(step: StepRecord, owner: str) -> bool:
        return step.status == StepStatus.RUNNING and step.lease_owner == owner

    def renew_lease(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> bool:
        def decide(step: StepRecord) -> dict[str, Any] | None:
            return {"lease_expires_at": now + lease_s} if self._holds(step, owner) else None

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

        def decide(step: StepRecord) -> dict[str, Any] | None:
            if not self._holds(step, owner):
                return None
            return {
                "status": status,
                "error": error,
                "finished_at": iso_time(now),
                "lease_owner": None,
                "lease_expires_at": None,
                "not_before": not_before,
                "sent_at": now if status == StepStatus.READY else step.sent_at,
            }

        return self._change(run_id, step_id, decide)

    def update_step(self, step: StepRecord, expected_version: int) -> StepRecord:
        doc = self._read(_steps_pk(step.run_id), _id(step.step_id))
        if doc is None:
            raise NotFoundError(f"step not found: {step.run_id}/{step.step_id}")
        stored = StepRecord.model_validate(doc["doc"])
        if stored.version != expected_version:
            raise ConflictError(
                f"step {step.step_id}: expected version {expected_version}, found {stored.version}"
            )
        new = step.model_copy(update={"version": expected_version + 1})
        try:
            self._replace(self._step_doc(new, int(doc["pos"])), doc["_etag"])
        except (ConflictError, NotFoundError) as exc:
            raise ConflictError(f"step {step.step_id}: changed meanwhile") from exc
        return new

    def _steps_where(self, condition: str, **parameters: Any) -> list[StepRecord]:
        """Steps of every run matching ``condition``: oldest run first, each in plan order.

        The sweeper's two listings, the store's only cross-partition queries."""
        docs = self._query(
            f"SELECT * FROM c WHERE c.type = 'step' AND {condition}", None, **parameters
        )
        seqs: dict[str, int] = {}
        for run_id in {d["run_id"] for d in docs}:
            run = self._read(RUNS, _id(run_id))
            seqs[run_id] = int(run["seq"]) if run else 0
        docs.sort(key=lambda d: (seqs[d["run_id"]], int(d["pos"])))
        return [StepRecord.model_validate(d["doc"]) for d in docs]

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
        seq = self._next("events")
        self._create(
            {
                "id": f"{seq:020d}",
                "pk": EVENTS,
                "type": "event",
                "seq": seq,
                "enclave_id": event.enclave_id,
                "run_id": event.run_id,
                "doc": _json(event, exclude={"seq"}),
            }
        )
        return event.model_copy(update={"seq": seq})

    def list_events(
        self, enclave_id: str | None = None, limit: int = 100, *, run_id: str | None = None
    ) -> list[AuditEvent]:
        if limit <= 0:
            return []
        where, extra = "c.pk = @pk", {}
        if enclave_id is not None:
            where, extra["enclave"] = where + " AND c.enclave_id = @enclave", enclave_id
        if run_id is not None:
            where, extra["run"] = where + " AND c.run_id = @run", run_id
        docs = self._query(
            f"SELECT TOP {int(limit)} * FROM c WHERE {where} ORDER BY c.seq DESC",
            EVENTS,
            **extra,
        )
        events = [AuditEvent.model_validate({**d["doc"], "seq": d["seq"]}) for d in docs]
        return events[::-1]

    # -- IaC runs ------------------------------------------------------------------------------

    def put_iac_run(self, run: IacRun) -> None:
        current = self._read(IAC, _id(run.id))
        n = int(current["n"]) if current else self._next("iac")
        self._upsert(
            {
                "id": _id(run.id),
                "pk": IAC,
                "type": "iac_run",
                "n": n,
                "enclave_id": run.enclave_id,
                "partition_id": run.partition_id,
                "started_at": run.started_at,
                "doc": _json(run),
            }
        )

    def get_iac_run(self, run_id: str) -> IacRun | None:
        doc = self._read(IAC, _id(run_id))
        return None if doc is None else IacRun.model_validate(doc["doc"])

    def list_iac_runs(self, enclave_id: str, partition_id: str, limit: int = 100) -> list[IacRun]:
        docs = self._query(
            "SELECT * FROM c WHERE c.pk = @pk AND c.enclave_id = @e AND c.partition_id = @p",
            IAC,
            e=enclave_id,
            p=partition_id,
        )
        docs.sort(key=lambda d: (d["started_at"], int(d["n"])), reverse=True)
        return [IacRun.model_validate(d["doc"]) for d in docs[: max(limit, 0)]]

    # -- drift ---------------------------------------------------------------------------------

    def put_drift(self, record: DriftRecord) -> None:
        self._upsert(
            {
                "id": _id(f"{record.enclave_id}/{record.partition_id}"),
                "pk": DRIFT,
                "type": "drift",
                "enclave_id": record.enclave_id,
                "partition_id": record.partition_id,
                "doc": _json(record),
            }
        )

    def get_drift(self, enclave_id: str, partition_id: str) -> DriftRecord | None:
        doc = self._read(DRIFT, _id(f"{enclave_id}/{partition_id}"))
        return None if doc is None else DriftRecord.model_validate(doc["doc"])

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
        return [DriftRecord.model_validate(d["doc"]) for d in docs]

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
        while True:
            doc = self._read(TF, _id(f"lock:{key}"))
            if doc is None:
                return None
            holder = TfLock(key=key, info=doc["info"])
            if lock_id is not None and lock_id != holder.lock_id:
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
        doc = self._read(TF, _id(f"state:{key}"))
        current = None if doc is None else str(doc["blob_key"])
        if current != expected:
            return False
        try:
            if doc is None:
                self._create(self._state_doc(key, blob_key))
            else:
                self._replace(self._state_doc(key, blob_key), doc["_etag"])
        except (ConflictError, NotFoundError):
            return False
        return True

    # -- partition mutex -------------------------------------------------------------------------

    def acquire_partition(self, key: str, owner: str, lease_s: float, now: float) -> bool:
        doc_id = _id(f"mutex:{key}")
        while True:
            doc = self._read(TF, doc_id)
            new = {"id": doc_id, "pk": TF, "type": "mutex", "owner": owner, "until": now + lease_s}
            try:
                if doc is None:
                    self._create(new)
                    return True
                if doc["owner"] != owner and float(doc["until"]) > now:
                    return False
                self._replace(new, doc["_etag"])
                return True
            except (ConflictError, NotFoundError):
                continue

    def release_partition(self, key: str, owner: str) -> bool:
        doc_id = _id(f"mutex:{key}")
        while True:
            doc = self._read(TF, doc_id)
            if doc is None or doc["owner"] != owner:
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
    return container


if TYPE_CHECKING:
    from nclav.ports import StateStore

    def _implements(adapter: CosmosStateStore) -> StateStore:  # mypy proves the port is implemented
        return adapter


__all__ = ["CosmosStateStore", "create_container"]
