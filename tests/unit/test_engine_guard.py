"""The server-side delete guard, approvals, destroys planned when they begin (issue 8).

The engine decides the guard when it plans a run (when the run begins), so these tests drive
``Engine.start_run``/``start_destroy`` over the in-memory store with the fakes of
``engine_fakes`` and check the run's status, its approval, the steps it got and the driver
calls made (none, while a run awaits approval).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from engine_fakes import Rig

from nclav.engine.engine import PlanChangedError
from nclav.errors import ConflictError, NotFoundError, SpecError
from nclav.records import EventKind, RunStatus
from support import HTTP, enclave_files, write_tree

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def tree(rig: Rig, name: str, enclaves: dict[str, int], extra: str = "") -> str:
    """A tree ``name`` of enclaves with ``n`` independent partitions each (p0, p1, ...)."""
    root = rig.add_tree(name)
    for eid, n in enclaves.items():
        parts = {f"p{i}": HTTP for i in range(n)}
        write_tree(root, enclave_files(eid, extra, **parts))
    return name


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def applied(rig: Rig) -> set[str]:
    return {s.enclave_id for s in rig.store.list_enclaves()}


def started(rig: Rig, bundle: str, **options: object) -> str:
    """Start a reconcile, carry out whatever it may do, return its id."""
    run = rig.engine.start_run(bundle, **options)  # type: ignore[arg-type]
    rig.drain()
    return run.id


# -- the limit, counted one by one --------------------------------------------------------------


def test_an_enclave_with_5_partitions_is_6_deletions_over_a_limit_of_5(rig: Rig) -> None:
    assert rig.apply(tree(rig, "both", {"keep": 1, "big": 5})).status == RunStatus.SUCCEEDED
    mutations = len(rig.driver.mutations())
    run_id = started(rig, tree(rig, "keep", {"keep": 1}))
    run = rig.run(run_id)
    assert run.status == RunStatus.AWAITING_APPROVAL, run
    assert run.approval is not None
    assert run.approval.reason == "6 deletions, limit 5"
    assert sorted(run.approval.deletions) == [
        "enclave big",
        *(f"partition big/p{i}" for i in range(5)),
    ]
    assert {c["kind"] for c in run.approval.changes} == {"EnclaveDeleted", "PartitionDeleted"}
    # Nothing ran: no steps, no driver or terraform call, the enclave is still there.
    assert rig.store.list_steps(run_id) == []
    assert len(rig.driver.mutations()) == mutations
    assert rig.iac.destroys == []
    assert applied(rig) == {"keep", "big"}
    assert EventKind.RECONCILE_AWAITING_APPROVAL in {e.kind for e in rig.events(run_id)}

    # Approving the unchanged plan carries it out.
    rig.engine.approve(run_id)
    rig.drain()
    assert rig.run(run_id).status == RunStatus.SUCCEEDED
    assert applied(rig) == {"keep"}


def test_a_run_stopped_for_approval_is_notified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """People wait for an approval: the run's new status goes to the notifications."""
    import nclav.engine.engine as engine_module

    seen: list[tuple[str, RunStatus]] = []
    monkeypatch.setattr(
        engine_module.notify, "run_changed", lambda run: seen.append((run.id, run.status))
    )
    rig = Rig(tmp_path, max_deletes=0)
    rig.apply(tree(rig, "both", {"keep": 1, "gone": 1}))
    run_id = started(rig, tree(rig, "keep", {"keep": 1}))
    assert (run_id, RunStatus.AWAITING_APPROVAL) in seen


def test_within_the_limit_applies_at_once(rig: Rig) -> None:
    rig.apply(tree(rig, "both", {"keep": 1, "big": 4}))
    run = rig.run(started(rig, tree(rig, "keep", {"keep": 1})))
    assert run.status == RunStatus.SUCCEEDED and run.approval is None
    assert applied(rig) == {"keep"}


