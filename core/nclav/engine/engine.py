"""The run engine: runs and steps persisted, steps carried out from queue messages.

A reconcile persists a run with the plan's steps and enqueues the ready ones. A worker
receives ``{run_id, step_id}``, claims the step under a lease (a conditional write), carries
it out, stores the new applied state with optimistic concurrency, finishes the step and
readies each dependent whose last dependency just finished. A failed step blocks its
dependents; independent branches go on. Runs touching the same enclave go one after another,
first come first served: a later run stays queued until the earlier ones are final.

The delete guard is decided when a run is planned (when it begins), for every trigger: a plan
that deletes more enclaves and partitions (counted one by one) than the run's limit, or every
applied enclave, does not apply. The run stops in ``awaiting_approval`` with its plan, holding
its place: ``approve`` re-plans and begins only if the plan is the one shown, ``cancel`` ends
it, and a later reconcile of overlapping enclaves supersedes it (cancels it), so a pushed fix
is never stuck behind a plan nobody approved.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from nclav import notify
from nclav.config import Desired
from nclav.engine.retry import retry_of, retryable
from nclav.engine.steps import StepContext, carry_out, record_failure
from nclav.errors import (
    ConflictError,
    Issue,
    NclavError,
    NotFoundError,
    PermanentError,
    SpecError,
    TemporaryError,
    WaitingError,
)
from nclav.plan import (
    Plan,
    driver_issues,
    empty_graph,
    plan_changes,
    plan_partition_teardown,
    plan_teardown,
)
from nclav.records import (
    Approval,
    AuditEvent,
    EventKind,
    Run,
    RunOrigin,
    RunStatus,
    StepRecord,
    StepStatus,
    iso_time,
    new_id,
    step_records,
)
from nclav.runtime.timing import backoff, heartbeat

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    ControlHandler = Callable[[Mapping[str, Any]], None]

    from nclav.engine.driver import Driver
    from nclav.graph import Graph
    from nclav.model import Cloud
    from nclav.ports import BlobStore, Clock, IacRunner, StateStore, WorkQueue
    from nclav.state import EnclaveState

logger = logging.getLogger(__name__)

DEFAULT_MAX_DELETES = 5
_SHOWN_CHANGES = 1000  # an awaiting run keeps at most this many changes to show


class PlanChangedError(ConflictError):
    """Approval refused: the plan is no longer the one shown; the run shows the new one."""


class Engine:
    def __init__(
        self,
        store: StateStore,
        queue: WorkQueue,
        blobs: BlobStore,
        clock: Clock,
        drivers: Mapping[Cloud, Driver],
        default_cloud: Cloud,
        iac: IacRunner,
        bundles: Callable[[str], tuple[Graph, Mapping[str, Mapping[str, bytes]]]],
        *,
        lease_s: float = 120.0,
        max_attempts: int = 4,
        backoff_s: float = 2.0,
        owner: str | None = None,
        pending_s: float = 0.0,
        max_deletes: int = DEFAULT_MAX_DELETES,
    ) -> None:
        self.store = store
        self.queue = queue
        self.blobs = blobs
        self.clock = clock
        self.drivers = drivers
        self.default_cloud = default_cloud
        self.iac = iac
        self.bundles = bundles
        self.lease_s = lease_s
        # How long a message handed back to the queue may wait for its next delivery, summed
        # over its deliveries (``DeliveryPolicy.pending_s``): the sweeper does not re-send a
        # ready step before then, or it would start a second stream of deliveries.
        self.pending_s = pending_s
        # Control messages by kind (``register_control``): notifications, git syncs, drift
        # checks; each handled in a worker like a step, with the same delivery policy.
        self.control: dict[str, ControlHandler] = {
            "notify": _notify_message,
            DRIFT_KIND: self._drift_check,
        }
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.owner = owner or f"worker-{new_id()[:8]}"
        self.max_deletes = max_deletes  # the server's delete limit; a request only lowers it
        # One kick at a time in this process: a sweeper's kick must not plan a run again
        # while a request's kick is planning it (the begin_run write decides across processes).
        self._kicking = threading.RLock()
        # The bundles of running runs this process has seen (a run's bundle never changes),
        # the most recent few: carried in their steps' messages so a worker skips a read.
        self._bundle_of: _Recent = _Recent(256)

    # -- starting a run -------------------------------------------------------------------

    def start_run(
        self,
        bundle: str,
        trigger: str = "api",
        *,
        max_deletes: int | None = None,
        allow_delete: bool = False,
        resources_only: bool = False,
        origin: RunOrigin | None = None,
        hold_empty: bool = False,
    ) -> Run:
        """Queue a reconcile of ``bundle``; it is planned when it begins.

        Planning waits until every earlier unfinished run on the same enclaves is final, so a
        run never plans against state another run is still changing. The run claims every
        enclave of the bundle and every applied enclave missing from it (those are deleted).
        A tree naming a cloud without a driver, or (unless ``allow_delete``) holding no
        enclave, is refused here (``SpecError``), before anything runs; with ``hold_empty``
        (a git push: nobody reads a refusal) an empty tree makes a run that the delete guard
        holds for approval when it begins.
        """
        run, _, _ = self._new_reconcile(
            bundle, trigger, max_deletes, allow_delete or hold_empty, resources_only
        )
        if hold_empty and not allow_delete:  # judged by the guard when it begins, like any run
            run = run.model_copy(update={"allow_delete": False})
        if origin is not None:
            run = run.model_copy(update={"origin": origin})
        return self._create(run, [])

    def start_run_if_changed(
        self,
        bundle: str,
        trigger: str = "api",
        *,
        max_deletes: int | None = None,
        allow_delete: bool = False,
        resources_only: bool = False,
    ) -> Run | None:
        """``start_run``, except that a plan with no change records no run (None).

        Only a run that could begin now is judged so; one that will wait behind earlier runs
        is created (it plans at begin, and may well succeed with no step).
        """
        # The applied state and the runs ahead as ``_new_reconcile`` read them a moment ago:
        # reading them again would only cost requests (the run is planned again when it
        # begins, against the state of then).
        run, applied, behind = self._new_reconcile(
            bundle, trigger, max_deletes, allow_delete, resources_only
        )
        if run.changes == 0 and not behind:
            graph, _ = self.bundles(bundle)
            if not plan_changes(graph, applied, resources_only=resources_only).changes:
                return None
        return self._create(run, [])

    def _new_reconcile(
        self,
        bundle: str,
        trigger: str,
        max_deletes: int | None,
        allow_delete: bool,
        resources_only: bool,
    ) -> tuple[Run, dict[str, EnclaveState], bool]:
        """The run to create, the applied state it was judged against, and whether earlier
        unfinished runs touch its enclaves (it will wait behind them)."""
        graph, _ = self.bundles(bundle)
        issues = driver_issues(graph, self.drivers, self.default_cloud)
        if issues:
            raise SpecError(issues)
        if not graph.enclaves and not allow_delete:
            raise SpecError([empty_tree_issue("bundle")])
        applied = {s.enclave_id: s for s in self.store.list_enclaves()}
        touched = set(graph.enclaves) | set(applied)
        # A run that will wait behind earlier ones records what a dry run would say now; one
        # that begins at once (the usual case) is planned by kick() below, so not twice here.
        behind = self._behind(touched)
        changes = 0
        if behind:
            changes = len(plan_changes(graph, applied, resources_only=resources_only).changes)
        run = Run(
            bundle=bundle,
            enclave_ids=tuple(sorted(touched)),
            trigger=trigger,
            created_at=self._now_text(),
            changes=changes,
            plan_on_start=True,
            resources_only=resources_only,
            max_deletes=max_deletes,
            allow_delete=allow_delete,
        )
        return run, applied, behind

    def _behind(self, touched: set[str]) -> bool:
        return any(touched & set(r.enclave_ids) for r in self.store.list_unfinished_runs())

    def start_destroy(
        self,
        enclave_ids: list[str],
        partition_id: str | None = None,
        *,
        trigger: str = "destroy",
        max_deletes: int | None = None,
        allow_delete: bool = False,
        resources_only: bool = False,
    ) -> Run:
        """Queue an imperative destroy of enclaves (or of one partition of one enclave).

        Like a reconcile it is planned when it begins, against the state of that moment: a
        partition an earlier queued run adds meanwhile is torn down too. ``resources_only``
        tears down the partitions and keeps the enclaves.
        """
        applied = {s.enclave_id: s for s in self.store.list_enclaves()}
        missing = [eid for eid in enclave_ids if eid not in applied]
        if missing:
            raise NotFoundError(f"enclave {missing[0]!r} not found")
        if partition_id is not None:
            if len(enclave_ids) != 1:
                raise ValueError("a partition destroy names exactly one enclave")
            if partition_id not in applied[enclave_ids[0]].partitions:
                raise NotFoundError(
                    f"partition {partition_id!r} not found in enclave {enclave_ids[0]!r}"
                )
        run = Run(
            enclave_ids=tuple(sorted(set(enclave_ids))),
            trigger=trigger,
            created_at=self._now_text(),
            plan_on_start=True,
            teardown_enclaves=() if partition_id else tuple(dict.fromkeys(enclave_ids)),
            teardown_partition=partition_id,
            resources_only=resources_only,
            max_deletes=max_deletes,
            allow_delete=allow_delete,
        )
        return self._create(run, [])

    def start_plan(self, plan: Plan, bundle: str | None, trigger: str = "api") -> Run:
        """Persist a run for an already made ``plan`` and enqueue its steps.

        For trusted callers (tests, benchmarks): the plan is not re-made when the run begins
        and the delete guard does not judge it. The API uses ``start_run``/``start_destroy``.
        """
        touched = sorted({s.enclave_id for s in plan.steps})
        run = Run(
            bundle=bundle,
            enclave_ids=tuple(touched),
            trigger=trigger,
            created_at=self._now_text(),
            changes=len(plan.changes),
        )
        return self._create(run, step_records(run.id, plan.steps))

    def _create(self, run: Run, steps: list[StepRecord]) -> Run:
        run = self.store.create_run(run, steps)
        fields: dict[str, str | int | bool | None] = {"dry_run": False}
        if run.origin is not None:  # a git push: the event says which commit
            fields.update(commit=run.origin.commit, ref=run.origin.ref)
        if run.retry_of is not None:  # a retry: the event says which run it retries
            fields.update(retry_of=run.retry_of, attempt=run.attempt)
        self._event(EventKind.RECONCILE_STARTED, run_id=run.id, fields=fields)
        # The run as the kick left it (begun, awaiting, finished...): what a read would say a
        # moment later, without the read. A run the kick did not see is read.
        kicked = self.kick().get(run.id)
        return kicked or self.store.get_run(run.id) or run

    def kick(self) -> dict[str, Run]:
        """Start every queued run that no earlier unfinished run blocks; finish empty ones.

        An awaiting run keeps its place (later runs on its enclaves wait behind it), unless a
        later reconcile of overlapping enclaves is waiting: that one supersedes it. Returns
        the unfinished runs it saw, by id, each as it left them.
        """
        with self._kicking:
            busy: set[str] = set()
            seen: dict[str, Run] = {}
            unfinished = self.store.list_unfinished_runs()
            for i, run in enumerate(unfinished):
                mine = set(run.enclave_ids)
                with_steps = False  # begun here with steps: none can have finished them all
                if run.status == RunStatus.QUEUED and not (mine & busy):
                    run, with_steps = self._begin(run)
                if run.status == RunStatus.AWAITING_APPROVAL:  # waiting, or just stopped
                    newer = next(
                        (
                            r
                            for r in unfinished[i + 1 :]
                            if r.bundle is not None and mine & set(r.enclave_ids)
                        ),
                        None,
                    )
                    if newer is not None:
                        run = self._end_unstarted(run, f"superseded by run {newer.id}")
                seen[run.id] = run
                if run.status == RunStatus.RUNNING and not with_steps:
                    # A run just begun with steps is not done: the fan-out of its last step
                    # to finish asks, after its writes.
                    seen[run.id] = self._finish_run_if_done(run.id) or run
                if not run.status.final:
                    busy |= mine
            return seen

    def plan_for(self, run: Run, applied: Mapping[str, EnclaveState] | None = None) -> Plan:
        """What ``run`` would do against the applied state of this moment (``applied``, when
        the caller has just read it)."""
        if applied is None:
            applied = {s.enclave_id: s for s in self.store.list_enclaves()}
        if run.bundle:
            graph, _ = self.bundles(run.bundle)
            return plan_changes(graph, applied, resources_only=run.resources_only)
        if run.teardown_partition is not None:
            state = applied.get(run.enclave_ids[0]) if run.enclave_ids else None
            if state is None or run.teardown_partition not in state.partitions:
                return Plan((), ())  # gone meanwhile: nothing left to tear down
            return plan_partition_teardown(state, run.teardown_partition)
        return plan_teardown(applied, run.teardown_enclaves, resources_only=run.resources_only)

    def guard(self, run: Run, plan: Plan, applied: list[str]) -> Approval | None:
        """Why ``plan`` needs approval under ``run``'s delete policy, or None when it may go."""
        if run.allow_delete:
            return None
        limit = self.max_deletes
        if run.max_deletes is not None:
            limit = min(limit, run.max_deletes)  # a request can only lower the server's
        gone = plan.deletions()
        every = plan.deletes_every_enclave(applied)
        if every:
            reason = f"deletes every enclave ({every})"
        elif len(gone) > limit:
            reason = f"{len(gone)} deletions, limit {limit}"
        else:
            return None
        return Approval(
            reason=reason,
            deletions=tuple(gone),
            limit=limit,
            every=every,
            plan_digest=plan.digest(),
            changes=tuple(c.to_json() for c in plan.changes[:_SHOWN_CHANGES]),
        )

    def _begin(self, run: Run) -> tuple[Run, bool]:
        """Begin ``run`` (or stop it for approval); returns it and whether it began here with
        steps."""
        started = run.model_copy(
            update={"status": RunStatus.RUNNING, "started_at": self._now_text()}
        )
        ready: list[StepRecord] | None = None  # the steps begin_run stored, when it ran
        try:
            if run.plan_on_start:
                state = {s.enclave_id: s for s in self.store.list_enclaves()}
                plan = self.plan_for(run, state)
                approval = self.guard(run, plan, list(state))
                if approval is not None and approval.plan_digest != run.approved_digest:
                    waiting = run.model_copy(
                        update={
                            "status": RunStatus.AWAITING_APPROVAL,
                            "approval": approval,
                            "changes": len(plan.changes),
                            "approved_digest": None,
                        }
                    )
                    waiting = self.store.update_run(waiting, expect=RunStatus.QUEUED)
                    self._event(
                        EventKind.RECONCILE_AWAITING_APPROVAL,
                        run_id=run.id,
                        fields={"reason": approval.reason, "changes": len(plan.changes)},
                    )
                    notify.run_changed(waiting)  # people are waiting for this one
                    return waiting, False
                started = started.model_copy(update={"changes": len(plan.changes)})
                ready = step_records(run.id, plan.steps)
                started = self.store.begin_run(started, ready)
            else:
                started = self.store.update_run(started)
        except ConflictError:
            return self.store.get_run(run.id) or run, False
        self._remember(started)
        # The steps begin_run just stored are the ones given to it: no read to find them.
        steps = ready if ready is not None else self.store.list_steps(run.id)
        for step in steps:
            if step.status == StepStatus.READY:
                self._send(step)
        return started, ready is not None and bool(ready)

    def retry(self, run_id: str) -> Run:
        """Queue a new try of a failed or cancelled run (``nclav.engine.retry``).

        It is planned when it begins, like any run, against the applied state of then: what
        the earlier try applied is not redone, its failed and blocked steps run again, and
        the delete guard judges the plan. Raises ``NotFoundError``, or ``ConflictError`` when
        the run is not final or a newer run changed (or will change) the same enclaves.
        """
        with self._kicking:  # checked and created under the kick lock: no run begins between
            run = retry_of(retryable(self.store, run_id), self._now_text())
            if run.bundle is not None:  # claim what the tree holds and what it would delete
                graph, _ = self.bundles(run.bundle)
                applied = {s.enclave_id for s in self.store.list_enclaves()}
                touched = set(graph.enclaves) | applied | set(run.enclave_ids)
                run = run.model_copy(update={"enclave_ids": tuple(sorted(touched))})
            return self._create(run, [])

    # -- approving and cancelling -----------------------------------------------------------

    def approve(self, run_id: str) -> Run:
        """Approve an awaiting run: re-plan now; begin only if the plan is the one shown.

        Raises ``PlanChangedError`` (the run awaits again, showing the new plan) when the
        plan moved since it was shown, ``ConflictError`` when the run awaits nothing.
        A plan that no longer needs approval simply begins.
        """
        with self._kicking:
            run = self._awaiting(run_id, "approved")
            assert run.approval is not None
            shown = run.approval.plan_digest
            queued = run.model_copy(update={"status": RunStatus.QUEUED, "approved_digest": shown})
            self.store.update_run(queued, expect=RunStatus.AWAITING_APPROVAL)
            self._event(EventKind.RUN_APPROVED, run_id=run_id, fields={"plan": shown})
            self.kick()
            now = self.store.get_run(run_id) or queued
        if now.status == RunStatus.AWAITING_APPROVAL:
            reason = now.approval.reason if now.approval else "needs approval"
            raise PlanChangedError(
                f"run {run_id}: the plan changed since it was shown ({reason} now); "
                f"review it (GET /runs/{run_id}) and approve again"
            )
        return now

    def cancel(self, run_id: str, reason: str = "cancelled") -> Run:
        """End a queued or awaiting run before any step ran (final status ``cancelled``)."""
        with self._kicking:
            run = self.store.get_run(run_id)
            if run is None:
                raise NotFoundError(f"run {run_id!r} not found")
            if run.status not in (RunStatus.QUEUED, RunStatus.AWAITING_APPROVAL):
                raise ConflictError(
                    f"run {run_id} is {run.status}: only a queued or awaiting run can be cancelled"
                )
            done = self._end_unstarted(run, reason)
            if done.status != RunStatus.CANCELLED:  # it began (or ended) meanwhile
                raise ConflictError(f"run {run_id} is {done.status} now: it cannot be cancelled")
            self.kick()  # runs waiting behind it may start now
        return done

    def _awaiting(self, run_id: str, verb: str) -> Run:
        run = self.store.get_run(run_id)
        if run is None:
            raise NotFoundError(f"run {run_id!r} not found")
        if run.status != RunStatus.AWAITING_APPROVAL or run.approval is None:
            errors = f" ({'; '.join(run.errors)})" if run.errors else ""
            raise ConflictError(
                f"run {run_id} is {run.status}{errors}, not awaiting approval: it cannot be {verb}"
            )
        return run

    def _end_unstarted(self, run: Run, reason: str) -> Run:
        final = run.model_copy(
            update={
                "status": RunStatus.CANCELLED,
                "finished_at": self._now_text(),
                "errors": (reason,),
            }
        )
        try:
            final = self.store.update_run(final, expect=run.status)
        except ConflictError:
            return self.store.get_run(run.id) or run
        self._event(
            EventKind.RECONCILE_COMPLETED,
            run_id=run.id,
            fields={"changes": run.changes, "dry_run": False, "cancelled": reason},
        )
        return final

    # -- carrying out a step --------------------------------------------------------------

    def _drift_check(self, message: Mapping[str, Any]) -> None:
        # Imported when a check arrives: a worker that never checks drift never loads it.
        from nclav.drift.worker import handle_drift_check

        handle_drift_check(self, message)

    def register_control(self, kind: str, handler: ControlHandler) -> None:
        """Handle queue messages ``{"kind": kind, ...}`` with ``handler`` (in a worker, with
        the delivery policy's retries: raise ``TemporaryError`` to be delivered again)."""
        self.control[kind] = handler

    def handle(self, message: Mapping[str, Any]) -> None:
        """One queue message: a control message (``kind``) goes to its registered handler;
        a step message: claim the step, carry it out, record the outcome, fan out."""
        kind = message.get("kind")
        if kind is not None:
            handler = self.control.get(str(kind))
            if handler is None:  # another version's, or nobody's: acknowledged, not looped
                logger.warning("acknowledged a control message nobody handles: kind %r", kind)
                return
            handler(message)
            return
        run_id, step_id = message["run_id"], message["step_id"]
        bundle = message.get("bundle")
        if not isinstance(bundle, str):
            run = self.store.get_run(run_id)
            if run is None or run.status != RunStatus.RUNNING:
                return  # an unknown, queued or finished run: nothing to do (redelivery is harmless)
            self._remember(run)
            bundle = run.bundle
        # else: the message was sent while its run was running (``_message``), and a run
        # leaves running only once every step is final, so the claim below is refused for a
        # finished run's step: no read of the run is needed to know what to load.
        now = self.clock.now()
        step = self.store.claim_step(run_id, step_id, self.owner, self.lease_s, now)
        if step is None:
            # Someone else holds it, or it is already done. Only a finished step's own fan-out
            # readies its dependents, so if that was cut short (the worker died, or the store
            # failed, after finish_step), this redelivery of its message does it again: it is
            # idempotent, and costs the step's neighbourhood.
            current = self.store.get_step(run_id, step_id)
            if current is not None and current.status.final:
                self._fan_out(current)
            return
        if step.attempts > self.max_attempts:
            # Every earlier attempt ended without an outcome (its worker died or timed out and
            # the sweeper handed the step out again): stop here instead of looping forever.
            error = (
                f"gave up after {step.attempts - 1} attempts that ended without a result "
                "(the worker stopped or timed out)"
            )
            self._finish(step, StepStatus.FAILED, error, failed=self._context(run_id))
            return
        if bundle is not None:
            self._bundle_of[run_id] = bundle
        graph, files = self.bundles(bundle) if bundle else (empty_graph(Desired(())), {})
        ctx = self._context(run_id, graph, files, bundle)
        try:
            with self._lease_kept(step):
                outcome = carry_out(ctx, step)
        except TemporaryError as exc:
            waiting = isinstance(exc, WaitingError)
            self._retry_or_fail(ctx, step, str(exc), exc.retry_after_s, waiting=waiting)
            return
        except PermanentError as exc:  # the step recorded it on its resource already
            self._finish(step, StepStatus.FAILED, str(exc))
            return
        except NclavError as exc:
            self._finish(step, StepStatus.FAILED, str(exc), failed=ctx)
            return
        except Exception as exc:  # a bug or an unexpected SDK error: record it, do not loop
            logger.exception("step %s of run %s crashed", step_id, run_id)
            error = f"internal error: {type(exc).__name__}: {exc}"
            self._finish(step, StepStatus.FAILED, error, failed=ctx)
            return
        self._finish(step, outcome, None)

    def give_up(self, message: Mapping[str, str], error: str) -> bool:
        """Record a message's step failed with ``error`` without carrying it out.

        For a runtime whose deliveries of the message ran out while every one of them failed
        before the step could record an outcome (a store that keeps failing, say): the step
        fails, its dependents are blocked and the run can end, instead of waiting forever.
        Returns False, changing nothing, when the step is final or another live lease holds it.
        """
        run_id, step_id = message["run_id"], message["step_id"]
        run = self.store.get_run(run_id)
        if run is None or run.status != RunStatus.RUNNING:
            return False
        self._remember(run)
        step = self.store.get_step(run_id, step_id)
        if step is None or step.status.final:
            return False
        if step.status != StepStatus.RUNNING or step.lease_owner != self.owner:
            step = self.store.claim_step(
                run_id, step_id, self.owner, self.lease_s, self.clock.now()
            )
            if step is None:
                return False
        self._finish(step, StepStatus.FAILED, error, failed=self._context(run_id))
        return True

    def _context(
        self,
        run_id: str,
        graph: Graph | None = None,
        files: Mapping[str, Mapping[str, bytes]] | None = None,
        bundle: str | None = None,
    ) -> StepContext:
        """What a step works with; without a graph only failures can be recorded with it."""
        return StepContext(
            store=self.store,
            graph=graph if graph is not None else empty_graph(Desired(())),
            files=files if files is not None else {},
            drivers=self.drivers,
            default_cloud=self.default_cloud,
            iac=self.iac,
            run_id=run_id,
            event=self._event,
            bundle=bundle,
            bundles=self.bundles,
            blobs=self.blobs,
        )

    def _retry_or_fail(
        self,
        ctx: StepContext,
        step: StepRecord,
        error: str,
        retry_after_s: float,
        *,
        waiting: bool = False,
    ) -> None:
        if step.attempts >= self.max_attempts and not waiting:
            message = f"{error} (gave up after {step.attempts} attempts)"
            self._finish(step, StepStatus.FAILED, message, failed=ctx)
            return
        # Exponential backoff with jitter (keeps retries of many steps apart), never sooner
        # than the error itself asked for.
        delay = max(retry_after_s, backoff(step.attempts, self.backoff_s))
        now = self.clock.now()
        done = self.store.finish_step(
            step.run_id,
            step.step_id,
            self.owner,
            StepStatus.READY,
            bound_error(error),
            now,
            not_before=now + delay,
        )
        if done is None:
            return  # our lease ran out and someone else holds the step now
        if waiting:  # a wait is not an attempt: give back the one this claim took
            with contextlib.suppress(ConflictError):
                self.store.update_step(
                    done.model_copy(update={"attempts": max(done.attempts - 1, 0)}), done.version
                )
        self.queue.send(_message(step, self._bundle_of.get(step.run_id)), delay_s=delay)

    def _finish(
        self,
        step: StepRecord,
        status: StepStatus,
        error: str | None,
        *,
        failed: StepContext | None = None,
    ) -> None:
        """Record the step's outcome; with ``failed``, also leave its resource in error."""
        error = bound_error(error) if error is not None else None
        done = self.store.finish_step(
            step.run_id, step.step_id, self.owner, status, error, self.clock.now()
        )
        if done is None:
            return  # our lease expired and someone else took over
        if failed is not None and error is not None:
            try:
                record_failure(failed, step, error)
            except Exception:  # the step's outcome is stored; the fan-out must still happen
                logger.exception("recording the failure of step %s failed", step.step_id)
        self._fan_out(done)

    def _fan_out(self, done: StepRecord) -> None:
        """Ready or block the dependents of ``done``, then finish the run if nothing is left.

        Only ``done``'s dependents are visited (and, when one is blocked, the pending steps
        downstream of it, breadth first), each with a consistent read of itself and of its own
        dependencies: the cost of a finished step is its neighbourhood, never its run's size.
        Two dependencies of one step finishing at once both re-read it after their own write,
        so the later of the two sees both final and readies it.

        The run is checked for its end only when this fan-out readied nothing: a readied step
        is unfinished, and its own fan-out comes later. So the step that is the last to become
        final (finished, or blocked here) always asks, after its writes.
        """
        # No "seen" set: a step left pending because another dependency was not final yet
        # must be looked at again when that dependency is blocked. It terminates: only a step
        # this loop blocks (once each) adds to the queue.
        queue = deque(done.dependents)
        final = {done.step_id: done}  # a final step never changes: read once, not per edge
        readied: list[str] = []
        # The dependents in one read (after this step's own write), then all their other
        # dependencies in one more: each dependent's first look costs no read of its own.
        read = self.store.get_steps(done.run_id, done.dependents) if done.dependents else {}
        pending = [s for s in read.values() if s.status == StepStatus.PENDING]
        missing = {d for s in pending for d in s.depends_on if d not in final}
        deps = self.store.get_steps(done.run_id, sorted(missing)) if missing else {}
        while queue:
            step_id = queue.popleft()
            first = read.pop(step_id, None)
            queue.extend(self._settle(done.run_id, step_id, final, readied, first, deps))
        if not readied:
            self._finish_run_if_done(done.run_id)

    def _settle(
        self,
        run_id: str,
        step_id: str,
        final: dict[str, StepRecord],
        readied: list[str],
        first: StepRecord | None = None,
        first_deps: Mapping[str, StepRecord] | None = None,
    ) -> tuple[str, ...]:
        """Ready or block one pending step whose dependencies are all final.

        Returns the dependents to visit next: those of a step just blocked (blocking travels
        downstream), none otherwise (a readied step fans out itself once it finishes).
        ``final``: the final steps this fan-out has read or written, kept to skip re-reads;
        ``readied``: the steps it readied; ``first`` and ``first_deps``: the step and
        dependencies of it as the fan-out read them already (for the first look only).
        """
        while True:
            step = first if first is not None else self.store.get_step(run_id, step_id)
            known = first_deps if first is not None and first_deps is not None else {}
            first = None  # a lost write reads it again
            if step is None or step.status != StepStatus.PENDING:
                return ()
            deps: list[StepRecord] = []
            missing = [d for d in step.depends_on if d not in final and d not in known]
            others = dict(known)
            others.update(self.store.get_steps(run_id, missing) if missing else {})
            for dep_id in step.depends_on:
                dep = final[dep_id] if dep_id in final else others.get(dep_id)
                if dep is None:
                    continue  # a dependency outside the run: ignored
                if not dep.status.final:
                    return ()  # the last dependency to finish will come back here
                final[dep_id] = dep
                deps.append(dep)
            bad = [d.step_id for d in deps if d.status in (StepStatus.FAILED, StepStatus.BLOCKED)]
            update = (
                {"status": StepStatus.BLOCKED, "error": f"blocked by {', '.join(bad)}"}
                if bad
                else {"status": StepStatus.READY, "sent_at": self.clock.now()}  # sent below
            )
            try:
                new = self.store.update_step(step.model_copy(update=update), step.version)
            except ConflictError:
                continue  # another worker moved it: read it again
            if new.status == StepStatus.READY:
                readied.append(new.step_id)
                self._send(new)
                return ()
            final[new.step_id] = new
            return new.dependents

    def _finish_run_if_done(self, run_id: str) -> Run | None:
        """Finalise the run when no step is left; returns it when it was finalised here."""
        # The cheap question first (an index seek or a counter): the run's steps are listed
        # once, when the run is done, to collect its errors, not after every step.
        if self.store.has_unfinished_steps(run_id):
            return None
        run = self.store.get_run(run_id)
        if run is None or run.status.final:
            return None
        steps = self.store.list_steps(run_id)
        if not all(s.status.final for s in steps):
            # Cannot happen with a correct store; never finalise a run with live steps.
            logger.error("run %s: no unfinished steps reported, yet some are", run_id)
            return None
        errors = tuple(f"{s.step_id}: {s.error}" for s in steps if s.status == StepStatus.FAILED)
        blocked = tuple(f"{s.step_id}: {s.error}" for s in steps if s.status == StepStatus.BLOCKED)
        final = run.model_copy(
            update={
                "status": RunStatus.FAILED if errors or blocked else RunStatus.SUCCEEDED,
                "finished_at": self._now_text(),
                "errors": errors + blocked,
            }
        )
        try:
            final = self.store.update_run(final)
        except ConflictError:
            return None  # someone else finalised it
        notify.run_changed(final)  # enqueues only: never blocks or fails the run
        self._event(
            EventKind.RECONCILE_COMPLETED,
            run_id=run_id,
            fields={"changes": run.changes, "dry_run": False},
        )
        self.kick()  # runs waiting behind this one may start now
        return final

    @contextmanager
    def _lease_kept(self, step: StepRecord) -> Iterator[None]:
        """Renew the step's lease while it runs, so a long apply is not taken over."""

        def renew() -> bool:  # False (lost it) ends the renewals: finish_step will refuse us
            now = self.clock.now()
            return self.store.renew_lease(step.run_id, step.step_id, self.owner, self.lease_s, now)

        with heartbeat(self.lease_s / 3, renew, name=f"lease-{step.step_id}"):
            yield

    # -- the sweeper ------------------------------------------------------------------------

    def sweep(self, window_s: float | None = None) -> int:
        """Re-send the messages of stuck steps, start runs that may start; return re-sent.

        Stuck: a running step whose lease expired (its worker died), or a ready step still
        unclaimed a ``window_s`` (default: a lease, plus ``pending_s`` for a message waiting in
        the queue's redelivery backoff) after its message was sent or became due (the message
        was lost). A step's first message goes out when its run begins, so a
        ready step of a run begun less than a window ago is not stuck. Each re-send is
        recorded on the step (``sent_at``) before the message goes, so a step is re-sent at
        most once a window however often the sweeper runs. Both kinds are read through the
        store's indexes, never by listing every run's steps. ``window_s=0`` re-sends every
        ready step: for a queue that lost its messages (the in-process one, at start).
        """
        now = self.clock.now()
        older_than = now - (self.lease_s if window_s is None else window_s)
        stuck = [s for s in self.store.list_expired_leases(now) if (s.sent_at or 0.0) <= older_than]
        leased = len(stuck)
        # A ready step's message may be waiting in the queue's redelivery backoff.
        ready_older_than = older_than - (self.pending_s if window_s is None else 0.0)
        ready = self.store.list_stuck_ready_steps(ready_older_than)
        runs = {r: self.store.get_run(r) for r in dict.fromkeys(s.run_id for s in ready)}
        begun_before = iso_time(ready_older_than)  # fixed-width text: compares as times
        for step in ready:
            run = runs[step.run_id]
            if run is None or run.status != RunStatus.RUNNING:
                continue  # a queued run sends its steps when it begins
            self._remember(run)
            if (run.started_at or "") <= begun_before:
                stuck.append(step)
        resent = 0
        for step in stuck:
            try:
                self.store.update_step(step.model_copy(update={"sent_at": now}), step.version)
            except ConflictError:
                continue  # claimed, finished or re-sent by someone else meanwhile
            self._send(step)
            resent += 1
        if stuck:
            logger.info(
                "sweeper: re-sent %d of %d stuck steps (%d with an expired lease)",
                resent,
                len(stuck),
                leased,
            )
        self.kick()
        return resent

    # -- helpers ----------------------------------------------------------------------------

    def _send(self, step: StepRecord) -> None:
        self.queue.send(_message(step, self._bundle_of.get(step.run_id)))

    def _remember(self, run: Run) -> None:
        """Note a running run's bundle: the messages of its steps carry it (``_message``)."""
        if run.bundle is not None and run.status == RunStatus.RUNNING:
            self._bundle_of[run.id] = run.bundle

    def _now_text(self) -> str:
        return iso_time(self.clock.now())

    def _event(
        self,
        kind: EventKind,
        *,
        enclave_id: str | None = None,
        partition_id: str | None = None,
        run_id: str | None = None,
        fields: Mapping[str, str | int | bool | None] | None = None,
    ) -> None:
        self.store.append_event(
            AuditEvent(
                kind=kind,
                at=self._now_text(),
                enclave_id=enclave_id,
                partition_id=partition_id,
                run_id=run_id,
                fields=dict(fields or {}),
            )
        )


