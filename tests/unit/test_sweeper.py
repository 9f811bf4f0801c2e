"""The sweeper re-sends only stuck steps, counts what it re-sends, and reads by index.

Before: every sweep re-sent every ready step of every running run (200 ready steps made the
queue 200 -> 400 -> 600 -> 800 over three sweeps) and reported 0, as it counted only expired
leases. Run on the memory and SQLite stores (the DynamoDB store's index is in the contract
suite, and the scenario suite sweeps on AWS).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import pytest
from engine_fakes import SyncQueue

import nclav.engine.engine as engine_module
from nclav.engine import Engine
from nclav.local import DirectoryBlobStore, InMemoryStateStore, SqliteStateStore
from nclav.model import Cloud
from nclav.plan import Action, Plan, Step
from nclav.ports import ManualClock
from nclav.records import RunStatus, StepStatus
from nclav.runtime.delivery import DeliveryPolicy

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from nclav.ports import IacRunner, StateStore
    from nclav.records import StepRecord

LEASE = 120.0
WIDE = 200


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "memory":
        yield InMemoryStateStore()
        return
    sqlite = SqliteStateStore(tmp_path / "state.db")
    yield sqlite
    sqlite.close()


class Sweepable:
    """An engine whose steps succeed at once, a ``SyncQueue`` and a ``ManualClock``."""

    def __init__(self, store: StateStore, tmp_path: Path) -> None:
        self.clock = ManualClock()
        self.queue = SyncQueue(self.clock)
        self.store = store
        self.engine = Engine(
            store,
            self.queue,
            DirectoryBlobStore(tmp_path / "blobs"),
            self.clock,
            {},
            Cloud.LOCAL,
            cast("IacRunner", None),
            lambda bundle: pytest.fail(f"no bundle expected, got {bundle}"),
            lease_s=LEASE,
        )

    @property
    def depth(self) -> int:
        return len(self.queue.ready) + len(self.queue.delayed)


@pytest.fixture
def rig(store: StateStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sweepable:
    def carry_out(ctx: object, step: StepRecord) -> StepStatus:
        return StepStatus.SUCCEEDED

    monkeypatch.setattr(engine_module, "carry_out", carry_out)
    return Sweepable(store, tmp_path)


def wide_plan(count: int = WIDE) -> Plan:
    steps = [
        Step(f"s{n:04d}", Action.PROVISION_ENCLAVE, f"e{n:04d}", None, ()) for n in range(count)
    ]
    return Plan(changes=(), steps=tuple(steps))


def test_fresh_ready_steps_are_not_re_sent(rig: Sweepable) -> None:
    run = rig.engine.start_plan(wide_plan(), None)
    assert rig.store.get_run(run.id).status == RunStatus.RUNNING  # type: ignore[union-attr]
    assert rig.depth == WIDE
    for _ in range(3):  # a sweep every 30 s, all within a lease of the sends
        rig.clock.advance(30)
        assert rig.engine.sweep() == 0
        assert rig.depth == WIDE


def test_lost_messages_are_re_sent_once_a_window(rig: Sweepable) -> None:
    run = rig.engine.start_plan(wide_plan(), None)
    rig.queue.ready.clear()  # the messages are lost
    rig.clock.advance(LEASE)
    assert rig.engine.sweep() == WIDE
    assert rig.depth == WIDE
    for _ in range(3):  # later sweeps within the window of that re-send: nothing again
        rig.clock.advance(LEASE / 4)
        assert rig.engine.sweep() == 0
    assert rig.depth == WIDE
    rig.clock.advance(LEASE / 4)  # a window after the re-send, still unclaimed: once more
    assert rig.engine.sweep() == WIDE
    assert rig.depth == 2 * WIDE
    rig.queue.drain(rig.engine.handle)  # duplicates find their step done: the work once
    assert rig.store.get_run(run.id).status == RunStatus.SUCCEEDED  # type: ignore[union-attr]
    assert not rig.store.list_stuck_ready_steps(rig.clock.now())


def test_a_step_readied_by_its_dependency_counts_from_then(rig: Sweepable) -> None:
    plan = Plan(
        changes=(),
        steps=(
            Step("a", Action.PROVISION_ENCLAVE, "a", None, ()),
            Step("b", Action.PROVISION_ENCLAVE, "b", None, ("a",)),
        ),
    )
    run = rig.engine.start_plan(plan, None)
    rig.clock.advance(LEASE * 3)  # "a" handled late: "b" is readied and sent only now
    rig.engine.handle(rig.queue.ready.pop(0))
    b = rig.store.get_step(run.id, "b")
    assert b is not None and b.status == StepStatus.READY and b.sent_at == rig.clock.now()
    rig.queue.ready.clear()  # and its message is lost
    rig.clock.advance(LEASE - 1)
    assert rig.engine.sweep() == 0
    rig.clock.advance(1)
    assert rig.engine.sweep() == 1
    assert rig.queue.ready == [
        {"run_id": run.id, "step_id": "b", "action": Action.PROVISION_ENCLAVE.value}
    ]


def test_a_message_in_redelivery_backoff_is_not_re_sent(rig: Sweepable) -> None:
    """A delivery that failed before the claim hands the message back to the queue, which
    holds it for up to ``DeliveryPolicy.pending_s`` over its deliveries: the step is ready and
    unclaimed all that time, and a re-send would start a second stream of deliveries (which
    also breaks "give up after N deliveries")."""
    policy = DeliveryPolicy(max_receives=5, backoff_s=5.0, max_delay_s=900.0)
    rig.engine.pending_s = policy.pending_s()
    assert rig.engine.pending_s == pytest.approx((5 + 10 + 20 + 40) * 1.2)
    run = rig.engine.start_plan(wide_plan(1), None)
    rig.queue.ready.clear()  # in the queue's backoff, invisible to everyone
    rig.clock.advance(LEASE + rig.engine.pending_s - 1)
    assert rig.engine.sweep() == 0
    rig.clock.advance(1)  # every delivery would have happened by now: the message is lost
    assert rig.engine.sweep() == 1
    assert [m["run_id"] for m in rig.queue.ready] == [run.id]


def test_an_expired_lease_is_re_sent_once_a_window(rig: Sweepable) -> None:
    run = rig.engine.start_plan(wide_plan(1), None)
    rig.queue.ready.clear()
    now = rig.clock.now()
    assert rig.store.claim_step(run.id, "s0000", "dead-worker", LEASE, now) is not None
    rig.clock.advance(LEASE)
    assert rig.engine.sweep() == 1
    rig.clock.advance(LEASE / 2)
    assert rig.engine.sweep() == 0  # its message is still on its way
    rig.clock.advance(LEASE / 2)
    assert rig.engine.sweep() == 1
    assert len(rig.queue.ready) == 2
    rig.queue.drain(rig.engine.handle)
    assert rig.store.get_run(run.id).status == RunStatus.SUCCEEDED  # type: ignore[union-attr]


def test_a_retry_waiting_for_its_backoff_is_not_stuck(rig: Sweepable) -> None:
    run = rig.engine.start_plan(wide_plan(1), None)
    rig.queue.ready.clear()
    now = rig.clock.now()
    rig.store.claim_step(run.id, "s0000", "w", LEASE, now)
    rig.store.finish_step(
        run.id, "s0000", "w", StepStatus.READY, "busy", now, not_before=now + 3 * LEASE
    )
    rig.clock.advance(3 * LEASE + LEASE - 1)  # due, but not yet a window past due
    assert rig.engine.sweep() == 0
    rig.clock.advance(1)
    assert rig.engine.sweep() == 1


def test_a_run_begun_recently_is_not_swept_and_a_restart_sweeps_everything(
    rig: Sweepable,
) -> None:
    rig.clock.advance(10 * LEASE)  # the steps' records were never sent before the run began
    rig.engine.start_plan(wide_plan(3), None)
    assert rig.engine.sweep() == 0
    assert rig.depth == 3
    # A process starting over an in-process queue has lost every message: window 0.
    assert rig.engine.sweep(window_s=0) == 3
    assert rig.depth == 6
