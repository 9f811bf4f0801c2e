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

``upload_url`` (``nclav.ports.SignedUploads``, the two-step bundle upload of
``nclav.api.uploads``) is a SAS URL for one Put Blob of that one blob name, create-only
(``sp=c``: it cannot replace a blob that exists), valid ``expires_s``. In Azure the SAS is a
user delegation SAS, signed with a delegation key the function's identity obtains from Entra ID
(no account key exists in the deployment); the key is kept while it outlives the URLs it signs.
With a shared-key client (Azurite's connection string) it is an account-key service SAS.
Unlike S3's presigned PUT, a SAS cannot bind the body's length or SHA-256: the API checks the
digest of what arrived when the upload is completed, before using it.

An append blob holds at most 50,000 blocks (one per append): an IaC log appended line by
line should stay below that, which core's log shipping does by batching lines.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions

from functions_azure._errors import azure_errors
from nclav.errors import ConflictError, NotFoundError
from nclav.ports import InvalidKeyError, check_blob_key

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, ContainerClient

BLOCK_BLOB, APPEND_BLOB = "BlockBlob", "AppendBlob"  # azure.storage.blob.BlobType's values
MAX_NAME = 1024  # characters of a blob name, with the prefix
_ATTEMPTS = 8  # lost etag races before giving up with ConflictError

Names = list[str]  # (the class below has a method called `list`)
DELEGATION_KEY_S = 6 * 3600  # a user delegation key's life (Azure allows up to 7 days)
CLOCK_SKEW_S = 300  # a SAS starts this long ago: the service's clock may be behind


class AzureBlobStore:
    def __init__(self, container: ContainerClient, prefix: str = "") -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix:
            check_blob_key(prefix[:-1])
        self.container = container
        self.prefix = prefix
        self._delegation: tuple[Any, datetime] | None = None
        self._delegation_lock = threading.Lock()

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
            blob.upload_blob(data, blob_type=BLOCK_BLOB, overwrite=True)

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
            if props.blob_type != APPEND_BLOB:
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
                    blob_type=BLOCK_BLOB,
                    overwrite=True,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ConflictError, NotFoundError):
            return False
        return True

    # -- signed uploads (nclav.ports.SignedUploads) ---------------------------------------------

    def upload_url(
        self, key: str, size: int, sha256: str, expires_s: int
    ) -> tuple[str, dict[str, str]]:
        """A create-only SAS URL for one Put Blob of ``key``, and the headers it must send."""
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        blob = self._blob(key)
        now = datetime.now(UTC)
        expiry = now + timedelta(seconds=expires_s)
        signing: dict[str, Any] = {}
        account_key = getattr(self.container.credential, "account_key", None)
        if account_key:
            signing["account_key"] = account_key
        else:
            signing["user_delegation_key"] = self._delegation_key(now, expiry)
        with azure_errors(f"blob SAS {key}"):
            sas = generate_blob_sas(
                self.container.account_name or "",
                self.container.container_name,
                blob.blob_name,
                permission=BlobSasPermissions(create=True),
                start=now - timedelta(seconds=CLOCK_SKEW_S),
                expiry=expiry,
                protocol=None if blob.scheme == "http" else "https",
                **signing,
            )
        headers = {"x-ms-blob-type": "BlockBlob", "Content-Length": str(size)}
        return f"{blob.url}?{sas}", headers

    def _delegation_key(self, now: datetime, expiry: datetime) -> Any:
        """A user delegation key valid until after ``expiry`` (Get User Delegation Key, once
        per ``DELEGATION_KEY_S`` rather than once per URL)."""
        from azure.storage.blob import BlobServiceClient

        with self._delegation_lock:
            if self._delegation is None or self._delegation[1] <= expiry:
                account_url = f"{self.container.scheme}://{self.container.primary_hostname}"
                service = BlobServiceClient(account_url, credential=self.container.credential)
                until = now + timedelta(seconds=max(DELEGATION_KEY_S, 2 * (expiry - now).seconds))
                with azure_errors("blob get user delegation key"):
                    key = service.get_user_delegation_key(
                        now - timedelta(seconds=CLOCK_SKEW_S), until
                    )
                self._delegation = (key, until)
            return self._delegation[0]


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
