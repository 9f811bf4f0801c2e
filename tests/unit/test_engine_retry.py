"""Retrying a run (issue 14): ``Engine.retry`` over the in-memory store and the fakes.

The end-to-end scenarios (real terraform, local and AWS, the API and the queue) are in
tests/scenarios; here the engine's rules: what may be retried, what a retry plans, the
history it keeps, and that the delete guard judges a retry like any run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from engine_fakes import Rig

from nclav.errors import ConflictError, NclavError, NotFoundError
from nclav.records import EventKind, RunStatus
from support import HTTP, enclave_files, write_tree

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def tree(rig: Rig, name: str, enclaves: dict[str, int]) -> str:
    root = rig.add_tree(name)
    for eid, n in enclaves.items():
        write_tree(root, enclave_files(eid, "", **{f"p{i}": HTTP for i in range(n)}))
    return name


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def failed_once(rig: Rig) -> str:
    """A run of a/p0 and a/p1 whose p1 apply fails (a permanent error, once)."""
    rig.iac.failures.times("apply:a/p1", NclavError("quota exceeded"), 1)
    run = rig.apply(tree(rig, "t", {"a": 2}))
    assert run.status == RunStatus.FAILED, run
    return run.id


def test_a_retry_re_plans_and_redoes_only_what_failed(rig: Rig) -> None:
    first = failed_once(rig)
    applies = rig.iac.apply_count("a/p0")
    retry = rig.engine.retry(first)
    rig.drain()
    done = rig.run(retry.id)
    assert done.status == RunStatus.SUCCEEDED, done
    assert (done.retry_of, done.attempt, done.trigger) == (first, 2, "retry")
    assert [s.step_id for s in rig.store.list_steps(retry.id)] == ["provision_partition:a/p1"]
    assert rig.iac.apply_count("a/p0") == applies  # not redone
    (earlier,) = done.attempts
    assert (earlier.attempt, earlier.run_id, earlier.status) == (1, first, RunStatus.FAILED)
    assert any("quota exceeded" in e for e in earlier.errors)
    started = [e for e in rig.events(retry.id) if e.kind == EventKind.RECONCILE_STARTED]
    assert started[0].fields["retry_of"] == first


def test_each_try_keeps_the_history_of_the_earlier_ones(rig: Rig) -> None:
    first = failed_once(rig)
    rig.iac.failures.times("apply:a/p1", NclavError("still no quota"), 1)
    second = rig.engine.retry(first)
    rig.drain()
    assert rig.run(second.id).status == RunStatus.FAILED
    third = rig.engine.retry(second.id)
    rig.drain()
    done = rig.run(third.id)
    assert done.status == RunStatus.SUCCEEDED and done.attempt == 3
    assert [(a.attempt, a.run_id) for a in done.attempts] == [(1, first), (2, second.id)]
    assert any("still no quota" in e for e in done.attempts[1].errors)


def test_a_retry_is_refused_when_a_newer_run_changed_the_same_enclaves(rig: Rig) -> None:
    first = failed_once(rig)
    newer = rig.apply(tree(rig, "t2", {"a": 3}))
    with pytest.raises(ConflictError) as refused:
        rig.engine.retry(first)
    text = str(refused.value)
    assert newer.id in text and "enclaves a" in text and "reconcile" in text
    assert [r.id for r in rig.store.list_runs()][0] == newer.id  # no run was made


def test_a_newer_run_cancelled_before_it_began_does_not_block(rig: Rig) -> None:
    first = failed_once(rig)
    newer = rig.engine.start_run(tree(rig, "t2", {"b": 1}), max_deletes=0)  # deletes a: held
    rig.engine.cancel(rig.run(newer.id).id)  # queued or awaiting: it changed nothing
    assert rig.run(newer.id).started_at is None
    retry = rig.engine.retry(first)
    rig.drain()
    assert rig.run(retry.id).status == RunStatus.SUCCEEDED


def test_only_final_failed_or_cancelled_runs_are_retried(rig: Rig) -> None:
    done = rig.apply(tree(rig, "t", {"a": 1}))
    with pytest.raises(ConflictError, match="only a failed or cancelled run"):
        rig.engine.retry(done.id)
    with pytest.raises(NotFoundError):
        rig.engine.retry("nope")


def test_the_delete_guard_judges_a_retry_like_any_run(rig: Rig) -> None:
    rig.apply(tree(rig, "both", {"keep": 1, "big": 6}))
    waiting = rig.engine.start_run(tree(rig, "keep", {"keep": 1}))
    rig.drain()
    assert rig.run(waiting.id).status == RunStatus.AWAITING_APPROVAL
    rig.engine.cancel(waiting.id)
    retry = rig.engine.retry(waiting.id)  # a cancelled run: retried, and held again
    rig.drain()
    held = rig.run(retry.id)
    assert held.status == RunStatus.AWAITING_APPROVAL and held.approval is not None
    assert held.approval.reason == "7 deletions, limit 5"
    assert {s.enclave_id for s in rig.store.list_enclaves()} == {"keep", "big"}
    rig.engine.approve(retry.id)
    rig.drain()
    assert rig.run(retry.id).status == RunStatus.SUCCEEDED
    assert {s.enclave_id for s in rig.store.list_enclaves()} == {"keep"}


def test_a_failed_destroy_is_retried_against_what_is_left(rig: Rig) -> None:
    rig.apply(tree(rig, "t", {"a": 2, "b": 1}))
    rig.iac.failures.times("destroy:a/p1", NclavError("still in use"), 1)
    destroy = rig.engine.start_destroy(["a"])
    rig.drain()
    assert rig.run(destroy.id).status == RunStatus.FAILED
    retry = rig.engine.retry(destroy.id)
    rig.drain()
    done = rig.run(retry.id)
    assert done.status == RunStatus.SUCCEEDED, done
    assert done.teardown_enclaves == ("a",) and done.bundle is None
    assert {s.enclave_id for s in rig.store.list_enclaves()} == {"b"}
    # p0 was torn down by the first try: the retry planned only what was left.
    steps = {s.step_id for s in rig.store.list_steps(retry.id)}
    assert "teardown_partition:a/p0" not in steps and "teardown_partition:a/p1" in steps