def test_the_server_limit_is_a_setting(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_deletes=1)
    rig.apply(tree(rig, "both", {"keep": 1, "gone": 1}))
    run = rig.run(started(rig, tree(rig, "keep", {"keep": 1})))
    assert run.status == RunStatus.AWAITING_APPROVAL
    assert run.approval is not None and run.approval.reason == "2 deletions, limit 1"


def test_a_request_can_lower_the_limit_but_never_raise_it(rig: Rig) -> None:
    rig.apply(tree(rig, "all", {"keep": 1, "big": 5, "small": 1}))
    lowered = rig.run(started(rig, tree(rig, "nosmall", {"keep": 1, "big": 5}), max_deletes=1))
    assert lowered.status == RunStatus.AWAITING_APPROVAL
    assert lowered.approval is not None and lowered.approval.reason == "2 deletions, limit 1"
    # A later reconcile supersedes it; asking for a higher limit than the server's does nothing.
    raised = rig.run(started(rig, tree(rig, "keep", {"keep": 1}), max_deletes=100))
    assert raised.status == RunStatus.AWAITING_APPROVAL
    assert raised.approval is not None and raised.approval.reason == "8 deletions, limit 5"
    assert rig.run(lowered.id).status == RunStatus.CANCELLED
    # allow_delete lifts it.
    lifted = rig.run(started(rig, "keep", allow_delete=True))
    assert lifted.status == RunStatus.SUCCEEDED
    assert applied(rig) == {"keep"}


def test_deleting_every_enclave_is_never_automatic(rig: Rig) -> None:
    rig.apply(tree(rig, "ab", {"a": 1, "b": 0}))
    run = rig.run(started(rig, tree(rig, "other", {"z": 1})))  # 3 deletions, under 5
    assert run.status == RunStatus.AWAITING_APPROVAL
    assert run.approval is not None
    assert (run.approval.reason, run.approval.every) == ("deletes every enclave (2)", 2)
    assert applied(rig) == {"a", "b"}
    # An empty tree is refused before any run, unless the request allows deleting.
    empty = rig.add_tree("empty") and "empty"
    with pytest.raises(SpecError, match="holds no enclave"):
        rig.engine.start_run(empty)
    done = rig.run(started(rig, empty, allow_delete=True))
    assert done.status == RunStatus.SUCCEEDED
    assert applied(rig) == set()


# -- approving, re-planning, cancelling, superseding ------------------------------------------


def test_approval_refuses_a_plan_that_changed_since_it_was_shown(rig: Rig) -> None:
    rig.apply(tree(rig, "both", {"keep": 1, "big": 6}))
    run_id = started(rig, tree(rig, "keep", {"keep": 1}))
    shown = rig.run(run_id).approval
    assert shown is not None and shown.reason == "7 deletions, limit 5"

    # The applied state moves under the waiting run (here: a partition record goes away).
    found = rig.store.get_enclave("big")
    assert found is not None
    state, version = found
    parts = {k: v for k, v in state.partitions.items() if k != "p5"}
    rig.store.put_enclave(state.model_copy(update={"partitions": parts}), version)

    with pytest.raises(PlanChangedError, match="the plan changed since it was shown"):
        rig.engine.approve(run_id)
    again = rig.run(run_id)
    assert again.status == RunStatus.AWAITING_APPROVAL
    assert again.approval is not None
    assert again.approval.reason == "6 deletions, limit 5"
    assert again.approval.plan_digest != shown.plan_digest
    assert rig.store.list_steps(run_id) == [] and applied(rig) == {"keep", "big"}

    # Approving what is shown now goes ahead.
    rig.engine.approve(run_id)
    rig.drain()
    assert rig.run(run_id).status == RunStatus.SUCCEEDED
    assert applied(rig) == {"keep"}


