"""Step reads: a run's steps, and the sweeper's two listings.

A step belongs to its run only while the run document names the step's ``plan``:
``list_steps`` reads the run document in the same query and drops the rest (steps written by
a ``create_run`` or ``begin_run`` that never committed). The sweeper's listings query a sparse,
eventually consistent index for candidates, and a consistent read of them decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nclav.docstore import layout as lay
from nclav.docstore.port import Query, eq, key_of, one_of
from nclav.records import StepStatus
from nclav.runtime.stores import lease_expired, stuck_ready

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from nclav.docstore.port import Doc, Documents
    from nclav.records import StepRecord


def committed_steps(docs: list[Doc]) -> list[StepRecord]:
    """The steps of a run partition that its run document commits, in plan order."""
    run = next((d for d in docs if d["sk"] == lay.RUN_SK), None)
    plan = run.get("plan") if run is not None else None
    if plan is None:
        return []
    mine = [d for d in docs if d["sk"].startswith(lay.STEP_PREFIX) and d.get("plan") == plan]
    mine.sort(key=lambda d: int(d["pos"]))
    return [lay.step_from(d) for d in mine]


class DocStepReads:
    """The step reads of ``DocumentStateStore``."""

    docs: Documents

    def has_unfinished_steps(self, run_id: str) -> bool:
        if not self.docs.atomic:  # no count kept: the run and its unfinished steps, one query
            unfinished = one_of("status", [s.value for s in StepStatus if not s.final])
            where = eq("sk", lay.RUN_SK) | unfinished
            query = Query(lay.run_partition(run_id), consistent=True, where=where)
            return bool(committed_steps(self.docs.query(query)))
        doc = self.docs.get(lay.steps_left_key(run_id))
        if doc is not None and "total" in doc:
            return int(doc["n"]) > 0
        # No count set at commit: a run begun before the count existed. Its steps decide.
        return any(not s.status.final for s in self.list_steps(run_id))

    def list_steps(self, run_id: str) -> list[StepRecord]:
        return committed_steps(self.docs.query(Query(lay.run_partition(run_id), consistent=True)))

    def get_step(self, run_id: str, step_id: str) -> StepRecord | None:
        doc = self.docs.get(lay.step_key(run_id, step_id))
        return lay.step_from(doc) if doc is not None else None

    def get_steps(self, run_id: str, step_ids: Sequence[str]) -> dict[str, StepRecord]:
        docs = self.docs.batch_get([lay.step_key(run_id, i) for i in step_ids])
        return {s.step_id: s for s in map(lay.step_from, docs)}

    def list_expired_leases(self, now: float) -> list[StepRecord]:
        # The lease index is eventually consistent (and may project keys only): it names the
        # candidates, and one consistent batch read (of them and their runs) decides, so a
        # lease renewed a moment ago is never reported expired.
        candidates = self.docs.query(Query(lay.LEASES, lay.LEASE_INDEX, upto=now))
        return self._confirmed(candidates, lambda step: lease_expired(step, now))

    def list_stuck_ready_steps(self, older_than: float) -> list[StepRecord]:
        # The same way as the leases (a step claimed or re-sent a moment ago is not reported).
        candidates = self.docs.query(Query(lay.READY, lay.READY_INDEX, upto=older_than))
        return self._confirmed(candidates, lambda step: stuck_ready(step, older_than))

    def _confirmed(
        self, candidates: list[Doc], keep: Callable[[StepRecord], bool]
    ) -> list[StepRecord]:
        """The committed steps among index ``candidates`` that ``keep`` accepts once read
        consistently, oldest run first, each run's in plan order."""
        if not candidates:
            return []
        runs = [(pk, lay.RUN_SK) for pk in {c["pk"] for c in candidates}]
        docs = self.docs.batch_get([key_of(c) for c in candidates] + runs)
        run_docs = {d["pk"]: d for d in docs if d["sk"] == lay.RUN_SK}
        found: list[tuple[int, int, StepRecord]] = []
        for doc in docs:
            run = run_docs.get(doc["pk"])
            if doc["sk"] == lay.RUN_SK or run is None:
                continue
            if run.get("plan") != doc.get("plan"):
                continue  # a step of a plan its run never committed
            step = lay.step_from(doc)
            if keep(step):
                found.append((int(run["seq"]), int(doc["pos"]), step))
        found.sort(key=lambda f: (f[0], f[1]))
        return [step for _, _, step in found]


__all__ = ["DocStepReads", "committed_steps"]
