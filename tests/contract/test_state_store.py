"""The StateStore contract, run against every implementation (``store`` in conftest.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from nclav.errors import ConflictError, NotFoundError
from nclav.ports import ManualClock, StateStore
from nclav.records import (
    Approval,
    EventKind,
    IacOperation,
    IacRun,
    IacStatus,
    RunStatus,
    StepStatus,
    iso_time,
)
from nclav.state import EnclaveState, Status
from nclav.transitions import simulate_apply
from stand_ins import FIELD_DELETES, NAME_ORDER, PRECONDITIONS
from support import SEED, chain, load_graph, write_tree

from .conftest import T0, event, make_run, started

if TYPE_CHECKING:
    from pathlib import Path

# -- enclaves -------------------------------------------------------------------------------------


def test_ping(store: StateStore) -> None:
    store.ping()


def test_missing_enclave_is_none(store: StateStore) -> None:
    assert store.get_enclave("nope") is None


def test_put_new_enclave_starts_at_version_1(store: StateStore) -> None:
    state = EnclaveState(enclave_id="a")
    assert store.put_enclave(state, None) == 1
    assert store.get_enclave("a") == (state, 1)


def test_put_new_enclave_twice_conflicts(store: StateStore) -> None:
    store.put_enclave(EnclaveState(enclave_id="a"), None)
    with pytest.raises(ConflictError):
        store.put_enclave(EnclaveState(enclave_id="a"), None)


def test_put_enclave_at_version_advances_it(store: StateStore) -> None:
    store.put_enclave(EnclaveState(enclave_id="a"), None)
    changed = EnclaveState(enclave_id="a", context_vars={"k": "v"})
    assert store.put_enclave(changed, 1) == 2
    assert store.get_enclave("a") == (changed, 2)


def test_put_enclave_with_stale_version_conflicts_and_changes_nothing(store: StateStore) -> None:
    store.put_enclave(EnclaveState(enclave_id="a"), None)
    store.put_enclave(EnclaveState(enclave_id="a", context_vars={"k": "1"}), 1)
    with pytest.raises(ConflictError):
        store.put_enclave(EnclaveState(enclave_id="a", context_vars={"k": "stale"}), 1)
    stored = store.get_enclave("a")
    assert stored is not None
    assert stored[0].context_vars == {"k": "1"}
    assert stored[1] == 2


def test_put_missing_enclave_with_a_version_conflicts(store: StateStore) -> None:
    with pytest.raises(ConflictError):
        store.put_enclave(EnclaveState(enclave_id="a"), 3)
    assert store.get_enclave("a") is None


@pytest.mark.needs_gcloud_firestore(NAME_ORDER)
def test_list_enclaves_sorted_by_id(store: StateStore) -> None:
    for eid in ("c", "a", "b10", "b2"):
        store.put_enclave(EnclaveState(enclave_id=eid), None)
    assert [e.enclave_id for e in store.list_enclaves()] == ["a", "b10", "b2", "c"]


def test_list_enclaves_empty(store: StateStore) -> None:
    assert store.list_enclaves() == []


def test_delete_enclave_at_its_version(store: StateStore) -> None:
    store.put_enclave(EnclaveState(enclave_id="a"), None)
    store.delete_enclave("a", 1)
    assert store.get_enclave("a") is None
    assert store.put_enclave(EnclaveState(enclave_id="a"), None) == 1


def test_delete_enclave_with_wrong_version_or_missing_conflicts(store: StateStore) -> None:
    store.put_enclave(EnclaveState(enclave_id="a"), None)
    with pytest.raises(ConflictError):
        store.delete_enclave("a", 2)
    with pytest.raises(ConflictError):
        store.delete_enclave("missing", 1)
    assert store.get_enclave("a") is not None


def test_full_enclave_state_round_trips(store: StateStore, tmp_path: Path) -> None:
    graph = load_graph(write_tree(tmp_path / "tree", SEED))
    applied = simulate_apply(graph, {})
    for state in applied.values():
        store.put_enclave(state, None)
    assert {s.enclave_id: s for s in store.list_enclaves()} == applied
    state = applied["product-a-dev"]
    assert state.desired is not None and state.desired.imports  # the aliased `from` field
    assert state.meta.status == Status.ACTIVE


# -- runs -----------------------------------------------------------------------------------------


def test_create_run_assigns_increasing_seq(store: StateStore) -> None:
    first = started(store, "a")
    second = started(store, "b")
    assert 0 < first.seq < second.seq
    assert store.get_run(first.id) == first


def test_create_run_keeps_step_order_and_starts_versions_at_1(store: StateStore) -> None:
    run = started(store, "z", "a", "m")
    steps = store.list_steps(run.id)
    assert [s.step_id for s in steps] == ["z", "a", "m"]
    assert [s.status for s in steps] == [StepStatus.READY, StepStatus.PENDING, StepStatus.PENDING]
    assert all(s.version == 1 for s in steps)
    assert steps[1].depends_on == ("z",)
    assert store.get_step(run.id, "a") == steps[1]


def test_create_run_twice_conflicts(store: StateStore) -> None:
    run = make_run()
    store.create_run(run, chain(run.id, "a"))
    with pytest.raises(ConflictError):
        store.create_run(run, [])


def test_create_run_rejects_foreign_or_duplicate_steps(store: StateStore) -> None:
    run = make_run()
    with pytest.raises(ValueError):
        store.create_run(run, chain("other", "a"))
    with pytest.raises(ValueError):
        store.create_run(run, chain(run.id, "a") + chain(run.id, "a"))
    assert store.get_run(run.id) is None


def test_begin_run_gives_a_queued_run_its_steps_once(store: StateStore) -> None:
    queued = store.create_run(make_run(plan_on_start=True), [])
    assert store.list_steps(queued.id) == []
    running = queued.model_copy(update={"status": RunStatus.RUNNING, "changes": 2})
    began = store.begin_run(running, chain(queued.id, "a", "b"))
    assert (began.seq, began.status, began.changes) == (queued.seq, RunStatus.RUNNING, 2)
    assert store.get_run(queued.id) == began
    assert [s.step_id for s in store.list_steps(queued.id)] == ["a", "b"]
    with pytest.raises(ConflictError):  # a second worker beginning it too loses
        store.begin_run(running, chain(queued.id, "c"))
    assert [s.step_id for s in store.list_steps(queued.id)] == ["a", "b"]


def test_begin_run_refuses_a_run_that_has_steps_or_is_unknown(store: StateStore) -> None:
    run = started(store, "a")
    with pytest.raises(ConflictError):
        store.begin_run(run.model_copy(update={"status": RunStatus.RUNNING}), [])
    with pytest.raises(NotFoundError):
        store.begin_run(make_run(status=RunStatus.RUNNING), [])


def test_unknown_run_and_step(store: StateStore) -> None:
    assert store.get_run("nope") is None
    assert store.list_steps("nope") == []
    assert store.get_step("nope", "a") is None


def test_list_runs_newest_first_with_limit_and_status(store: StateStore) -> None:
    runs = [started(store, "a") for _ in range(4)]
    store.update_run(runs[1].model_copy(update={"status": RunStatus.RUNNING}))
    assert [r.id for r in store.list_runs()] == [r.id for r in reversed(runs)]
    assert [r.id for r in store.list_runs(limit=2)] == [runs[3].id, runs[2].id]
    assert [r.id for r in store.list_runs(status=RunStatus.RUNNING)] == [runs[1].id]
    assert store.list_runs(limit=0) == []


def test_update_run_keeps_the_stores_seq(store: StateStore) -> None:
    run = started(store, "a")
    updated = store.update_run(
        run.model_copy(update={"seq": 999, "status": RunStatus.RUNNING, "changes": 3})
    )
    assert updated.seq == run.seq
    assert store.get_run(run.id) == updated
    assert updated.changes == 3


def test_a_final_run_cannot_be_updated(store: StateStore) -> None:
    run = started(store, "a")
    done = run.model_copy(update={"status": RunStatus.FAILED, "errors": ("boom",)})
    store.update_run(done)
    with pytest.raises(ConflictError):
        store.update_run(run.model_copy(update={"status": RunStatus.SUCCEEDED}))
    assert store.get_run(run.id) == done


def test_update_unknown_run(store: StateStore) -> None:
    with pytest.raises(NotFoundError):
        store.update_run(make_run())


@pytest.mark.needs_gcloud_firestore(FIELD_DELETES)
def test_unfinished_runs_in_seq_order(store: StateStore) -> None:
    runs = [started(store, "a") for _ in range(4)]
    store.update_run(runs[0].model_copy(update={"status": RunStatus.SUCCEEDED}))
    store.update_run(runs[2].model_copy(update={"status": RunStatus.RUNNING}))
    assert [r.id for r in store.list_unfinished_runs()] == [runs[1].id, runs[2].id, runs[3].id]


# -- audit events ---------------------------------------------------------------------------------


def test_events_get_increasing_seq(store: StateStore) -> None:
    a = store.append_event(event(EventKind.RECONCILE_STARTED, run_id="r"))
    b = store.append_event(event(EventKind.ENCLAVE_PROVISIONED, "e1"))
    assert 0 < a.seq < b.seq
    assert store.list_events() == [a, b]


def test_list_events_last_limit_in_chronological_order(store: StateStore) -> None:
    stored = [store.append_event(event(EventKind.ENCLAVE_PROVISIONED, f"e{i}")) for i in range(6)]
    assert store.list_events(limit=3) == stored[3:]
    assert store.list_events(limit=100) == stored
    assert store.list_events(limit=0) == []


def test_list_events_by_enclave(store: StateStore) -> None:
    stored = [
        store.append_event(event(EventKind.PARTITION_PROVISIONED, eid, partition_id="p"))
        for eid in ("a", "b", "a", "c", "a")
    ]
    assert store.list_events("a", 100) == [stored[0], stored[2], stored[4]]
    assert store.list_events("a", 2) == [stored[2], stored[4]]
    assert store.list_events("zzz", 10) == []


def test_list_events_by_run(store: StateStore) -> None:
    a = store.append_event(event(EventKind.RECONCILE_STARTED, run_id="r1"))
    store.append_event(event(EventKind.RECONCILE_STARTED, run_id="r2"))
    c = store.append_event(event(EventKind.ENCLAVE_PROVISIONED, "e", run_id="r1"))
    assert store.list_events(run_id="r1") == [a, c]
    assert store.list_events("e", run_id="r1") == [c]


def test_event_fields_round_trip_to_the_original_shape(store: StateStore) -> None:
    done = store.append_event(
        event(
            EventKind.RECONCILE_COMPLETED,
            run_id="run-1",
            fields={"changes": 6, "dry_run": False, "note": None},
        )
    )
    wired = store.append_event(
        event(EventKind.IMPORT_WIRED, "importer", fields={"export_name": "db-tcp"})
    )
    assert store.list_events() == [done, wired]
    assert done.to_json() == {
        "kind": "ReconcileCompleted",
        "id": "run-1",
        "at": iso_time(T0),
        "changes": 6,
        "dry_run": False,
        "note": None,
        "seq": done.seq,
        "run_id": "run-1",
    }
    assert wired.to_json()["importer_enclave"] == "importer"
    assert wired.to_json()["export_name"] == "db-tcp"


# -- IaC runs -------------------------------------------------------------------------------------


def iac(partition: str, started_at: float, **fields: object) -> IacRun:
    return IacRun(
        enclave_id="e",
        partition_id=partition,
        operation=IacOperation.PROVISION,
        started_at=iso_time(started_at),
        **fields,
    )


def test_iac_run_put_get_and_replace(store: StateStore) -> None:
    run = iac("p", T0, log_blob="iac/x.log")
    store.put_iac_run(run)
    assert store.get_iac_run(run.id) == run
    done = run.model_copy(
        update={"status": IacStatus.SUCCEEDED, "exit_code": 0, "finished_at": iso_time(T0 + 9)}
    )
    store.put_iac_run(done)
    assert store.get_iac_run(run.id) == done
    assert store.list_iac_runs("e", "p") == [done]
    assert store.get_iac_run("nope") is None


def test_iac_runs_newest_first_per_partition(store: StateStore) -> None:
    runs = [iac("p", T0 + t) for t in (5, 1, 9, 3)]
    for run in runs:
        store.put_iac_run(run)
    store.put_iac_run(iac("other", T0 + 100))
    assert store.list_iac_runs("e", "p") == [runs[2], runs[0], runs[3], runs[1]]
    assert store.list_iac_runs("e", "p", limit=2) == [runs[2], runs[0]]
    assert store.list_iac_runs("x", "p") == []


# -- Terraform locks and state pointers -----------------------------------------------------------


def test_lock_acquire_and_held(store: StateStore) -> None:
    info = {"ID": "one", "Operation": "OperationTypeApply", "Who": "me@host", "Info": ""}
    assert store.lock("e/p", info) is None
    holder = store.lock("e/p", {"ID": "two"})
    assert holder is not None and holder.info == info and holder.lock_id == "one"
    assert store.lock("e/p", info) == holder  # even the same ID cannot take it twice
    assert store.get_lock("e/p") == holder
    assert store.lock("e/q", {"ID": "two"}) is None


def test_unlock_with_another_id_keeps_the_lock(store: StateStore) -> None:
    store.lock("e/p", {"ID": "one"})
    holder = store.unlock("e/p", "two")
    assert holder is not None and holder.lock_id == "one"
    assert store.get_lock("e/p") == holder


def test_unlock_with_the_id_or_forced(store: StateStore) -> None:
    store.lock("e/p", {"ID": "one"})
    assert store.unlock("e/p", "one") is None
    assert store.get_lock("e/p") is None
    store.lock("e/p", {"ID": "two"})
    assert store.unlock("e/p", None) is None
    assert store.get_lock("e/p") is None
    assert store.unlock("e/p", "any") is None  # nothing to release


def test_tf_state_pointer(store: StateStore) -> None:
    assert store.get_tf_state("e/p") is None
    store.set_tf_state("e/p", "tfstate/e/p/1")
    store.set_tf_state("e/p", "tfstate/e/p/2")
    assert store.get_tf_state("e/p") == "tfstate/e/p/2"
    store.set_tf_state("e/p", None)
    assert store.get_tf_state("e/p") is None
    store.set_tf_state("e/p", None)


def test_tf_states_listed_by_enclave(store: StateStore) -> None:
    """Exactly the enclave's current pointers: not a neighbour sharing a prefix, not cleared."""
    assert store.list_tf_states("e") == []
    for key in ("e/p2", "e/p1", "e_x/p", "e-x/p", "ex/p", "f/p"):
        store.set_tf_state(key, f"tfstate/{key}/1")
    store.set_tf_state("e/gone", "tfstate/e/gone/1")
    store.set_tf_state("e/gone", None)
    assert store.list_tf_states("e") == ["e/p1", "e/p2"]
    assert store.list_tf_states("e_x") == ["e_x/p"]
    assert store.list_tf_states("nobody") == []


