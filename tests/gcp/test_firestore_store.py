"""What the contract suite cannot see of the Firestore store: its documents.

Against the real Firestore emulator (``firestore`` fixture): the sparse fields the hot-path
queries read, compression and the 1 MiB document limit, the collection prefix, and counters
under contention (each lost precondition read again and retried).
"""

from __future__ import annotations

import base64
import os
import threading
from typing import TYPE_CHECKING, Any

import pytest
from google.cloud.firestore import Client

from functions_gcp._firestore_docs import MAX_DOC_BYTES, doc_id
from functions_gcp.firestore_store import FirestoreStateStore
from nclav.docstore import layout as lay
from nclav.errors import ConflictError
from nclav.plan import Action, Step
from nclav.records import AuditEvent, EventKind, Run, RunStatus, StepStatus, iso_time, step_records
from nclav.runtime.stores import RecordTooLargeError, seq_text
from nclav.state import EnclaveState
from stand_ins import FIELD_DELETES, FIRESTORE_PROJECT, LIST_COLLECTIONS, PRECONDITIONS

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow
T0 = 1_767_225_600.0
PREFIX = "t_"


@pytest.fixture
def client(firestore: str) -> Client:
    return Client(project=FIRESTORE_PROJECT)


@pytest.fixture
def store(client: Client) -> Iterator[FirestoreStateStore]:
    yield FirestoreStateStore(client, prefix=PREFIX)


def raw(client: Client, key: tuple[str, str]) -> dict[str, Any] | None:
    return client.collection(f"{PREFIX}docs").document(doc_id(key)).get().to_dict()


def a_run(store: FirestoreStateStore) -> Run:
    run = Run(created_at=iso_time(T0))
    steps = [
        Step("a", Action.PROVISION_ENCLAVE, "a", None, ()),
        Step("b", Action.PROVISION_ENCLAVE, "b", None, ("a",)),
    ]
    return store.create_run(run, step_records(run.id, steps))


@pytest.mark.needs_gcloud_firestore(FIELD_DELETES)
def test_steps_carry_index_fields_only_while_ready_or_running(
    store: FirestoreStateStore, client: Client
) -> None:
    run = a_run(store)
    ready, pending = raw(client, lay.step_key(run.id, "a")), raw(client, lay.step_key(run.id, "b"))
    assert ready is not None and pending is not None
    assert "ready_at" in ready and "lease_pk" not in ready and ready["status"] == "ready"
    assert "ready_at" not in pending and "lease_pk" not in pending

    assert store.claim_step(run.id, "a", "w1", 30.0, T0) is not None
    running = raw(client, lay.step_key(run.id, "a"))
    assert running is not None
    assert running["lease_expires_at"] == T0 + 30.0 and "lease_pk" in running
    assert "ready_at" not in running and "ready_pk" not in running

    assert store.finish_step(run.id, "a", "w1", StepStatus.SUCCEEDED, None, T0 + 1) is not None
    done = raw(client, lay.step_key(run.id, "a"))
    assert done is not None
    assert "ready_at" not in done and "lease_pk" not in done and done["status"] == "succeeded"


@pytest.mark.needs_gcloud_firestore(FIELD_DELETES)
def test_a_final_run_leaves_the_unfinished_index(
    store: FirestoreStateStore, client: Client
) -> None:
    run = a_run(store)
    unfinished = (lay.UNFINISHED_RUNS, seq_text(run.seq))
    assert raw(client, unfinished)["run_id"] == run.id  # type: ignore[index]
    store.update_run(run.model_copy(update={"status": RunStatus.SUCCEEDED}))
    assert raw(client, unfinished) is None
    assert store.list_unfinished_runs() == []


@pytest.mark.needs_gcloud_firestore(LIST_COLLECTIONS)
def test_every_collection_takes_the_prefix(store: FirestoreStateStore, client: Client) -> None:
    a_run(store)
    store.put_enclave(EnclaveState(enclave_id="a"), None)
    store.append_event(AuditEvent(kind=EventKind.ENCLAVE_PROVISIONED, at=iso_time(T0)))
    store.lock("a/p", {"ID": "l1"})
    names = {c.id for c in client.collections()}
    assert names and all(n.startswith(PREFIX) for n in names)