# A step's error is stored on the step, the run and the resource, and shown by the CLI: a
# terraform or SDK error can be megabytes, so every store gets the same bounded text.
MAX_ERROR_BYTES = 4096
TRUNCATED = "\n[truncated]\n"


def bound_error(error: str, limit: int = MAX_ERROR_BYTES) -> str:
    """``error`` in at most ``limit`` UTF-8 bytes: when longer, its head and its tail (where
    a tool prints its final error) around a ``[truncated]`` marker."""
    data = error.encode("utf-8")
    if len(data) <= limit:
        return error
    half = (limit - len(TRUNCATED)) // 2
    head = data[:half].decode("utf-8", "ignore")
    tail = data[-half:].decode("utf-8", "ignore")
    return head + TRUNCATED + tail


class _Recent(dict[str, str]):
    """A dict keeping its ``size`` most recently inserted keys (thread-safe inserts)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size
        self._lock = threading.Lock()

    def __setitem__(self, key: str, value: str) -> None:
        with self._lock:
            self.pop(key, None)
            super().__setitem__(key, value)
            while len(self) > self._size:
                self.pop(next(iter(self)))


DRIFT_KIND = "drift_check"  # nclav.drift.schedule sends it (a test keeps the two equal)


def _notify_message(message: Mapping[str, Any]) -> None:
    notify.handle_message(message)  # delivers or re-queues itself; never raises


def _message(step: StepRecord, bundle: str | None = None) -> dict[str, str]:
    """A step's queue message; the action lets a runtime route it without a read, and the
    run's bundle (when the sender knows it) lets the worker skip reading the run."""
    message = {"run_id": step.run_id, "step_id": step.step_id, "action": step.action.value}
    if bundle is not None:
        message["bundle"] = bundle
    return message


def empty_tree_issue(field_name: str) -> Issue:
    """The refusal of a tree with no enclave: applying it would delete every enclave."""
    return Issue(
        "request",
        None,
        field_name,
        "the tree holds no enclave: applying it would delete every applied enclave; "
        "if that is what you want, allow it with allow_delete: true "
        "(nclav apply --allow-delete)",
    )


__all__ = [
    "DEFAULT_MAX_DELETES",
    "MAX_ERROR_BYTES",
    "Engine",
    "PlanChangedError",
    "bound_error",
    "empty_tree_issue",
]
