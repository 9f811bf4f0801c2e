"""``S3BlobStore``: blobs as S3 objects under an optional key prefix.

``get``, ``exists``, ``delete`` and ``list`` map onto single S3 calls, and so does ``put`` of a
new key (a conditional PUT; an existing key costs a HEAD and a second PUT). S3 has no
append, and the IaC log is appended line by line while ``nclav iac logs --follow`` reads it,
so ``append`` is built from conditional writes (If-Match / If-None-Match), in segments:

* The object at ``key`` holds what ``put`` wrote, and a random generation in its metadata.
* Appended bytes go to segment objects ``key + "//" + generation + "/" + NNNNNNNN``. A valid
  blob key never contains ``//`` (no empty part), so these never clash with a blob, and
  ``list`` leaves them out.
* An append rewrites the last segment (If-Match its ETag) while it is under
  ``segment_bytes``, else starts the next one (If-None-Match ``*``). A lost condition means
  another writer got there first: look again and retry. Once a segment has a successor it is
  never written again (it was full when the successor was made, and a write to it is
  conditional on the ETag of a smaller version), so segments only ever grow at the end.
* ``get`` reads the object, then its generation's segments, and checks that the generation
  did not change meanwhile; a reader sees a prefix of the log, never bytes out of order.
* ``put`` writes the object with a new generation, which hides the old segments at once
  (a reader sees the old bytes or the new ones), then deletes them. ``delete`` deletes the
  object, then every segment.

Why segments and not the two simpler designs: rewriting the whole object on every append
uploads O(n^2) bytes for an n-line log and, with versioning on, keeps a noncurrent version
of the whole log per line; an object per appended line makes every read of a long log
thousands of GETs. Segments bound both: an append uploads at most ``segment_bytes`` plus the
line, and a read is one GET per ``segment_bytes`` of log. Segments are not tagged (object tags
need ``s3:PutObjectTagging``, one more permission for every writer): the noncurrent versions
the tail rewrites leave expire by key prefix instead, with the IaC logs (``iac-logs/``) after a
day (``create_bucket``; infra/aws has the same rules).

An append costs a HEAD (the generation: a ``put`` or ``delete`` by another process must not
be missed) and one PUT. Garbage is possible but harmless: segments written under a
generation that a concurrent ``put`` had just replaced are never read (they lose the race
the same way as an append that happened just before the put).
"""

from __future__ import annotations

import base64
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from functions_aws._errors import AwsServiceError, aws_errors
from nclav.errors import ConflictError, NotFoundError
from nclav.ports import InvalidKeyError, check_blob_key

SEGMENTS = "//"  # between a key and its segments: impossible inside a valid blob key
GENERATION = "nclav-generation"  # object metadata
NO_GENERATION = "0"  # an object written by another tool; put() gives it a real one
# Lifecycle: noncurrent versions under these prefixes expire after the given days (logs are
# rewritten as they grow, bundles are content-addressed); ``tfstate/`` versions are kept.
NONCURRENT_DAYS = {"iac-logs/": 1, "bundles/": 30}
SEGMENT_BYTES = 256 * 1024
_SEGMENT_SUFFIX = len(SEGMENTS) + 12 + 1 + 8  # "//" generation "/" NNNNNNNN
_MAX_S3_KEY = 1024  # bytes of UTF-8
_ATTEMPTS = 8  # conditional-write races lost before giving up with ConflictError
_CACHED_TAILS = 32

Names = list[str]  # (the class below has a method called `list`)
Chunks = list[bytes]


@dataclass(frozen=True, slots=True)
class _Tail:
    """The last segment of a key's generation, as this process last wrote or read it."""

    generation: str
    number: int
    etag: str
    data: bytes


