"""The DynamoDB store's runs: creating, beginning and finishing them, each one atomic commit.

A run's seq comes from the ``COUNTER/RUN`` item, moved by a compare-and-set inside the same
transaction that writes the run: runs therefore become visible in seq order, which the
engine's ``kick`` relies on (an earlier unfinished run is seen whenever a later one is).

Every commit also writes the run's ``#STEPS_LEFT`` count (``has_unfinished_steps``) in the
same transaction, so the count always matches the committed steps.

A plan of up to ~96 steps commits in that one ``TransactWriteItems``. A bigger one cannot (100
actions, 4 MB at most), so its steps are written first under a fresh ``plan`` token and the
run item, written last, commits them by naming that token; readers ignore every step whose
run item is absent or names another plan. ``begin_run`` of a big plan first claims the
queued run (``begin_claim``), so two workers never write one run's steps at once; a claim
left by a worker that died mid-write expires ``CLAIM_TTL_S`` after it was taken (longer than
Lambda's 15-minute ceiling, so its owner is gone) and may then be taken over.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from functions_aws._dynamo_errors import ConditionFailedError, ContendedError
from functions_aws._dynamo_items import (
    run_attrs,
    run_from,
    run_item,
    step_item,
    steps_left_item,
    unfinished_item,
)
from functions_aws._dynamo_keys import (
    GSI1,
    GSI2,
    RUNS,
    STEP_PREFIX,
    UNFINISHED_RUNS,
    N,
    S,
    counter_key,
    integer,
    item_size,
    key,
    run_key,
    run_partition,
    text,
    unfinished_key,
)
from functions_aws._dynamo_table import Expr
from nclav.errors import ConflictError, NotFoundError, TemporaryError
from nclav.records import Run, RunStatus, check_run_steps, iso_time, new_id
from nclav.runtime import backoff

if TYPE_CHECKING:
    from collections.abc import Sequence

    from functions_aws._dynamo_errors import Item
    from functions_aws._dynamo_table import Table
    from nclav.records import StepRecord

_TX_ACTIONS = 100  # DynamoDB's limits on one TransactWriteItems
_TX_STEP_BYTES = 2_000_000  # of its 4 MB; the run item and its copy take at most 0.8 MB
_SEQ_ATTEMPTS = 12
CLAIM_TTL_S = 1_800.0


def _fits_one_transaction(items: Sequence[Item], others: int) -> bool:
    if len(items) + others > _TX_ACTIONS:
        return False
    return sum(item_size(i) for i in items) <= _TX_STEP_BYTES


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


class DynamoRuns:
    """The run methods of ``DynamoStateStore``."""

    _table: Table

    def create_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        check_run_steps(run, steps)
        plan = new_id() if steps else None
        items = [
            step_item(s.model_copy(update={"version": 1}), i, str(plan))
            for i, s in enumerate(steps)
        ]
        if not _fits_one_transaction(items, others=4):
            if self._table.get(run_key(run.id)) is not None:
                raise ConflictError(f"run {run.id} already exists")
            self._table.batch_write(puts=items)  # committed by the run item below
            items = []
        for attempt in range(_SEQ_ATTEMPTS):
            counter = self._table.get(counter_key(RUNS))
            last = integer(counter["n"]) if counter is not None else 0
            stored = run.model_copy(update={"seq": last + 1})
            actions = [
                {"Update": self._advance_counter(last)},
                {"Put": self._table.put_op(run_item(stored, plan), "attribute_not_exists(pk)")},
                self._unfinished_action(stored),
                {"Put": self._table.put_op(steps_left_item(run.id, steps))},
                *({"Put": self._table.put_op(i)} for i in items),
            ]
            try:
                self._table.transact(actions)
            except ConditionFailedError as exc:
                if exc.failed(1):
                    raise ConflictError(f"run {run.id} already exists") from exc
            except ContendedError:
                pass  # another create held the counter at that instant
            else:
                return stored
            _backoff(attempt)  # another run took seq last + 1 first: read the counter again
        raise TemporaryError("run sequence counter too contended; try again", retry_after_s=1.0)

    def _advance_counter(self, last: int) -> dict[str, Any]:
        e = Expr()
        n = e.n("n")
        condition = f"attribute_not_exists({n})" if last == 0 else f"{n} = {e.v(N(last))}"
        return self._table.update_op(counter_key(RUNS), e.assign({"n": N(last + 1)}), e, condition)

    def _unfinished_action(self, run: Run) -> dict[str, Any]:
        if run.status.final:
            return {"Delete": self._table.delete_op(unfinished_key(run.seq))}
        return {"Put": self._table.put_op(unfinished_item(run))}

    def get_run(self, run_id: str) -> Run | None:
        item = self._table.get(run_key(run_id))
        return run_from(item) if item is not None else None

    def list_runs(self, limit: int = 50, status: RunStatus | None = None) -> list[Run]:
        if limit <= 0:
            return []
        e = Expr()
        if status is None:
            index, condition = GSI1, f"{e.n('gsi1pk')} = {e.v(S(RUNS))}"
        else:
            index, condition = GSI2, f"{e.n('gsi2pk')} = {e.v(S(f'{RUNS}#{status.value}'))}"
        items = self._table.query(condition, e, index=index, forward=False, limit=limit)
        return [run_from(i) for i in items]

    def list_unfinished_runs(self) -> list[Run]:
        e = Expr()
        items = self._table.query(f"{e.n('pk')} = {e.v(S(UNFINISHED_RUNS))}", e, consistent=True)
        return [run_from(i) for i in items]

    def _stored(self, run_id: str) -> Item:
        item = self._table.get(run_key(run_id))
        if item is None:
            raise NotFoundError(f"run not found: {run_id}")
        return item

    def update_run(self, run: Run) -> Run:
        stored = self._stored(run.id)
        status = RunStatus(str(text(stored["status"])))
        if status.final:
            raise ConflictError(f"run {run.id} is already {status}")
        updated = run.model_copy(update={"seq": integer(stored["seq"])})
        e = Expr()
        unfinished = ", ".join(e.v(S(s.value)) for s in (RunStatus.QUEUED, RunStatus.RUNNING))
        condition = f"{e.n('status')} IN ({unfinished})"
        update = e.assign(run_attrs(updated))
        try:
            self._table.transact(
                [
                    {"Update": self._table.update_op(run_key(run.id), update, e, condition)},
                    self._unfinished_action(updated),
                ]
            )
        except ConditionFailedError as exc:
            raise ConflictError(f"run {run.id} was finalised meanwhile") from exc
        return updated

    def begin_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        check_run_steps(run, steps)
        began = run.model_copy(update={"seq": integer(self._stored(run.id)["seq"])})
        token = new_id()
        items = [
            step_item(s.model_copy(update={"version": 1}), i, token) for i, s in enumerate(steps)
        ]
        left = steps_left_item(run.id, steps)
        if _fits_one_transaction(items, others=3):
            e = Expr()
            condition = self._beginnable(e, run)
            self._commit_begin(began, e, condition, token if steps else None, [left, *items])
            return began
        e = Expr()
        condition = self._beginnable(e, run)
        claim = e.assign({"begin_claim": S(token), "begin_at": S(run.started_at or "")})
        try:
            old = self._table.update(run_key(run.id), claim, e, condition, returns="UPDATED_OLD")
        except ConditionFailedError as exc:
            raise ConflictError(f"run {run.id} has already begun") from exc
        if "begin_claim" in old:
            self._drop_steps(run.id)  # what the expired claimant had written
        self._table.batch_write(puts=items)
        e = Expr()
        condition = f"{e.n('begin_claim')} = {e.v(S(token))}"
        self._commit_begin(began, e, condition, token, [left])
        return began

    def _beginnable(self, e: Expr, run: Run) -> str:
        cutoff = e.v(S(_claim_cutoff(run.started_at)))
        free = f"attribute_not_exists({e.n('begin_claim')}) OR {e.n('begin_at')} < {cutoff}"
        return (
            f"{e.n('status')} = {e.v(S(RunStatus.QUEUED.value))} AND "
            f"attribute_not_exists({e.n('plan')}) AND ({free})"
        )

    def _commit_begin(
        self, run: Run, e: Expr, condition: str, plan: str | None, items: list[Item]
    ) -> None:
        attrs = {**run_attrs(run), "begin_claim": None, "begin_at": None}
        if plan is not None:
            attrs["plan"] = S(plan)
        update = e.assign(attrs)
        try:
            self._table.transact(
                [
                    {"Update": self._table.update_op(run_key(run.id), update, e, condition)},
                    self._unfinished_action(run),
                    *({"Put": self._table.put_op(i)} for i in items),
                ]
            )
        except ConditionFailedError as exc:
            raise ConflictError(f"run {run.id} has already begun") from exc

    def _drop_steps(self, run_id: str) -> None:
        e = Expr()
        condition = (
            f"{e.n('pk')} = {e.v(S(run_partition(run_id)))} AND "
            f"begins_with({e.n('sk')}, {e.v(S(STEP_PREFIX))})"
        )
        items = self._table.query(condition, e, consistent=True)
        self._table.batch_write(deletes=[key(i["pk"]["S"], i["sk"]["S"]) for i in items])


__all__ = ["CLAIM_TTL_S", "DynamoRuns"]
