"""What the engine asks its store for: each read a step or a reconcile costs is one a cloud
store bills (DynamoDB, Firestore, Cosmos), so reads the engine can answer itself are not made.

The in-memory store behind a proxy counting every ``StateStore`` call; behaviour is checked
alongside (the run still succeeds, a stale message still changes nothing).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import pytest
from engine_fakes import EXAMPLES, Rig

from nclav.plan import Action
from nclav.ports import StateStore
from nclav.records import RunStatus, StepStatus
from support import Counted

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

_PORT = {n for n in vars(StateStore) if not n.startswith("_")}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Rig, Counted]]:
    r = Rig(tmp_path, backoff_s=2.0, max_attempts=4, lease_s=60.0)
    r.add_tree("pa", EXAMPLES / "product-a" / "enclaves")
    counted = Counted(r.store, _PORT)
    r.engine.store = counted  # type: ignore[assignment]
    yield r, counted
    r.close()


def test_a_reconcile_reads_the_applied_state_and_the_runs_ahead_once_each(
    rig: tuple[Rig, Counted],
) -> None:
    """Judging the tree and beginning the run: one read of the applied enclaves and of the
    unfinished runs each to judge it, one more of each to begin it; the begun run's steps
    are sent from the records just stored and the run is returned as begun, without reading
    either back (was 4 + 3 reads, and a read of the steps, the run and its progress)."""
    r, counted = rig
    run = r.engine.start_run_if_changed("pa")
    assert run is not None and run.status == RunStatus.RUNNING and run.started_at
    assert run.changes == 9
    assert counted.calls["list_enclaves"] == 2
    assert counted.calls["list_unfinished_runs"] == 2
    for unneeded in ("get_run", "list_steps", "has_unfinished_steps"):
        assert counted.calls[unneeded] == 0, unneeded
    ready = {m["step_id"] for m in r.queue.ready}
    stored = {s.step_id for s in r.store.list_steps(run.id) if s.status == StepStatus.READY}
    assert ready == stored and ready
    r.drain()
    assert r.run(run.id).status == RunStatus.SUCCEEDED


def test_step_messages_carry_the_bundle_so_workers_do_not_read_the_run(
    rig: tuple[Rig, Counted],
) -> None:
    """Every message of a run with a bundle names it; a worker handling one reads the run
    only when the run may be over (was one read per step)."""
    r, counted = rig
    run = r.engine.start_run("pa")
    counted.calls.clear()
    r.drain()
    assert r.run(run.id).status == RunStatus.SUCCEEDED
    assert len(r.queue.handled) == 9
    assert all(m.get("bundle") == "pa" for m in r.queue.handled)
    assert counted.calls["get_run"] == 1  # the run's end, once: not per step


def test_a_partition_without_imports_reads_its_own_enclave_only(
    rig: tuple[Rig, Counted],
) -> None:
    """A partition resolves its inputs from its enclave and the ones it imports from: with
    no import, one read of its enclave, which the step's first write reuses (was a list of
    every enclave and a read of its own)."""
    r, counted = rig
    r.engine.start_run("pa")
    per_step: dict[str, Counter[str]] = {}

    def handle(message: dict[str, str]) -> None:
        before = Counter(counted.calls)
        r.engine.handle(message)
        per_step[message["step_id"]] = counted.calls - before

    r.queue.drain(handle)
    for step_id in (
        "provision_partition:product-a-dev/db",
        "provision_partition:product-a-dev/api",
    ):
        calls = per_step[step_id]
        assert calls["list_enclaves"] == 0, step_id
        assert calls["get_enclave"] == 1, step_id
    # The frontend imports from product-a-dev: its enclave and that one, a read each.
    front = per_step["provision_partition:web-dev/frontend"]
    assert front["list_enclaves"] == 0 and front["get_enclave"] == 2
    # A new enclave: read once (found missing), not again before it is first written.
    assert per_step["provision_enclave:web-dev"]["get_enclave"] == 1


@pytest.mark.parametrize("with_bundle", [True, False])
def test_a_late_message_of_a_finished_run_changes_nothing(
    rig: tuple[Rig, Counted], with_bundle: bool
) -> None:
    """A redelivered message after its run ended: with the bundle in it the claim is refused
    (every step of an ended run is final); without (an older sender's) the run is read and
    the message dropped at once. Either way nothing is written."""
    r, counted = rig
    run = r.engine.start_run("pa")
    r.drain()
    first = r.queue.handled[0]
    message = dict(first) if with_bundle else {k: first[k] for k in ("run_id", "step_id")}
    steps, events = r.steps(run.id), len(r.events())
    counted.calls.clear()
    r.engine.handle(message)
    assert r.steps(run.id) == steps and len(r.events()) == events
    writes = {"claim_step", "finish_step", "update_step", "update_run", "put_enclave"}
    assert not [c for c in counted.calls if c in writes and c != "claim_step"]
    if not with_bundle:
        assert set(counted.calls) == {"get_run"}
    assert r.run(run.id).status == RunStatus.SUCCEEDED


def test_a_teardown_runs_messages_fall_back_to_reading_the_run(
    rig: tuple[Rig, Counted],
) -> None:
    """A run without a bundle (a destroy) sends the plain message, read as before."""
    r, _ = rig
    r.apply("pa")
    r.queue.handled.clear()
    run = r.engine.start_destroy(["web-dev"])
    r.drain()
    assert r.run(run.id).status == RunStatus.SUCCEEDED
    actions = {m["action"] for m in r.queue.handled}
    assert Action.TEARDOWN_ENCLAVE.value in actions
    assert all("bundle" not in m for m in r.queue.handled)