def test_approve_and_cancel_refuse_runs_that_do_not_wait(rig: Rig) -> None:
    done = rig.apply(tree(rig, "one", {"a": 1}))
    with pytest.raises(ConflictError, match="not awaiting approval"):
        rig.engine.approve(done.id)
    with pytest.raises(ConflictError, match="only a queued or awaiting run"):
        rig.engine.cancel(done.id)
    with pytest.raises(NotFoundError):
        rig.engine.approve("nope")


def test_cancel_ends_an_awaiting_run_and_lets_the_next_one_start(rig: Rig) -> None:
    rig.apply(tree(rig, "both", {"keep": 1, "big": 6}))
    waiting = started(rig, tree(rig, "keep", {"keep": 1}))
    # A destroy on the same enclaves waits behind it (it does not supersede it).
    destroy = rig.engine.start_destroy(["keep"], allow_delete=True)
    rig.drain()
    assert rig.run(destroy.id).status == RunStatus.QUEUED
    cancelled = rig.engine.cancel(waiting)
    assert cancelled.status == RunStatus.CANCELLED and cancelled.errors == ("cancelled",)
    rig.drain()
    assert rig.run(destroy.id).status == RunStatus.SUCCEEDED
    assert applied(rig) == {"big"}
    with pytest.raises(ConflictError):
        rig.engine.approve(waiting)


def test_a_later_reconcile_supersedes_an_awaiting_run(rig: Rig) -> None:
    rig.apply(tree(rig, "both", {"keep": 1, "big": 6}))
    waiting = started(rig, tree(rig, "keep", {"keep": 1}))
    fix = started(rig, "both")  # the pushed fix: the tree as it was
    assert rig.run(waiting).status == RunStatus.CANCELLED
    assert rig.run(waiting).errors == (f"superseded by run {fix}",)
    assert rig.run(fix).status == RunStatus.SUCCEEDED
    assert applied(rig) == {"keep", "big"}


# -- destroys, planned when they begin ------------------------------------------------------


def test_a_destroy_tears_down_a_partition_added_by_an_earlier_queued_run(rig: Rig) -> None:
    rig.apply(tree(rig, "one", {"st": 1}))
    adding = rig.engine.start_run(tree(rig, "two", {"st": 2}))  # begins: adds st/p1
    destroy = rig.engine.start_destroy(["st"], allow_delete=True)  # queued behind it
    assert rig.run(destroy.id).status == RunStatus.QUEUED
    assert rig.store.list_steps(destroy.id) == []  # nothing planned yet
    rig.drain()
    assert rig.run(adding.id).status == RunStatus.SUCCEEDED
    assert rig.run(destroy.id).status == RunStatus.SUCCEEDED
    assert set(rig.steps(destroy.id)) == {
        "teardown_partition:st/p0",
        "teardown_partition:st/p1",
        "teardown_enclave:st",
    }
    assert applied(rig) == set()


def test_destroys_go_through_the_guard(rig: Rig) -> None:
    rig.apply(tree(rig, "two", {"keep": 1, "big": 6}))
    run = rig.engine.start_destroy(["big"])
    assert run.status == RunStatus.AWAITING_APPROVAL
    assert run.approval is not None and run.approval.reason == "7 deletions, limit 5"
    last = rig.engine.start_destroy(["keep"], "p0")  # one partition: within the limit
    rig.drain()
    assert rig.run(last.id).status == RunStatus.SUCCEEDED
    assert rig.enclave("keep").partitions == {}
    with pytest.raises(NotFoundError, match="enclave 'nope' not found"):
        rig.engine.start_destroy(["nope"])
    with pytest.raises(NotFoundError, match="partition 'zz' not found"):
        rig.engine.start_destroy(["big"], "zz")


# -- resources_only ---------------------------------------------------------------------------


