"""``CosmosStateStore`` specifics on the Cosmos stand-in (the port's contract is in
tests/contract): how a run's creation is ordered, ids Cosmos would refuse, counters."""

from __future__ import annotations

import base64
import json
import os
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
from nclav.runtime.stores import RecordTooLargeError
from nclav.state import EnclaveState

if TYPE_CHECKING:
    from collections.abc import Sequence

    from azure.cosmos import DatabaseProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def store(cosmos: DatabaseProxy) -> CosmosStateStore:
    return CosmosStateStore(create_container(cosmos, "state"))


def plan(run_id: str, *ids: str) -> list[StepRecord]:
    return step_records(run_id, [Step(i, Action.PROVISION_ENCLAVE, i, None, ()) for i in ids])


def step_ids_stored(store: CosmosStateStore, run_id: str) -> list[str]:
    """Every step document of a run's partition, whichever plan it belongs to."""
    docs = store.container.query_items(
        "SELECT c.id FROM c WHERE c.pk = @pk",
        parameters=[{"name": "@pk", "value": f"run:{run_id}"}],
        partition_key=f"run:{run_id}",
    )
    return sorted(str(d["id"]) for d in docs)


def test_a_run_is_never_seen_with_part_of_its_plan(store: CosmosStateStore) -> None:
    run = Run(created_at=iso_time(0))
    store._create_steps(run.id, plan(run.id, "a"), "dead")  # an earlier attempt died here
    assert store.get_run(run.id) is None  # its steps alone are no run
    assert store.list_steps(run.id) == []  # ... and no plan
    with pytest.raises(ConflictError, match="already exists"):
        store.create_run(run, plan(run.id, "a", "b"))
    assert store.get_run(run.id) is None
    assert step_ids_stored(store, run.id) == ["a"]  # nothing more was written


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
    store._write_steps(run.id, plan(run.id, "old-a", "old-b"), "dead")  # it died writing these
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

    def cancel_meanwhile(run_id: str, steps: Sequence[StepRecord], plan: str) -> None:
        original(run_id, steps, plan)
        store.update_run(run.model_copy(update={"status": RunStatus.CANCELLED}))

    store._write_steps = cancel_meanwhile  # type: ignore[method-assign]
    with pytest.raises(ConflictError, match="changed while it was begun"):
        store.begin_run(run.model_copy(update={"status": RunStatus.RUNNING}), plan(run.id, "a"))
    assert store.list_steps(run.id) == []
    stored = store.get_run(run.id)
    assert stored is not None and stored.status == RunStatus.CANCELLED


def test_a_begin_in_progress_shows_no_steps_until_its_run_names_them(
    store: CosmosStateStore,
) -> None:
    """While begin_run writes a plan, and after a worker died writing one, neither the run's
    steps nor the sweeper's listings show any of it; once committed, they show all of it."""
    from nclav.records import RunStatus

    run = store.create_run(Run(created_at=iso_time(0)), [])
    seen: dict[str, list[str]] = {}
    original = store._write_steps

    def watch(run_id: str, steps: Sequence[StepRecord], plan: str) -> None:
        original(run_id, steps, plan)
        seen["listed"] = [s.step_id for s in store.list_steps(run_id)]
        seen["stuck"] = [s.step_id for s in store.list_stuck_ready_steps(1e12)]
        seen["stored"] = step_ids_stored(store, run_id)

    store._write_steps = watch  # type: ignore[method-assign]
    store.begin_run(run.model_copy(update={"status": RunStatus.RUNNING}), plan(run.id, "a", "b"))
    assert seen == {"listed": [], "stuck": [], "stored": ["a", "b"]}
    assert [s.step_id for s in store.list_steps(run.id)] == ["a", "b"]
    assert [s.step_id for s in store.list_stuck_ready_steps(1e12)] == ["a", "b"]
    # Another process (nothing remembered) reads the same.
    other = CosmosStateStore(store.container)
    assert [s.step_id for s in other.list_steps(run.id)] == ["a", "b"]

    dead = store.create_run(Run(created_at=iso_time(0)), [])
    store._write_steps = original  # type: ignore[method-assign]
    store._write_steps(dead.id, plan(dead.id, "x"), "died-writing")
    assert store.list_steps(dead.id) == [] and other.list_steps(dead.id) == []
    assert [s.step_id for s in other.list_stuck_ready_steps(1e12)] == ["a", "b"]


def test_a_run_written_before_plan_tokens_keeps_its_steps(store: CosmosStateStore) -> None:
    """Runs and steps of the older layout carry no plan: they still belong together."""
    import functions_azure.cosmos_store as cosmos_store

    run = Run(created_at=iso_time(0))
    store.create_run(run, plan(run.id, "a", "b"))
    for doc in store.container.query_items(
        "SELECT * FROM c WHERE c.pk = @run OR (c.pk = 'runs' AND c.id = @id)",
        parameters=[{"name": "@run", "value": f"run:{run.id}"}, {"name": "@id", "value": run.id}],
        enable_cross_partition_query=True,
    ):
        old = cosmos_store._plain(doc)
        del old["plan"]
        store.container.replace_item(old["id"], old)
    older = CosmosStateStore(store.container)
    assert [s.step_id for s in older.list_steps(run.id)] == ["a", "b"]
    assert [s.step_id for s in older.list_stuck_ready_steps(1e12)] == ["a", "b"]


def test_a_large_record_is_stored_compressed(store: CosmosStateStore) -> None:
    big = EnclaveState(enclave_id="a", context_vars={f"k{i}": "v" * 1_000 for i in range(2_500)})
    assert len(big.model_dump_json()) > 2_500_000  # past Cosmos's 2 MB item as plain JSON
    store.put_enclave(big, None)
    stored = store.container.read_item("a", partition_key="enclaves")
    assert "docz" in stored and "doc" not in stored
    assert len(json.dumps(stored)) < 100_000
    assert CosmosStateStore(store.container).get_enclave("a") == (big, 1)
    small = EnclaveState(enclave_id="a")
    store.put_enclave(small, 1)  # a replacement drops the other encoding
    stored = store.container.read_item("a", partition_key="enclaves")
    assert "doc" in stored and "docz" not in stored
    assert store.get_enclave("a") == (small, 2)
    # Every kind of record goes the same way: a run's step with a long error, for one.
    run = Run(created_at=iso_time(0))
    steps = plan(run.id, "s")
    store.create_run(run, steps)
    step = steps[0].model_copy(update={"error": "e" * 100_000})
    store.update_step(step, 1)
    assert store.list_steps(run.id)[0].error == "e" * 100_000


def test_a_record_too_large_even_compressed_is_refused_by_name(store: CosmosStateStore) -> None:
    noise = base64.b64encode(os.urandom(1_700_000)).decode()  # ~1.7 MB even compressed
    with pytest.raises(RecordTooLargeError, match=r"enclave a is .* a Cosmos DB item .* smaller"):
        store.put_enclave(EnclaveState(enclave_id="a", context_vars={"n": noise}), None)
    assert store.get_enclave("a") is None


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
