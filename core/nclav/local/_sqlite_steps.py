"""The SQLite store's steps: claims, leases and compare-and-swap, each one conditional UPDATE."""

from __future__ import annotations

import json
import operator
from typing import TYPE_CHECKING, Any

from nclav.errors import ConflictError, NotFoundError
from nclav.local._sqlite_schema import READY_SINCE
from nclav.records import StepRecord, StepStatus, check_finish_status, iso_time

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence

    from nclav.local._sqlite_db import Database

_COLUMNS = tuple(StepRecord.model_fields)
_UPDATE = (
    "UPDATE steps SET "
    + ", ".join(f"{c} = :{c}" for c in _COLUMNS if c not in ("run_id", "step_id"))
    + " WHERE run_id = :run_id AND step_id = :step_id AND version = :expected"
)
_CLAIM = """
    UPDATE steps SET status = 'running', attempts = attempts + 1, lease_owner = :owner,
        lease_expires_at = :expires, not_before = NULL, started_at = :started,
        version = version + 1
    WHERE run_id = :run_id AND step_id = :step_id AND (
        (status = 'ready' AND (not_before IS NULL OR not_before <= :now))
        OR (status = 'running' AND lease_expires_at <= :now))
"""
# Holding a step means owning its lease, expired or not, until someone else claims it.
_HELD = "run_id = :run_id AND step_id = :step_id AND status = 'running' AND lease_owner = :owner"
_ONE = "SELECT * FROM steps WHERE run_id = ? AND step_id = ?"
# A run's new steps, inserted at once: positional rows (``new_step_rows``).
INSERT_NEW_STEPS = (
    f"INSERT INTO steps (position, {', '.join(_COLUMNS)}) "
    f"VALUES (?, {', '.join('?' for _ in _COLUMNS)})"
)


_LISTS = ("depends_on", "dependents")  # JSON arrays in TEXT columns
_UNFINISHED = "(" + ", ".join(f"'{s.value}'" for s in StepStatus if not s.final) + ")"


def step_params(step: StepRecord, position: int | None = None) -> dict[str, Any]:
    params = step.model_dump(mode="json")
    for name in _LISTS:
        params[name] = json.dumps(params[name])
    params["conditional"] = int(step.conditional)
    if position is not None:
        params["position"] = position
    return params


_AT = {name: i + 1 for i, name in enumerate(_COLUMNS)}  # + 1: position comes first
_LISTS_AT = tuple(_AT[name] for name in _LISTS)
_ENUMS_AT = (_AT["action"], _AT["status"])
_CONDITIONAL_AT = _AT["conditional"]
_VERSION_AT = _AT["version"]
_FIELDS = operator.itemgetter(*_COLUMNS)


def new_step_rows(steps: Sequence[StepRecord]) -> list[list[Any]]:
    """The rows ``INSERT_NEW_STEPS`` inserts for a run's steps, in plan order, at version 1.

    The same values as ``step_params`` gives, read straight from the records: a plan of the
    1,000 x 10 synthetic tree has 14,900 steps, and dumping and copying each record took
    as long as SQLite took to insert them all.
    """
    rows: list[list[Any]] = []
    for position, step in enumerate(steps):
        row = [position, *_FIELDS(step.__dict__)]
        for at in _LISTS_AT:
            row[at] = json.dumps(row[at]) if row[at] else "[]"  # a tuple: a JSON array
        for at in _ENUMS_AT:
            row[at] = row[at].value
        row[_CONDITIONAL_AT] = int(row[_CONDITIONAL_AT])
        row[_VERSION_AT] = 1
        rows.append(row)
    return rows


def _step(row: sqlite3.Row) -> StepRecord:
    data = {c: row[c] for c in _COLUMNS}
    for name in _LISTS:
        data[name] = json.loads(data[name])
    return StepRecord.model_validate(data)