def test_resources_only_destroy_keeps_the_enclave(rig: Rig) -> None:
    rig.apply(tree(rig, "two", {"keep": 1, "st": 2}))
    run = rig.engine.start_destroy(["st"], resources_only=True)
    rig.drain()
    assert rig.run(run.id).status == RunStatus.SUCCEEDED
    assert set(rig.steps(run.id)) == {"teardown_partition:st/p0", "teardown_partition:st/p1"}
    assert applied(rig) == {"keep", "st"}
    assert rig.enclave("st").partitions == {}
    assert ("driver.teardown_enclave", "st") not in rig.driver.mutations()
    assert sorted(key for _, key in rig.iac.destroys) == ["st/p0", "st/p1"]


def test_resources_only_reconcile_strips_enclaves_that_left_the_tree(rig: Rig) -> None:
    rig.apply(tree(rig, "two", {"keep": 1, "st": 2}))
    run = rig.run(started(rig, tree(rig, "keep", {"keep": 1}), resources_only=True))
    assert run.status == RunStatus.SUCCEEDED
    assert set(rig.steps(run.id)) == {"teardown_partition:st/p0", "teardown_partition:st/p1"}
    assert applied(rig) == {"keep", "st"} and rig.enclave("st").partitions == {}
    # A normal apply of the same tree then removes the (empty) enclave.
    again = rig.run(started(rig, "keep"))
    assert set(rig.steps(again.id)) == {"teardown_enclave:st"}
    assert applied(rig) == {"keep"}


# -- refused before any run: clouds without a driver -------------------------------------------


def test_a_cloud_without_a_driver_is_refused_before_any_run(rig: Rig) -> None:
    name = tree(rig, "mixed", {"fine": 1})
    write_tree(rig.trees[name], enclave_files("far", "cloud: gcp\n", p=HTTP))
    with pytest.raises(SpecError) as caught:
        rig.engine.start_run(name)
    (issue,) = caught.value.issues
    assert issue.render() == (
        f"{rig.trees[name] / 'far' / 'config.yml'}:4: cloud: no driver for cloud 'gcp' on this "
        "server (enabled: local)"
    )
    assert rig.store.list_runs() == [] and applied(rig) == set()


# -- no run for nothing to do ---------------------------------------------------------------------


def test_no_run_when_nothing_changes_unless_it_waits_behind_another(rig: Rig) -> None:
    rig.apply(tree(rig, "one", {"a": 1}))
    runs = len(rig.store.list_runs())
    assert rig.engine.start_run_if_changed("one") is None
    assert len(rig.store.list_runs()) == runs
    # Behind a run in flight, it cannot know yet: it is created and plans when it begins.
    first = rig.engine.start_run(tree(rig, "more", {"a": 2}))
    behind = rig.engine.start_run_if_changed("more")
    assert behind is not None and behind.status == RunStatus.QUEUED
    rig.drain()
    assert rig.run(first.id).status == RunStatus.SUCCEEDED
    final = rig.run(behind.id)
    assert final.status == RunStatus.SUCCEEDED and rig.store.list_steps(behind.id) == []


def test_a_reconcile_queued_behind_a_run_that_stops_for_approval_supersedes_it(
    rig: Rig,
) -> None:
    rig.apply(tree(rig, "both", {"keep": 1, "big": 6}))
    # A run in flight, then (behind it) one that will need approval, then a later fix.
    busy = rig.engine.start_run(tree(rig, "busy", {"keep": 2, "big": 6}))
    over = rig.engine.start_run(tree(rig, "keep", {"keep": 1}))
    fix = rig.engine.start_run("busy")
    assert rig.run(over.id).status == rig.run(fix.id).status == RunStatus.QUEUED
    rig.drain()  # busy ends; over is planned, stops, and fix supersedes it in the same kick
    assert rig.run(busy.id).status == RunStatus.SUCCEEDED
    assert rig.run(over.id).status == RunStatus.CANCELLED
    assert rig.run(over.id).errors == (f"superseded by run {fix.id}",)
    assert rig.run(fix.id).status == RunStatus.SUCCEEDED
    assert applied(rig) == {"keep", "big"}
