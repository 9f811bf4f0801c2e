"""The run engine without terraform: fakes for the driver and the IaC, a queue drained in hand.

Each test wires an ``Engine`` over the in-memory store (see ``engine_fakes.Rig``) and checks
what a run leaves behind: run and step statuses, applied state, audit events and exactly which
driver and IaC calls were made, in what order.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any, cast

import pytest
from engine_fakes import EXAMPLES, Rig, SyncQueue, wait_for

import nclav.engine.engine as engine_module
from nclav.engine import Engine
from nclav.errors import PermanentError, TemporaryError, WaitingError
from nclav.local import DirectoryBlobStore, InMemoryStateStore
from nclav.model import Cloud
from nclav.plan import Action, Plan, Step, plan_teardown
from nclav.ports import ManualClock
from nclav.records import EventKind, RunStatus, StepRecord, StepStatus
from nclav.state import Status
from support import HTTP, enclave_files, write_tree

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from nclav.ports import IacRunner, StateStore
    from nclav.records import AuditEvent

DEV, WEB = "product-a-dev", "web-dev"
DB, API, FRONT = f"{DEV}/db", f"{DEV}/api", f"{WEB}/frontend"

S_ENC_DEV = f"provision_enclave:{DEV}"
S_ENC_WEB = f"provision_enclave:{WEB}"
S_DB = f"provision_partition:{DB}"
S_API = f"provision_partition:{API}"
S_FRONT = f"provision_partition:{FRONT}"
S_EXP_DB = f"wire_export:{DEV}/db-tcp"
S_EXP_API = f"wire_export:{DEV}/api-http"
S_IMP_DB = f"wire_import:{DEV}/database"
S_IMP_WEB = f"wire_import:{WEB}/product_api"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, backoff_s=2.0, max_attempts=4, lease_s=60.0)
    r.add_tree("pa", EXAMPLES / "product-a" / "enclaves")
    yield r
    r.close()


@pytest.fixture
def threaded(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, sync=False, workers=4, backoff_s=0.01)
    r.add_tree("pa", EXAMPLES / "product-a" / "enclaves")
    yield r
    r.close()


def kinds(events: list[AuditEvent]) -> list[str]:
    return [e.kind.value for e in events]


def first(events: list[AuditEvent], kind: EventKind, **match: str) -> int:
    """Index of the first event of ``kind`` whose attributes equal ``match``."""
    for i, e in enumerate(events):
        if e.kind == kind and all(getattr(e, k) == v for k, v in match.items()):
            return i
    raise AssertionError(f"no {kind} event with {match}")


def add_solo(rig: Rig, tree: str = "pa") -> None:
    """An enclave that neither imports nor exports: a branch independent of product-a."""
    write_tree(rig.trees[tree], enclave_files("solo", part=HTTP))


# -- a full apply ------------------------------------------------------------------------------


def test_full_apply_then_no_op(rig: Rig) -> None:
    run = rig.apply("pa")
    assert run.status == RunStatus.SUCCEEDED, run
    assert run.errors == ()
    assert run.changes == 9
    assert run.enclave_ids == (DEV, WEB)
    steps = rig.steps(run.id)
    assert len(steps) == 9
    assert {s.status for s in steps.values()} == {StepStatus.SUCCEEDED}
    assert {s.attempts for s in steps.values()} == {1}
    assert all(s.lease_owner is None and s.error is None for s in steps.values())

    # Applied state: active, with the fake's outputs flowing downstream.
    dev, web = rig.enclave(DEV), rig.enclave(WEB)
    assert dev.meta.status == web.meta.status == Status.ACTIVE
    assert dev.context_vars == {"nclav_project_id": "", "nclav_region": ""}
    for state, pid in ((dev, "db"), (dev, "api"), (web, "frontend")):
        part = state.partitions[pid]
        key = f"{state.enclave_id}/{pid}"
        assert part.meta.status == Status.ACTIVE
        assert part.meta.last_error is None
        assert part.meta.generation == 1
        assert part.resolved_outputs == {"hostname": f"{key}/hostname", "port": f"{key}/port"}
    assert set(dev.export_handles) == {"api-http", "db-tcp"}
    assert set(dev.import_handles) == {"database"}
    assert set(web.import_handles) == {"product_api"}
    (api_call,) = rig.iac.applies_of(API)
    assert api_call.inputs == {"enclave": DEV, "db_host": f"{DB}/hostname", "db_port": f"{DB}/port"}
    assert api_call.update is False
    assert b"terraform_data" in api_call.files["main.tf"]
    (front_call,) = rig.iac.applies_of(FRONT)
    assert front_call.inputs == {"api_endpoint": f"https://{API}/hostname:{API}/port"}

    # Events: started first, completed last, one per transition, in dependency order.
    events = rig.events(run.id)
    names = kinds(events)
    assert names[0] == "ReconcileStarted" and names[-1] == "ReconcileCompleted"
    assert names.count("ReconcileStarted") == names.count("ReconcileCompleted") == 1
    assert names.count("EnclaveProvisioned") == 2
    assert names.count("ExportWired") == 2
    assert names.count("ImportWired") == 2
    provisioned = [e.partition_id for e in events if e.kind == EventKind.PARTITION_PROVISIONED]
    assert sorted(provisioned) == ["api", "db", "frontend"]
    assert "PartitionError" not in names and "EnclaveError" not in names
    pp = EventKind.PARTITION_PROVISIONED
    assert first(events, EventKind.ENCLAVE_PROVISIONED, enclave_id=DEV) < first(events, pp)
    assert first(events, pp, partition_id="db") < first(events, EventKind.EXPORT_WIRED)
    assert first(events, EventKind.EXPORT_WIRED) < first(events, EventKind.IMPORT_WIRED)
    assert first(events, EventKind.IMPORT_WIRED) < first(events, pp, partition_id="api")
    assert first(events, pp, partition_id="api") < first(events, pp, partition_id="frontend")
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    web_events = rig.store.list_events(WEB, 100)
    assert web_events and all(e.enclave_id == WEB for e in web_events)

    # Re-planning gives nothing; a second run has no steps and touches nothing.
    plan = rig.plan("pa")
    assert plan.render_text() == "No changes detected." and plan.steps == ()
    mutations, applies = len(rig.driver.mutations()), rig.iac.apply_count()
    again = rig.apply("pa")
    assert again.status == RunStatus.SUCCEEDED
    # A run claims every enclave of its tree (so later runs on them wait) but changes none.
    assert again.changes == 0 and again.enclave_ids == (DEV, WEB)
    assert rig.store.list_steps(again.id) == []
    assert len(rig.driver.mutations()) == mutations
    assert rig.iac.apply_count() == applies == 3
    assert kinds(rig.events(again.id)) == ["ReconcileStarted", "ReconcileCompleted"]
    assert rig.enclave(DEV).partitions["db"].meta.generation == 1


def test_a_run_with_no_steps_succeeds_at_once(rig: Rig) -> None:
    rig.apply("pa")
    sent = len(rig.queue.sent)
    run = rig.engine.start_run("pa")  # nothing drained: it must already be over
    assert run.status == RunStatus.SUCCEEDED
    assert run.started_at is not None and run.finished_at is not None
    assert rig.run(run.id).status == RunStatus.SUCCEEDED
    assert len(rig.queue.sent) == sent
    assert kinds(rig.events(run.id)) == ["ReconcileStarted", "ReconcileCompleted"]
    assert rig.store.list_unfinished_runs() == []


# -- dependency order --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "chains"),
    [
        ("product-a", [(DB, API), (API, FRONT)]),
        ("chain", [("hub/resolver", "data/events"), ("data/events", "app/worker")]),
    ],
)
def test_importer_applies_only_after_its_exporter_finished(
    threaded: Rig, example: str, chains: list[tuple[str, str]]
) -> None:
    threaded.add_tree(example + "-t", EXAMPLES / example / "enclaves")
    threaded.iac.delay_s = 0.02  # widen the window a misordered apply would fall into
    run = threaded.apply(example + "-t")
    assert run.status == RunStatus.SUCCEEDED, run
    j = threaded.journal
    for exporter, importer in chains:
        assert j.index("iac.apply.end", exporter) < j.index("iac.apply.start", importer)
        assert threaded.iac.apply_count(importer) == 1
    assert threaded.iac.overlaps == []


# -- transient failures ------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["iac", "driver"])
def test_transient_failure_is_retried_with_growing_backoff(rig: Rig, where: str) -> None:
    flaky = TemporaryError("service unavailable", retry_after_s=0)
    if where == "iac":
        rig.iac.failures.times(f"apply:{DB}", flaky, 2)
    else:
        rig.driver.failures.times(f"provision_partition:{DB}", flaky, 2)
    run = rig.engine.start_run("pa")

    rig.drain(advance=False)  # the first attempt fails; the retry waits for its backoff
    step = rig.step(run.id, S_DB)
    now = rig.mclock.now()
    assert step.status == StepStatus.READY and step.attempts == 1
    assert step.not_before is not None and step.not_before > now
    assert "service unavailable" in (step.error or "")
    first_delay = step.not_before - now
    assert 2.0 * 0.8 <= first_delay <= 2.0 * 1.2
    assert rig.run(run.id).status == RunStatus.RUNNING
    assert rig.step(run.id, S_API).status == StepStatus.PENDING
    # An early redelivery or a sweep before the backoff ends does not run it again.
    rig.engine.handle({"run_id": run.id, "step_id": S_DB})
    rig.engine.sweep()
    rig.drain(advance=False)
    assert rig.step(run.id, S_DB).attempts == 1

    rig.drain()
    final = rig.run(run.id)
    assert final.status == RunStatus.SUCCEEDED, final
    step = rig.step(run.id, S_DB)
    assert step.status == StepStatus.SUCCEEDED and step.attempts == 3 and step.error is None
    delays = [d for m, d in rig.queue.sent if m["step_id"] == S_DB and d > 0]
    assert len(delays) == 2
    assert delays[0] == pytest.approx(first_delay)
    assert delays[1] > delays[0] and 4.0 * 0.8 <= delays[1] <= 4.0 * 1.2
    if where == "iac":
        assert [c.error is not None for c in rig.iac.applies_of(DB)] == [True, True, False]
    else:
        assert rig.journal.count("driver.provision_partition", DB) == 3
        assert rig.iac.apply_count(DB) == 1
    assert rig.enclave(DEV).partitions["db"].meta.status == Status.ACTIVE
    assert rig.iac.apply_count(API) == 1


def test_a_retry_follows_the_errors_retry_after_hint(rig: Rig) -> None:
    rig.driver.failures.times(
        f"provision_enclave:{WEB}", TemporaryError("throttled", retry_after_s=30), 1
    )
    run = rig.engine.start_run("pa")
    rig.drain(advance=False)
    step = rig.step(run.id, S_ENC_WEB)
    assert step.status == StepStatus.READY and step.not_before is not None
    assert 30 * 0.8 <= step.not_before - rig.mclock.now() <= 30 * 1.2
    rig.drain()
    assert rig.run(run.id).status == RunStatus.SUCCEEDED
    assert rig.step(run.id, S_ENC_WEB).attempts == 2


def test_a_waiting_error_waits_past_the_attempt_limit(rig: Rig) -> None:
    waiting = WaitingError("closing account is queued", retry_after_s=3600)
    rig.driver.failures.times(f"provision_enclave:{WEB}", waiting, 6)  # more than max_attempts
    run = rig.apply("pa")
    assert run.status == RunStatus.SUCCEEDED
    step = rig.step(run.id, S_ENC_WEB)
    assert step.attempts == 1 and step.status == StepStatus.SUCCEEDED  # waits are not attempts
    delays = [d for m, d in rig.queue.sent if m["step_id"] == S_ENC_WEB and d > 0]
    assert len(delays) == 6 and all(d >= 3600 for d in delays)


def test_exhausted_attempts_fail_the_step_and_block_its_dependents(rig: Rig) -> None:
    add_solo(rig)
    rig.iac.failures.forever(f"apply:{DB}", TemporaryError("flaky db", retry_after_s=0))
    run = rig.apply("pa")
    assert run.status == RunStatus.FAILED

    steps = rig.steps(run.id)
    db = steps[S_DB]
    assert db.status == StepStatus.FAILED and db.attempts == 4
    assert "flaky db" in (db.error or "") and "gave up after 4 attempts" in (db.error or "")
    assert rig.iac.apply_count(DB) == 4
    delays = [d for m, d in rig.queue.sent if m["step_id"] == S_DB and d > 0]
    assert len(delays) == 3 and delays == sorted(delays)  # 2 s, 4 s, 8 s, with jitter
    assert 8.0 * 0.8 <= delays[-1] <= 8.0 * 1.2
    # Everything downstream of db is blocked, naming what blocked it.
    assert steps[S_EXP_DB].error == f"blocked by {S_DB}"
    assert steps[S_IMP_DB].error == f"blocked by {S_EXP_DB}"
    downstream = [S_EXP_DB, S_IMP_DB, S_API, S_EXP_API, S_IMP_WEB, S_FRONT]
    for sid in downstream:
        assert steps[sid].status == StepStatus.BLOCKED, sid
        assert (steps[sid].error or "").startswith("blocked by "), sid
        assert steps[sid].attempts == 0, sid
    assert rig.iac.apply_count(API) == rig.iac.apply_count(FRONT) == 0
    # Independent branches went on.
    for sid in (S_ENC_DEV, S_ENC_WEB, "provision_enclave:solo", "provision_partition:solo/part"):
        assert steps[sid].status == StepStatus.SUCCEEDED, sid
    assert rig.enclave("solo").partitions["part"].meta.status == Status.ACTIVE
    assert rig.enclave(WEB).meta.status == Status.ACTIVE
    # The run lists every error: the failure and each blocked step.
    assert len(run.errors) == 1 + len(downstream)
    assert any(e.startswith(f"{S_DB}: ") and "flaky db" in e for e in run.errors)
    for sid in downstream:
        assert any(e.startswith(f"{sid}: blocked by ") for e in run.errors), sid
    # The partition is recorded as failed, not left "provisioning".
    db_state = rig.enclave(DEV).partitions["db"]
    assert db_state.meta.status == Status.ERROR
    assert db_state.meta.last_error is not None and "flaky db" in db_state.meta.last_error.message
    events = rig.events(run.id)
    assert first(events, EventKind.PARTITION_ERROR, partition_id="db") >= 0
    assert kinds(events)[-1] == "ReconcileCompleted"


def test_an_unexpected_error_fails_the_step_once_and_marks_the_partition(rig: Rig) -> None:
    rig.iac.failures.times(f"apply:{DB}", RuntimeError("disk on fire"), 1)
    run = rig.apply("pa")
    assert run.status == RunStatus.FAILED
    db = rig.step(run.id, S_DB)
    assert db.status == StepStatus.FAILED and db.attempts == 1  # a bug is not retried
    assert db.error == "internal error: RuntimeError: disk on fire"
    part = rig.enclave(DEV).partitions["db"]
    assert part.meta.status == Status.ERROR
    assert part.meta.last_error is not None and "disk on fire" in part.meta.last_error.message
    assert first(rig.events(run.id), EventKind.PARTITION_ERROR, partition_id="db") >= 0

    again = rig.apply("pa")
    assert again.status == RunStatus.SUCCEEDED, again
    assert rig.enclave(DEV).partitions["db"].meta.status == Status.ACTIVE
    assert rig.plan("pa").steps == ()


# -- permanent failures ------------------------------------------------------------------------


def test_permanent_failure_marks_error_and_the_next_run_retries(rig: Rig) -> None:
    boom = PermanentError("terraform apply exited with code 1: Error: boom")
    rig.iac.failures.forever(f"apply:{API}", boom)
    run = rig.apply("pa")
    assert run.status == RunStatus.FAILED
    steps = rig.steps(run.id)
    assert steps[S_API].status == StepStatus.FAILED and steps[S_API].attempts == 1
    assert "boom" in (steps[S_API].error or "")
    assert rig.iac.apply_count(API) == 1  # a permanent error is not retried
    for sid in (S_EXP_API, S_IMP_WEB, S_FRONT):
        assert steps[sid].status == StepStatus.BLOCKED, sid
    for sid in (S_ENC_DEV, S_DB, S_EXP_DB, S_IMP_DB, S_ENC_WEB):
        assert steps[sid].status == StepStatus.SUCCEEDED, sid
    api = rig.enclave(DEV).partitions["api"]
    assert api.meta.status == Status.ERROR
    assert api.meta.last_error is not None and "boom" in api.meta.last_error.message
    assert rig.enclave(DEV).partitions["db"].meta.status == Status.ACTIVE
    errors = [e for e in rig.events(run.id) if e.kind == EventKind.PARTITION_ERROR]
    assert [(e.enclave_id, e.partition_id) for e in errors] == [(DEV, "api")]
    assert "boom" in str(errors[0].fields["message"])
    assert any(e.startswith(f"{S_API}: ") and "boom" in e for e in run.errors)

    plan = rig.plan("pa")
    assert "  ~ partition product-a-dev/api  (" in plan.render_text()
    assert S_API in {s.id for s in plan.steps}

    rig.iac.failures.stop(f"apply:{API}")
    again = rig.apply("pa")
    assert again.status == RunStatus.SUCCEEDED, again
    assert rig.iac.apply_count(API) == 2 and rig.iac.apply_count(DB) == 1
    api = rig.enclave(DEV).partitions["api"]
    assert api.meta.status == Status.ACTIVE and api.meta.last_error is None
    assert rig.enclave(WEB).partitions["frontend"].meta.status == Status.ACTIVE
    assert rig.plan("pa").steps == ()


def test_permanent_driver_failure_marks_the_enclave(rig: Rig) -> None:
    rig.driver.failures.forever(f"provision_enclave:{WEB}", PermanentError("quota exceeded"))
    run = rig.apply("pa")
    assert run.status == RunStatus.FAILED
    steps = rig.steps(run.id)
    assert steps[S_ENC_WEB].status == StepStatus.FAILED
    assert steps[S_IMP_WEB].status == steps[S_FRONT].status == StepStatus.BLOCKED
    assert steps[S_API].status == StepStatus.SUCCEEDED
    web = rig.enclave(WEB)
    assert web.meta.status == Status.ERROR
    assert web.meta.last_error is not None and web.meta.last_error.message == "quota exceeded"
    events = rig.events(run.id)
    assert first(events, EventKind.ENCLAVE_ERROR, enclave_id=WEB) >= 0

    rig.driver.failures.stop(f"provision_enclave:{WEB}")
    assert rig.apply("pa").status == RunStatus.SUCCEEDED
    assert rig.enclave(WEB).meta.status == Status.ACTIVE
    assert rig.plan("pa").steps == ()


# -- at-least-once delivery --------------------------------------------------------------------


def test_redelivered_messages_do_nothing(rig: Rig) -> None:
    run = rig.engine.start_run("pa")

    # Every message is delivered twice in a row, while the run is still going.
    def twice(message: dict[str, str]) -> None:
        rig.engine.handle(message)
        rig.engine.handle(message)

    rig.queue.drain(twice)
    assert rig.run(run.id).status == RunStatus.SUCCEEDED
    for key in (DB, API, FRONT):
        assert rig.iac.apply_count(key) == 1, key
    for which in (DEV, WEB):
        assert rig.journal.count("driver.provision_enclave", which) == 1
    assert len(rig.driver.mutations()) == 9
    assert {s.attempts for s in rig.store.list_steps(run.id)} == {1}

    # And once more after the run ended: no call, no event, no step touched.
    before_steps = rig.store.list_steps(run.id)
    before_events = len(rig.events())
    for message, _ in list(rig.queue.sent):
        rig.engine.handle(message)
    rig.drain()
    assert rig.store.list_steps(run.id) == before_steps
    assert len(rig.events()) == before_events
    assert rig.iac.apply_count() == 3 and len(rig.driver.mutations()) == 9


# -- leases and the sweeper --------------------------------------------------------------------


def test_sweeper_takes_over_a_dead_workers_step_only_after_its_lease(rig: Rig) -> None:
    run = rig.engine.start_run("pa")
    dead = rig.store.claim_step(run.id, S_ENC_DEV, "dead-worker", 60.0, rig.mclock.now())
    assert dead is not None and dead.attempts == 1
    rig.drain(advance=False)  # the dead worker's message finds the step taken: nothing happens
    assert rig.step(run.id, S_ENC_DEV).lease_owner == "dead-worker"
    assert rig.journal.count("driver.provision_enclave", DEV) == 0
    assert rig.run(run.id).status == RunStatus.RUNNING

    rig.mclock.advance(59)
    assert rig.engine.sweep() == 0  # the lease still holds
    rig.drain(advance=False)
    step = rig.step(run.id, S_ENC_DEV)
    assert step.status == StepStatus.RUNNING and step.lease_owner == "dead-worker"
    assert rig.journal.count("driver.provision_enclave", DEV) == 0

    rig.mclock.advance(2)
    assert rig.engine.sweep() == 1
    rig.drain()
    assert rig.run(run.id).status == RunStatus.SUCCEEDED
    step = rig.step(run.id, S_ENC_DEV)
    assert step.status == StepStatus.SUCCEEDED and step.attempts == 2 and step.lease_owner is None
    assert rig.journal.count("driver.provision_enclave", DEV) == 1
    # The dead worker waking up cannot overwrite the outcome.
    late = rig.store.finish_step(
        run.id, S_ENC_DEV, "dead-worker", StepStatus.FAILED, "late", rig.mclock.now()
    )
    assert late is None
    assert rig.step(run.id, S_ENC_DEV).status == StepStatus.SUCCEEDED


def test_a_live_worker_keeps_its_lease_through_a_long_apply(tmp_path: Path) -> None:
    rig = Rig(tmp_path, lease_s=0.3)  # renewed every 0.1 s of real time, on the manual clock
    rig.add_tree("pa", EXAMPLES / "product-a" / "enclaves")
    gate = threading.Event()
    rig.iac.gates[DB] = gate
    run = rig.engine.start_run("pa")
    workers: list[threading.Thread] = []

    def handle(message: dict[str, str]) -> None:
        if message["step_id"] == S_DB:  # the long apply runs in a worker thread
            workers.append(threading.Thread(target=rig.engine.handle, args=(message,)))
            workers[-1].start()
        else:
            rig.engine.handle(message)

    rig.queue.drain(handle, advance=False)
    assert rig.iac.entered[DB].wait(10)
    claimed = rig.step(run.id, S_DB).lease_expires_at
    assert claimed is not None
    rig.mclock.advance(0.25)
    wait_for(
        lambda: (rig.step(run.id, S_DB).lease_expires_at or 0) > claimed, what="a lease renewal"
    )
    rig.mclock.advance(0.25)  # past the first lease: only renewals keep the step
    assert rig.engine.sweep() == 0
    step = rig.step(run.id, S_DB)
    assert step.status == StepStatus.RUNNING and step.attempts == 1

    gate.set()
    workers[0].join(10)
    rig.drain()
    assert rig.run(run.id).status == RunStatus.SUCCEEDED
    assert rig.iac.apply_count(DB) == 1 and rig.step(run.id, S_DB).attempts == 1


# -- runs on the same and on different enclaves ------------------------------------------------


def test_runs_on_one_enclave_wait_their_turn(threaded: Rig) -> None:
    gate = threading.Event()
    threaded.iac.gates[DB] = gate
    first_run = threaded.engine.start_run("pa")
    assert first_run.status == RunStatus.RUNNING
    assert threaded.iac.entered[DB].wait(10)

    second = threaded.engine.start_run("pa")
    third = threaded.engine.start_run("pa")
    assert second.status == third.status == RunStatus.QUEUED
    threaded.engine.sweep()  # neither the sweeper nor time lets them jump the queue
    assert threaded.thread_queue is not None
    threaded.thread_queue.wait_idle(0.2)
    assert threaded.run(second.id).status == RunStatus.QUEUED
    assert threaded.run(third.id).status == RunStatus.QUEUED
    assert threaded.iac.apply_count(DB) == 1

    gate.set()
    wait_for(lambda: threaded.run(third.id).status.final, what="the third run to end")
    assert threaded.thread_queue.wait_idle(10)
    runs = [threaded.run(r.id) for r in (first_run, second, third)]
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 3, runs
    # First come, first served: each started after the one before it finished.
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert earlier.finished_at is not None and later.started_at is not None
        assert later.started_at >= earlier.finished_at
    assert threaded.iac.overlaps == []
    # The run events never interleave: each run completed before the next one started.
    events = [e for e in threaded.events() if e.kind == EventKind.RECONCILE_COMPLETED]
    assert [e.run_id for e in events] == [r.id for r in runs]
    assert threaded.plan("pa").steps == ()


def two_enclaves(rig: Rig) -> None:
    """Tree "base" (alpha and beta, applied) and two edits of it: "a2" and "b2"."""
    base = rig.add_tree("base")
    write_tree(base, {**enclave_files("alpha", part=HTTP), **enclave_files("beta", part=HTTP)})
    assert rig.apply("base").status == RunStatus.SUCCEEDED
    for name, eid in (("a2", "alpha"), ("b2", "beta")):
        root = rig.add_tree(name, base)
        (root / eid / "part" / "main.tf").write_text(f"# {name}\n")
        config = root / eid / "config.yml"
        config.write_text(config.read_text().replace("region: r\n", f"region: {name}\n"))


def test_reconciles_of_one_tree_serialise_and_plan_when_they_begin(rig: Rig) -> None:
    """Two edits of a tree are two desired states of the same enclaves: the second run must
    not run beside the first, and it is planned against what the first left behind."""
    two_enclaves(rig)
    run_a = rig.engine.start_run("a2")
    run_b = rig.engine.start_run("b2")
    assert run_a.enclave_ids == run_b.enclave_ids == ("alpha", "beta")
    assert run_a.status == RunStatus.RUNNING and run_b.status == RunStatus.QUEUED
    rig.drain()
    assert rig.run(run_a.id).status == rig.run(run_b.id).status == RunStatus.SUCCEEDED
    # b2 reverts a2's edit of alpha: it was planned after a2 applied, so it re-applies alpha.
    assert rig.iac.apply_count("alpha/part") == 3 and rig.iac.apply_count("beta/part") == 2
    assert rig.enclave("alpha").desired is not None
    assert rig.enclave("alpha").desired.region == "r"


def test_destroys_of_disjoint_enclaves_run_together(tmp_path: Path) -> None:
    rig = Rig(tmp_path, sync=False, workers=4)
    try:
        two_enclaves(rig)
        gate = threading.Event()  # hold alpha's teardown in its driver call
        rig.driver.gates["teardown_enclave:alpha"] = gate
        applied = {s.enclave_id: s for s in rig.store.list_enclaves()}
        run_a = rig.engine.start_plan(plan_teardown(applied, ["alpha"]), None, "destroy")
        assert rig.driver.entered["teardown_enclave:alpha"].wait(10)
        run_b = rig.engine.start_plan(plan_teardown(applied, ["beta"]), None, "destroy")
        assert run_a.enclave_ids == ("alpha",) and run_b.enclave_ids == ("beta",)
        assert run_b.status == RunStatus.RUNNING
        wait_for(lambda: rig.run(run_b.id).status.final, what="beta's teardown")
        assert rig.run(run_b.id).status == RunStatus.SUCCEEDED
        assert rig.run(run_a.id).status == RunStatus.RUNNING  # still held, yet beta finished
        gate.set()
        wait_for(lambda: rig.run(run_a.id).status.final, what="alpha's teardown")
        assert rig.run(run_a.id).status == RunStatus.SUCCEEDED
        assert rig.store.list_enclaves() == []
    finally:
        rig.close()


def test_unchanged_outputs_skip_importers_and_changed_outputs_reapply_them(rig: Rig) -> None:
    rig.apply("pa")
    db_tf = rig.trees["pa"] / "product-a" / "dev" / "db" / "main.tf"
    db_tf.write_text(db_tf.read_text() + "\n# a comment\n")
    plan = rig.plan("pa")
    assert "~ partition product-a-dev/db  (config or files changed)" in plan.render_text()
    assert "if outputs of product-a-dev/db change" in plan.render_text()

    run = rig.apply("pa")
    assert run.status == RunStatus.SUCCEEDED
    steps = rig.steps(run.id)
    assert steps[S_DB].status == StepStatus.SUCCEEDED
    assert steps[S_API].status == StepStatus.SKIPPED
    assert steps[S_EXP_DB].status == StepStatus.SKIPPED
    assert steps[S_IMP_DB].status == StepStatus.SKIPPED
    assert rig.iac.apply_count(DB) == 2 and rig.iac.apply_count(API) == 1
    assert rig.iac.applies_of(DB)[-1].update is True
    assert rig.plan("pa").steps == ()

    # Now db's outputs move: the export, the import and api follow; frontend reads api only.
    rig.iac.outputs[DB] = {"hostname": "db.example.internal"}
    db_tf.write_text(db_tf.read_text() + "# again\n")
    run = rig.apply("pa")
    assert run.status == RunStatus.SUCCEEDED
    steps = rig.steps(run.id)
    for sid in (S_DB, S_EXP_DB, S_IMP_DB, S_API):
        assert steps[sid].status == StepStatus.SUCCEEDED, sid
    assert steps[S_FRONT].status == StepStatus.SKIPPED
    assert rig.iac.apply_count(API) == 2 and rig.iac.apply_count(FRONT) == 1
    assert rig.iac.applies_of(API)[-1].inputs["db_host"] == "db.example.internal"
    dev = rig.enclave(DEV)
    assert dev.partitions["db"].resolved_outputs["hostname"] == "db.example.internal"
    assert dev.export_handles["db-tcp"]["outputs"]["hostname"] == "db.example.internal"
    assert rig.plan("pa").steps == ()


# -- removal -----------------------------------------------------------------------------------


def test_removed_partition_is_torn_down(rig: Rig) -> None:
    rig.apply("pa")
    front = rig.trees["pa"] / "web" / "dev" / "frontend"
    shutil.rmtree(front)
    front.mkdir()
    run = rig.apply("pa")
    assert run.status == RunStatus.SUCCEEDED, run
    assert [s.step_id for s in rig.store.list_steps(run.id)] == [f"teardown_partition:{FRONT}"]
    assert rig.iac.destroys == [(run.id, FRONT)]
    assert rig.journal.count("driver.teardown_partition", FRONT) == 1
    assert rig.journal.index("iac.destroy.end", FRONT) < rig.journal.index(
        "driver.teardown_partition", FRONT
    )
    assert "frontend" not in rig.enclave(WEB).partitions
    assert rig.enclave(WEB).meta.status == Status.ACTIVE
    events = rig.events(run.id)
    deleted = [e for e in events if e.kind == EventKind.PARTITION_DELETED]
    assert [(e.enclave_id, e.partition_id) for e in deleted] == [(WEB, "frontend")]
    assert rig.plan("pa").steps == ()


def test_a_failed_teardown_leaves_the_partition_in_error_until_retried(rig: Rig) -> None:
    rig.apply("pa")
    front = rig.trees["pa"] / "web" / "dev" / "frontend"
    shutil.rmtree(front)
    front.mkdir()
    flaky = TemporaryError("state locked", retry_after_s=0)
    rig.iac.failures.forever(f"destroy:{FRONT}", flaky)
    run = rig.apply("pa")
    assert run.status == RunStatus.FAILED
    step = rig.step(run.id, f"teardown_partition:{FRONT}")
    assert step.status == StepStatus.FAILED and step.attempts == 4
    assert rig.journal.count("driver.teardown_partition", FRONT) == 0
    part = rig.enclave(WEB).partitions["frontend"]
    assert part.meta.status == Status.ERROR
    assert part.meta.last_error is not None and "state locked" in part.meta.last_error.message
    assert "  - partition web-dev/frontend" in rig.plan("pa").render_text()

    rig.iac.failures.stop(f"destroy:{FRONT}")
    assert rig.apply("pa").status == RunStatus.SUCCEEDED
    assert "frontend" not in rig.enclave(WEB).partitions
    assert rig.plan("pa").steps == ()


def test_an_import_records_the_export_hash_it_was_wired_with(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nclav.hashing import import_hash

    wire = rig.driver.provision_import

    def export_moves_meanwhile(*args: Any) -> Any:
        found = rig.store.get_enclave(DEV)
        assert found is not None
        moved = {**found[0].export_hashes, "db-tcp": "moved"}
        rig.store.put_enclave(found[0].model_copy(update={"export_hashes": moved}), found[1])
        return wire(*args)

    first = rig.apply("pa")
    wired = rig.enclave(DEV).export_hashes["db-tcp"]
    monkeypatch.setattr(rig.driver, "provision_import", export_moves_meanwhile)
    rig.store.put_enclave(  # forget the import's hash, so the next run wires it again
        rig.enclave(DEV).model_copy(update={"import_hashes": {}}),
        rig.store.get_enclave(DEV)[1],  # type: ignore[index]
    )
    run = rig.apply("pa")
    assert first.status == run.status == RunStatus.SUCCEEDED
    assert rig.steps(run.id)[S_IMP_DB].status == StepStatus.SUCCEEDED
    imp = next(i for i in rig.load("pa")[0].enclaves[DEV].config.imports if i.alias == "database")
    # The hash of the export as the import was wired with its handle, not one read later.
    assert rig.enclave(DEV).import_hashes["database"] == import_hash(imp, wired)


def test_removed_enclaves_are_torn_down_importers_first(rig: Rig) -> None:
    add_solo(rig)
    rig.apply("pa")
    shutil.rmtree(rig.trees["pa"] / "product-a")
    shutil.rmtree(rig.trees["pa"] / "web")
    run = rig.apply("pa")
    assert run.status == RunStatus.SUCCEEDED, run
    assert {DEV, WEB} <= set(run.enclave_ids)

    j = rig.journal
    web_gone = j.index("driver.teardown_enclave", WEB)
    dev_gone = j.index("driver.teardown_enclave", DEV)
    # Each enclave's partitions go before the enclave itself, api before the db it reads.
    assert j.index("iac.destroy.end", FRONT) < web_gone
    assert j.index("iac.destroy.end", API) < j.index("iac.destroy.start", DB)
    assert j.index("iac.destroy.end", DB) < dev_gone
    assert j.index("driver.teardown_import", f"{DEV}/database") < dev_gone
    assert j.index("driver.teardown_export", f"{DEV}/api-http") < dev_gone
    # The importer enclave is gone before the exporter's teardown starts.
    assert web_gone < j.index("iac.destroy.start", API)
    assert sorted(k for _, k in rig.iac.destroys) == sorted([API, DB, FRONT])

    assert rig.store.get_enclave(DEV) is None and rig.store.get_enclave(WEB) is None
    assert rig.enclave("solo").meta.status == Status.ACTIVE
    events = rig.events(run.id)
    names = kinds(events)
    assert names.count("PartitionDeleted") == 3 and names.count("EnclaveDeleted") == 2
    assert first(events, EventKind.ENCLAVE_DELETED, enclave_id=WEB) < first(
        events, EventKind.ENCLAVE_DELETED, enclave_id=DEV
    )
    assert names[-1] == "ReconcileCompleted"
    assert rig.plan("pa").steps == ()


# -- the cost of the fan-out ----------------------------------------------------------------------


class CountingStore:
    """Forwards to an in-memory store, counting the step reads the engine makes.

    A wrapper, not a subclass, so the store's own internal reads are not counted.
    ``fail_get_step`` makes that many next ``get_step`` / ``get_steps`` calls raise
    ``TemporaryError``.
    """

    def __init__(self) -> None:
        self.inner = InMemoryStateStore()
        self.calls: Counter[str] = Counter()
        self.fail_get_step = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def list_steps(self, run_id: str) -> list[StepRecord]:
        self.calls["list_steps"] += 1
        return self.inner.list_steps(run_id)

    def get_step(self, run_id: str, step_id: str) -> StepRecord | None:
        self.calls["get_step"] += 1
        if self.fail_get_step:
            self.fail_get_step -= 1
            raise TemporaryError("store unavailable", retry_after_s=0)
        return self.inner.get_step(run_id, step_id)

    def get_steps(self, run_id: str, step_ids: Sequence[str]) -> dict[str, StepRecord]:
        self.calls["get_steps"] += 1
        if self.fail_get_step:
            self.fail_get_step -= 1
            raise TemporaryError("store unavailable", retry_after_s=0)
        return self.inner.get_steps(run_id, step_ids)

    def reads(self) -> int:
        """Requests reading single steps: ``get_step`` and ``get_steps`` calls."""
        return self.calls["get_step"] + self.calls["get_steps"]

    def has_unfinished_steps(self, run_id: str) -> bool:
        self.calls["has_unfinished_steps"] += 1
        return self.inner.has_unfinished_steps(run_id)


def cost_plan(independent: int, chain: int, *, fail: str | None = None) -> Plan:
    """``independent`` steps with no dependencies, and a chain of ``chain`` after one root."""
    steps = [
        Step(f"i{n:04d}", Action.PROVISION_ENCLAVE, f"i{n:04d}", None, ())
        for n in range(independent)
    ]
    previous: tuple[str, ...] = ()
    for n in range(chain):
        steps.append(Step(f"c{n:04d}", Action.PROVISION_ENCLAVE, f"c{n:04d}", None, previous))
        previous = (f"c{n:04d}",)
    return Plan(changes=(), steps=tuple(steps))


@pytest.fixture
def bare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Engine, CountingStore, SyncQueue]:
    """An engine whose steps succeed at once (or fail, for ids in ``failing``) without a driver."""
    failing: set[str] = set()

    def carry_out(ctx: object, step: StepRecord) -> StepStatus:
        if step.step_id in failing:
            raise PermanentError(f"{step.step_id} broke")
        return StepStatus.SUCCEEDED

    monkeypatch.setattr(engine_module, "carry_out", carry_out)
    clock = ManualClock()
    store = CountingStore()
    queue = SyncQueue(clock)
    engine = Engine(
        cast("StateStore", store),
        queue,
        DirectoryBlobStore(tmp_path / "blobs"),
        clock,
        {},
        Cloud.LOCAL,
        cast("IacRunner", None),
        lambda bundle: pytest.fail(f"no bundle expected, got {bundle}"),
    )
    engine.failing = failing  # type: ignore[attr-defined]
    return engine, store, queue


@pytest.mark.parametrize("size", [30, 300])
def test_a_run_lists_its_steps_a_fixed_number_of_times_whatever_its_size(
    bare: tuple[Engine, CountingStore, SyncQueue], size: int
) -> None:
    engine, store, queue = bare
    plan = cost_plan(size, 10)
    run = engine.start_plan(plan, None)
    queue.drain(engine.handle)
    final = store.get_run(run.id)
    assert final is not None and final.status == RunStatus.SUCCEEDED, final
    n = len(plan.steps)
    assert all(s.status == StepStatus.SUCCEEDED for s in store.list_steps(run.id))
    store.calls["list_steps"] -= 1  # the check just above
    # Once to send the ready steps when the run begins, once to collect its errors at the end:
    # not once per finished step (that made a run of N steps read O(N^2) steps).
    assert store.calls["list_steps"] == 2
    # A finished step reads its dependents and their other dependencies, nothing else (itself
    # it has in hand): the 9 links of the chain cost 1 read each, the independent steps none,
    # whatever their number.
    assert store.reads() == 9
    # And each finish that readied nothing asks once whether the run is done (plus once when
    # the run begins); the 9 that readied the next link of the chain do not.
    assert store.calls["has_unfinished_steps"] == n + 1 - 9


def test_a_wide_fan_out_and_a_wide_join_cost_one_read_each_not_one_per_edge(
    bare: tuple[Engine, CountingStore, SyncQueue],
) -> None:
    engine, store, queue = bare
    width = 20
    fan = [
        Step(f"d{n:02d}", Action.PROVISION_ENCLAVE, f"d{n:02d}", None, ("root",))
        for n in range(width)
    ]
    join = Step("join", Action.PROVISION_ENCLAVE, "join", None, tuple(s.id for s in fan))
    root = Step("root", Action.PROVISION_ENCLAVE, "root", None, ())
    run = engine.start_plan(Plan(changes=(), steps=(root, *fan, join)), None)
    queue.drain(engine.handle)
    final = store.get_run(run.id)
    assert final is not None and final.status == RunStatus.SUCCEEDED, final
    # The root reads its 20 dependents in one request; each of the 20 reads the join, then
    # the join's other dependencies in one more. Read one by one that was some 250 reads.
    assert store.reads() <= 1 + 2 * width


def test_a_failure_blocks_everything_downstream_reading_only_those_steps(
    bare: tuple[Engine, CountingStore, SyncQueue],
) -> None:
    engine, store, queue = bare
    engine.failing.add("c0002")  # type: ignore[attr-defined]
    plan = cost_plan(300, 50)
    run = engine.start_plan(plan, None)
    queue.drain(engine.handle)
    final = store.get_run(run.id)
    assert final is not None and final.status == RunStatus.FAILED
    steps = {s.step_id: s for s in store.list_steps(run.id)}
    assert steps["c0002"].status == StepStatus.FAILED
    for n in range(3, 50):
        step = steps[f"c{n:04d}"]
        assert (step.status, step.error) == (StepStatus.BLOCKED, f"blocked by c{n - 1:04d}")
    assert len(final.errors) == 1 + 47
    assert store.calls["list_steps"] == 3  # begin, finish, and the listing just above
    assert store.reads() <= 2 * len(plan.steps)


def test_a_fan_out_cut_short_is_done_again_when_the_message_comes_back(
    bare: tuple[Engine, CountingStore, SyncQueue],
) -> None:
    engine, store, queue = bare
    run = engine.start_plan(cost_plan(0, 2), None)
    (first_message,) = queue.ready
    queue.ready.clear()
    store.fail_get_step = 1  # the store fails right after c0000 is recorded as finished
    with pytest.raises(TemporaryError):
        engine.handle(first_message)
    assert store.get_step(run.id, "c0000").status == StepStatus.SUCCEEDED  # type: ignore[union-attr]
    assert store.get_step(run.id, "c0001").status == StepStatus.PENDING  # type: ignore[union-attr]
    assert queue.ready == []
    engine.handle(first_message)  # the queue delivers the message again
    assert [m["step_id"] for m in queue.ready] == ["c0001"]
    queue.drain(engine.handle)
    final = store.get_run(run.id)
    assert final is not None and final.status == RunStatus.SUCCEEDED
