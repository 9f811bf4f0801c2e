"""The Terraform HTTP state backend's protocol (issue 3), over every state store."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from nclav.errors import ConflictError, SpecError
from nclav.iac.state_backend import LockHeldError, TerraformStateBackend
from nclav.local import DirectoryBlobStore, InMemoryStateStore, SqliteStateStore
from nclav.ports import ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

LOCK = {
    "ID": "b7c1a4e2-0000-4000-8000-000000000001",
    "Operation": "OperationTypeApply",
    "Info": "",
    "Who": "nclav@worker",
    "Version": "1.9.0",
    "Created": "2026-01-01T00:00:00Z",
    "Path": "",
}
OTHER = {**LOCK, "ID": "b7c1a4e2-0000-4000-8000-000000000002"}


@pytest.fixture
def blobs(tmp_path: Path) -> DirectoryBlobStore:
    return DirectoryBlobStore(tmp_path / "blobs")


@pytest.fixture(params=["memory", "sqlite"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, blobs: DirectoryBlobStore
) -> Iterator[TerraformStateBackend]:
    if request.param == "memory":
        yield TerraformStateBackend(InMemoryStateStore(), blobs, ManualClock())
        return
    store = SqliteStateStore(tmp_path / "state.db")
    yield TerraformStateBackend(store, blobs, ManualClock())
    store.close()


def test_get_without_state_is_none(backend: TerraformStateBackend) -> None:
    assert backend.get_state("e", "p") is None
    assert backend.list_versions("e", "p") == []


def test_post_keeps_every_version(
    backend: TerraformStateBackend, blobs: DirectoryBlobStore
) -> None:
    first = backend.post_state("e", "p", b'{"serial": 1}', None)
    second = backend.post_state("e", "p", b'{"serial": 2}', None)
    assert backend.get_state("e", "p") == b'{"serial": 2}'
    assert backend.list_versions("e", "p") == [first, second]
    assert blobs.get(first) == b'{"serial": 1}'  # never overwritten in place
    assert first.startswith("tfstate/e/p/00000001-")
    assert second.startswith("tfstate/e/p/00000002-")


def test_same_bytes_posted_twice_are_two_versions(backend: TerraformStateBackend) -> None:
    backend.post_state("e", "p", b"same", None)
    backend.post_state("e", "p", b"same", None)
    assert len(backend.list_versions("e", "p")) == 2


def test_partitions_are_separate(backend: TerraformStateBackend) -> None:
    backend.post_state("e", "p", b"p", None)
    backend.post_state("e", "p2", b"p2", None)
    assert backend.get_state("e", "p") == b"p"
    assert backend.get_state("e", "p2") == b"p2"
    assert len(backend.list_versions("e", "p")) == 1


def test_lock_then_held_returns_the_holder(backend: TerraformStateBackend) -> None:
    assert backend.lock("e", "p", LOCK) is None
    holder = backend.lock("e", "p", OTHER)
    assert holder is not None and holder.info == LOCK
    same = backend.lock("e", "p", LOCK)
    assert same is not None and same.lock_id == LOCK["ID"]
    assert backend.lock("e", "other", OTHER) is None


def test_post_by_the_holder(backend: TerraformStateBackend) -> None:
    backend.lock("e", "p", LOCK)
    backend.post_state("e", "p", b"mine", str(LOCK["ID"]))
    assert backend.get_state("e", "p") == b"mine"


def test_post_by_a_non_holder_while_locked_conflicts(backend: TerraformStateBackend) -> None:
    backend.post_state("e", "p", b"before", None)
    backend.lock("e", "p", LOCK)
    for lock_id in (None, str(OTHER["ID"])):
        with pytest.raises(LockHeldError) as caught:
            backend.post_state("e", "p", b"theirs", lock_id)
        assert caught.value.holder.info == LOCK
        assert isinstance(caught.value, ConflictError)
    assert backend.get_state("e", "p") == b"before"
    assert len(backend.list_versions("e", "p")) == 1


def test_unlock_with_another_id_conflicts_and_keeps_the_lock(
    backend: TerraformStateBackend,
) -> None:
    backend.lock("e", "p", LOCK)
    with pytest.raises(LockHeldError) as caught:
        backend.unlock("e", "p", OTHER)
    assert caught.value.holder.lock_id == LOCK["ID"]
    assert backend.lock("e", "p", OTHER) is not None


def test_unlock_by_the_holder(backend: TerraformStateBackend) -> None:
    backend.lock("e", "p", LOCK)
    backend.unlock("e", "p", LOCK)
    assert backend.lock("e", "p", OTHER) is None


@pytest.mark.parametrize("body", [None, {}, {"ID": 7}], ids=["no-body", "no-id", "bad-id"])
def test_unlock_without_an_id_forces(backend: TerraformStateBackend, body: object) -> None:
    backend.lock("e", "p", LOCK)
    backend.unlock("e", "p", body)  # type: ignore[arg-type]
    assert backend.lock("e", "p", OTHER) is None


def test_unlock_when_unlocked_is_fine(backend: TerraformStateBackend) -> None:
    backend.unlock("e", "p", LOCK)
    backend.unlock("e", "p", None)


def test_delete_forgets_the_state_but_keeps_its_versions(backend: TerraformStateBackend) -> None:
    backend.post_state("e", "p", b"one", None)
    backend.delete_state("e", "p")
    assert backend.get_state("e", "p") is None
    assert len(backend.list_versions("e", "p")) == 1
    latest = backend.post_state("e", "p", b"two", None)
    assert latest.startswith("tfstate/e/p/00000002-")
    assert backend.get_state("e", "p") == b"two"
    backend.delete_state("e", "never")


@pytest.mark.parametrize(("enclave", "partition"), [("..", "p"), ("e", "a/b"), ("", "p")])
def test_bad_ids_are_rejected(backend: TerraformStateBackend, enclave: str, partition: str) -> None:
    with pytest.raises(SpecError):
        backend.get_state(enclave, partition)
    with pytest.raises(SpecError):
        backend.post_state(enclave, partition, b"x", None)


def test_lock_info_needs_an_id(backend: TerraformStateBackend) -> None:
    with pytest.raises(SpecError):
        backend.lock("e", "p", {"Operation": "x"})


def test_concurrent_posts_get_distinct_versions_and_current_is_the_newest(
    backend: TerraformStateBackend,
) -> None:
    """Terraform without a lock: 20 POSTs at once, each a version of its own (issue 8)."""
    first = backend.post_state("e", "p", b"{}", None)
    bodies = [b'{"serial": %d}' % n for n in range(20)]
    with ThreadPoolExecutor(20) as pool:
        keys = list(pool.map(lambda b: backend.post_state("e", "p", b, None), bodies))
    versions = backend.list_versions("e", "p")
    assert sorted([first, *keys]) == versions
    numbers = [v.rsplit("/", 1)[1][:8] for v in versions]
    assert numbers == [f"{n:08d}" for n in range(1, 22)]  # distinct, and no gap
    assert backend.get_state("e", "p") == backend._blobs.get(versions[-1])


def test_a_post_after_delete_continues_the_numbering(backend: TerraformStateBackend) -> None:
    backend.post_state("e", "p", b"1", None)
    backend.delete_state("e", "p")
    second = backend.post_state("e", "p", b"2", None)
    assert second.rsplit("/", 1)[1].startswith("00000002-")
    assert backend.get_state("e", "p") == b"2"
