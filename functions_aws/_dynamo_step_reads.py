"""The DynamoDB store's step reads: a run's steps, and the sweeper's two listings.

A step belongs to its run only while the run item names the step's ``plan``: ``list_steps``
reads the run item in the same Query and drops the rest (steps written by a ``create_run`` or
``begin_run`` that never committed). The sweeper's listings query a sparse, eventually
consistent index for candidates, and a consistent read of them decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions_aws import _dynamo_keys as k
from functions_aws._dynamo_items import step_from
from functions_aws._dynamo_keys import LEASE_PK, LEASES, RUN_SK, N, S, integer, key, text
from functions_aws._dynamo_table import Expr
from nclav.runtime.stores import lease_expired, stuck_ready

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from functions_aws._dynamo_errors import Item
    from functions_aws._dynamo_table import Table
    from nclav.records import StepRecord


def committed_steps(items: list[Item]) -> list[StepRecord]:
    """The steps of a run partition's items that its run item commits, in plan order."""
    run = next((i for i in items if i["sk"]["S"] == RUN_SK), None)
    plan = text(run.get("plan")) if run is not None else None
    if plan is None:
        return []
    mine = [
        i for i in items if i["sk"]["S"].startswith(k.STEP_PREFIX) and text(i.get("plan")) == plan
    ]
    mine.sort(key=lambda i: integer(i["pos"]))
    return [step_from(i) for i in mine]


class DynamoStepReads:
    """The step reads of ``DynamoStateStore``."""

    _table: Table

    def has_unfinished_steps(self, run_id: str) -> bool:
        item = self._table.get(k.steps_left_key(run_id))
        if item is not None and "total" in item:
            return integer(item["n"]) > 0
        # No count set at commit: a run begun before the count existed. Its steps decide.
        return any(not s.status.final for s in self.list_steps(run_id))

    def list_steps(self, run_id: str) -> list[StepRecord]:
        e = Expr()
        items = self._table.query(
            f"{e.n('pk')} = {e.v(S(k.run_partition(run_id)))}", e, consistent=True
        )
        return committed_steps(items)

    def get_step(self, run_id: str, step_id: str) -> StepRecord | None:
        item = self._table.get(k.step_key(run_id, step_id))
        return step_from(item) if item is not None else None

    def get_steps(self, run_id: str, step_ids: Sequence[str]) -> dict[str, StepRecord]:
        items = self._table.batch_get([k.step_key(run_id, i) for i in step_ids])
        return {s.step_id: s for s in map(step_from, items)}

    def list_expired_leases(self, now: float) -> list[StepRecord]:
        # The lease index is eventually consistent and projects keys only: it names the
        # candidates, and one consistent BatchGetItem (their items and their runs' items)
        # decides, so a lease renewed a moment ago is never reported expired.
        e = Expr()
        candidates = self._table.query(
            f"{e.n(LEASE_PK)} = {e.v(S(LEASES))} AND {e.n(k.LEASE_SK)} <= {e.v(N(now))}",
            e,
            index=k.LEASE_INDEX,
        )

        return self._confirmed(candidates, lambda step: lease_expired(step, now))

    def list_stuck_ready_steps(self, older_than: float) -> list[StepRecord]:
        # The same way as the leases: the sparse ready index names candidates, a consistent
        # read decides (a step claimed or re-sent a moment ago is not reported).
        e = Expr()
        candidates = self._table.query(
            f"{e.n(k.READY_PK)} = {e.v(S(k.READY))} AND {e.n(k.READY_SK)} <= {e.v(N(older_than))}",
            e,
            index=k.READY_INDEX,
        )

        return self._confirmed(candidates, lambda step: stuck_ready(step, older_than))

    def _confirmed(
        self, candidates: list[Item], keep: Callable[[StepRecord], bool]
    ) -> list[StepRecord]:
        """The committed steps among index ``candidates`` that ``keep`` accepts once read
        consistently, oldest run first, each run's in plan order."""
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
            if keep(step):
                found.append((integer(run["seq"]), integer(item["pos"]), step))
        found.sort(key=lambda f: (f[0], f[1]))
        return [step for _, _, step in found]


__all__ = ["DynamoStepReads", "committed_steps"]
