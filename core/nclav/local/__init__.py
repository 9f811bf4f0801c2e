"""The local runtime's adapters: SQLite and in-memory state, a thread-pool queue, files."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nclav.local.dir_blobs import DirectoryBlobStore
from nclav.local.file_secrets import FileSecretStore
from nclav.local.memory_store import InMemoryStateStore
from nclav.local.sqlite_store import SqliteStateStore, SqliteStoreError
from nclav.local.thread_queue import ThreadWorkQueue

if TYPE_CHECKING:
    from nclav.ports import BlobStore, SecretStore, StateStore, WorkQueue

    # mypy proves here that each adapter implements its port.
    def _implements(
        memory: InMemoryStateStore,
        sqlite: SqliteStateStore,
        queue: ThreadWorkQueue,
        blobs: DirectoryBlobStore,
        secrets: FileSecretStore,
    ) -> tuple[StateStore, StateStore, WorkQueue, BlobStore, SecretStore]:
        return memory, sqlite, queue, blobs, secrets


__all__ = [
    "DirectoryBlobStore",
    "FileSecretStore",
    "InMemoryStateStore",
    "SqliteStateStore",
    "SqliteStoreError",
    "ThreadWorkQueue",
]
