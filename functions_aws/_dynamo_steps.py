"""The DynamoDB store's steps: claims, leases and compare-and-swap, each one conditional write.

A step belongs to its run only while the run item names the step's ``plan``: ``list_steps``
reads the run item in the same Query and drops the rest (steps written by a ``create_run`` or
``begin_run`` that never committed). Every lease decision is a ``ConditionExpression`` on the
step item itself, so it holds across Lambda invocations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions_aws._dynamo_errors import ConditionFailedError
from functions_aws._dynamo_items import bounded_error, step_attrs, step_from
from functions_aws._dynamo_keys import (
    LEASE_INDEX,
    LEASE_PK,
    LEASE_SK,
    LEASES,
    RUN_SK,
    STEP_PREFIX,
    N,
    S,
    integer,
    key,
    run_partition,
    step_key,
    text,
)
from functions_aws._dynamo_table import Expr
from nclav.errors import ConflictError, NotFoundError
from nclav.records import StepRecord, StepStatus, check_finish_status, iso_time

if TYPE_CHECKING:
    from functions_aws._dynamo_errors import Item
    from functions_aws._dynamo_table import Table


def committed_steps(items: list[Item]) -> list[StepRecord]:
    """The steps of a run partition's items that its run item commits, in plan order."""
    run = next((i for i in items if i["sk"]["S"] == RUN_SK), None)
    plan = text(run.get("plan")) if run is not None else None
    if plan is None:
        return []
    mine = [
        i for i in items if i["sk"]["S"].startswith(STEP_PREFIX) and text(i.get("plan")) == plan
    ]
    mine.sort(key=lambda i: integer(i["pos"]))
    return [step_from(i) for i in mine]


def _held(e: Expr, owner: str) -> str:
    # Holding a step means owning its lease, expired or not, until someone else claims it.
    running = e.v(S(StepStatus.RUNNING.value))
    return f"{e.n('status')} = {running} AND {e.n('lease_owner')} = {e.v(S(owner))}"


class DynamoSteps:
    """The step methods of ``DynamoStateStore``."""

    _table: Table

    def list_steps(self, run_id: str) -> list[StepRecord]:
        e = Expr()
        items = self._table.query(
            f"{e.n('pk')} = {e.v(S(run_partition(run_id)))}", e, consistent=True
        )
        return committed_steps(items)

    def get_step(self, run_id: str, step_id: str) -> StepRecord | None:
        item = self._table.get(step_key(run_id, step_id))
        return step_from(item) if item is not None else None

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
        update = e.assign(
            {
                "status": S(StepStatus.RUNNING.value),
                "lease_owner": S(owner),
                "lease_expires_at": N(now + lease_s),
                LEASE_PK: S(LEASES),
                "started_at": S(iso_time(now)),
                "not_before": None,
            },
            bump=("attempts", "version"),
        )
        try:
            item = self._table.update(
                step_key(run_id, step_id), update, e, f"{ready} OR {expired}", returns="ALL_NEW"
            )
        except ConditionFailedError:
            return None  # not claimable, or no such step
        return step_from(item)

    def renew_lease(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> bool:
        e = Expr()
        condition = _held(e, owner)
        update = e.assign({"lease_expires_at": N(now + lease_s)}, bump=("version",))
        try:
            self._table.update(step_key(run_id, step_id), update, e, condition)
        except ConditionFailedError:
            return False
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
        e = Expr()
        condition = _held(e, owner)
        update = e.assign(
            {
                "status": S(status.value),
                "error": None if error is None else S(str(bounded_error(error))),
                "finished_at": S(iso_time(now)),
                "not_before": None if not_before is None else N(not_before),
                "lease_owner": None,
                "lease_expires_at": None,
                LEASE_PK: None,
            },
            bump=("version",),
        )
        try:
            item = self._table.update(
                step_key(run_id, step_id), update, e, condition, returns="ALL_NEW"
            )
        except ConditionFailedError:
            return None
        return step_from(item)

    def update_step(self, step: StepRecord, expected_version: int) -> StepRecord:
        e = Expr()
        condition = (
            f"attribute_exists({e.n('pk')}) AND {e.n('version')} = {e.v(N(expected_version))}"
        )
        update = e.assign(step_attrs(step.model_copy(update={"version": expected_version + 1})))
        try:
            item = self._table.update(
                step_key(step.run_id, step.step_id),
                update,
                e,
                condition,
                returns="ALL_NEW",
                old=True,
            )
        except ConditionFailedError as exc:
            if exc.item is None:
                raise NotFoundError(f"step not found: {step.run_id}/{step.step_id}") from exc
            found = integer(exc.item["version"])
            raise ConflictError(
                f"step {step.step_id}: expected version {expected_version}, found {found}"
            ) from exc
        return step_from(item)

    def list_expired_leases(self, now: float) -> list[StepRecord]:
        # The lease index is eventually consistent and projects keys only: it names the
        # candidates, and one consistent BatchGetItem (their items and their runs' items)
        # decides, so a lease renewed a moment ago is never reported expired.
        e = Expr()
        candidates = self._table.query(
            f"{e.n(LEASE_PK)} = {e.v(S(LEASES))} AND {e.n(LEASE_SK)} <= {e.v(N(now))}",
            e,
            index=LEASE_INDEX,
        )
        if not candidates:
            return []
        steps = [key(c["pk"]["S"], c["sk"]["S"]) for c in candidates]
        runs = [key(pk, RUN_SK) for pk in {c["pk"]["S"] for c in candidates}]
        items = self._table.batch_get(steps + runs)
        run_items = {i["pk"]["S"]: i for i in items if i["sk"]["S"] == RUN_SK}
        found: list[tuple[int, int, StepRecord]] = []
        for item in items:
            run = run_items.get(item["pk"]["S"])
            if item["sk"]["S"] == RUN_SK or run is None:
                continue
            if text(run.get("plan")) != text(item.get("plan")):
                continue  # a step of a plan its run never committed
            step = step_from(item)
            expires = step.lease_expires_at
            if step.status == StepStatus.RUNNING and expires is not None and expires <= now:
                found.append((integer(run["seq"]), integer(item["pos"]), step))
        found.sort(key=lambda f: (f[0], f[1]))
        return [step for _, _, step in found]


__all__ = ["DynamoSteps", "committed_steps"]
