"""What only the SQLite store promises: a file that persists, migrations, other processes."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from typing import TYPE_CHECKING, Any

import pytest

from nclav.local import SqliteStateStore
from nclav.local._sqlite_schema import MIGRATIONS, READY_SINCE, SCHEMA_VERSION, SchemaError
from nclav.local._sqlite_steps import new_step_rows, step_params
from nclav.plan import Action
from nclav.records import EventKind, StepRecord, StepStatus
from nclav.state import EnclaveState

from .conftest import LEASE, T0, event, independent, make_run, started

if TYPE_CHECKING:
    from pathlib import Path


def test_sqlite_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)
    store.put_enclave(EnclaveState(enclave_id="a"), None)
    run = started(store, "x", "y")
    store.claim_step(run.id, "x", "w", LEASE, T0)
    store.append_event(event(EventKind.ENCLAVE_PROVISIONED, "a"))
    store.lock("a/p", {"ID": "one"})
    store.close()

    reopened = SqliteStateStore(path)
    assert reopened.get_enclave("a") == (EnclaveState(enclave_id="a"), 1)
    assert reopened.get_run(run.id) == run
    step = reopened.get_step(run.id, "x")
    assert step is not None and step.lease_owner == "w"
    assert [e.enclave_id for e in reopened.list_events()] == ["a"]
    holder = reopened.lock("a/p", {"ID": "two"})
    assert holder is not None and holder.lock_id == "one"
    assert reopened.migrated_from == SCHEMA_VERSION
    reopened.close()


def test_sqlite_migrations_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "state.db"
    first = SqliteStateStore(path)
    assert first.migrated_from == 0
    second = SqliteStateStore(path)  # while the first is still open
    assert second.migrated_from == SCHEMA_VERSION
    first.close()
    second.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStateStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaError):
        SqliteStateStore(path)


def test_sqlite_migration_gives_steps_in_flight_their_dependents(tmp_path: Path) -> None:
    """A file of schema 1 (steps without dependents) with a run in flight, then opened."""
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        conn.execute("INSERT INTO runs (id, status, doc) VALUES ('r', 'running', '{}')")
        rows = [  # a done, b and c both after a, d after b and c
            ("a", 0, [], "succeeded"),
            ("b", 1, ["a"], "ready"),
            ("c", 2, ["a"], "running"),
            ("d", 3, ["c", "b"], "pending"),
        ]
        conn.executemany(
            "INSERT INTO steps (run_id, step_id, position, action, enclave_id, depends_on, "
            "conditional, status, attempts, version) "
            "VALUES ('r', ?, ?, 'provision_enclave', 'e', ?, 0, ?, 0, 1)",
            [(sid, pos, json.dumps(deps), status) for sid, pos, deps, status in rows],
        )
    store = SqliteStateStore(path)
    assert store.migrated_from == 1
    # Only unfinished steps fan out again, so only theirs are filled in ("a" is done).
    assert {s.step_id: s.dependents for s in store.list_steps("r")} == {
        "a": (),
        "b": ("d",),
        "c": ("d",),
        "d": (),
    }
    assert store.has_unfinished_steps("r")
    store.close()


def test_sqlite_migration_adds_sent_at_and_the_ready_index(tmp_path: Path) -> None:
    """A file of schema 2 with a ready step: after opening, it is stuck (never sent) and the
    sweeper's query reads the partial index of ready steps, not the whole steps table."""
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        for statement in (s for m in MIGRATIONS[:2] for s in m):
            conn.execute(statement)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (2)")
        conn.execute("INSERT INTO runs (id, status, doc) VALUES ('r', 'running', '{}')")
        conn.execute(
            "INSERT INTO steps (run_id, step_id, position, action, enclave_id, depends_on, "
            "conditional, status, attempts, version) "
            "VALUES ('r', 'a', 0, 'provision_enclave', 'e', '[]', 0, 'ready', 0, 1)"
        )
    store = SqliteStateStore(path)
    assert store.migrated_from == 2
    # The store's query names the index (INDEXED BY): it would fail if the index were gone.
    assert [(s.step_id, s.sent_at) for s in store.list_stuck_ready_steps(T0)] == [("a", None)]
    store.close()
    with sqlite3.connect(path) as conn:
        indexes = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index'").fetchall()
    assert any(READY_SINCE in str(sql) for (sql,) in indexes)


