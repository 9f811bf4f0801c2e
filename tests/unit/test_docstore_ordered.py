"""``DocumentStateStore`` without atomic transactions (``Documents.atomic`` false, as on Cosmos
DB): its multi-document operations are ordered single writes, and a process that dies after
any one of them leaves a state every reader tolerates and the next attempt repairs.

Each test stops a process at every write an operation makes (``CrashingDocuments``: the
write is refused, as if the process died before sending it), then reads through a second
store (a new process) and retries. The whole state-store contract suite runs over the same
adapter as ``store[documents-ordered]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import pytest

from nclav.docstore import DocumentStateStore, MemoryDocuments
from nclav.docstore import runs as doc_runs
from nclav.errors import ConflictError, TemporaryError
from nclav.records import (
    IacOperation,
    IacRun,
    IacStatus,
    Run,
    RunStatus,
    StepStatus,
    iso_time,
)
from support import chain

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from nclav.docstore.port import Doc, Key, Write

T0 = 1_767_225_600.0


class Died(Exception):
    """The process stopped before this write reached the database."""


class CrashingDocuments(MemoryDocuments):
    """An ordered adapter whose process dies at its ``crash_at``-th write (0-based)."""

    def __init__(self) -> None:
        super().__init__(atomic=False)
        self.crash_at: int | None = None
        self.writes = 0

    def _count(self) -> None:
        if self.crash_at is not None and self.writes >= self.crash_at:
            raise Died  # (a ``finally`` of the dead process writes nothing either)
        self.writes += 1

    def write(self, op: Write, returns: Literal["new", "old"] | None = None) -> Doc:
        self._count()
        return super().write(op, returns)

    def batch_write(self, puts: Sequence[Doc] = (), deletes: Sequence[Key] = ()) -> None:
        self._count()
        super().batch_write(puts, deletes)


def writes_of(operation: Callable[[DocumentStateStore], object], setup: Callable[..., Any]) -> int:
    """How many writes ``operation`` makes on a fresh store prepared by ``setup``."""
    docs = CrashingDocuments()
    setup(DocumentStateStore(docs))
    before = docs.writes
    operation(DocumentStateStore(docs))  # another process, as in ``crashed``
    return docs.writes - before


def crashed(
    crash_at: int, operation: Callable[[DocumentStateStore], object], setup: Callable[..., Any]
) -> CrashingDocuments:
    """The documents left by ``operation`` dying at its ``crash_at``-th write."""
    docs = CrashingDocuments()
    setup(DocumentStateStore(docs))
    docs.crash_at = docs.writes + crash_at
    with pytest.raises(Died):
        operation(DocumentStateStore(docs))
    docs.crash_at = None
    return docs


def _nothing(store: DocumentStateStore) -> None:
    return None


@pytest.fixture
def turns_taken_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """A turnstile mark left by a dead process is taken over at once (not after a minute)."""
    monkeypatch.setattr(doc_runs, "TURN_HOLD_S", -1.0)


def test_a_run_whose_creation_died_is_invisible_or_whole(turns_taken_over: None) -> None:
    run = Run(created_at=iso_time(T0))
    steps = chain(run.id, "a", "b", "c")

    def create(store: DocumentStateStore) -> object:
        return store.create_run(run, steps)

    total = writes_of(create, _nothing)
    assert total == 4  # the turn, the steps, the run, the turn ended
    for k in range(total):
        docs = crashed(k, create, _nothing)
        reader = DocumentStateStore(docs)
        found = reader.get_run(run.id)
        if k < 3:  # before the run document: no run, no steps, nothing unfinished
            assert found is None
            assert reader.list_steps(run.id) == []
            assert reader.list_unfinished_runs() == []
            assert not reader.has_unfinished_steps(run.id)
            again = reader.create_run(run, steps)  # the caller's retry (another process)
            assert [s.step_id for s in reader.list_steps(run.id)] == ["a", "b", "c"]
            assert reader.has_unfinished_steps(run.id)
            assert again.seq == min(k, 1) + 1  # a number taken by the dead one is skipped
        else:  # only the mark was left: the run is whole, the next creation takes over
            assert found is not None and found.seq == 1
            assert [s.step_id for s in reader.list_steps(run.id)] == ["a", "b", "c"]
            assert [r.id for r in reader.list_unfinished_runs()] == [run.id]
        later = reader.create_run(Run(created_at=iso_time(T0 + 1)), [])
        unfinished = reader.list_unfinished_runs()
        assert [r.seq for r in unfinished] == sorted(r.seq for r in unfinished)
        assert unfinished[-1].id == later.id


def test_a_live_creation_makes_the_next_one_wait_then_says_who_is_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(doc_runs, "TURN_WAIT_S", 0.2)
    docs = crashed(1, lambda s: s.create_run(Run(id="r-slow", created_at="x"), []), _nothing)
    # (The first write, the turn, landed; the process is "still" creating r-slow.)
    with pytest.raises(TemporaryError, match="r-slow is being created"):
        DocumentStateStore(docs).create_run(Run(created_at=iso_time(T0)), [])


def test_creating_an_existing_run_writes_none_of_its_steps() -> None:
    docs = CrashingDocuments()
    store = DocumentStateStore(docs)
    run = Run(created_at=iso_time(T0))
    store.create_run(run, chain(run.id, "a", "b"))
    with pytest.raises(ConflictError, match="already exists"):
        store.create_run(run, chain(run.id, "x"))
    assert [s.step_id for s in store.list_steps(run.id)] == ["a", "b"]
    assert store.create_run(Run(created_at=iso_time(T0)), []).seq == 3  # the turn was ended


def test_a_begin_that_died_leaves_the_run_queued_and_a_later_worker_begins_it() -> None:
    queued = Run(created_at=iso_time(T0))

    def setup(store: DocumentStateStore) -> None:
        store.create_run(queued, [])

    began = queued.model_copy(update={"status": RunStatus.RUNNING, "started_at": iso_time(T0 + 1)})

    def begin(store: DocumentStateStore) -> object:
        return store.begin_run(began, chain(queued.id, "a", "b"))

    total = writes_of(begin, setup)
    assert total == 3  # the claim, the steps, the commit
    for k in range(total):
        docs = crashed(k, begin, setup)
        reader = DocumentStateStore(docs)
        stored = reader.get_run(queued.id)
        assert stored is not None and stored.status == RunStatus.QUEUED
        assert reader.list_steps(queued.id) == []
        assert not reader.has_unfinished_steps(queued.id)
        # A claim is another worker's until it expires; then it is taken over, the dead
        # worker's steps dropped, and only the new plan's steps belong to the run.
        later = began.model_copy(update={"started_at": iso_time(T0 + 2 + doc_runs.CLAIM_TTL_S)})
        if k > 0:
            with pytest.raises(ConflictError, match="already begun"):
                reader.begin_run(began, chain(queued.id, "x"))
        reader.begin_run(later, chain(queued.id, "c"))
        assert [s.step_id for s in reader.list_steps(queued.id)] == ["c"]
        assert reader.has_unfinished_steps(queued.id)
        assert [r.status for r in reader.list_unfinished_runs()] == [RunStatus.RUNNING]


def test_unfinished_steps_and_runs_follow_single_writes() -> None:
    store = DocumentStateStore(MemoryDocuments(atomic=False))
    earlier = store.create_run(Run(created_at=iso_time(T0)), [])
    run = store.create_run(Run(id="r", created_at=iso_time(T0)), chain("r", "a", "b"))
    assert [r.id for r in store.list_unfinished_runs()] == [earlier.id, "r"]
    claimed = store.claim_step("r", "a", "w", 30.0, T0)
    assert claimed is not None
    store.finish_step("r", "a", "w", StepStatus.SUCCEEDED, None, T0 + 1)
    assert store.has_unfinished_steps("r")  # b is still pending
    b = store.get_step("r", "b")
    assert b is not None
    store.update_step(b.model_copy(update={"status": StepStatus.SKIPPED}), b.version)
    assert not store.has_unfinished_steps("r")
    store.update_run(run.model_copy(update={"status": RunStatus.SUCCEEDED}))
    assert [r.id for r in store.list_unfinished_runs()] == [earlier.id]


def iac(started_at: float, run_id: str = "iac-1", partition: str = "p", **fields: object) -> IacRun:
    return IacRun(
        id=run_id,
        enclave_id="e",
        partition_id=partition,
        operation=IacOperation.PROVISION,
        started_at=iso_time(started_at),
        **fields,
    )


def test_an_iac_run_is_one_write_and_another_process_keeps_its_order() -> None:
    first = iac(T0)

    def put(store: DocumentStateStore) -> None:
        store.put_iac_run(first)

    assert writes_of(put, _nothing) == 1  # no counter, no locator: the run itself
    reader = DocumentStateStore(crashed(0, put, _nothing))
    assert reader.get_iac_run(first.id) is None and reader.list_iac_runs("e", "p") == []

    docs = MemoryDocuments(atomic=False)
    runner = DocumentStateStore(docs)
    same_instant = [iac(T0, f"iac-{i}") for i in range(3)]
    for run in same_instant:
        runner.put_iac_run(run)
    # Another process (the engine recovering an abandoned run) marks the first one failed:
    # it keeps its place among runs that started at the same instant.
    failed = same_instant[0].model_copy(update={"status": IacStatus.FAILED})
    DocumentStateStore(docs).put_iac_run(failed)
    assert runner.get_iac_run(failed.id) == failed
    assert runner.list_iac_runs("e", "p") == [same_instant[2], same_instant[1], failed]
    assert runner.list_iac_runs("e", "p", limit=1) == [same_instant[2]]


def test_an_iac_run_moved_to_another_partition_is_never_absent() -> None:
    first = iac(T0)
    moved = iac(T0 + 60, partition="q", status=IacStatus.SUCCEEDED, exit_code=0)

    def move(store: DocumentStateStore) -> None:  # the same process: it knows where it was
        store.put_iac_run(first)
        store.put_iac_run(moved)

    assert writes_of(move, _nothing) == 3  # the first put, then the new copy, the old gone
    for k in (1, 2):
        reader = DocumentStateStore(crashed(k, move, _nothing))
        assert reader.get_iac_run(first.id) == (first if k == 1 else moved)
        reader.put_iac_run(moved)  # a new process: it cannot know the old partition
        assert reader.get_iac_run(first.id) == moved
        assert reader.list_iac_runs("e", "q") == [moved]
        # A move finished by another process leaves the old partition's copy listed there
        # (nothing is lost; the engine never moves a run: the runner makes one per partition).
        assert reader.list_iac_runs("e", "p") == [first]