@pytest.mark.needs_gcloud_firestore(FIELD_DELETES)
def test_a_large_document_is_stored_compressed(store: FirestoreStateStore, client: Client) -> None:
    big = EnclaveState(enclave_id="a", context_vars={f"k{i}": "v" * 1_000 for i in range(500)})
    assert len(big.model_dump_json()) > MAX_DOC_BYTES // 2  # well past plain storage
    store.put_enclave(big, None)
    stored = raw(client, (lay.ENCLAVES, "a"))
    assert stored is not None and "docz" in stored and "doc" not in stored
    assert store.get_enclave("a") == (big, 1)
    small = EnclaveState(enclave_id="a")
    store.put_enclave(small, 1)  # a replacement drops the other encoding
    stored = raw(client, (lay.ENCLAVES, "a"))
    assert stored is not None and "doc" in stored and "docz" not in stored
    assert store.get_enclave("a") == (small, 2)


def test_a_document_over_the_limit_is_refused_by_name(store: FirestoreStateStore) -> None:
    noise = base64.b64encode(os.urandom(1_200_000)).decode()  # ~1.2 MB even compressed
    with pytest.raises(RecordTooLargeError, match="enclave a is .* at most"):
        store.put_enclave(EnclaveState(enclave_id="a", context_vars={"n": noise}), None)
    assert store.get_enclave("a") is None


