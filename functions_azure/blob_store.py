"""``AzureBlobStore``: blobs in one Blob Storage container, under an optional name prefix.

* ``put`` is one Put Blob (or, above the SDK's single-put size, staged blocks and one Put
  Block List): either way the new bytes become visible at once, so a reader sees the old
  blob or the new one. It writes a block blob, replacing whatever was there.
* ``append`` uses Azure's own append blobs: the first append creates the blob
  (``if_none_match="*"``: a concurrent creator wins, the loser appends to theirs), and every
  append after it is one Append Block, which the service adds at the end atomically, so a
  reader always sees a prefix of the log (``nclav iac logs --follow``). No generation
  bookkeeping is needed, unlike S3 (functions_aws/s3_blobs.py).
* ``append`` to a blob that ``put`` wrote (a block blob, which cannot take Append Block):
  the whole blob is rewritten with the new bytes at the end, conditional on the etag read
  (``if_match``), retried when another writer got there first. Logs are never ``put``, so
  this is the rare path; it keeps the port's promise rather than failing.
* ``get`` reads with the SDK's consistency check: a blob read in several ranges is pinned to
  the first range's etag, so a blob replaced mid-read raises 412, and ``get`` reads again.

An append blob holds at most 50,000 blocks (one per append): an IaC log appended line by
line should stay below that, which core's log shipping does by batching lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from azure.core import MatchConditions
from azure.storage.blob import BlobType

from functions_azure._errors import azure_errors
from nclav.errors import ConflictError, NotFoundError
from nclav.ports import InvalidKeyError, check_blob_key

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, ContainerClient

MAX_NAME = 1024  # characters of a blob name, with the prefix
_ATTEMPTS = 8  # lost etag races before giving up with ConflictError

Names = list[str]  # (the class below has a method called `list`)


class AzureBlobStore:
    def __init__(self, container: ContainerClient, prefix: str = "") -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix:
            check_blob_key(prefix[:-1])
        self.container = container
        self.prefix = prefix

    @classmethod
    def from_connection_string(
        cls, connection: str, container: str, prefix: str = ""
    ) -> AzureBlobStore:
        """A store on ``container`` of the account in ``connection`` (Azurite in tests)."""
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(connection)
        return cls(service.get_container_client(container), prefix)

    def _blob(self, key: str) -> BlobClient:
        check_blob_key(key)
        name = self.prefix + key
        if len(name) > MAX_NAME:
            raise InvalidKeyError(key, "the blob key is too long for Azure with the store prefix")
        return self.container.get_blob_client(name)

    def put(self, key: str, data: bytes) -> None:
        blob = self._blob(key)
        with azure_errors(f"blob put {key}"):
            blob.upload_blob(data, blob_type=BlobType.BLOCKBLOB, overwrite=True)

    def get(self, key: str) -> bytes:
        blob = self._blob(key)
        for _ in range(_ATTEMPTS):
            try:
                with azure_errors(f"blob get {key}"):
                    return bytes(blob.download_blob().readall())
            except ConflictError:
                continue  # replaced between two ranges of one read: read the new one
        raise ConflictError(f"blob {key!r} kept being replaced while it was read")

    def exists(self, key: str) -> bool:
        blob = self._blob(key)
        with azure_errors(f"blob exists {key}"):
            return bool(blob.exists())

    def delete(self, key: str) -> None:
        blob = self._blob(key)
        try:
            with azure_errors(f"blob delete {key}"):
                blob.delete_blob(delete_snapshots="include")
        except NotFoundError:
            pass

    def list(self, prefix: str = "") -> Names:
        start = len(self.prefix)
        with azure_errors(f"blob list {prefix}"):
            names = [
                n[start:]
                for n in self.container.list_blob_names(name_starts_with=self.prefix + prefix)
            ]
        return sorted(names)

    def append(self, key: str, data: bytes) -> None:
        blob = self._blob(key)
        for _ in range(_ATTEMPTS):
            try:
                with azure_errors(f"blob properties {key}"):
                    props = blob.get_blob_properties()
            except NotFoundError:
                try:
                    with azure_errors(f"blob create {key}"):
                        blob.create_append_blob(match_condition=MatchConditions.IfMissing)
                except ConflictError:
                    pass  # created meanwhile by another writer: append to theirs
                continue
            if props.blob_type != BlobType.APPENDBLOB:
                if self._rewrite(blob, key, props.etag, data):
                    return
                continue
            if not data:
                return
            try:
                with azure_errors(f"blob append {key}"):
                    blob.append_block(data)
            except NotFoundError:
                continue  # deleted (or replaced by a put) under our feet: look again
            return
        raise ConflictError(f"append to blob {key!r} lost {_ATTEMPTS} races in a row")

    def _rewrite(self, blob: BlobClient, key: str, etag: str, data: bytes) -> bool:
        """Append to a block blob by rewriting it, if it is still at ``etag``."""
        try:
            with azure_errors(f"blob append (rewrite) {key}"):
                old = blob.download_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
                body = old.readall() + data
                blob.upload_blob(
                    body,
                    blob_type=BlobType.BLOCKBLOB,
                    overwrite=True,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ConflictError, NotFoundError):
            return False
        return True


def create_container(container: ContainerClient) -> None:
    """Create the container if it is missing (private: no anonymous access)."""
    try:
        with azure_errors(f"create container {container.container_name}"):
            container.create_container()
    except ConflictError:
        pass  # ContainerAlreadyExists


if TYPE_CHECKING:
    from nclav.ports import BlobStore

    def _implements(adapter: AzureBlobStore) -> BlobStore:  # mypy proves the port is implemented
        return adapter


__all__ = ["AzureBlobStore", "create_container"]
