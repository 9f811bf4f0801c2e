"""What the blob contract cannot see of the GCS store, against fake-gcs-server (``gcs``)."""

from __future__ import annotations

import threading

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from functions_gcp.gcs_blobs import GcsBlobStore
from nclav.ports import InvalidKeyError
from stand_ins import FIRESTORE_PROJECT


@pytest.fixture
def client(gcs: str) -> storage.Client:
    return storage.Client(project=FIRESTORE_PROJECT, credentials=AnonymousCredentials())


def test_concurrent_appends_each_land_once(gcs: str, client: storage.Client) -> None:
    # Every append is a rewrite conditional on the generation it read: a writer that lost
    # the race reads again, so no line is lost or written twice.
    blobs = GcsBlobStore(gcs, "p", client=client)
    barrier = threading.Barrier(6)

    def writer(w: int) -> None:
        barrier.wait()
        for i in range(4):
            blobs.append("logs/run.log", f"w{w} line {i}\n".encode())

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = blobs.get("logs/run.log").decode().splitlines()
    assert sorted(lines) == sorted(f"w{w} line {i}" for w in range(6) for i in range(4))
    for w in range(6):  # each writer's lines in its own order
        mine = [line for line in lines if line.startswith(f"w{w} ")]
        assert mine == [f"w{w} line {i}" for i in range(4)]


def test_objects_live_under_the_prefix(gcs: str, client: storage.Client) -> None:
    blobs = GcsBlobStore(gcs, "nclav", client=client)
    blobs.put("bundles/b1", b"x")
    assert [b.name for b in client.list_blobs(gcs)] == ["nclav/bundles/b1"]
    assert blobs.list() == ["bundles/b1"]
    assert GcsBlobStore(gcs, "other", client=client).list() == []


def test_a_name_too_long_with_the_prefix_is_refused(gcs: str, client: storage.Client) -> None:
    blobs = GcsBlobStore(gcs, "p" * 100, client=client)
    with pytest.raises(InvalidKeyError, match="too long for GCS"):
        blobs.put("k" * 1000, b"x")
