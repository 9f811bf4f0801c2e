"""``CosmosStateStore`` specifics on the Cosmos stand-in (the port's contract is in
tests/contract): how a run's creation is ordered, ids Cosmos would refuse, counters."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from functions_azure.cosmos_store import CosmosStateStore, create_container
from nclav.errors import ConflictError
from nclav.plan import Action, Step
from nclav.records import (
    AuditEvent,
    EventKind,
    Run,
    RunStatus,
    StepRecord,
    StepStatus,
    iso_time,
    step_records,
)
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


class _Counted(CosmosStateStore):
    """Counts the point reads the store makes."""

    reads = 0

    def _read(self, pk: str, doc_id: str) -> dict[str, object] | None:  # type: ignore[override]
        self.reads += 1
        return super()._read(pk, doc_id)


def test_a_write_decided_on_what_the_store_last_saw_needs_no_read(cosmos: DatabaseProxy) -> None:
    """Read (or written) by this store, then changed by it: one conditional write, no read
    first; events cost one batch each (counter and event together)."""
    store = _Counted(create_container(cosmos, "state"))
    assert store.put_enclave(EnclaveState(enclave_id="a"), None) == 1
    assert store.put_enclave(EnclaveState(enclave_id="a"), 1) == 2
    run = store.create_run(Run(created_at=iso_time(0)), [])
    store.begin_run(run.model_copy(update={"status": RunStatus.RUNNING}), plan(run.id, "s"))
    assert store.claim_step(run.id, "s", "w", 60.0, 0.0) is not None
    done = store.finish_step(run.id, "s", "w", StepStatus.SUCCEEDED, None, 1.0)
    assert done is not None and done.status == StepStatus.SUCCEEDED
    seqs = [
        store.append_event(AuditEvent(kind=EventKind.RECONCILE_STARTED, at=iso_time(0))).seq
        for _ in range(3)
    ]
    assert seqs == [1, 2, 3]
    # Read: the enclave found missing, the run counter, the event counter once each.
    assert store.reads == 3, store.reads
    assert [e.seq for e in store.list_events()] == [1, 2, 3]


def test_a_remembered_document_changed_elsewhere_is_read_again(cosmos: DatabaseProxy) -> None:
    """Another process wrote or deleted what this store remembers: the conditional write
    loses, the store reads and decides again (a conflict, a refused claim), nothing is
    resurrected, and a claim refused on memory is read again before it is refused."""
    container = create_container(cosmos, "state")
    mine, theirs = CosmosStateStore(container), CosmosStateStore(container)
    mine.put_enclave(EnclaveState(enclave_id="a"), None)
    theirs.put_enclave(EnclaveState(enclave_id="a", context_vars={"x": "1"}), 1)
    with pytest.raises(ConflictError):
        mine.put_enclave(EnclaveState(enclave_id="a"), 1)
    assert mine.put_enclave(EnclaveState(enclave_id="a"), 2) == 3
    theirs.delete_enclave("a", 3)
    with pytest.raises(ConflictError):
        mine.put_enclave(EnclaveState(enclave_id="a"), 3)
    assert mine.get_enclave("a") is None
    run = mine.create_run(Run(created_at=iso_time(0)), [])
    mine.begin_run(run.model_copy(update={"status": RunStatus.RUNNING}), plan(run.id, "s"))
    assert theirs.claim_step(run.id, "s", "them", 60.0, 0.0) is not None
    assert mine.claim_step(run.id, "s", "me", 60.0, 0.0) is None
    assert theirs.finish_step(run.id, "s", "them", StepStatus.READY, "retry", 1.0) is not None
    assert mine.claim_step(run.id, "s", "me", 60.0, 2.0) is not None
    # Events from both: each store's remembered counter goes stale, no number is lost.
    kind = EventKind.RECONCILE_STARTED
    got = [s.append_event(AuditEvent(kind=kind, at=iso_time(0))).seq for s in (mine, theirs) * 3]
    assert sorted(got) == list(range(1, 7))


def test_the_event_counter_continues_an_older_layouts_counter(cosmos: DatabaseProxy) -> None:
    """Events were numbered by a counter document in the counters partition: a container
    made before the events partition had its own counter continues its numbers."""
    from azure.cosmos import PartitionKey

    container = cosmos.create_container_if_not_exists("old", partition_key=PartitionKey("/pk"))
    container.create_item({"id": "events", "pk": "counters", "type": "counter", "n": 41})
    store = CosmosStateStore(container)
    event = store.append_event(AuditEvent(kind=EventKind.RECONCILE_STARTED, at=iso_time(0)))
    assert event.seq == 42
    assert [e.seq for e in store.list_events()] == [42]
