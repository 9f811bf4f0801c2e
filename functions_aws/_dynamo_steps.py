"""The DynamoDB store's steps: claims, leases and compare-and-swap, each one conditional write.

Every lease decision is a ``ConditionExpression`` on the step item itself, so it holds across
Lambda invocations. The reads are ``_dynamo_step_reads``.

A write that takes a step to a final status (or, never in the engine, back from one) moves the
run's ``#STEPS_LEFT`` count in the same ``TransactWriteItems``, so ``has_unfinished_steps`` is
one GetItem, exact under concurrent finishes. Every other step write stays one UpdateItem.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from functions_aws import _dynamo_keys as k
from functions_aws._dynamo_errors import ConditionFailedError, ContendedError
from functions_aws._dynamo_items import ready_attrs, step_attrs, step_from
from functions_aws._dynamo_keys import LEASE_PK, LEASES, N, S, integer
from functions_aws._dynamo_step_reads import DynamoStepReads
from functions_aws._dynamo_table import Expr
from nclav.errors import ConflictError, NotFoundError, TemporaryError
from nclav.records import StepRecord, StepStatus, check_finish_status
from nclav.runtime import backoff
from nclav.runtime.stores import claim_changes, finish_changes

if TYPE_CHECKING:
    from typing import Any

    from functions_aws._dynamo_errors import AttributeValue, Item
    from functions_aws._dynamo_table import Table

# Every finish of a run's steps moves the run's one count item, so two finishes at the same
# instant can cancel each other's transaction (TransactionConflict): a short wait and a retry
# settles it (the step's lease is still ours; giving up would leave it running until expiry).
_CONTENDED_ATTEMPTS = 10
# Items of steps this process claimed and has not finished (``finish_step`` reads none back).
_HELD_MAX = 1024


def forget_oldest(items: dict[Any, Any]) -> None:
    """Drop the oldest entry of a small cache that lease-renewing threads write as well."""
    # Changed by another thread meanwhile (RuntimeError), or emptied: next time, then.
    with contextlib.suppress(RuntimeError, StopIteration):
        items.pop(next(iter(items)), None)


def _held(e: Expr, owner: str) -> str:
    # Holding a step means owning its lease, expired or not, until someone else claims it.
    running = e.v(S(StepStatus.RUNNING.value))
    return f"{e.n('status')} = {running} AND {e.n('lease_owner')} = {e.v(S(owner))}"


def _attrs(changes: dict[str, Any]) -> dict[str, AttributeValue | None]:
    """Core's field changes (``nclav.runtime.stores``) as attribute changes."""
    return {name: k.attr(getattr(v, "value", v)) for name, v in changes.items()}


def _unfinished_statuses(e: Expr) -> str:
    return ", ".join(e.v(S(s.value)) for s in StepStatus if not s.final)


def _final_statuses(e: Expr) -> str:
    return ", ".join(e.v(S(s.value)) for s in StepStatus if s.final)


