"""``GcsBlobStore``: blobs as GCS objects under an optional name prefix.

``put``, ``get``, ``exists``, ``delete`` and ``list`` are single GCS calls: an upload replaces
an object atomically (a reader sees the old or the new bytes), and a listing is strongly
consistent.

``append`` is a read and a conditional rewrite: read the object with its generation, upload
old + new bytes with ``if_generation_match`` (0 when there was none), and on a lost
precondition (412: another writer got there first) read again. Appends in core are rare and
small (a note on an abandoned IaC run's legacy single-blob log; live logs are shipped as
offset-addressed chunks, each its own ``put``), so the O(size) rewrite is cheaper to reason
about than GCS ``compose`` of a staged part, whose destination precondition the stand-in
(fake-gcs-server) does not enforce, so it could not be tested here.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from functions_gcp._errors import gcp_errors
from nclav.errors import ConflictError, NotFoundError, TemporaryError
from nclav.ports import InvalidKeyError, check_blob_key
from nclav.runtime.timing import backoff

if TYPE_CHECKING:
    from nclav.ports import BlobStore

_MAX_GCS_NAME = 1024  # bytes of UTF-8
_ATTEMPTS = 12  # conditional-write races lost before giving up

Names = list[str]  # (the class below has a method called `list`)


class GcsBlobStore:
    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix:
            check_blob_key(prefix[:-1])
        self.bucket_name = bucket
        self.prefix = prefix
        self._client = client

    @property
    def client(self) -> Any:
        # Created on first use, so importing an entry point reaches no network or credentials.
        if self._client is None:
            from google.cloud.storage import Client

            self._client = Client()
        return self._client

    def _blob(self, key: str) -> Any:
        check_blob_key(key)
        name = self.prefix + key
        if len(name.encode()) > _MAX_GCS_NAME:
            raise InvalidKeyError(key, "the blob key is too long for GCS with the store prefix")
        return self.client.bucket(self.bucket_name).blob(name)

    # -- signed uploads (nclav.ports.SignedUploads) ---------------------------------------------

    def upload_url(
        self, key: str, size: int, sha256: str, expires_s: int
    ) -> tuple[str, dict[str, str]]:
        """A V4 signed PUT bound to ``size``: ``x-goog-content-length-range: size,size`` is a
        signed header, so GCS refuses any other length from whoever holds the URL. GCS cannot
        bind a SHA-256 to a signed URL (its payload is unsigned; only MD5 and CRC32C are
        checked), so the API checks the digest of what arrived (``nclav.api.uploads``).

        Credentials with a private key (a service account key) sign here; those without one
        (Cloud Run's metadata-server identity) sign through IAM ``signBlob`` with their
        access token, which needs ``roles/iam.serviceAccountTokenCreator`` on the identity
        itself (infra/gcp)."""
        from datetime import timedelta

        headers = {"x-goog-content-length-range": f"{size},{size}"}
        blob = self._blob(key)
        with gcp_errors(f"gcs sign PUT {key}"):
            url = blob.generate_signed_url(
                version="v4",
                expiration=timedelta(seconds=expires_s),
                method="PUT",
                headers=dict(headers),  # the library adds Host to the dict it is given
                **self._signer(),
            )
        return str(url), headers

    def _signer(self) -> dict[str, Any]:
        """How this client's credentials sign: locally, or through IAM with a token."""
        from google.auth.credentials import Signing

        from nclav.errors import ConfigurationError

        credentials: Any = getattr(self.client, "_credentials", None)
        if isinstance(credentials, Signing):
            return {"credentials": credentials}
        email = getattr(credentials, "service_account_email", None)
        if not email or not hasattr(credentials, "refresh"):
            kind = type(credentials).__name__
            raise ConfigurationError(
                f"signed uploads need service account credentials; this client has {kind}"
            )
        if not credentials.valid:
            from google.auth.transport.requests import Request

            with gcp_errors("refresh the credentials to sign an upload URL"):
                credentials.refresh(Request())
        return {"service_account_email": email, "access_token": credentials.token}

    # -- whole objects -------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        blob = self._blob(key)
        with gcp_errors(f"gcs upload {key}"):
            blob.upload_from_string(data, content_type="application/octet-stream")

    def get(self, key: str) -> bytes:
        blob = self._blob(key)
        try:
            with gcp_errors(f"gcs download {key}"):
                return bytes(blob.download_as_bytes())
        except NotFoundError:
            raise NotFoundError(f"blob not found: {key}") from None

    def exists(self, key: str) -> bool:
        blob = self._blob(key)
        with gcp_errors(f"gcs get {key}"):
            return bool(blob.exists())

    def delete(self, key: str) -> None:
        blob = self._blob(key)
        try:
            with gcp_errors(f"gcs delete {key}"):
                blob.delete()
        except NotFoundError:
            return

    def list(self, prefix: str = "") -> Names:
        start = len(self.prefix)
        with gcp_errors(f"gcs list {prefix}"):
            names = [
                b.name
                for b in self.client.list_blobs(self.bucket_name, prefix=self.prefix + prefix)
            ]
        return sorted(name[start:] for name in names)

    def append(self, key: str, data: bytes) -> None:
        blob = self._blob(key)
        what = f"gcs append {key}"
        for attempt in range(1, _ATTEMPTS + 1):
            with gcp_errors(what):
                current = blob.bucket.get_blob(blob.name)
            generation = 0 if current is None else int(current.generation)
            try:
                with gcp_errors(what):
                    old = (
                        b""
                        if current is None
                        else current.download_as_bytes(if_generation_match=generation)
                    )
                    blob.upload_from_string(
                        bytes(old) + data,
                        content_type="application/octet-stream",
                        if_generation_match=generation,
                    )
                return
            except (ConflictError, NotFoundError):  # replaced or deleted meanwhile: again
                time.sleep(backoff(attempt, 0.01, 1.0, jitter=0.5))
        raise TemporaryError(f"{what}: lost {_ATTEMPTS} races in a row", retry_after_s=1.0)


def create_bucket(client: Any, name: str) -> None:
    """Create the store's bucket (tests; infra/gcp declares it in Terraform)."""
    with gcp_errors(f"gcs create bucket {name}"):
        client.create_bucket(name)


if TYPE_CHECKING:

    def _implements(adapter: GcsBlobStore) -> BlobStore:  # mypy proves the port is implemented
        return adapter


__all__ = ["GcsBlobStore", "create_bucket"]
