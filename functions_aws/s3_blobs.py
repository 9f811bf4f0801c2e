"""``S3BlobStore``: blobs as S3 objects under an optional key prefix.

Every method is one S3 call (``list``: one a page). ``append`` is a conditional rewrite: read
the object and its ETag, write it back longer ``If-Match`` that ETag (``If-None-Match: *``
when there was none), and on a lost condition read again. That is O(size) per append, which
is fine for what still appends: a note on the log of a run recorded before IaC logs became
offset-addressed chunks (``nclav.iac.logs``), written as new objects with ``put``.
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

from functions_aws._errors import aws_errors, lazy_client
from functions_aws.provision import create_bucket
from nclav.errors import ConflictError, NotFoundError, TemporaryError
from nclav.ports import InvalidKeyError, check_blob_key
from nclav.runtime import backoff

_MAX_S3_KEY = 1024  # bytes of UTF-8
_ATTEMPTS = 8  # conditional-write races lost before giving up


class S3BlobStore:
    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix:
            check_blob_key(prefix[:-1])
        self.bucket, self.prefix = bucket, prefix
        self.client = client if client is not None else lazy_client("s3")
        self._signer: Any = None

    def _object(self, key: str) -> str:
        name = self.prefix + check_blob_key(key)
        if len(name.encode()) > _MAX_S3_KEY:
            raise InvalidKeyError(key, "the blob key is too long for S3 with the store prefix")
        return name

    # -- signed uploads (nclav.ports.SignedUploads) ---------------------------------------------

    def upload_url(
        self, key: str, size: int, sha256: str, expires_s: int
    ) -> tuple[str, dict[str, str]]:
        """A SigV4 presigned PUT bound to ``size`` and ``sha256``: Content-Length and
        x-amz-checksum-sha256 are signed headers, so S3 refuses any other length, and any
        bytes whose SHA-256 differs, from whoever holds the URL."""
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        params = {"Key": self._object(key), "ContentLength": size, "ChecksumSHA256": checksum}
        with aws_errors(f"s3:PutObject (presign) {key}"):
            url = self._presigner().generate_presigned_url(
                "put_object", Params={"Bucket": self.bucket, **params}, ExpiresIn=expires_s
            )
        return str(url), {"Content-Length": str(size), "x-amz-checksum-sha256": checksum}

    def _presigner(self) -> Any:
        """A client like ``client`` that signs with SigV4 (only SigV4 signs extra headers)."""
        if self._signer is None:
            import boto3
            from botocore.config import Config

            meta = self.client.meta
            self._signer = boto3.client(
                "s3",
                region_name=meta.region_name,
                endpoint_url=meta.endpoint_url,
                config=meta.config.merge(Config(signature_version="s3v4")),
            )
        return self._signer

    # -- the BlobStore port --------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self._write(key, data)

    def _write(self, key: str, data: bytes, **condition: str) -> None:
        with aws_errors(f"s3:PutObject {key}"):
            self.client.put_object(
                Bucket=self.bucket, Key=self._object(key), Body=data, **condition
            )

    def _read(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and ETag."""
        with aws_errors(f"s3:GetObject {key}"):
            response = self.client.get_object(Bucket=self.bucket, Key=self._object(key))
            return bytes(response["Body"].read()), str(response["ETag"])

    def get(self, key: str) -> bytes:
        return self._read(key)[0]

    def exists(self, key: str) -> bool:
        try:
            with aws_errors(f"s3:HeadObject {key}"):
                self.client.head_object(Bucket=self.bucket, Key=self._object(key))
        except NotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        with aws_errors(f"s3:DeleteObject {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._object(key))

    def list(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (all pages)."""
        names: list[str] = []
        with aws_errors(f"s3:ListObjectsV2 {prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                names.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        return sorted(names)

    def append(self, key: str, data: bytes) -> None:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                old, etag = self._read(key)
                condition = {"IfMatch": etag}
            except NotFoundError:
                old, condition = b"", {"IfNoneMatch": "*"}
            try:
                self._write(key, old + data, **condition)
            except (ConflictError, NotFoundError):  # another writer got there first: again
                time.sleep(backoff(attempt, 0.01, 1.0, jitter=0.5))
            else:
                return
        raise TemporaryError(f"append to blob {key!r} lost {_ATTEMPTS} races in a row")


if TYPE_CHECKING:
    from nclav.ports import BlobStore

    def _implements(adapter: S3BlobStore) -> BlobStore:  # mypy proves the port is implemented
        return adapter


__all__ = ["S3BlobStore", "create_bucket"]