def test_contended_counter_gives_each_event_its_own_number(store: FirestoreStateStore) -> None:
    seqs: list[int] = []
    barrier = threading.Barrier(10)

    def append(i: int) -> None:
        barrier.wait()
        event = AuditEvent(kind=EventKind.ENCLAVE_PROVISIONED, at=iso_time(T0), enclave_id=f"e{i}")
        seqs.append(store.append_event(event).seq)

    threads = [threading.Thread(target=append, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(1, 11))
    assert [e.seq for e in store.list_events()] == list(range(1, 11))


@pytest.mark.needs_gcloud_firestore(PRECONDITIONS)
def test_a_write_on_a_document_deleted_since_the_read_is_a_lost_race(
    store: FirestoreStateStore, client: Client
) -> None:
    # put_enclave reads version 1, then a concurrent delete lands before its conditional
    # update: the update must lose (ConflictError), not resurrect the enclave or raise
    # NotFoundError. The interleaving is forced by deleting inside the store's read.
    store.put_enclave(EnclaveState(enclave_id="a"), None)
    ref = client.collection(f"{PREFIX}docs").document(doc_id((lay.ENCLAVES, "a")))
    other = FirestoreStateStore(client, prefix=PREFIX)  # another process: it must read first
    real_read = other.docs.read

    def read_then_delete(refs: Any) -> Any:
        found = real_read(refs)
        ref.delete()
        return found

    other.docs.read = read_then_delete  # type: ignore[method-assign]
    with pytest.raises(ConflictError):
        other.put_enclave(EnclaveState(enclave_id="a"), 1)
    other.docs.read = real_read  # type: ignore[method-assign]
    assert store.get_enclave("a") is None


class _Counting(FirestoreStateStore):
    """Counts the reads of single documents (queries aside) its documents adapter makes."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, prefix=PREFIX)
        self.reads = 0
        real_read = self.docs.read

        def read(refs: Any) -> Any:
            self.reads += 1
            return real_read(refs)

        self.docs.read = read  # type: ignore[method-assign]


def test_a_write_decided_on_what_the_store_last_saw_needs_no_read(client: Client) -> None:
    """Read (or written) by this store, then changed by it: one commit, no read first. The
    engine's sequences (read a step, ready it; claim it, finish it; read an enclave, write
    it; append events) each cost one request less."""
    store = _Counting(client)
    assert store.put_enclave(EnclaveState(enclave_id="a"), None) == 1
    store.reads = 0
    assert store.put_enclave(EnclaveState(enclave_id="a"), 1) == 2
    assert store.put_enclave(EnclaveState(enclave_id="a"), 2) == 3
    run = store.create_run(Run(created_at=iso_time(0)), step_records("r", []))
    steps = step_records(run.id, [Step("s", Action.PROVISION_ENCLAVE, "s", None, ())])
    store.begin_run(run.model_copy(update={"status": RunStatus.RUNNING}), steps)
    claimed = store.claim_step(run.id, "s", "w", 60.0, 0.0)
    assert claimed is not None
    done = store.finish_step(run.id, "s", "w", StepStatus.SUCCEEDED, None, 1.0)
    assert done is not None and done.status == StepStatus.SUCCEEDED
    first = store.append_event(AuditEvent(kind=EventKind.RECONCILE_STARTED, at=iso_time(0)))
    second = store.append_event(AuditEvent(kind=EventKind.RECONCILE_STARTED, at=iso_time(0)))
    assert second.seq == first.seq + 1
    # Read: only the run counter and the run (core's own reads before create_run and
    # begin_run decide); every conditional write (the enclave's versions, the run's
    # commits, the claim and finish of the step written in begin_run's batch) is judged on
    # what the store remembers, and the event counter is a server-side increment.
    assert store.reads == 2, store.reads
    assert store.get_enclave("a") is not None and store.get_enclave("a")[1] == 3  # type: ignore[index]


@pytest.mark.needs_gcloud_firestore(PRECONDITIONS)
def test_a_remembered_document_changed_elsewhere_is_read_again(client: Client) -> None:
    """What the store remembers may be stale: another process wrote or deleted the
    document. The conditional write then loses, the store reads and decides again: a
    version that moved is a conflict, a claim on a step someone else took is refused, and
    nothing is resurrected."""
    mine, theirs = (
        FirestoreStateStore(client, prefix=PREFIX),
        FirestoreStateStore(client, prefix=PREFIX),
    )
    mine.put_enclave(EnclaveState(enclave_id="a"), None)
    theirs.put_enclave(EnclaveState(enclave_id="a", context_vars={"x": "1"}), 1)
    with pytest.raises(ConflictError):
        mine.put_enclave(EnclaveState(enclave_id="a"), 1)  # remembered version 1: stale
    assert mine.put_enclave(EnclaveState(enclave_id="a"), 2) == 3
    theirs.delete_enclave("a", 3)
    with pytest.raises(ConflictError):
        mine.put_enclave(EnclaveState(enclave_id="a"), 3)
    assert mine.get_enclave("a") is None
    run = mine.create_run(Run(created_at=iso_time(0)), [])
    steps = step_records(run.id, [Step("s", Action.PROVISION_ENCLAVE, "s", None, ())])
    mine.begin_run(run.model_copy(update={"status": RunStatus.RUNNING}), steps)
    assert theirs.claim_step(run.id, "s", "them", 60.0, 0.0) is not None
    assert mine.claim_step(run.id, "s", "me", 60.0, 0.0) is None  # remembered ready: stale
    # A decision not to write is never taken on memory: released elsewhere, claimable here.
    assert theirs.finish_step(run.id, "s", "them", StepStatus.READY, "retry", 1.0) is not None
    assert mine.claim_step(run.id, "s", "me", 60.0, 2.0) is not None


def test_a_free_mutex_and_a_counter_cost_no_read(client: Client) -> None:
    """A condition that holds on no document tries ``create()`` first, and a counter is a
    server-side increment: neither reads. A mutex held elsewhere still loses (the create
    fails, the store reads and judges)."""
    store, other = _Counting(client), FirestoreStateStore(client, prefix=PREFIX)
    assert store.acquire_partition("a/p", "me", 60.0, 0.0)
    first = store.append_event(AuditEvent(kind=EventKind.RECONCILE_STARTED, at=iso_time(0)))
    assert store.reads == 0, store.reads
    assert other.append_event(AuditEvent(kind=EventKind.RECONCILE_STARTED, at=iso_time(0))).seq == (
        first.seq + 1
    )
    assert not other.acquire_partition("a/p", "them", 60.0, 1.0)
    assert store.acquire_partition("b/p", "me", 60.0, 0.0)
    assert not _Counting(client).acquire_partition("b/p", "them", 60.0, 1.0)