class DynamoSteps(DynamoStepReads):
    """The step writes of ``DynamoStateStore``."""

    _table: Table
    _held_items: dict[tuple[str, str], Item]  # see _remember

    def _count_op(self, run_id: str, delta: int) -> dict[str, Any]:
        e = Expr()
        update = f"ADD {e.n('n')} {e.v(N(delta))}"
        return {"Update": self._table.update_op(k.steps_left_key(run_id), update, e)}

    def _transact_retrying(self, actions: list[dict[str, Any]]) -> None:
        for attempt in range(_CONTENDED_ATTEMPTS):
            try:
                self._table.transact(actions)
            except ContendedError:
                time.sleep(backoff(attempt + 1, 0.01, 1.0, jitter=0.5))
            else:
                return
        raise TemporaryError("a run's step count is too contended; try again", retry_after_s=1.0)

    def claim_step(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> StepRecord | None:
        e = Expr()
        at = e.v(N(now))
        status, not_before = e.n("status"), e.n("not_before")
        ready = (
            f"({status} = {e.v(S(StepStatus.READY.value))} AND "
            f"(attribute_not_exists({not_before}) OR {not_before} <= {at}))"
        )
        expired = (
            f"({status} = {e.v(S(StepStatus.RUNNING.value))} AND {e.n('lease_expires_at')} <= {at})"
        )
        changes = {
            **_attrs(claim_changes(owner, lease_s, now)),
            LEASE_PK: S(LEASES),
            **ready_attrs(StepStatus.RUNNING, now),
        }
        update = e.assign(changes, bump=("attempts", "version"))
        try:
            item = self._table.update(
                k.step_key(run_id, step_id), update, e, f"{ready} OR {expired}", returns="ALL_NEW"
            )
        except ConditionFailedError:
            return None  # not claimable, or no such step
        self._remember(item)
        return step_from(item)

    def _remember(self, item: Item) -> None:
        """Keep the item of a step this process holds, as it last wrote it (``finish_step``)."""
        held = self._held_items
        if len(held) >= _HELD_MAX:  # steps claimed and never finished here: forget the oldest
            forget_oldest(held)
        held[(str(item["pk"]["S"]), str(item["sk"]["S"]))] = item

    def renew_lease(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> bool:
        e = Expr()
        condition = _held(e, owner)
        update = e.assign({"lease_expires_at": N(now + lease_s)}, bump=("version",))
        try:
            item = self._table.update(
                k.step_key(run_id, step_id), update, e, condition, returns="ALL_NEW"
            )
        except ConditionFailedError:
            return False
        self._remember(item)
        return True

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
        changes = {
            **_attrs(finish_changes(status, error, now, not_before)),
            LEASE_PK: None,
            **ready_attrs(status, max(now, not_before or 0.0)),
        }
        target = k.step_key(run_id, step_id)
        held = self._held_items.pop((str(target["pk"]["S"]), str(target["sk"]["S"])), None)
        if not status.final:  # handed back for a retry: still unfinished, the count stays
            e = Expr()
            update = e.assign(changes, bump=("version",))
            try:
                item = self._table.update(target, update, e, _held(e, owner), returns="ALL_NEW")
            except ConditionFailedError:
                return None
            return step_from(item)
        if held is not None:
            # A transaction returns no attributes; the item this process last wrote (claim,
            # renewals) plus this write is what it stores, if its version is still the one
            # held: the condition checks it, so no read is needed after.
            e = Expr()
            update = e.assign(changes, bump=("version",))
            version = integer(held["version"])
            condition = f"{_held(e, owner)} AND {e.n('version')} = {e.v(N(version))}"
            step_op = {"Update": self._table.update_op(target, update, e, condition)}
            try:
                self._transact_retrying([step_op, self._count_op(run_id, -1)])
            except ConditionFailedError:
                pass  # changed meanwhile, or not ours: the general way below decides
            else:
                kept = {a: v for a, v in held.items() if a not in changes}
                written = k.present(changes)
                return step_from({**kept, **written, "version": N(version + 1)})
        e = Expr()
        update = e.assign(changes, bump=("version",))
        step_op = {"Update": self._table.update_op(target, update, e, _held(e, owner))}
        try:
            self._transact_retrying([step_op, self._count_op(run_id, -1)])
        except ConditionFailedError:
            return None
        # A final step is never written again by the engine, so this consistent read sees
        # what the transaction wrote.
        stored = self._table.get(target)
        return step_from(stored) if stored is not None else None

    def update_step(self, step: StepRecord, expected_version: int) -> StepRecord:
        # The stored status decides whether the count moves, and only the condition can tell
        # it without a read first: guess "unfinished" (the engine only ever updates pending or
        # ready steps), and on a lost condition at the expected version, the stored step was
        # final: write again with that knowledge (same version, so still the same CAS).
        try:
            return self._update_step(step, expected_version, was_final=False)
        except ConditionFailedError as exc:
            stored = exc.item if exc.item is not None else next(iter(exc.items[:1]), None)
            if stored is None:
                raise NotFoundError(f"step not found: {step.run_id}/{step.step_id}") from exc
            found = integer(stored["version"])
            if found != expected_version:
                raise ConflictError(
                    f"step {step.step_id}: expected version {expected_version}, found {found}"
                ) from exc
        try:
            return self._update_step(step, expected_version, was_final=True)
        except ConditionFailedError as exc:
            raise ConflictError(
                f"step {step.step_id}: changed while at expected version {expected_version}"
            ) from exc

    def _update_step(self, step: StepRecord, expected: int, *, was_final: bool) -> StepRecord:
        """The CAS write of ``step``, given whether the stored one is final.

        Raises ``ConditionFailedError`` carrying the stored item (``item`` for a single write,
        ``items[0]`` for a transaction) when the version or the guess about it is wrong.
        """
        e = Expr()
        statuses = _final_statuses(e) if was_final else _unfinished_statuses(e)
        condition = (
            f"attribute_exists({e.n('pk')}) AND {e.n('version')} = {e.v(N(expected))} "
            f"AND {e.n('status')} IN ({statuses})"
        )
        new = step.model_copy(update={"version": expected + 1})
        attrs = step_attrs(new)
        target = k.step_key(step.run_id, step.step_id)
        update = e.assign(attrs)
        delta = int(was_final) - int(new.status.final)  # unfinished steps gained
        if delta == 0:
            item = self._table.update(target, update, e, condition, returns="ALL_NEW", old=True)
            return step_from(item)
        step_op = {"Update": self._table.update_op(target, update, e, condition, old=True)}
        self._transact_retrying([step_op, self._count_op(step.run_id, delta)])
        # What the transaction wrote, read back from the same attributes (an error is kept
        # bounded exactly as stored).
        written = {
            "run_id": S(step.run_id),
            "step_id": S(step.step_id),
            **k.present(attrs),
        }
        return step_from(written)


__all__ = ["DynamoSteps", "forget_oldest"]