def test_tf_state_swap_is_a_compare_and_set(store: StateStore) -> None:
    assert not store.swap_tf_state("e/p", "tfstate/e/p/0", "tfstate/e/p/1")  # no pointer yet
    assert store.get_tf_state("e/p") is None
    assert store.swap_tf_state("e/p", None, "tfstate/e/p/1")
    assert not store.swap_tf_state("e/p", None, "tfstate/e/p/x")  # one exists now
    assert not store.swap_tf_state("e/p", "tfstate/e/p/0", "tfstate/e/p/x")  # a stale guess
    assert store.get_tf_state("e/p") == "tfstate/e/p/1"
    assert store.swap_tf_state("e/p", "tfstate/e/p/1", "tfstate/e/p/2")
    assert store.get_tf_state("e/p") == "tfstate/e/p/2"
    assert store.get_tf_state("e/q") is None  # keys are independent
    store.set_tf_state("e/p", None)
    assert store.swap_tf_state("e/p", None, "tfstate/e/p/3")  # after a DELETE, from nothing


@pytest.mark.needs_gcloud_firestore(PRECONDITIONS)
def test_tf_state_swap_has_one_winner_under_contention(store: StateStore) -> None:
    """Eight writers guess the same old pointer: exactly one moves it."""
    store.set_tf_state("e/p", "tfstate/e/p/0")
    with ThreadPoolExecutor(8) as pool:
        won = list(
            pool.map(lambda n: store.swap_tf_state("e/p", "tfstate/e/p/0", f"v{n}"), range(8))
        )
    assert won.count(True) == 1
    assert store.get_tf_state("e/p") == f"v{won.index(True)}"


