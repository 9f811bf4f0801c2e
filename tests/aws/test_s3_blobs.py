"""S3BlobStore beyond the BlobStore contract: the bucket's settings, appends as conditional
rewrites, pagination, and SDK error translation (Stubber)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from functions_aws._errors import AwsServiceError
from functions_aws.s3_blobs import S3BlobStore, create_bucket
from nclav.errors import NotFoundError, TemporaryError
from nclav.ports import InvalidKeyError
from nclav.runtime.parts import Lazy

BUCKET = "nclav-test-blobs"
LOG = "iac-logs/e/p/run.log"


@pytest.fixture
def s3(aws: str) -> Any:
    client = boto3.client("s3")
    create_bucket(client, BUCKET)
    return client


def store(s3: Any) -> S3BlobStore:
    return S3BlobStore(BUCKET, "nclav", client=s3)


def raw_keys(s3: Any) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_the_bucket_is_versioned_encrypted_and_private(s3: Any) -> None:
    create_bucket(s3, BUCKET)  # again: it is ours, nothing changes
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    logs = next(r for r in lifecycle if r["ID"] == "nclav-noncurrent-iac-logs")
    assert logs["Filter"] == {"Prefix": "iac-logs/"}
    assert logs["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    bundles = next(r for r in lifecycle if r["ID"] == "nclav-noncurrent-bundles")
    assert bundles["Filter"] == {"Prefix": "bundles/"}
    # Terraform state versions are kept: no rule reaches tfstate/.
    assert not any(r["Filter"].get("Prefix", "x").startswith("tfstate") for r in lifecycle)


def test_a_put_over_a_key_keeps_the_old_version(s3: Any) -> None:
    blobs = store(s3)
    blobs.put("tfstate/e/p/current", b"one")
    blobs.put("tfstate/e/p/current", b"two")
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix="nclav/tfstate/")["Versions"]
    assert len(versions) == 2
    assert blobs.get("tfstate/e/p/current") == b"two"


def test_appends_rewrite_one_object(s3: Any) -> None:
    blobs = store(s3)
    lines = [f"line {i:02d}\n".encode() for i in range(5)]
    for line in lines:
        blobs.append(LOG, line)
    assert blobs.get(LOG) == b"".join(lines)
    assert raw_keys(s3) == [f"nclav/{LOG}"]
    blobs.put(LOG, b"fresh\n")
    blobs.append(LOG, b"more\n")
    assert blobs.get(LOG) == b"fresh\nmore\n"


def test_writers_take_turns_and_an_object_from_another_tool_is_appended_to(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key=f"nclav/{LOG}", Body=b"from elsewhere\n")
    first, second = store(s3), store(s3)
    expected = b"from elsewhere\n"
    for i in range(6):
        line = f"{'ab'[i % 2]}{i:02d}\n".encode()
        (first if i % 2 == 0 else second).append(LOG, line)
        expected += line
    assert first.get(LOG) == second.get(LOG) == expected


def test_an_append_that_loses_the_race_reads_again() -> None:
    """Another writer changed the object between the read and the write (412): the append
    reads the new bytes and writes again, so neither writer's bytes are lost."""
    client = boto3.client("s3", region_name="us-east-1")
    blobs = S3BlobStore(BUCKET, client=client)

    def body(data: bytes) -> Any:
        from io import BytesIO

        from botocore.response import StreamingBody

        return StreamingBody(BytesIO(data), len(data))

    with Stubber(client) as stub:
        stub.add_response("get_object", {"Body": body(b"a\n"), "ETag": '"1"'})
        stub.add_client_error("put_object", "PreconditionFailed", http_status_code=412)
        stub.add_response("get_object", {"Body": body(b"a\nb\n"), "ETag": '"2"'})
        stub.add_response(
            "put_object", {}, {"Bucket": BUCKET, "Key": LOG, "Body": b"a\nb\nc\n", "IfMatch": '"2"'}
        )
        blobs.append(LOG, b"c\n")
        stub.assert_no_pending_responses()


def test_list_pages_through_more_than_a_thousand_keys() -> None:
    """S3 returns at most 1000 keys a page (seen through Stubber: 1000 puts to moto are slow)."""
    client = boto3.client("s3", region_name="us-east-1")
    keys = [f"bundles/{i:05d}" for i in range(1500)]

    def page(names: list[str], **more: Any) -> dict[str, Any]:
        return {"Contents": [{"Key": f"nclav/{k}"} for k in names], "KeyCount": len(names), **more}

    asked = {"Bucket": BUCKET, "Prefix": "nclav/bundles/"}
    with Stubber(client) as stub:
        stub.add_response(
            "list_objects_v2",
            page(keys[:1000], IsTruncated=True, NextContinuationToken="t1"),
            asked,
        )
        stub.add_response(
            "list_objects_v2",
            page(keys[1000:], IsTruncated=False),
            {**asked, "ContinuationToken": "t1"},
        )
        assert S3BlobStore(BUCKET, "nclav/", client=client).list("bundles/") == keys
        stub.assert_no_pending_responses()


def test_a_key_too_long_for_s3_with_the_prefix_is_refused(s3: Any) -> None:
    blobs = S3BlobStore(BUCKET, "p" * 100, client=s3)
    with pytest.raises(InvalidKeyError):
        blobs.put("k" * 1000, b"x")


def test_the_client_is_made_on_first_use_only(aws: str) -> None:
    blobs = S3BlobStore(BUCKET)
    assert isinstance(blobs.client, Lazy) and blobs.client._made is None  # noqa: SLF001
    create_bucket(blobs.client, BUCKET)
    blobs.put("a", b"x")
    assert blobs.get("a") == b"x"


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("SlowDown", 503, TemporaryError),
        ("InternalError", 500, TemporaryError),
        ("AccessDenied", 403, AwsServiceError),
        ("NoSuchBucket", 404, NotFoundError),
    ],
)
def test_sdk_errors_are_translated(code: str, status: int, expected: type[Exception]) -> None:
    client = boto3.client("s3", region_name="us-east-1")
    blobs = S3BlobStore(BUCKET, client=client)
    with Stubber(client) as stub:
        stub.add_client_error("get_object", code, "nope", http_status_code=status)
        with pytest.raises(expected) as caught:
            blobs.get("a")
    assert isinstance(caught.value.__cause__, ClientError)
    assert "s3:GetObject a" in str(caught.value)


def test_a_missing_object_on_head_is_not_an_error() -> None:
    client = boto3.client("s3", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("head_object", "404", "Not Found", http_status_code=404)
        assert not S3BlobStore(BUCKET, client=client).exists("a")
