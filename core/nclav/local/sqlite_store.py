"""``SqliteStateStore``: the embedded default state store, one file (``~/.nclav/state.db``).

It is shared by a threaded HTTP server, a worker pool and, during tests and restarts, other
processes, so every conditional write is a single ``UPDATE ... WHERE`` (or an insert that does
nothing on conflict) checked by its row count, inside ``BEGIN IMMEDIATE``: the condition holds
across threads and processes alike, and WAL lets readers go on while one writer commits.

The connection pool lives in ``_sqlite_db``, the schema in ``_sqlite_schema`` and the step
methods (claims and leases) in ``_sqlite_steps``.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from nclav.errors import ConflictError, NotFoundError
from nclav.local._sqlite_db import Database, SqliteStoreError
from nclav.local._sqlite_steps import INSERT_NEW_STEPS, SqliteSteps, new_step_rows
from nclav.records import (
    AuditEvent,
    DriftRecord,
    IacRun,
    Run,
    RunStatus,
    TfLock,
    check_run_steps,
)
from nclav.state import EnclaveState

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping, Sequence

    from pydantic import JsonValue

    from nclav.records import StepRecord

_FINAL_RUN = tuple(s.value for s in RunStatus if s.final)
_FINAL_IN = ", ".join("?" for _ in _FINAL_RUN)


def _with_seq(doc: str, seq: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(doc)
    data["seq"] = seq
    return data


class SqliteStateStore(SqliteSteps):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._db = Database(path)
        self.path = self._db.path
        self.migrated_from = self._db.migrated_from
        # The enclaves of the last listing, by their exact stored document: the engine lists
        # every applied enclave several times per run (1,000 documents took 0.3 s to parse
        # each time), and an unchanged document parses to the same frozen record. Keyed by
        # the text itself, a cached record is never stale, whichever process wrote the row.
        self._listed: dict[str, EnclaveState] = {}
        self._listed_lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def ping(self) -> None:
        self._db.rows("SELECT 1", ())

    # -- enclaves ------------------------------------------------------------------------------

    def get_enclave(self, enclave_id: str) -> tuple[EnclaveState, int] | None:
        rows = self._db.rows("SELECT doc, version FROM enclaves WHERE id = ?", (enclave_id,))
        if not rows:
            return None
        return EnclaveState.model_validate_json(rows[0]["doc"]), int(rows[0]["version"])

    def list_enclaves(self) -> list[EnclaveState]:
        rows = self._db.rows("SELECT doc FROM enclaves ORDER BY id", ())
        with self._listed_lock:
            known = self._listed
        listed: dict[str, EnclaveState] = {}
        for row in rows:
            doc = row["doc"]
            state = known.get(doc)
            listed[doc] = state if state is not None else EnclaveState.model_validate_json(doc)
        with self._listed_lock:
            self._listed = listed  # only what is stored now: deleted enclaves are let go
        return [listed[row["doc"]] for row in rows]

    def put_enclave(self, state: EnclaveState, expected_version: int | None) -> int:
        doc = state.model_dump_json(by_alias=True)
        with self._db.write() as conn:
            if expected_version is None:
                cur = conn.execute(
                    "INSERT INTO enclaves (id, version, doc) VALUES (?, 1, ?) "
                    "ON CONFLICT (id) DO NOTHING",
                    (state.enclave_id, doc),
                )
            else:
                cur = conn.execute(
                    "UPDATE enclaves SET doc = ?, version = version + 1 "
                    "WHERE id = ? AND version = ?",
                    (doc, state.enclave_id, expected_version),
                )
            if cur.rowcount != 1:
                raise ConflictError(
                    f"enclave {state.enclave_id}: not at expected version {expected_version}"
                )
        return (expected_version or 0) + 1

    def delete_enclave(self, enclave_id: str, expected_version: int) -> None:
        with self._db.write() as conn:
            cur = conn.execute(
                "DELETE FROM enclaves WHERE id = ? AND version = ?", (enclave_id, expected_version)
            )
            if cur.rowcount != 1:
                raise ConflictError(
                    f"enclave {enclave_id}: not at expected version {expected_version}"
                )

    # -- runs --------------------------------------------------------------------------------

    def create_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        check_run_steps(run, steps)
        doc = run.model_dump_json(exclude={"seq"})
        with self._db.write() as conn:
            cur = conn.execute(
                "INSERT INTO runs (id, status, doc) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (run.id, run.status.value, doc),
            )
            if cur.rowcount != 1:
                raise ConflictError(f"run {run.id} already exists")
            seq = cur.lastrowid
            conn.executemany(INSERT_NEW_STEPS, new_step_rows(steps))
        return run.model_copy(update={"seq": seq})

    def get_run(self, run_id: str) -> Run | None:
        rows = self._db.rows("SELECT seq, doc FROM runs WHERE id = ?", (run_id,))
        return Run.model_validate(_with_seq(rows[0]["doc"], rows[0]["seq"])) if rows else None

    def list_runs(self, limit: int = 50, status: RunStatus | None = None) -> list[Run]:
        where, params = ("WHERE status = ?", [status.value]) if status else ("", [])
        rows = self._db.rows(
            f"SELECT seq, doc FROM runs {where} ORDER BY seq DESC LIMIT ?",
            [*params, max(limit, 0)],
        )
        return [Run.model_validate(_with_seq(r["doc"], r["seq"])) for r in rows]

    def update_run(self, run: Run, expect: RunStatus | None = None) -> Run:
        doc = run.model_dump_json(exclude={"seq"})
        only = "" if expect is None else " AND status = ?"
        with self._db.write() as conn:
            cur = conn.execute(
                f"UPDATE runs SET status = ?, doc = ? WHERE id = ? AND status NOT IN ({_FINAL_IN})"
                + only,
                (run.status.value, doc, run.id, *_FINAL_RUN, *([expect.value] if expect else [])),
            )
            row = conn.execute("SELECT seq, status FROM runs WHERE id = ?", (run.id,)).fetchone()
        if row is None:
            raise NotFoundError(f"run not found: {run.id}")
        if cur.rowcount != 1:
            if expect is not None and row["status"] not in _FINAL_RUN:
                raise ConflictError(f"run {run.id} is {row['status']}, not {expect}")
            raise ConflictError(f"run {run.id} is already {row['status']}")
        return run.model_copy(update={"seq": row["seq"]})

    def begin_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        check_run_steps(run, steps)
        doc = run.model_dump_json(exclude={"seq"})
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE runs SET status = ?, doc = ? WHERE id = ? AND status = ? "
                "AND NOT EXISTS (SELECT 1 FROM steps WHERE run_id = ?)",
                (run.status.value, doc, run.id, RunStatus.QUEUED.value, run.id),
            )
            row = conn.execute("SELECT seq FROM runs WHERE id = ?", (run.id,)).fetchone()
            if row is None:
                raise NotFoundError(f"run not found: {run.id}")
            if cur.rowcount != 1:
                raise ConflictError(f"run {run.id} has already begun")
            conn.executemany(INSERT_NEW_STEPS, new_step_rows(steps))
        return run.model_copy(update={"seq": row["seq"]})

    def list_unfinished_runs(self) -> list[Run]:
        rows = self._db.rows(
            f"SELECT seq, doc FROM runs WHERE status NOT IN ({_FINAL_IN}) ORDER BY seq", _FINAL_RUN
        )
        return [Run.model_validate(_with_seq(r["doc"], r["seq"])) for r in rows]

    # -- audit events --------------------------------------------------------------------------

    def append_event(self, event: AuditEvent) -> AuditEvent:
        doc = event.model_dump_json(exclude={"seq"})
        with self._db.write() as conn:
            cur = conn.execute(
                "INSERT INTO events (enclave_id, run_id, doc) VALUES (?, ?, ?)",
                (event.enclave_id, event.run_id, doc),
            )
        return event.model_copy(update={"seq": cur.lastrowid})

    def list_events(
        self, enclave_id: str | None = None, limit: int = 100, *, run_id: str | None = None
    ) -> list[AuditEvent]:
        if limit <= 0:
            return []
        filters = {"enclave_id": enclave_id, "run_id": run_id}
        used = {k: v for k, v in filters.items() if v is not None}
        where = " AND ".join(f"{k} = :{k}" for k in used) or "1"
        rows = self._db.rows(
            f"SELECT seq, doc FROM events WHERE {where} ORDER BY seq DESC LIMIT :limit",
            {**used, "limit": limit},
        )
        return [AuditEvent.model_validate(_with_seq(r["doc"], r["seq"])) for r in reversed(rows)]

    # -- IaC runs ------------------------------------------------------------------------------

    def put_iac_run(self, run: IacRun) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO iac_runs (id, enclave_id, partition_id, started_at, doc) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "enclave_id = excluded.enclave_id, partition_id = excluded.partition_id, "
                "started_at = excluded.started_at, doc = excluded.doc",
                (run.id, run.enclave_id, run.partition_id, run.started_at, run.model_dump_json()),
            )

    def get_iac_run(self, run_id: str) -> IacRun | None:
        rows = self._db.rows("SELECT doc FROM iac_runs WHERE id = ?", (run_id,))
        return IacRun.model_validate_json(rows[0]["doc"]) if rows else None

    def list_iac_runs(self, enclave_id: str, partition_id: str, limit: int = 100) -> list[IacRun]:
        rows = self._db.rows(
            "SELECT doc FROM iac_runs WHERE enclave_id = ? AND partition_id = ? "
            "ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (enclave_id, partition_id, max(limit, 0)),
        )
        return [IacRun.model_validate_json(r["doc"]) for r in rows]

    # -- drift ---------------------------------------------------------------------------------

    def put_drift(self, record: DriftRecord) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO drift (enclave_id, partition_id, doc) VALUES (?, ?, ?) "
                "ON CONFLICT (enclave_id, partition_id) DO UPDATE SET doc = excluded.doc",
                (record.enclave_id, record.partition_id, record.model_dump_json()),
            )

    def get_drift(self, enclave_id: str, partition_id: str) -> DriftRecord | None:
        rows = self._db.rows(
            "SELECT doc FROM drift WHERE enclave_id = ? AND partition_id = ?",
            (enclave_id, partition_id),
        )
        return DriftRecord.model_validate_json(rows[0]["doc"]) if rows else None

    def delete_drift(self, enclave_id: str, partition_id: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM drift WHERE enclave_id = ? AND partition_id = ?",
                (enclave_id, partition_id),
            )

    def list_drift(self, enclave_id: str | None = None) -> list[DriftRecord]:
        if enclave_id is None:
            rows = self._db.rows("SELECT doc FROM drift ORDER BY enclave_id, partition_id", ())
        else:
            rows = self._db.rows(
                "SELECT doc FROM drift WHERE enclave_id = ? ORDER BY partition_id", (enclave_id,)
            )
        return [DriftRecord.model_validate_json(r["doc"]) for r in rows]

    # -- Terraform locks and state pointers ------------------------------------------------------

    def lock(self, key: str, info: Mapping[str, JsonValue]) -> TfLock | None:
        wanted = TfLock(key=key, info=dict(info))
        with self._db.write() as conn:
            cur = conn.execute(
                "INSERT INTO tf_locks (key, lock_id, info) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                (key, wanted.lock_id, json.dumps(wanted.info)),
            )
            if cur.rowcount == 1:
                return None
            row = conn.execute("SELECT info FROM tf_locks WHERE key = ?", (key,)).fetchone()
        return TfLock(key=key, info=json.loads(row["info"]))

    def unlock(self, key: str, lock_id: str | None) -> TfLock | None:
        with self._db.write() as conn:
            if lock_id is None:
                conn.execute("DELETE FROM tf_locks WHERE key = ?", (key,))
                return None
            cur = conn.execute("DELETE FROM tf_locks WHERE key = ? AND lock_id = ?", (key, lock_id))
            if cur.rowcount == 1:
                return None
            row = conn.execute("SELECT info FROM tf_locks WHERE key = ?", (key,)).fetchone()
        return TfLock(key=key, info=json.loads(row["info"])) if row else None

    def get_lock(self, key: str) -> TfLock | None:
        rows = self._db.rows("SELECT info FROM tf_locks WHERE key = ?", (key,))
        return TfLock(key=key, info=json.loads(rows[0]["info"])) if rows else None

    def get_tf_state(self, key: str) -> str | None:
        rows = self._db.rows("SELECT blob_key FROM tf_state WHERE key = ?", (key,))
        return str(rows[0]["blob_key"]) if rows else None

    def set_tf_state(self, key: str, blob_key: str | None) -> None:
        with self._db.write() as conn:
            if blob_key is None:
                conn.execute("DELETE FROM tf_state WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT INTO tf_state (key, blob_key) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET blob_key = excluded.blob_key",
                    (key, blob_key),
                )

    def list_tf_states(self, enclave_id: str) -> list[str]:
        # A range on the primary key ('0' is the character after '/'), not LIKE: an id's '_'
        # would be a LIKE wildcard.
        rows = self._db.rows(
            "SELECT key FROM tf_state WHERE key > ? AND key < ? ORDER BY key",
            (f"{enclave_id}/", f"{enclave_id}0"),
        )
        return [str(r["key"]) for r in rows]

    def swap_tf_state(self, key: str, expected: str | None, blob_key: str) -> bool:
        with self._db.write() as conn:
            if expected is None:
                cur = conn.execute(
                    "INSERT INTO tf_state (key, blob_key) VALUES (?, ?) "
                    "ON CONFLICT (key) DO NOTHING",
                    (key, blob_key),
                )
            else:
                cur = conn.execute(
                    "UPDATE tf_state SET blob_key = ? WHERE key = ? AND blob_key = ?",
                    (blob_key, key, expected),
                )
            return cur.rowcount == 1

    # -- partition mutex ---------------------------------------------------------------------

    def acquire_partition(self, key: str, owner: str, lease_s: float, now: float) -> bool:
        with self._db.write() as conn:
            cur = conn.execute(
                "INSERT INTO partition_leases (key, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at "
                "WHERE partition_leases.owner = excluded.owner "
                "OR partition_leases.expires_at <= ?",
                (key, owner, now + lease_s, now),
            )
            return cur.rowcount == 1

    def release_partition(self, key: str, owner: str) -> bool:
        with self._db.write() as conn:
            cur = conn.execute(
                "DELETE FROM partition_leases WHERE key = ? AND owner = ?", (key, owner)
            )
            return cur.rowcount == 1


__all__ = ["SqliteStateStore", "SqliteStoreError"]
