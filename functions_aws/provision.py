"""The AWS resources the runtime uses, created for tests, benchmarks and trying it out.

infra/aws declares the same resources in Terraform for a deployment; these functions make
them against any endpoint (moto in the tests): the state store's table with its indexes and
TTL, the blob bucket (versioned, encrypted, private, with its lifecycle rules) and a work
queue with its dead-letter queue.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from functions_aws._dynamo_errors import translated
from functions_aws._errors import AwsServiceError, aws_errors
from nclav.docstore.layout import GSI1, GSI2, LEASE_INDEX, READY_INDEX, TTL_ATTRIBUTE

if TYPE_CHECKING:
    from nclav.docstore.port import Index

# Lifecycle: noncurrent versions under these prefixes expire after the given days (logs are
# rewritten as they grow, bundles are content-addressed); ``tfstate/`` versions are kept.
NONCURRENT_DAYS = {"iac-logs/": 1, "bundles/": 30}
DLQ_RETENTION_S = 1_209_600  # 14 days, the SQS maximum, to leave time to look at failures


def _index(index: Index, projection: str) -> dict[str, Any]:
    return {
        "IndexName": index.name,
        "KeySchema": [
            {"AttributeName": index.pk, "KeyType": "HASH"},
            {"AttributeName": index.sk, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": projection},
    }


def table_definition(name: str) -> dict[str, Any]:
    """The ``CreateTable`` request for the store (infra/aws declares the same in Terraform)."""
    strings = ("pk", "sk", GSI1.pk, GSI1.sk, GSI2.pk, GSI2.sk, LEASE_INDEX.pk, READY_INDEX.pk)
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            *({"AttributeName": a, "AttributeType": "S"} for a in strings),
            {"AttributeName": LEASE_INDEX.sk, "AttributeType": "N"},
            {"AttributeName": READY_INDEX.sk, "AttributeType": "N"},
        ],
        "GlobalSecondaryIndexes": [
            _index(GSI1, "ALL"),
            _index(GSI2, "ALL"),
            # Keys only: the sweeper re-reads each candidate consistently anyway.
            _index(LEASE_INDEX, "KEYS_ONLY"),
            _index(READY_INDEX, "KEYS_ONLY"),
        ],
    }


def create_table(client: Any, name: str) -> None:
    """Create the store's table (PAY_PER_REQUEST, with its indexes) and wait until it is active;
    then turn on TTL (infra/aws declares the same)."""
    with translated("CreateTable"):
        client.create_table(**table_definition(name))
        client.get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
    with translated("UpdateTimeToLive"):
        client.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )


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
                        # Delete markers left alone, once their versions expired.
                        "Expiration": {"ExpiredObjectDeleteMarker": True},
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                    },
                ]
            },
        )


def create_queues(
    client: Any,
    name: str,
    max_receive_count: int = 5,
    *,
    visibility_timeout_s: int = 900,
) -> tuple[str, str]:
    """Create (or find, with the same settings) the queue ``name`` and its DLQ ``name-dlq``.

    Returns ``(queue_url, dlq_url)``. ``visibility_timeout_s`` should be at least the worker
    function's timeout (AWS suggests six times it), or a message still being handled is
    delivered again. Both queues use SQS-managed encryption.
    """
    if max_receive_count < 1:
        raise ValueError("max_receive_count must be at least 1")
    with aws_errors(f"sqs:CreateQueue {name}-dlq"):
        dlq_url = client.create_queue(
            QueueName=f"{name}-dlq",
            Attributes={
                "MessageRetentionPeriod": str(DLQ_RETENTION_S),
                "SqsManagedSseEnabled": "true",
            },
        )["QueueUrl"]
    with aws_errors(f"sqs:GetQueueAttributes {name}-dlq"):
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
    with aws_errors(f"sqs:CreateQueue {name}"):
        queue_url = client.create_queue(
            QueueName=name,
            Attributes={
                "RedrivePolicy": json.dumps(redrive),
                "VisibilityTimeout": str(visibility_timeout_s),
                "SqsManagedSseEnabled": "true",
            },
        )["QueueUrl"]
    return str(queue_url), str(dlq_url)


__all__ = [
    "DLQ_RETENTION_S",
    "NONCURRENT_DAYS",
    "create_bucket",
    "create_queues",
    "create_table",
    "table_definition",
]
