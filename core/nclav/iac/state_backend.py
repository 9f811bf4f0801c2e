"""Terraform's HTTP state backend, without the HTTP: what ``/terraform/state/{enc}/{part}`` does.

State is opaque bytes. Every POST writes a new blob
``tfstate/<enc>/<part>/<seq:08d>-<UTC time>-<sha256[:12]>`` and then moves the pointer in the
state store, so no version is ever overwritten or lost, and DELETE only drops the pointer.
The pointer moves by compare-and-set (``StateStore.swap_tf_state``) from the pointer the
number was derived from: a POST that loses the race deletes its blob and takes the next
number, so concurrent POSTs (terraform without a lock) get distinct numbers and the current
version is always the one with the highest number.
The lock lives in the state store behind a conditional write, so it holds across processes.

The API maps the outcomes: ``lock`` returning a holder is 423 with the holder's info,
``LockHeldError`` from ``unlock`` or ``post_state`` is 409 with it, ``SpecError`` is 400.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import TYPE_CHECKING

from nclav.errors import ConflictError, Issue, SpecError, TemporaryError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import JsonValue

    from nclav.ports import BlobStore, Clock, StateStore
    from nclav.records import TfLock

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # nclav.model.Id, in full
_VERSION = re.compile(r"(\d{8})-")
_MAX_ATTEMPTS = 100  # conditional writes lost to concurrent POSTs before giving up
_UNKNOWN = object()  # ``post_state``: the caller does not know the current pointer


def _seq(blob_key: str | None) -> int:
    """The version number in a version's blob key; 0 for none."""
    found = _VERSION.match(blob_key.rsplit("/", 1)[-1]) if blob_key else None
    return int(found.group(1)) if found else 0


class LockHeldError(ConflictError):
    """The state is locked under another ID; ``holder`` is the lock terraform should see."""

    def __init__(self, holder: TfLock) -> None:
        super().__init__(f"terraform state {holder.key} is locked by {holder.lock_id!r}")
        self.holder = holder


def _check_segment(field: str, value: str) -> str:
    if not _SEGMENT.fullmatch(value):
        issue = Issue(path="terraform state", line=None, field=field, message="not a valid id")
        raise SpecError([issue])
    return value


class TerraformStateBackend:
    def __init__(self, store: StateStore, blobs: BlobStore, clock: Clock) -> None:
        self._store = store
        self._blobs = blobs
        self._clock = clock

    @staticmethod
    def key(enclave_id: str, partition_id: str) -> str:
        return (
            f"{_check_segment('enclave', enclave_id)}/{_check_segment('partition', partition_id)}"
        )

    def get_state(self, enclave_id: str, partition_id: str) -> bytes | None:
        return self.read_state(enclave_id, partition_id)[1]

    def read_state(self, enclave_id: str, partition_id: str) -> tuple[str | None, bytes | None]:
        """The current version's blob key and bytes (None, None when there is none)."""
        pointer = self._store.get_tf_state(self.key(enclave_id, partition_id))
        return pointer, self.state_at(pointer)

    def state_at(self, pointer: str | None) -> bytes | None:
        """The bytes of the version ``pointer`` (a blob key ``read_state`` or ``post_state``
        returned); None for None."""
        return None if pointer is None else self._blobs.get(pointer)

    def post_state(
        self,
        enclave_id: str,
        partition_id: str,
        body: bytes,
        lock_id: str | None,
        *,
        current: str | None | object = _UNKNOWN,
        holding: bool = False,
    ) -> str:
        """Store a new version and make it current; returns its blob key.

        ``current``: the pointer the caller believes current (it read or wrote it under the
        lock it holds); the first attempt is conditional on it instead of reading it, and a
        wrong belief only costs that attempt (the pointer moves by compare-and-set).
        ``holding``: the caller took the lock as ``lock_id`` itself and has not released it
        (the loopback backend, which sees terraform's lock and unlock), so the lock is not
        read again; only an operator's force-unlock could have taken it away meanwhile.
        """
        key = self.key(enclave_id, partition_id)
        holder = None if holding and lock_id is not None else self._store.get_lock(key)
        if holder is not None and lock_id != holder.lock_id:
            raise LockHeldError(holder)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock.now()))
        digest = hashlib.sha256(body).hexdigest()[:12]
        believed = current
        for _ in range(_MAX_ATTEMPTS):
            if believed is _UNKNOWN:
                current = self._store.get_tf_state(key)
            else:
                current, believed = believed, _UNKNOWN  # the first attempt only
            assert current is None or isinstance(current, str)
            if current is not None:
                seq = _seq(current) + 1  # blobs past it are other POSTs' that are in flight
            else:  # none yet, or dropped by DELETE: continue after the versions kept
                versions = self._blobs.list(f"tfstate/{key}/")
                seq = 1 + (_seq(versions[-1]) if versions else 0)
            blob_key = f"tfstate/{key}/{seq:08d}-{stamp}-{digest}"
            self._blobs.put(blob_key, body)
            # The number is ours only if the pointer did not move meanwhile: a conditional
            # write, so concurrent POSTs get distinct numbers and the current is the newest.
            if self._store.swap_tf_state(key, current, blob_key):
                return blob_key
            if self._store.get_tf_state(key) == blob_key:
                return blob_key  # the same bytes, posted at the same moment, won: done
            self._blobs.delete(blob_key)  # another version took this number; try the next
        raise TemporaryError(
            f"terraform state {key}: too many concurrent writes, try again", retry_after_s=1.0
        )

    def delete_state(self, enclave_id: str, partition_id: str) -> None:
        """Forget the current state; its versions stay in the blob store."""
        self._store.set_tf_state(self.key(enclave_id, partition_id), None)

    def list_versions(self, enclave_id: str, partition_id: str) -> list[str]:
        """Blob keys of every stored version, oldest first."""
        return self._blobs.list(f"tfstate/{self.key(enclave_id, partition_id)}/")

    def lock(
        self, enclave_id: str, partition_id: str, info: Mapping[str, JsonValue]
    ) -> TfLock | None:
        """``None`` when acquired, else the holder (a lock is never taken twice, same ID or not)."""
        if not isinstance(info.get("ID"), str):
            issue = Issue(path="lock info", line=None, field="ID", message="expected a string")
            raise SpecError([issue])
        return self._store.lock(self.key(enclave_id, partition_id), info)

    def unlock(
        self, enclave_id: str, partition_id: str, info: Mapping[str, JsonValue] | None
    ) -> None:
        """Release the lock named by ``info["ID"]``; no info, or no ID in it, forces."""
        lock_id = info.get("ID") if info is not None else None
        holder = self._store.unlock(
            self.key(enclave_id, partition_id), lock_id if isinstance(lock_id, str) else None
        )
        if holder is not None:
            raise LockHeldError(holder)


__all__ = ["LockHeldError", "TerraformStateBackend"]