class S3BlobStore:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        *,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix:
            check_blob_key(prefix[:-1])
        self.bucket = bucket
        self._signer: Any = None
        self.prefix = prefix
        self._client = client
        self._segment_bytes = segment_bytes
        # Saves the LIST and GET of the tail on each append of a log this process writes.
        self._tails: dict[str, _Tail] = {}
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        # Created on first use, so importing a handler module reaches no network or credentials.
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def _object(self, key: str) -> str:
        check_blob_key(key)
        name = self.prefix + key
        if len(name.encode()) + _SEGMENT_SUFFIX > _MAX_S3_KEY:
            raise InvalidKeyError(key, "the blob key is too long for S3 with the store prefix")
        return name

    def _segments_of(self, name: str, generation: str | None = None) -> str:
        return f"{name}{SEGMENTS}" if generation is None else f"{name}{SEGMENTS}{generation}/"

    # -- signed uploads (nclav.ports.SignedUploads) ---------------------------------------------

    def upload_url(
        self, key: str, size: int, sha256: str, expires_s: int
    ) -> tuple[str, dict[str, str]]:
        """A SigV4 presigned PUT bound to ``size`` and ``sha256``: Content-Length and
        x-amz-checksum-sha256 are signed headers, so S3 refuses any other length, and any
        bytes whose SHA-256 differs, from whoever holds the URL."""
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        with aws_errors(f"s3:PutObject (presign) {key}"):
            url = self._presigner().generate_presigned_url(
                "put_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": self._object(key),
                    "ContentLength": size,
                    "ChecksumSHA256": checksum,
                },
                ExpiresIn=expires_s,
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

    # -- whole objects -------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        name = self._object(key)
        # Most puts write a new key (state versions, IaC log chunks, bundles): try that first,
        # one conditional PUT with no HEAD. An existing key loses the condition and is replaced
        # below, with its segments.
        try:
            with aws_errors(f"s3:PutObject {key}"):
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=name,
                    Body=data,
                    Metadata={GENERATION: _new_generation()},
                    IfNoneMatch="*",
                )
        except ConflictError:
            pass
        else:
            self._forget(name)
            return
        old = self._generation(name)
        with aws_errors(f"s3:PutObject {key}"):
            self.client.put_object(
                Bucket=self.bucket, Key=name, Body=data, Metadata={GENERATION: _new_generation()}
            )
        self._forget(name)
        if old is not None:
            self._delete_prefix(self._segments_of(name, old))

    def get(self, key: str) -> bytes:
        name = self._object(key)
        for _ in range(_ATTEMPTS):
            with aws_errors(f"s3:GetObject {key}"):
                response = self.client.get_object(Bucket=self.bucket, Key=name)
                head = response["Body"].read()
            generation = response.get("Metadata", {}).get(GENERATION, NO_GENERATION)
            segments = self._list(self._segments_of(name, generation))
            if not segments:
                return bytes(head)
            chunks = self._read_segments(segments)
            # A put or delete since the GET may have removed segments under our feet.
            if chunks is not None and self._generation(name) == generation:
                return bytes(head) + b"".join(chunks)
        raise ConflictError(f"blob {key!r} kept being replaced while it was read")

    def _read_segments(self, names: Names) -> Chunks | None:
        """The segments' bytes, or None if they are not 1..n or one vanished."""
        if [_segment_number(n) for n in names] != list(range(1, len(names) + 1)):
            return None
        chunks = []
        for segment in names:
            try:
                with aws_errors(f"s3:GetObject {segment}"):
                    chunks.append(
                        self.client.get_object(Bucket=self.bucket, Key=segment)["Body"].read()
                    )
            except NotFoundError:
                return None
        return chunks

    def exists(self, key: str) -> bool:
        return self._generation(self._object(key)) is not None

    def delete(self, key: str) -> None:
        name = self._object(key)
        with aws_errors(f"s3:DeleteObject {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=name)
        self._forget(name)
        self._delete_prefix(self._segments_of(name))

    def list(self, prefix: str = "") -> Names:
        start = len(self.prefix)
        keys = [name[start:] for name in self._list(self.prefix + prefix)]
        return sorted(key for key in keys if SEGMENTS not in key)

    # -- append ----------------------------------------------------------------------------------

    def append(self, key: str, data: bytes) -> None:
        name = self._object(key)
        for _ in range(_ATTEMPTS):
            generation = self._ensure(name)
            if not data:
                return
            tail = self._tail(name, generation)
            condition: dict[str, str]
            if tail is not None and len(tail.data) < self._segment_bytes:
                number, body, condition = tail.number, tail.data + data, {"IfMatch": tail.etag}
            else:
                number, body = (tail.number + 1 if tail else 1), data
                condition = {"IfNoneMatch": "*"}
            segment = f"{self._segments_of(name, generation)}{number:08d}"
            try:
                with aws_errors(f"s3:PutObject {segment}"):
                    response = self.client.put_object(
                        Bucket=self.bucket, Key=segment, Body=body, **condition
                    )
            except (ConflictError, NotFoundError):
                self._forget(name)  # another writer moved the tail (or a put/delete removed it)
                continue
            self._remember(name, _Tail(generation, number, response["ETag"], body))
            return
        raise ConflictError(f"append to blob {key!r} lost {_ATTEMPTS} races in a row")

    def _generation(self, name: str) -> str | None:
        """The object's generation, or None if it does not exist."""
        try:
            with aws_errors(f"s3:HeadObject {name}"):
                head = self.client.head_object(Bucket=self.bucket, Key=name)
        except NotFoundError:
            return None
        return str(head.get("Metadata", {}).get(GENERATION, NO_GENERATION))

    def _ensure(self, name: str) -> str:
        """The object's generation, creating the object (empty) if it does not exist."""
        while (generation := self._generation(name)) is None:
            generation = _new_generation()
            try:
                with aws_errors(f"s3:PutObject {name}"):
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=name,
                        Body=b"",
                        Metadata={GENERATION: generation},
                        IfNoneMatch="*",
                    )
            except ConflictError:
                continue  # created meanwhile by another writer: use theirs
            return generation
        return generation

    def _tail(self, name: str, generation: str) -> _Tail | None:
        with self._lock:
            cached = self._tails.get(name)
        if cached is not None and cached.generation == generation:
            return cached
        segments = self._list(self._segments_of(name, generation))
        if not segments:
            return None
        with aws_errors(f"s3:GetObject {segments[-1]}"):
            response = self.client.get_object(Bucket=self.bucket, Key=segments[-1])
            data = response["Body"].read()
        return _Tail(generation, _segment_number(segments[-1]), response["ETag"], bytes(data))

    def _remember(self, name: str, tail: _Tail) -> None:
        with self._lock:
            self._tails.pop(name, None)
            self._tails[name] = tail
            while len(self._tails) > _CACHED_TAILS:
                del self._tails[next(iter(self._tails))]  # the least recently written

    def _forget(self, name: str) -> None:
        with self._lock:
            self._tails.pop(name, None)

    # -- listing and bulk delete -----------------------------------------------------------------

    def _list(self, prefix: str) -> Names:
        """Every object name under ``prefix`` (all pages), in S3's order (UTF-8 bytes)."""
        names: Names = []
        with aws_errors(f"s3:ListObjectsV2 {prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                names.extend(item["Key"] for item in page.get("Contents", []))
        return names

    def _delete_prefix(self, prefix: str) -> None:
        names = self._list(prefix)
        for i in range(0, len(names), 1000):  # DeleteObjects takes up to 1000 keys
            batch = [{"Key": n} for n in names[i : i + 1000]]
            with aws_errors(f"s3:DeleteObjects {prefix}"):
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise ConflictError(f"deleting {first.get('Key')}: {first.get('Code')}")


def _new_generation() -> str:
    return uuid.uuid4().hex[:12]


def _segment_number(name: str) -> int:
    return int(name.rsplit("/", 1)[1])


def create_bucket(
    client: Any,
    name: str,
    *,
    region: str | None = None,
    kms_key_id: str | None = None,
    prefix: str = "",
) -> None:
    """Create the bucket (or keep it if it is ours): versioned, encrypted, never public.

    Encryption is SSE-S3 unless ``kms_key_id`` is given. The lifecycle rules expire the
    noncurrent versions of IaC logs after a day and of bundles after 30 days, remove
    delete markers left alone, and abort multipart uploads unfinished after a week. Other
    noncurrent versions (Terraform state, bundles) are kept: their retention is the
    deployment's choice (infra/aws). ``prefix`` is the store's key prefix (``S3BlobStore``).
    """
    root = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    region = region or client.meta.region_name
    params: dict[str, Any] = {"Bucket": name}
    if region and region != "us-east-1":  # us-east-1 rejects its own LocationConstraint
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        with aws_errors(f"s3:CreateBucket {name}"):
            client.create_bucket(**params)
    except AwsServiceError as exc:
        if exc.code != "BucketAlreadyOwnedByYou":  # BucketAlreadyExists: someone else's
            raise
    sse: dict[str, Any] = (
        {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_id}
        if kms_key_id
        else {"SSEAlgorithm": "AES256"}
    )
    with aws_errors(f"s3:PutBucketEncryption {name}"):
        client.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": sse, "BucketKeyEnabled": True}]
            },
        )
    with aws_errors(f"s3:PutPublicAccessBlock {name}"):
        client.put_public_access_block(
            Bucket=name,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
    with aws_errors(f"s3:PutBucketVersioning {name}"):
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    with aws_errors(f"s3:PutBucketLifecycleConfiguration {name}"):
        client.put_bucket_lifecycle_configuration(
            Bucket=name,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": f"nclav-noncurrent-{prefix.rstrip('/')}",
                        "Status": "Enabled",
                        "Filter": {"Prefix": root + prefix},
                        "NoncurrentVersionExpiration": {"NoncurrentDays": days},
                    }
                    for prefix, days in NONCURRENT_DAYS.items()
                ]
                + [
                    {
                        # Signed uploads never completed (nclav.api.uploads).
                        "ID": "nclav-abandoned-uploads",
                        "Status": "Enabled",
                        "Filter": {"Prefix": root + "uploads/"},
                        "Expiration": {"Days": 1},
                    },
                    {
                        "ID": "nclav-housekeeping",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        # Delete markers of deleted segments, once their versions expired.
                        "Expiration": {"ExpiredObjectDeleteMarker": True},
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                    },
                ]
            },
        )


if TYPE_CHECKING:
    from nclav.ports import BlobStore

    def _implements(adapter: S3BlobStore) -> BlobStore:  # mypy proves the port is implemented
        return adapter


__all__ = ["SEGMENT_BYTES", "S3BlobStore", "create_bucket"]
