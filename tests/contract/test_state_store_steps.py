"""The StateStore contract for steps: claims, leases, compare-and-swap, concurrency."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from nclav.errors import ConflictError, NotFoundError
from nclav.records import StepStatus, iso_time

from .conftest import LEASE, T0, chain, independent, make_run, started

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