# -- partition mutex ------------------------------------------------------------------------------


def test_partition_mutex(store: StateStore) -> None:
    assert store.acquire_partition("e/p", "a", 10, T0)
    assert not store.acquire_partition("e/p", "b", 10, T0 + 5)
    assert store.acquire_partition("e/p", "a", 10, T0 + 5)  # renewed until T0 + 15
    assert not store.acquire_partition("e/p", "b", 10, T0 + 14)
    assert store.acquire_partition("e/q", "b", 10, T0)
    assert store.acquire_partition("e/p", "b", 10, T0 + 15)  # a's lease ran out
    assert not store.release_partition("e/p", "a")
    assert store.release_partition("e/p", "b")
    assert not store.release_partition("e/p", "b")
    assert store.acquire_partition("e/p", "a", 10, T0 + 16)


def test_manual_clock() -> None:
    clock = ManualClock(T0)
    assert clock.now() == T0
    assert clock.advance(2.5) == T0 + 2.5 == clock.now()


# -- the delete guard's run states (issue 8) ------------------------------------------------


def test_awaiting_runs_are_unfinished_and_keep_their_place(store: StateStore) -> None:
    runs = [started(store, "a") for _ in range(3)]
    approval = Approval(
        reason="7 deletions, limit 5",
        deletions=("enclave a",),
        limit=5,
        plan_digest="d" * 64,
        changes=({"kind": "EnclaveDeleted", "id": "a"},),
    )
    waiting = runs[0].model_copy(
        update={"status": RunStatus.AWAITING_APPROVAL, "approval": approval}
    )
    store.update_run(waiting, expect=RunStatus.QUEUED)
    assert [r.id for r in store.list_unfinished_runs()] == [r.id for r in runs]
    assert store.list_unfinished_runs()[0].approval == approval
    assert [r.id for r in store.list_runs(status=RunStatus.AWAITING_APPROVAL)] == [runs[0].id]


