"""A pool of SQLite connections to one file, with write transactions and error translation.

Connections come from a small pool rather than one per thread, because the HTTP server starts
a thread per request: a connection is used by one thread at a time, then handed back. Every
write runs in ``BEGIN IMMEDIATE``, which takes the write lock up front (waiting up to the busy
timeout) so a conditional write is never interleaved with another process's.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from nclav._fs import PRIVATE_FILE, private_dirs, private_file
from nclav.errors import NclavError, TemporaryError
from nclav.local._sqlite_schema import connect, migrate

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

_POOL_SIZE = 8


class SqliteStoreError(NclavError):
    """The database failed in a way retrying will not fix (corrupt file, full disk, ...)."""


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            raise TemporaryError(f"state store busy: {exc}", retry_after_s=1.0) from exc
        raise SqliteStoreError(f"state store error: {exc}") from exc
    except sqlite3.Error as exc:
        raise SqliteStoreError(f"state store error: {exc}") from exc


class Database:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        if str(path) == ":memory:":
            raise ValueError("the SQLite store needs a file; use InMemoryStateStore instead")
        self.path = Path(path)
        private_dirs(self.path.parent)
        # SQLite gives -wal and -shm the database file's mode: create that one 0600 first.
        private_file(self.path)
        for side in ("-wal", "-shm"):  # left by an older nclav, perhaps wider
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{self.path}{side}", PRIVATE_FILE)
        self._pool: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        with self.connection() as conn:
            self.migrated_from = migrate(conn)

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        with self._pool_lock:
            if self._closed:
                raise SqliteStoreError(f"state store {self.path} is closed")
            conn = self._pool.pop() if self._pool else None
        with _translated():
            if conn is None:
                conn = connect(self.path)
            try:
                yield conn
            finally:
                with self._pool_lock:
                    keep = not self._closed and not conn.in_transaction
                    keep = keep and len(self._pool) < _POOL_SIZE
                    if keep:
                        self._pool.append(conn)
                if not keep:
                    conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        with self.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def rows(self, sql: str, params: Mapping[str, object] | Sequence[object]) -> list[sqlite3.Row]:
        with self.connection() as conn:
            return conn.execute(sql, params).fetchall()


__all__ = ["Database", "SqliteStoreError"]