class SqliteSteps:
    """The step methods of ``SqliteStateStore``."""

    _db: Database

    def list_steps(self, run_id: str) -> list[StepRecord]:
        rows = self._db.rows("SELECT * FROM steps WHERE run_id = ? ORDER BY position", (run_id,))
        return [_step(r) for r in rows]

    def get_step(self, run_id: str, step_id: str) -> StepRecord | None:
        rows = self._db.rows(_ONE, (run_id, step_id))
        return _step(rows[0]) if rows else None

    def get_steps(self, run_id: str, step_ids: Sequence[str]) -> dict[str, StepRecord]:
        wanted = list(dict.fromkeys(step_ids))
        found: dict[str, StepRecord] = {}
        for start in range(0, len(wanted), 500):  # below SQLite's limit of bound parameters
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT * FROM steps WHERE run_id = ? AND step_id IN ({marks})"  # noqa: S608
            found.update((s.step_id, s) for s in map(_step, self._db.rows(query, (run_id, *chunk))))
        return found

    def has_unfinished_steps(self, run_id: str) -> bool:
        # An index seek on (run_id, status): cost independent of the run's size.
        rows = self._db.rows(
            f"SELECT 1 FROM steps WHERE run_id = ? AND status IN {_UNFINISHED} LIMIT 1",
            (run_id,),
        )
        return bool(rows)

    def claim_step(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> StepRecord | None:
        params = {
            "run_id": run_id,
            "step_id": step_id,
            "owner": owner,
            "expires": now + lease_s,
            "started": iso_time(now),
            "now": now,
        }
        with self._db.write() as conn:
            if conn.execute(_CLAIM, params).rowcount != 1:
                return None
            return _step(conn.execute(_ONE, (run_id, step_id)).fetchone())

    def renew_lease(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> bool:
        params = {"run_id": run_id, "step_id": step_id, "owner": owner, "expires": now + lease_s}
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE steps SET lease_expires_at = :expires, version = version + 1 "
                f"WHERE {_HELD}",
                params,
            )
            return cur.rowcount == 1

    def finish_step(
        self,
        run_id: str,
        step_id: str,
        owner: str,
        status: StepStatus,
        error: str | None,
        now: float,
        *,
        not_before: float | None = None,
    ) -> StepRecord | None:
        check_finish_status(status)
        params = {
            "run_id": run_id,
            "step_id": step_id,
            "owner": owner,
            "status": status.value,
            "error": error,
            "finished": iso_time(now),
            "not_before": not_before,
            "now": now,
        }
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE steps SET status = :status, error = :error, finished_at = :finished, "
                "lease_owner = NULL, lease_expires_at = NULL, not_before = :not_before, "
                "sent_at = CASE WHEN :status = 'ready' THEN :now ELSE sent_at END, "
                f"version = version + 1 WHERE {_HELD}",
                params,
            )
            if cur.rowcount != 1:
                return None
            return _step(conn.execute(_ONE, (run_id, step_id)).fetchone())

    def update_step(self, step: StepRecord, expected_version: int) -> StepRecord:
        params = step_params(step.model_copy(update={"version": expected_version + 1}))
        with self._db.write() as conn:
            if conn.execute(_UPDATE, {**params, "expected": expected_version}).rowcount == 1:
                return _step(conn.execute(_ONE, (step.run_id, step.step_id)).fetchone())
            row = conn.execute(_ONE, (step.run_id, step.step_id)).fetchone()
        if row is None:
            raise NotFoundError(f"step not found: {step.run_id}/{step.step_id}")
        raise ConflictError(
            f"step {step.step_id}: expected version {expected_version}, found {row['version']}"
        )

    def list_expired_leases(self, now: float) -> list[StepRecord]:
        rows = self._db.rows(
            "SELECT steps.* FROM steps JOIN runs ON runs.id = steps.run_id "
            "WHERE steps.status = 'running' AND steps.lease_expires_at <= ? "
            "ORDER BY runs.seq, steps.position",
            (now,),
        )
        return [_step(r) for r in rows]

    def list_stuck_ready_steps(self, older_than: float) -> list[StepRecord]:
        rows = self._db.rows(
            # Without statistics the planner would take (status, lease_expires_at) and read
            # every ready step; the partial index reads only the stuck ones.
            "SELECT steps.* FROM steps INDEXED BY steps_ready_since "
            "JOIN runs ON runs.id = steps.run_id "
            f"WHERE steps.status = 'ready' AND {READY_SINCE} <= ? "
            "ORDER BY runs.seq, steps.position",
            (older_than,),
        )
        return [_step(r) for r in rows]


__all__ = ["INSERT_NEW_STEPS", "SqliteSteps", "new_step_rows", "step_params"]
