"""Retrying a failed or cancelled run: a new run, linked to it, re-planned when it begins.

Why a new run rather than the old one again: a final run never changes (every store refuses
to update one), its steps' records say what happened on that try, and a retry must take its
place behind the runs queued meanwhile (first come, first served) and pass the delete guard
like any run. So the retry is a run of its own, ``retry_of`` the one it retries, carrying the
same tree (or teardown) and options, planned when it begins through the engine's one path:
the plan skips what the earlier try already applied (an unchanged active resource has no
change), so its succeeded steps are not redone and its failed and blocked ones get fresh
attempts against the applied state of that moment. Each try keeps the history of the earlier
ones (``Run.attempts``: which try, when, with which errors).

A retry is refused (``ConflictError``, 409) when a newer run has since changed, or is about to
change, the same enclaves: the retry would apply an older tree over it. A reconcile of the
current tree is what is wanted then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nclav.errors import ConflictError, NotFoundError
from nclav.records import Run, RunAttempt, RunStatus

if TYPE_CHECKING:
    from nclav.ports import StateStore

RETRY_TRIGGER = "retry"
RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})
_PAGE = 100  # runs read per page when looking for newer runs (newest first)


def retryable(store: StateStore, run_id: str) -> Run:
    """The run ``run_id`` if it may be retried now; raises ``NotFoundError``/``ConflictError``
    saying why not (not final, nothing to re-plan, or a newer run on the same enclaves)."""
    run = store.get_run(run_id)
    if run is None:
        raise NotFoundError(f"run {run_id!r} not found")
    if run.status not in RETRYABLE:
        raise ConflictError(
            f"run {run_id} is {run.status}: only a failed or cancelled run can be retried"
        )
    if run.bundle is None and not run.teardown_enclaves and run.teardown_partition is None:
        raise ConflictError(f"run {run_id} names no tree or teardown to plan again")
    newer = newer_run(store, run)
    if newer is not None:
        what = "is about to change" if not newer.status.final else "has since changed"
        raise ConflictError(
            f"run {newer.id} ({newer.trigger}, {newer.status}) {what} enclaves "
            f"{', '.join(sorted(set(newer.enclave_ids) & set(run.enclave_ids)))}: retrying run "
            f"{run_id} would apply an older tree over it; reconcile the current tree instead "
            "(nclav apply)"
        )
    return run


def newer_run(store: StateStore, run: Run) -> Run | None:
    """The newest run after ``run`` on any of its enclaves that did or may change them.

    A run cancelled before it began changed nothing and does not count; any other newer run
    does (a queued one would run first; a failed one may have applied part of its tree).
    """
    mine = set(run.enclave_ids)
    limit = _PAGE
    while True:
        page = store.list_runs(limit=limit)
        for other in page:
            if other.seq <= run.seq:
                return None
            if other.id == run.id or not (mine & set(other.enclave_ids)):
                continue
            if other.status == RunStatus.CANCELLED and other.started_at is None:
                continue
            return other
        if len(page) < limit:
            return None
        limit *= 2  # the run is older than this page: read further back


def retry_of(run: Run, created_at: str) -> Run:
    """The new try of ``run``: same tree or teardown and options, planned when it begins.

    ``allow_delete`` is not carried over: the delete guard judges the retry's own plan, and
    a plan that needs approval waits for one, as for any run.
    """
    earlier = RunAttempt(
        attempt=run.attempt,
        run_id=run.id,
        status=run.status,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        errors=run.errors,
    )
    return Run(
        bundle=run.bundle,
        enclave_ids=run.enclave_ids,
        trigger=RETRY_TRIGGER,
        created_at=created_at,
        plan_on_start=True,
        teardown_enclaves=run.teardown_enclaves,
        teardown_partition=run.teardown_partition,
        resources_only=run.resources_only,
        max_deletes=run.max_deletes,
        origin=run.origin,
        retry_of=run.id,
        attempt=run.attempt + 1,
        attempts=(*run.attempts, earlier),
    )


__all__ = ["RETRYABLE", "RETRY_TRIGGER", "newer_run", "retry_of", "retryable"]
