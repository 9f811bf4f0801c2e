"""Runs: creating, beginning and finishing them, each one atomic commit.

A run's seq comes from the ``COUNTER/RUN`` document, moved by a compare-and-set inside the
same transaction that writes the run: runs therefore become visible in seq order, which the
engine's ``kick`` relies on (an earlier unfinished run is seen whenever a later one is).

Every commit also writes the run's ``#STEPS_LEFT`` count (``has_unfinished_steps``) in the
same transaction, so the count always matches the committed steps.

A plan that fits one transaction (~96 steps on DynamoDB) commits in it. A bigger one cannot,
so its steps are written first under a fresh ``plan`` token and the run document, written
last, commits them by naming that token; readers ignore every step whose run document is
absent or names another plan. ``begin_run`` of a big plan first claims the queued run
(``begin_claim``), so two workers never write one run's steps at once; a claim left by a
worker that died mid-write expires ``CLAIM_TTL_S`` after it was taken (longer than Lambda's
15-minute ceiling, so its owner is gone) and may then be taken over.

**Without atomic transactions** (``Documents.atomic`` false: Cosmos DB) every plan takes the
big plan's way (steps first, then the run document naming them), and seq order comes from a
turnstile instead of a transaction: ``create_run`` takes the next number and marks the counter
``pending`` in one conditional patch (``_take_turn``), writes the run, then clears the mark;
the next creator waits for it, so run ``n`` is visible before ``n + 1`` is even numbered. A
mark left by a process that died is taken over ``TURN_HOLD_S`` after it was set (a failed
creation leaves a gap in the numbers, never a repeat). There are no unfinished-run copies and
no steps-left count to keep in step: ``list_unfinished_runs`` is a consistent, filtered query
of the runs index, ``has_unfinished_steps`` one of the run's partition.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from nclav.docstore import layout as lay
from nclav.docstore.port import (
    ConditionFailedError,
    ContendedError,
    Delete,
    Patch,
    Put,
    Query,
    absent,
    doc_size,
    eq,
    key_of,
    le,
    lt,
    one_of,
)
from nclav.errors import ConflictError, NotFoundError, TemporaryError
from nclav.records import UNFINISHED_RUN, Run, RunStatus, check_run_steps, iso_time, new_id
from nclav.runtime import backoff
from nclav.runtime.stores import seq_text

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nclav.docstore.port import Cond, Doc, Documents, Write
    from nclav.records import StepRecord

_TX_STEP_BYTES = 2_000_000  # of DynamoDB's 4 MB; the run and its copy take at most 0.8 MB
_SEQ_ATTEMPTS = 12
CLAIM_TTL_S = 1_800.0
RUN_COUNTER = (lay.COUNTER, lay.RUNS)
TURN_HOLD_S = 60.0  # a turnstile mark older than this was left by a process that died
TURN_WAIT_S = 30.0  # how long create_run waits for another run's creation
_UNFINISHED = [s.value for s in UNFINISHED_RUN]


def _backoff(attempt: int) -> None:
    time.sleep(backoff(attempt + 1, 0.02, 1.0, jitter=0.5))


def _claim_cutoff(started_at: str | None) -> str:
    """Claims taken before this (``begin_at`` text) have expired; "" when none can be."""
    if started_at is None:
        return ""
    try:
        begun = datetime.strptime(started_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return ""
    return iso_time(begun.timestamp() - CLAIM_TTL_S)


class DocRuns:
    """The run methods of ``DocumentStateStore``."""

    docs: Documents

    def _fits(self, steps: Sequence[Doc], others: int) -> bool:
        if len(steps) + others > self.docs.max_transaction:
            return False
        return sum(doc_size(s) for s in steps) <= _TX_STEP_BYTES

    def create_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        check_run_steps(run, steps)
        plan = new_id() if steps else None
        docs = [
            lay.step_doc(s.model_copy(update={"version": 1}), i, str(plan))
            for i, s in enumerate(steps)
        ]
        if not self.docs.atomic:
            return self._create_in_turn(run, plan, docs)
        if not self._fits(docs, others=4):
            if self.docs.get(lay.run_key(run.id)) is not None:
                raise ConflictError(f"run {run.id} already exists")
            self.docs.batch_write(puts=docs)  # committed by the run document below
            docs = []
        for attempt in range(_SEQ_ATTEMPTS):
            counter = self.docs.get(RUN_COUNTER)
            last = int(counter["n"]) if counter is not None else 0
            stored = run.model_copy(update={"seq": last + 1})
            advance = absent("n") if last == 0 else eq("n", last)
            ops: list[Write] = [
                Patch(RUN_COUNTER, {"n": last + 1}, when=advance),
                Put(lay.run_doc(self.docs, stored, plan), when=absent("pk")),
                self._unfinished_op(stored),
                Put(lay.steps_left_doc(run.id, steps)),
                *(Put(d) for d in docs),
            ]
            try:
                self.docs.transact(ops)
            except ConditionFailedError as exc:
                if exc.failed(1):
                    raise ConflictError(f"run {run.id} already exists") from exc
            except ContendedError:
                pass  # another create held the counter at that instant
            else:
                return stored
            _backoff(attempt)  # another run took seq last + 1 first: read the counter again
        raise TemporaryError("run sequence counter too contended; try again", retry_after_s=1.0)

    def _create_in_turn(self, run: Run, plan: str | None, docs: list[Doc]) -> Run:
        """``create_run`` without transactions: in turn, steps first, the run last."""
        seq = self._take_turn(run.id)
        try:
            # In turn, no other creation runs: a run found absent here stays absent until
            # its document below, so its steps are never overwritten by a second creator.
            if docs and self.docs.get(lay.run_key(run.id)) is not None:
                raise ConflictError(f"run {run.id} already exists")
            self.docs.batch_write(puts=docs)  # committed by the run document below
            stored = run.model_copy(update={"seq": seq})
            try:
                self.docs.write(Put(lay.run_doc(self.docs, stored, plan), when=absent("pk")))
            except ConditionFailedError as exc:
                raise ConflictError(f"run {run.id} already exists") from exc
            return stored
        finally:
            self._end_turn(run.id)

    def _take_turn(self, run_id: str) -> int:
        """The next run seq, the counter marked ``pending`` by ``run_id`` in the same patch."""
        deadline, attempt = time.monotonic() + TURN_WAIT_S, 0
        while True:
            now = time.time()
            free = absent("pending") | le("since", now - TURN_HOLD_S)
            mark = Patch(RUN_COUNTER, {"pending": run_id, "since": now}, {"n": 1}, when=free)
            try:
                return int(self.docs.write(mark, returns="new")["n"])
            except ConditionFailedError as exc:
                if time.monotonic() > deadline:
                    busy = (exc.item or {}).get("pending")
                    raise TemporaryError(
                        f"run {run_id}: run creation is busy (run {busy} is being created)",
                        retry_after_s=1.0,
                    ) from exc
            attempt += 1
            _backoff(min(attempt, 6))

    def _end_turn(self, run_id: str) -> None:
        # Lost: the mark was taken over meanwhile (this process was too slow), nothing to clear.
        with contextlib.suppress(ConditionFailedError):
            clear = {"pending": None, "since": None}
            self.docs.write(Patch(RUN_COUNTER, clear, when=eq("pending", run_id)))

    def _unfinished_op(self, run: Run) -> Write:
        if run.status.final:
            return Delete((lay.UNFINISHED_RUNS, seq_text(run.seq)))
        return Put(lay.unfinished_doc(self.docs, run))

    def get_run(self, run_id: str) -> Run | None:
        doc = self.docs.get(lay.run_key(run_id))
        return lay.run_from(doc) if doc is not None else None

    def list_runs(self, limit: int = 50, status: RunStatus | None = None) -> list[Run]:
        if limit <= 0:
            return []
        if status is None:
            query = Query(lay.RUNS, lay.GSI1, forward=False, limit=limit)
        else:
            query = Query(f"{lay.RUNS}#{status.value}", lay.GSI2, forward=False, limit=limit)
        return [lay.run_from(d) for d in self.docs.query(query)]

    def list_unfinished_runs(self) -> list[Run]:
        if self.docs.atomic:
            found = self.docs.query(Query(lay.UNFINISHED_RUNS, consistent=True))
        else:
            where = one_of("status", _UNFINISHED)
            found = self.docs.query(Query(lay.RUNS, lay.GSI1, consistent=True, where=where))
        return [lay.run_from(d) for d in found]

    def _stored(self, run_id: str) -> Doc:
        doc = self.docs.get(lay.run_key(run_id))
        if doc is None:
            raise NotFoundError(f"run not found: {run_id}")
        return doc

    def update_run(self, run: Run, expect: RunStatus | None = None) -> Run:
        stored = self._stored(run.id)
        status = RunStatus(str(stored["status"]))
        if status.final:
            raise ConflictError(f"run {run.id} is already {status}")
        if expect is not None and status != expect:
            raise ConflictError(f"run {run.id} is {status}, not {expect}")
        updated = run.model_copy(update={"seq": int(stored["seq"])})
        allowed = UNFINISHED_RUN if expect is None else (expect,)
        when = one_of("status", [s.value for s in allowed])
        patch = Patch(lay.run_key(run.id), lay.run_fields(self.docs, updated), when=when)
        try:
            if self.docs.atomic:
                self.docs.transact([patch, self._unfinished_op(updated)])
            else:
                self.docs.write(patch)
        except ConditionFailedError as exc:
            raise ConflictError(f"run {run.id} was finalised meanwhile") from exc
        return updated

    def begin_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        check_run_steps(run, steps)
        token = new_id()
        docs = [
            lay.step_doc(s.model_copy(update={"version": 1}), i, token) for i, s in enumerate(steps)
        ]
        left = lay.steps_left_doc(run.id, steps)
        if not steps or (self.docs.atomic and self._fits(docs, others=3)):
            began = run.model_copy(update={"seq": int(self._stored(run.id)["seq"])})
            self._commit_begin(
                began, self._beginnable(run), token if steps else None, [left, *docs]
            )
            return began
        # The claim counts claims and returns the run (its seq): no read before it.
        claim = {"begin_claim": token, "begin_at": run.started_at or ""}
        patch = Patch(lay.run_key(run.id), claim, {"begin_claims": 1}, self._beginnable(run))
        try:
            claimed = self.docs.write(patch, returns="new")
        except ConditionFailedError as exc:
            if exc.item is None:
                raise NotFoundError(f"run not found: {run.id}") from exc
            raise ConflictError(f"run {run.id} has already begun") from exc
        began = run.model_copy(update={"seq": int(claimed["seq"])})
        if int(claimed["begin_claims"]) > 1:
            self._drop_steps(run.id)  # what an expired claimant had written
        self.docs.batch_write(puts=docs)
        self._commit_begin(began, eq("begin_claim", token), token, [left])
        return began

    @staticmethod
    def _beginnable(run: Run) -> Cond:
        free = absent("begin_claim") | lt("begin_at", _claim_cutoff(run.started_at))
        return eq("status", RunStatus.QUEUED.value) & absent("plan") & free

    def _commit_begin(self, run: Run, when: Cond, plan: str | None, docs: list[Doc]) -> None:
        fields = {**lay.run_fields(self.docs, run), "begin_claim": None, "begin_at": None}
        if plan is not None:
            fields["plan"] = plan
        patch = Patch(lay.run_key(run.id), fields, when=when)
        try:
            if self.docs.atomic:
                self.docs.transact([patch, self._unfinished_op(run), *(Put(d) for d in docs)])
            else:  # the steps, if any, are written (claimed way); nothing else is kept
                self.docs.write(patch)
        except ConditionFailedError as exc:
            raise ConflictError(f"run {run.id} has already begun") from exc

    def _drop_steps(self, run_id: str) -> None:
        query = Query(lay.run_partition(run_id), prefix=lay.STEP_PREFIX, consistent=True)
        self.docs.batch_write(deletes=[key_of(d) for d in self.docs.query(query)])


__all__ = ["CLAIM_TTL_S", "DocRuns"]
