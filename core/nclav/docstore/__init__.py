"""The StateStore's logic over a small documents port (conditional get/put/patch/delete,
one-partition queries, all-or-nothing writes of a few documents where the database has them,
ordered single writes where it does not), for every document database.

``DocumentStateStore`` (``store``) is the store; ``Documents`` (``port``) what an adapter
provides; ``MemoryDocuments`` (``memory``) the in-process adapter the contract suite runs.
"""

from __future__ import annotations

from nclav.docstore.memory import MemoryDocuments
from nclav.docstore.port import ConditionFailedError, ContendedError, Documents
from nclav.docstore.store import DocumentStateStore

__all__ = [
    "ConditionFailedError",
    "ContendedError",
    "DocumentStateStore",
    "Documents",
    "MemoryDocuments",
]