def test_update_run_with_expect_is_conditional(store: StateStore) -> None:
    run = started(store, "a")
    running = run.model_copy(update={"status": RunStatus.RUNNING})
    store.update_run(running, expect=RunStatus.QUEUED)
    # Another worker began it: moving it to awaiting approval "from queued" must fail.
    waiting = run.model_copy(update={"status": RunStatus.AWAITING_APPROVAL})
    with pytest.raises(ConflictError):
        store.update_run(waiting, expect=RunStatus.QUEUED)
    assert store.get_run(run.id) == running
    with pytest.raises(NotFoundError):
        store.update_run(make_run(), expect=RunStatus.QUEUED)


@pytest.mark.needs_gcloud_firestore(FIELD_DELETES)
def test_cancelled_is_final(store: StateStore) -> None:
    run = store.create_run(make_run(plan_on_start=True), [])
    assert RunStatus.CANCELLED.final and not RunStatus.AWAITING_APPROVAL.final
    waiting = store.update_run(run.model_copy(update={"status": RunStatus.AWAITING_APPROVAL}))
    cancelled = waiting.model_copy(
        update={"status": RunStatus.CANCELLED, "errors": ("superseded by run x",)}
    )
    store.update_run(cancelled, expect=RunStatus.AWAITING_APPROVAL)
    assert store.list_unfinished_runs() == []
    for status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCEEDED):
        with pytest.raises(ConflictError):
            store.update_run(run.model_copy(update={"status": status}))
    assert store.get_run(run.id) == cancelled
    # And a cancelled run can never begin.
    with pytest.raises(ConflictError):
        store.begin_run(run.model_copy(update={"status": RunStatus.RUNNING}), [])


def test_an_approved_run_begins_from_queued_again(store: StateStore) -> None:
    run = store.create_run(make_run(plan_on_start=True), [])  # planned when it begins
    store.update_run(run.model_copy(update={"status": RunStatus.AWAITING_APPROVAL}))
    # Awaiting: begin_run refuses (only a queued run begins) ...
    with pytest.raises(ConflictError):
        store.begin_run(run.model_copy(update={"status": RunStatus.RUNNING}), [])
    # ... approval puts it back in the queue, and then it begins once.
    store.update_run(
        run.model_copy(update={"status": RunStatus.QUEUED, "approved_digest": "d" * 64}),
        expect=RunStatus.AWAITING_APPROVAL,
    )
    began = store.begin_run(run.model_copy(update={"status": RunStatus.RUNNING}), [])
    assert store.get_run(run.id) == began
