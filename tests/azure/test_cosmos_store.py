"""``CosmosStateStore`` specifics on the Cosmos stand-in (the port's contract is in
tests/contract): how a run's creation is ordered, ids Cosmos would refuse, counters."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from functions_azure.cosmos_store import CosmosStateStore, create_container
from nclav.errors import ConflictError
from nclav.plan import Action, Step
from nclav.records import Run, StepRecord, iso_time, step_records
from nclav.state import EnclaveState

if TYPE_CHECKING:
    from azure.cosmos import DatabaseProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def store(cosmos: DatabaseProxy) -> CosmosStateStore:
    return CosmosStateStore(create_container(cosmos, "state"))


def plan(run_id: str, *ids: str) -> list[StepRecord]:
    return step_records(run_id, [Step(i, Action.PROVISION_ENCLAVE, i, None, ()) for i in ids])


def test_a_run_is_never_seen_with_part_of_its_plan(store: CosmosStateStore) -> None:
    run = Run(created_at=iso_time(0))
    store._create_steps(run.id, plan(run.id, "a"))  # an earlier attempt that died here
    assert store.get_run(run.id) is None  # its steps alone are no run
    with pytest.raises(ConflictError, match="already exists"):
        store.create_run(run, plan(run.id, "a", "b"))
    assert store.get_run(run.id) is None
    assert [s.step_id for s in store.list_steps(run.id)] == ["a"]  # nothing more was written


def test_concurrent_creators_of_one_run_leave_one_whole_plan(store: CosmosStateStore) -> None:
    run = Run(created_at=iso_time(0))
    steps = plan(run.id, *(f"s{i:02d}" for i in range(10)))
    outcomes: list[str] = []

    def create() -> None:
        try:
            store.create_run(run, steps)
            outcomes.append("created")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 3 + ["created"]
    assert [s.step_id for s in store.list_steps(run.id)] == [s.step_id for s in steps]
    assert all(s.version == 1 for s in store.list_steps(run.id))


def test_keys_cosmos_would_refuse_as_ids_round_trip(store: CosmosStateStore) -> None:
    # Cosmos ids cannot hold / \\ ? #: terraform keys (enclave/partition) and odd ids do.
    for key in ("e/p", "e/p#1", "e/p?x", "e/~7E"):
        store.set_tf_state(key, f"blob-{key}")
        assert store.get_tf_state(key) == f"blob-{key}"
    assert store.list_tf_states("e") == ["e/p", "e/p#1", "e/p?x", "e/~7E"]
    store.put_enclave(EnclaveState(enclave_id="a/b#c"), None)
    assert [e.enclave_id for e in store.list_enclaves()] == ["a/b#c"]


def test_sequence_numbers_come_from_one_counter_each(store: CosmosStateStore) -> None:
    seqs: list[int] = []
    lock = threading.Lock()

    def create() -> None:
        made = store.create_run(Run(created_at=iso_time(0)), [])
        with lock:
            seqs.append(made.seq)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seqs) == list(range(1, 9))


def test_runs_become_visible_in_seq_order(store: CosmosStateStore) -> None:
    # kick starts a queued run when no earlier unfinished run blocks it: a later run seen
    # before an earlier one would jump the queue. Watch for a gap while runs are created.
    gaps: list[list[int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seqs = [r.seq for r in store.list_unfinished_runs()]
            if seqs != list(range(1, len(seqs) + 1)):
                gaps.append(seqs)

    def create() -> None:
        for _ in range(3):
            store.create_run(Run(created_at=iso_time(0)), [])

    watcher = threading.Thread(target=watch)
    watcher.start()
    creators = [threading.Thread(target=create) for _ in range(4)]
    for thread in creators:
        thread.start()
    for thread in creators:
        thread.join()
    done.set()
    watcher.join()
    assert gaps == []
    assert [r.seq for r in store.list_unfinished_runs()] == list(range(1, 13))


def test_a_run_counter_mark_left_by_a_dead_process_is_taken_over(
    store: CosmosStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functions_azure.cosmos_store as cosmos_store
    from nclav.errors import TemporaryError

    store.create_run(Run(created_at=iso_time(0)), [])
    store._take_run_seq("dead")  # taken, never released
    monkeypatch.setattr(cosmos_store, "RUN_SEQ_WAIT_S", 0.2)
    with pytest.raises(TemporaryError, match="run dead is being created"):
        store.create_run(Run(created_at=iso_time(0)), [])
    monkeypatch.setattr(cosmos_store, "RUN_SEQ_HOLD_S", 0.0)  # as if an hour had passed
    assert store.create_run(Run(created_at=iso_time(0)), []).seq == 3  # seq 2 died with it


def test_begin_run_takes_over_a_dead_workers_claim_and_its_partial_plan(
    store: CosmosStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functions_azure.cosmos_store as cosmos_store
    from nclav.records import RunStatus

    run = store.create_run(Run(created_at=iso_time(0)), [])
    doc = store._read("runs", run.id)
    assert doc is not None
    store._replace({**cosmos_store._plain(doc), "claim": "dead", "claim_since": 0.0}, doc["_etag"])
    store._write_steps(run.id, plan(run.id, "old-a", "old-b"))  # it died writing these
    running = run.model_copy(update={"status": RunStatus.RUNNING})
    store.begin_run(running, plan(run.id, "a", "b"))
    assert [s.step_id for s in store.list_steps(run.id)] == ["a", "b"]
    stored = store.get_run(run.id)
    assert stored is not None and stored.status == RunStatus.RUNNING


def test_begin_run_leaves_a_live_claim_alone(store: CosmosStateStore) -> None:
    import time

    import functions_azure.cosmos_store as cosmos_store
    from nclav.records import RunStatus

    run = store.create_run(Run(created_at=iso_time(0)), [])
    doc = store._read("runs", run.id)
    assert doc is not None
    store._replace(
        {**cosmos_store._plain(doc), "claim": "alive", "claim_since": time.time()}, doc["_etag"]
    )
    running = run.model_copy(update={"status": RunStatus.RUNNING})
    with pytest.raises(ConflictError, match="being begun by another worker"):
        store.begin_run(running, plan(run.id, "a"))
    assert store.list_steps(run.id) == []


def test_a_run_cancelled_while_it_is_begun_keeps_no_steps(store: CosmosStateStore) -> None:
    from nclav.records import RunStatus

    run = store.create_run(Run(created_at=iso_time(0)), [])
    original = store._write_steps

    def cancel_meanwhile(run_id: str, steps: list[StepRecord]) -> None:
        original(run_id, steps)
        store.update_run(run.model_copy(update={"status": RunStatus.CANCELLED}))

    store._write_steps = cancel_meanwhile  # type: ignore[method-assign]
    with pytest.raises(ConflictError, match="changed while it was begun"):
        store.begin_run(run.model_copy(update={"status": RunStatus.RUNNING}), plan(run.id, "a"))
    assert store.list_steps(run.id) == []
    stored = store.get_run(run.id)
    assert stored is not None and stored.status == RunStatus.CANCELLED