def test_sqlite_new_step_rows_hold_what_step_params_holds() -> None:
    """A run's steps are inserted from rows read straight off the records: the same values,
    column for column, as the dumped record an update writes (at version 1)."""
    run_id = "r"
    records = [
        StepRecord(
            run_id=run_id,
            step_id="provision_enclave:a",
            action=Action.PROVISION_ENCLAVE,
            enclave_id="a",
            dependents=("provision_partition:a/p",),
            status=StepStatus.READY,
        ),
        StepRecord(
            run_id=run_id,
            step_id="provision_partition:a/p",
            action=Action.PROVISION_PARTITION,
            enclave_id="a",
            target="p",
            depends_on=("provision_enclave:a", "elsewhere"),
            conditional=True,
            not_before=12.5,
            sent_at=3.0,
            error="e",
            version=7,
        ),
    ]
    rows = new_step_rows(records)
    for position, (row, record) in enumerate(zip(rows, records, strict=True)):
        params = step_params(record.model_copy(update={"version": 1}), position=position)
        assert row == [params["position"], *(params[c] for c in StepRecord.model_fields)]


def test_sqlite_lists_parse_only_documents_changed_since_the_last_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStateStore(tmp_path / "state.db")
    other = SqliteStateStore(tmp_path / "state.db")  # another process's writes, as far as
    for eid in ("a", "b", "c"):  # the first store can tell
        store.put_enclave(EnclaveState(enclave_id=eid), None)
    first = store.list_enclaves()
    parsed: list[str] = []
    parse = EnclaveState.model_validate_json

    def counting(doc: str | bytes, *args: Any, **kwargs: Any) -> EnclaveState:
        parsed.append(json.loads(doc)["enclave_id"])
        return parse(doc, *args, **kwargs)

    monkeypatch.setattr(EnclaveState, "model_validate_json", counting)
    assert store.list_enclaves() == first
    assert parsed == []  # nothing changed: nothing parsed again
    changed = EnclaveState(enclave_id="b", context_vars={"k": "v"})
    other.put_enclave(changed, 1)
    other.delete_enclave("c", 1)
    other.put_enclave(EnclaveState(enclave_id="d"), None)
    assert store.list_enclaves() == [first[0], changed, EnclaveState(enclave_id="d")]
    assert sorted(parsed) == ["b", "d"]
    other.delete_enclave("d", 1)
    other.put_enclave(EnclaveState(enclave_id="d", context_vars={"again": "1"}), None)
    assert store.list_enclaves()[-1].context_vars == {"again": "1"}  # same id and version
    store.close()
    other.close()


def test_sqlite_needs_a_file() -> None:
    with pytest.raises(ValueError):
        SqliteStateStore(":memory:")


def _claim_all(path: str, run_id: str, owner: str, start: object) -> list[str]:
    """Child process: claim every step of ``run_id`` it can; also try the Terraform lock."""
    store = SqliteStateStore(path)
    start.wait()  # type: ignore[attr-defined]
    won = [
        s.step_id
        for s in store.list_steps(run_id)
        if store.claim_step(run_id, s.step_id, owner, LEASE, T0) is not None
    ]
    if store.lock("e/p", {"ID": owner}) is None:
        won.append("lock")
    store.close()
    return won


def test_sqlite_claims_and_locks_hold_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = SqliteStateStore(path)
    run = make_run()
    store.create_run(run, independent(run.id, 40))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(3) as pool:
        start = manager.Event()
        pending = [
            pool.apply_async(_claim_all, (path, run.id, f"proc{i}", start)) for i in range(3)
        ]
        start.set()
        results = [p.get(timeout=60) for p in pending]
    claimed = sorted(sid for won in results for sid in won)
    assert claimed == sorted([f"s{i:02d}" for i in range(40)] + ["lock"])
    holder = store.lock("e/p", {"ID": "parent"})
    winner = next(f"proc{i}" for i, won in enumerate(results) if "lock" in won)
    assert holder is not None and holder.lock_id == winner
    assert store.claim_step(run.id, "s00", "parent", LEASE, T0) is None
    store.close()
