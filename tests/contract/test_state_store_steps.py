"""The StateStore contract for steps: claims, leases, compare-and-swap, concurrency."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from nclav.errors import ConflictError, NotFoundError
from nclav.records import RunStatus, StepStatus, iso_time
from stand_ins import COLLECTION_GROUPS, PRECONDITIONS
from support import chain

from .conftest import LEASE, T0, independent, make_run, started

if TYPE_CHECKING:
    from nclav.ports import StateStore

# -- steps: claims and leases ---------------------------------------------------------------------


def test_claim_a_ready_step(store: StateStore) -> None:
    run = started(store, "a")
    claimed = store.claim_step(run.id, "a", "w1", LEASE, T0)
    assert claimed is not None
    assert claimed.status == StepStatus.RUNNING
    assert claimed.attempts == 1
    assert claimed.lease_owner == "w1"
    assert claimed.lease_expires_at == T0 + LEASE
    assert claimed.started_at == iso_time(T0)
    assert claimed.version == 2
    assert store.get_step(run.id, "a") == claimed


def test_get_steps_reads_the_named_steps_of_one_run(store: StateStore) -> None:
    run = started(store, "a", "b", "c")
    claimed = store.claim_step(run.id, "a", "w1", LEASE, T0)
    assert claimed is not None
    found = store.get_steps(run.id, ["a", "c", "nope", "a"])
    assert found == {"a": claimed, "c": store.get_step(run.id, "c")}
    assert store.get_steps(run.id, []) == {}
    assert store.get_steps("no-such-run", ["a"]) == {}
    other = started(store, "a")
    assert store.get_steps(other.id, ["a", "b"]) == {"a": store.get_step(other.id, "a")}


def test_a_partition_steps_id_with_a_slash_is_an_id_like_any_other(store: StateStore) -> None:
    """A partition's steps are named "action:enclave/partition": the "/" is no path
    separator in any store (Firestore's document ids once took it for one)."""
    slash, percent = "provision_partition:e/p", "wire_import:e/a%2Fb"
    run = started(store, slash, percent)
    claimed = store.claim_step(run.id, slash, "w1", LEASE, T0)
    assert claimed is not None and claimed.step_id == slash
    assert store.get_step(run.id, slash) == claimed
    found = store.get_steps(run.id, [slash, percent])
    assert set(found) == {slash, percent}
    assert found[percent].depends_on == (slash,)
    assert [s.step_id for s in store.list_steps(run.id)] == [slash, percent]


def test_a_claimed_step_cannot_be_claimed_again(store: StateStore) -> None:
    run = started(store, "a")
    assert store.claim_step(run.id, "a", "w1", LEASE, T0) is not None
    assert store.claim_step(run.id, "a", "w2", LEASE, T0 + 1) is None
    assert store.claim_step(run.id, "a", "w1", LEASE, T0 + 1) is None


def test_pending_and_unknown_steps_are_not_claimable(store: StateStore) -> None:
    run = started(store, "a", "b")
    assert store.claim_step(run.id, "b", "w", LEASE, T0) is None
    assert store.claim_step(run.id, "zzz", "w", LEASE, T0) is None
    assert store.claim_step("nope", "a", "w", LEASE, T0) is None


def test_an_expired_lease_is_reclaimed(store: StateStore) -> None:
    run = started(store, "a")
    store.claim_step(run.id, "a", "dead", LEASE, T0)
    assert store.claim_step(run.id, "a", "w2", LEASE, T0 + LEASE - 1) is None
    reclaimed = store.claim_step(run.id, "a", "w2", LEASE, T0 + LEASE)
    assert reclaimed is not None
    assert (reclaimed.lease_owner, reclaimed.attempts) == ("w2", 2)
    # The first worker lost the step: it can neither renew nor finish it.
    assert not store.renew_lease(run.id, "a", "dead", LEASE, T0 + LEASE)
    assert store.finish_step(run.id, "a", "dead", StepStatus.SUCCEEDED, None, T0 + 40) is None
    assert store.finish_step(run.id, "a", "w2", StepStatus.SUCCEEDED, None, T0 + 40) is not None


def test_renew_lease_pushes_the_expiry(store: StateStore) -> None:
    run = started(store, "a")
    store.claim_step(run.id, "a", "w1", LEASE, T0)
    assert store.renew_lease(run.id, "a", "w1", LEASE, T0 + 20)
    step = store.get_step(run.id, "a")
    assert step is not None and step.lease_expires_at == T0 + 20 + LEASE
    assert store.claim_step(run.id, "a", "w2", LEASE, T0 + LEASE + 1) is None
    assert not store.renew_lease(run.id, "a", "w2", LEASE, T0 + 21)


def test_finish_by_the_owner(store: StateStore) -> None:
    run = started(store, "a")
    store.claim_step(run.id, "a", "w1", LEASE, T0)
    done = store.finish_step(run.id, "a", "w1", StepStatus.FAILED, "boom", T0 + 5)
    assert done is not None
    assert (done.status, done.error, done.finished_at) == (
        StepStatus.FAILED,
        "boom",
        iso_time(T0 + 5),
    )
    assert done.lease_owner is None and done.lease_expires_at is None
    assert store.get_step(run.id, "a") == done
    assert store.finish_step(run.id, "a", "w1", StepStatus.SUCCEEDED, None, T0 + 6) is None


def test_finish_by_a_non_owner_is_refused(store: StateStore) -> None:
    run = started(store, "a")
    store.claim_step(run.id, "a", "w1", LEASE, T0)
    assert store.finish_step(run.id, "a", "w2", StepStatus.SUCCEEDED, None, T0 + 1) is None
    step = store.get_step(run.id, "a")
    assert step is not None and (step.status, step.lease_owner) == (StepStatus.RUNNING, "w1")


def test_finish_an_unclaimed_step_is_refused(store: StateStore) -> None:
    run = started(store, "a")
    assert store.finish_step(run.id, "a", "w1", StepStatus.SUCCEEDED, None, T0) is None


def test_finish_cannot_leave_a_step_running(store: StateStore) -> None:
    run = started(store, "a")
    store.claim_step(run.id, "a", "w1", LEASE, T0)
    with pytest.raises(ValueError):
        store.finish_step(run.id, "a", "w1", StepStatus.RUNNING, None, T0)


def test_retry_backoff_through_finish(store: StateStore) -> None:
    run = started(store, "a")
    store.claim_step(run.id, "a", "w1", LEASE, T0)
    back = store.finish_step(
        run.id, "a", "w1", StepStatus.READY, "transient", T0 + 1, not_before=T0 + 10
    )
    assert back is not None and back.status == StepStatus.READY
    assert store.claim_step(run.id, "a", "w2", LEASE, T0 + 9) is None
    again = store.claim_step(run.id, "a", "w2", LEASE, T0 + 10)
    assert again is not None
    assert (again.attempts, again.not_before, again.error) == (2, None, "transient")


def test_update_step_is_compare_and_swap(store: StateStore) -> None:
    run = started(store, "a", "b")
    pending = store.get_step(run.id, "b")
    assert pending is not None
    ready = store.update_step(
        pending.model_copy(update={"status": StepStatus.READY, "not_before": T0 + 5}),
        pending.version,
    )
    assert (ready.status, ready.version, ready.not_before) == (StepStatus.READY, 2, T0 + 5)
    assert store.get_step(run.id, "b") == ready
    with pytest.raises(ConflictError):
        store.update_step(pending.model_copy(update={"status": StepStatus.BLOCKED}), 1)
    assert store.get_step(run.id, "b") == ready


def test_update_unknown_step(store: StateStore) -> None:
    with pytest.raises(NotFoundError):
        store.update_step(chain("nope", "a")[0], 1)


def test_every_change_moves_the_version(store: StateStore) -> None:
    run = started(store, "a")
    versions = [store.get_step(run.id, "a").version]  # type: ignore[union-attr]
    store.claim_step(run.id, "a", "w", LEASE, T0)
    versions.append(store.get_step(run.id, "a").version)  # type: ignore[union-attr]
    store.renew_lease(run.id, "a", "w", LEASE, T0 + 1)
    versions.append(store.get_step(run.id, "a").version)  # type: ignore[union-attr]
    store.finish_step(run.id, "a", "w", StepStatus.SUCCEEDED, None, T0 + 2)
    versions.append(store.get_step(run.id, "a").version)  # type: ignore[union-attr]
    assert versions == [1, 2, 3, 4]


@pytest.mark.needs_gcloud_firestore(COLLECTION_GROUPS)
def test_list_expired_leases(store: StateStore) -> None:
    first = started(store, "a", "b")
    second = started(store, "c")
    store.claim_step(second.id, "c", "w", 10, T0)
    store.claim_step(first.id, "a", "w", 10, T0 + 5)
    assert store.list_expired_leases(T0 + 9) == []
    assert [s.step_id for s in store.list_expired_leases(T0 + 10)] == ["c"]
    assert [s.step_id for s in store.list_expired_leases(T0 + 15)] == ["a", "c"]
    store.finish_step(second.id, "c", "w", StepStatus.SUCCEEDED, None, T0 + 16)
    assert [s.step_id for s in store.list_expired_leases(T0 + 16)] == ["a"]


@pytest.mark.needs_gcloud_firestore(COLLECTION_GROUPS)
def test_list_stuck_ready_steps(store: StateStore) -> None:
    """Ready steps whose message (sent_at) and retry time (not_before) are both old enough."""
    first = started(store, "a", "b")
    second = started(store, "c")
    a = store.get_step(first.id, "a")
    assert a is not None and a.sent_at is None
    a = store.update_step(a.model_copy(update={"sent_at": T0 + 5}), a.version)
    assert store.get_step(first.id, "a") == a and a.sent_at == T0 + 5
    # "c" was never sent (counts as 0); "b" is pending, never listed.
    assert [s.step_id for s in store.list_stuck_ready_steps(T0 + 4)] == ["c"]
    stuck = store.list_stuck_ready_steps(T0 + 5)
    assert [s.step_id for s in stuck] == ["a", "c"]  # oldest run first
    assert stuck[0] == a
    # Claimed: running, not ready. Handed back for a retry: sent now, due at not_before.
    store.claim_step(first.id, "a", "w", LEASE, T0 + 6)
    assert [s.step_id for s in store.list_stuck_ready_steps(T0 + 100)] == ["c"]
    back = store.finish_step(
        first.id, "a", "w", StepStatus.READY, "transient", T0 + 7, not_before=T0 + 20
    )
    assert back is not None and back.sent_at == T0 + 7
    assert [s.step_id for s in store.list_stuck_ready_steps(T0 + 19)] == ["c"]
    assert [s.step_id for s in store.list_stuck_ready_steps(T0 + 20)] == ["a", "c"]
    # Re-sent later: not stuck again until that send is old enough.
    back = store.update_step(back.model_copy(update={"sent_at": T0 + 30}), back.version)
    assert [s.step_id for s in store.list_stuck_ready_steps(T0 + 29)] == ["c"]
    # Finished steps are never stuck.
    store.claim_step(second.id, "c", "w", LEASE, T0 + 30)
    store.finish_step(second.id, "c", "w", StepStatus.SUCCEEDED, None, T0 + 31)
    assert [s.step_id for s in store.list_stuck_ready_steps(T0 + 1000)] == ["a"]


@pytest.mark.needs_gcloud_firestore(COLLECTION_GROUPS)
def test_a_ready_step_made_ready_with_its_send_time(store: StateStore) -> None:
    run = started(store, "a", "b")
    b = store.get_step(run.id, "b")
    assert b is not None
    ready = store.update_step(
        b.model_copy(update={"status": StepStatus.READY, "sent_at": T0 + 3}), b.version
    )
    assert ready.sent_at == T0 + 3 and store.get_step(run.id, "b") == ready
    assert [s.step_id for s in store.list_stuck_ready_steps(T0 + 2)] == ["a"]
    assert [s.step_id for s in store.list_stuck_ready_steps(T0 + 3)] == ["a", "b"]
    # A step that goes back to pending (never in the engine) leaves the ready steps.
    store.update_step(ready.model_copy(update={"status": StepStatus.PENDING}), ready.version)
    assert [s.step_id for s in store.list_stuck_ready_steps(T0 + 3)] == ["a"]


@pytest.mark.needs_gcloud_firestore(PRECONDITIONS)
def test_twenty_threads_claim_each_step_exactly_once(store: StateStore) -> None:
    run = make_run()
    store.create_run(run, independent(run.id, 30))
    wins: list[tuple[str, str]] = []
    barrier = threading.Barrier(20)

    def worker(name: str) -> None:
        barrier.wait()
        for step in store.list_steps(run.id):
            if store.claim_step(run.id, step.step_id, name, LEASE, T0) is not None:
                wins.append((step.step_id, name))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = sorted(sid for sid, _ in wins)
    assert claimed == [f"s{i:02d}" for i in range(30)]
    for step in store.list_steps(run.id):
        assert step.attempts == 1
        assert (step.step_id, step.lease_owner) in wins


@pytest.mark.needs_gcloud_firestore(PRECONDITIONS)
def test_twenty_threads_compare_and_swap_one_wins(store: StateStore) -> None:
    run = started(store, "a", "b")
    pending = store.get_step(run.id, "b")
    assert pending is not None
    outcomes: list[str] = []
    barrier = threading.Barrier(20)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            store.update_step(pending.model_copy(update={"error": f"w{i}"}), pending.version)
            outcomes.append("won")
        except ConflictError:
            outcomes.append("lost")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost"] * 19 + ["won"]


# -- dependents and unfinished steps ---------------------------------------------------------------


def test_steps_keep_their_dependents(store: StateStore) -> None:
    run = started(store, "a", "b", "c")
    assert [s.dependents for s in store.list_steps(run.id)] == [("b",), ("c",), ()]
    store.claim_step(run.id, "a", "w", LEASE, T0)
    done = store.finish_step(run.id, "a", "w", StepStatus.SUCCEEDED, None, T0 + 1)
    assert done is not None and done.dependents == ("b",)
    pending = store.get_step(run.id, "b")
    assert pending is not None and pending.dependents == ("c",)
    ready = store.update_step(pending.model_copy(update={"status": StepStatus.READY}), 1)
    assert ready.dependents == ("c",)
    assert store.get_step(run.id, "b") == ready


def test_has_unfinished_steps_follows_every_kind_of_step_write(store: StateStore) -> None:
    assert not store.has_unfinished_steps("nope")
    empty = store.create_run(make_run(), [])
    assert not store.has_unfinished_steps(empty.id)

    run = started(store, "a", "b")
    assert store.has_unfinished_steps(run.id)
    store.claim_step(run.id, "a", "w", LEASE, T0)
    # Handed back for a retry: still unfinished.
    store.finish_step(run.id, "a", "w", StepStatus.READY, "again", T0 + 1, not_before=T0 + 2)
    store.claim_step(run.id, "a", "w", LEASE, T0 + 2)
    assert store.has_unfinished_steps(run.id)
    store.finish_step(run.id, "a", "w", StepStatus.FAILED, "boom", T0 + 3)
    assert store.has_unfinished_steps(run.id)  # b is still pending
    b = store.get_step(run.id, "b")
    assert b is not None
    blocked = store.update_step(
        b.model_copy(update={"status": StepStatus.BLOCKED, "error": "blocked by a"}), b.version
    )
    assert not store.has_unfinished_steps(run.id)
    # Final to final leaves the count alone; back from final counts again.
    reworded = store.update_step(blocked.model_copy(update={"error": "x"}), blocked.version)
    assert not store.has_unfinished_steps(run.id)
    store.update_step(reworded.model_copy(update={"status": StepStatus.READY}), reworded.version)
    assert store.has_unfinished_steps(run.id)
    # A lost compare-and-swap changes nothing.
    with pytest.raises(ConflictError):
        store.update_step(reworded.model_copy(update={"status": StepStatus.SKIPPED}), 1)
    assert store.has_unfinished_steps(run.id)


def test_has_unfinished_steps_of_a_run_given_its_steps_when_it_begins(store: StateStore) -> None:
    queued = store.create_run(make_run(plan_on_start=True), [])
    assert not store.has_unfinished_steps(queued.id)
    running = queued.model_copy(update={"status": RunStatus.RUNNING})
    store.begin_run(running, chain(queued.id, "a"))
    assert store.has_unfinished_steps(queued.id)
    store.claim_step(queued.id, "a", "w", LEASE, T0)
    store.finish_step(queued.id, "a", "w", StepStatus.SKIPPED, None, T0 + 1)
    assert not store.has_unfinished_steps(queued.id)


def test_has_unfinished_steps_under_concurrent_finishes(store: StateStore) -> None:
    """20 threads finish or block 30 steps at once: only after the last write is none left."""
    run = make_run()
    store.create_run(run, independent(run.id, 30))
    ids = [s.step_id for s in store.list_steps(run.id)]
    started_writes: list[str] = []
    seen_done: list[int] = []  # writes started when a thread saw no unfinished step
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def worker(i: int) -> None:
        barrier.wait()
        for sid in ids[i::20]:
            with lock:
                started_writes.append(sid)
            if int(sid[1:]) % 3 == 0:  # a third blocked by compare-and-swap, like the fan-out
                step = store.get_step(run.id, sid)
                assert step is not None
                store.update_step(step.model_copy(update={"status": StepStatus.BLOCKED}), 1)
            else:
                assert store.claim_step(run.id, sid, f"w{i}", LEASE, T0) is not None
                status = StepStatus.SUCCEEDED if i % 2 else StepStatus.FAILED
                assert store.finish_step(run.id, sid, f"w{i}", status, None, T0 + 1) is not None
            if not store.has_unfinished_steps(run.id):
                with lock:
                    seen_done.append(len(started_writes))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not store.has_unfinished_steps(run.id)
    assert all(s.status.final for s in store.list_steps(run.id))
    # The thread whose write returned last saw none left; nobody saw it before every write
    # had at least begun.
    assert seen_done
    assert set(seen_done) == {30}
