"""``FirestoreStateStore``: the StateStore on Firestore in native mode.

The store's logic is core's ``nclav.docstore.DocumentStateStore``; Firestore is its documents
port (``_firestore_docs``: the collection, document ids, how each condition becomes a
precondition, and the memory that spares a read before most writes). The layout of the
documents is core's ``nclav.docstore.layout``; the composite indexes its queries need are in
infra/gcp/firestore.tf (the emulator needs none).
"""

from __future__ import annotations

from google.cloud import firestore

from functions_gcp._firestore_docs import FirestoreDocuments
from nclav.docstore import DocumentStateStore


class FirestoreStateStore(DocumentStateStore):
    docs: FirestoreDocuments

    def __init__(self, client: firestore.Client, prefix: str = "") -> None:
        super().__init__(FirestoreDocuments(client, prefix))


def open_store(project: str, database: str = "(default)", prefix: str = "") -> FirestoreStateStore:
    """A store over a new client (``FIRESTORE_EMULATOR_HOST`` points it at an emulator)."""
    return FirestoreStateStore(firestore.Client(project=project, database=database), prefix)


__all__ = ["FirestoreStateStore", "open_store"]
