"""The BlobStore contract: keys, atomic puts, appends readable while they grow, listing."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import pytest

from nclav.errors import ConflictError, NotFoundError
from nclav.local import DirectoryBlobStore
from nclav.ports import BlobStore, InvalidKeyError

if TYPE_CHECKING:
    from pathlib import Path

BAD_KEYS = [
    "",
    "/abs",
    "../escape",
    "a/../../escape",
    "a/..",
    "..",
    ".",
    "a/./b",
    "a//b",
    "a/",
    "a\\b",
    "a\0b",
    "x" * 1025,
]


def test_put_get_round_trip(blobs: BlobStore) -> None:
    data = bytes(range(256)) * 4
    blobs.put("bundles/abc", data)
    assert blobs.get("bundles/abc") == data
    assert blobs.exists("bundles/abc")


def test_put_replaces(blobs: BlobStore) -> None:
    blobs.put("k", b"one")
    blobs.put("k", b"two")
    assert blobs.get("k") == b"two"


def test_empty_blob(blobs: BlobStore) -> None:
    blobs.put("empty", b"")
    assert blobs.get("empty") == b""
    assert blobs.exists("empty")


def test_missing_blob(blobs: BlobStore) -> None:
    with pytest.raises(NotFoundError):
        blobs.get("nope")
    assert not blobs.exists("nope")
    blobs.put("dir/file", b"x")
    with pytest.raises(NotFoundError):
        blobs.get("dir")  # a prefix is not an object
    assert not blobs.exists("dir")


def test_delete(blobs: BlobStore) -> None:
    blobs.put("a/b", b"x")
    blobs.delete("a/b")
    assert not blobs.exists("a/b")
    blobs.delete("a/b")  # deleting what is gone is fine
    blobs.delete("never/was")


def test_list_by_prefix_sorted(blobs: BlobStore) -> None:
    keys = ["tfstate/e/p/2", "tfstate/e/p/10", "tfstate/e/q/1", "tfstate/ex/1", "logs/x", "top"]
    for key in keys:
        blobs.put(key, b"x")
    assert blobs.list() == sorted(keys)
    assert blobs.list("tfstate/e/p/") == ["tfstate/e/p/10", "tfstate/e/p/2"]
    assert blobs.list("tfstate/e") == [
        "tfstate/e/p/10",
        "tfstate/e/p/2",
        "tfstate/e/q/1",
        "tfstate/ex/1",
    ]
    assert blobs.list("t") == sorted(k for k in keys if k.startswith("t"))
    assert blobs.list("nothing/") == []
    assert blobs.list("../") == []


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_keys_are_rejected(blobs: BlobStore, key: str) -> None:
    for call in (
        lambda: blobs.put(key, b"x"),
        lambda: blobs.get(key),
        lambda: blobs.exists(key),
        lambda: blobs.delete(key),
        lambda: blobs.append(key, b"x"),
    ):
        with pytest.raises(InvalidKeyError):
            call()


def test_append_creates_and_grows(blobs: BlobStore) -> None:
    blobs.append("logs/run.log", b"line 1\n")
    blobs.append("logs/run.log", b"line 2\n")
    assert blobs.get("logs/run.log") == b"line 1\nline 2\n"


def test_append_is_readable_while_appending(blobs: BlobStore) -> None:
    lines = [f"line {i}\n".encode() for i in range(200)]
    done = threading.Event()
    seen: list[bytes] = []

    def writer() -> None:
        for line in lines:
            blobs.append("logs/live.log", line)
        done.set()

    blobs.append("logs/live.log", b"")
    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        seen.append(blobs.get("logs/live.log"))
    thread.join()
    final = b"".join(lines)
    assert blobs.get("logs/live.log") == final
    assert all(final.startswith(s) for s in seen)  # every read is a prefix of the whole log
    assert [len(s) for s in seen] == sorted(len(s) for s in seen)


def test_put_is_atomic_for_readers(blobs: BlobStore) -> None:
    versions = [b"a" * 2_000_000, b"b" * 1_500_000]
    blobs.put("tfstate/e/p/current", versions[0])
    stop = threading.Event()
    torn: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            data = blobs.get("tfstate/e/p/current")
            if data not in versions:
                torn.append(len(data))

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(20):
        blobs.put("tfstate/e/p/current", versions[i % 2])
    stop.set()
    thread.join()
    assert torn == []
    assert blobs.list("tfstate/") == ["tfstate/e/p/current"]  # no temporary files show


# -- directory store only ------------------------------------------------------------------------


def test_directory_files_live_under_the_root(tmp_path: Path) -> None:
    store = DirectoryBlobStore(tmp_path)
    store.put("a/b/c", b"x")
    assert (tmp_path / "a" / "b" / "c").read_bytes() == b"x"
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["c"]


def test_directory_key_cannot_be_object_and_prefix(tmp_path: Path) -> None:
    store = DirectoryBlobStore(tmp_path)
    store.put("a", b"x")
    with pytest.raises(ConflictError):
        store.put("a/b", b"y")
    with pytest.raises(ConflictError):
        store.append("a/b", b"y")
    assert store.get("a") == b"x"


def test_directory_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = DirectoryBlobStore(tmp_path / "root")
    (tmp_path / "root" / "link").symlink_to(outside)
    with pytest.raises(InvalidKeyError):
        store.put("link/x", b"y")
    assert list(outside.iterdir()) == []


def test_directory_temporary_names_are_reserved(tmp_path: Path) -> None:
    store = DirectoryBlobStore(tmp_path)
    with pytest.raises(InvalidKeyError):
        store.put("a/.nclav-tmp-123", b"x")
