"""The SQLite store's schema and its migrations.

``MIGRATIONS[n]`` takes the schema from version ``n`` to ``n + 1``. They are applied at open,
in one ``BEGIN IMMEDIATE`` transaction, so two processes opening the same file at once
migrate it once. Append new migrations; never edit a released one.

Documents are JSON in TEXT columns; the columns beside them are the ones a query filters,
orders or conditions on. Steps are plain columns because every claim and lease is a single
conditional ``UPDATE`` on them.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from nclav.errors import NclavError

if TYPE_CHECKING:
    from pathlib import Path

BUSY_TIMEOUT_MS = 15_000
# records.ready_since as an expression; a query must spell it the same to use the index.
READY_SINCE = "max(coalesce(sent_at, 0), coalesce(not_before, 0))"

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE enclaves (
            id TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            doc TEXT NOT NULL
        )""",
        """CREATE TABLE runs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL,
            doc TEXT NOT NULL
        )""",
        "CREATE INDEX runs_by_status ON runs (status, seq)",
        """CREATE TABLE steps (
            run_id TEXT NOT NULL,
            step_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            action TEXT NOT NULL,
            enclave_id TEXT NOT NULL,
            target TEXT,
            depends_on TEXT NOT NULL,
            conditional INTEGER NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            lease_owner TEXT,
            lease_expires_at REAL,
            not_before REAL,
            error TEXT,
            started_at TEXT,
            finished_at TEXT,
            version INTEGER NOT NULL,
            PRIMARY KEY (run_id, step_id)
        )""",
        "CREATE INDEX steps_by_position ON steps (run_id, position)",
        "CREATE INDEX steps_by_lease ON steps (status, lease_expires_at)",
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            enclave_id TEXT,
            run_id TEXT,
            doc TEXT NOT NULL
        )""",
        "CREATE INDEX events_by_enclave ON events (enclave_id, seq)",
        "CREATE INDEX events_by_run ON events (run_id, seq)",
        """CREATE TABLE iac_runs (
            id TEXT PRIMARY KEY,
            enclave_id TEXT NOT NULL,
            partition_id TEXT NOT NULL,
            started_at TEXT NOT NULL,
            doc TEXT NOT NULL
        )""",
        "CREATE INDEX iac_runs_by_partition ON iac_runs (enclave_id, partition_id, started_at)",
        "CREATE TABLE tf_locks (key TEXT PRIMARY KEY, lock_id TEXT, info TEXT NOT NULL)",
        "CREATE TABLE tf_state (key TEXT PRIMARY KEY, blob_key TEXT NOT NULL)",
        """CREATE TABLE partition_leases (
            key TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            expires_at REAL NOT NULL
        )""",
    ),
    (
        # Each step names its dependents, so a finished step visits only those. Steps of runs
        # still in flight get theirs from their siblings' depends_on (final steps never fan
        # out again, so they keep the default).
        "ALTER TABLE steps ADD COLUMN dependents TEXT NOT NULL DEFAULT '[]'",
        """UPDATE steps SET dependents = (
            SELECT json_group_array(step_id) FROM (
                SELECT other.step_id FROM steps AS other, json_each(other.depends_on) AS dep
                WHERE other.run_id = steps.run_id AND dep.value = steps.step_id
                ORDER BY other.position
            )
        ) WHERE status IN ('pending', 'ready', 'running')""",
        # has_unfinished_steps: one index seek per run, whatever the run's size.
        "CREATE INDEX steps_by_run_status ON steps (run_id, status)",
    ),
    (
        # When the step's message was last sent: the sweeper re-sends only the ready steps
        # whose message is older than a delivery takes, read through this partial index.
        "ALTER TABLE steps ADD COLUMN sent_at REAL",
        f"CREATE INDEX steps_ready_since ON steps ({READY_SINCE}) WHERE status = 'ready'",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(NclavError):
    """The database file was written by a newer nclav."""


def connect(path: Path) -> sqlite3.Connection:
    # Autocommit mode: every write opens its own BEGIN IMMEDIATE, so a write transaction
    # takes the database's write lock up front instead of failing midway on an upgrade.
    # Pooled connections move between threads (one at a time), hence check_same_thread off.
    conn = sqlite3.connect(
        path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # In WAL mode NORMAL loses no committed transaction when the process dies, only on
    # power loss, and saves an fsync per commit.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to ``SCHEMA_VERSION``; returns the version found before."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise SchemaError(
                f"state database schema version {found} is newer than this nclav "
                f"({SCHEMA_VERSION}); upgrade nclav"
            )
        for statements in MIGRATIONS[found:]:
            for statement in statements:
                conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        else:
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found


__all__ = ["MIGRATIONS", "READY_SINCE", "SCHEMA_VERSION", "SchemaError", "connect", "migrate"]
