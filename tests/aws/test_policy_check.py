"""The policy evaluator of the policy check (tests/aws/test_infra.py runs it on the deployed
policies against every call the functions made): what it maps calls to and decides."""

from __future__ import annotations

from typing import Any

import boto3
from policy_check import Call, CallRecorder, Policy, denied, required

from functions_aws.s3_blobs import S3BlobStore, create_bucket

BUCKET = "nclav-blobs-123456789012"
# The Blobs statement infra/aws had when log segments were tagged (blocker 2).
BLOBS = {
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            "Resource": f"arn:aws:s3:::{BUCKET}/*",
        },
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{BUCKET}"},
    ]
}


def test_a_tagged_put_needs_put_object_tagging_which_the_old_policy_lacked() -> None:
    tagged = Call("iac", "s3", "PutObject", {"Bucket": BUCKET, "Key": "k", "Tagging": "a=1"})
    assert required(tagged, {}) == [
        ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/k"),
        ("s3:PutObjectTagging", f"arn:aws:s3:::{BUCKET}/k"),
    ]
    refused, _ = denied([tagged], Policy([BLOBS]), {})
    assert refused == [f"iac: s3:PutObjectTagging on arn:aws:s3:::{BUCKET}/k"]


def test_log_appends_make_only_calls_the_blob_policy_allows(aws: str) -> None:
    client = boto3.client("s3")
    create_bucket(client, BUCKET)
    recorder = CallRecorder()
    with recorder.installed(), recorder.running("iac"):
        blobs = S3BlobStore(BUCKET, client=client)
        for i in range(5):
            blobs.append("iac-logs/a/p/run", f"line {i}\n".encode())
        blobs.get("iac-logs/a/p/run")
        blobs.delete("iac-logs/a/p/run")
    assert recorder.of("iac")
    assert denied(recorder.of("iac"), Policy([BLOBS]), {}) == ([], set())


def test_an_organizations_call_is_refused_where_no_statement_grants_it() -> None:
    iac: dict[str, Any] = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["sts:AssumeRole"],
                "Resource": "arn:aws:iam::*:role/OrganizationAccountAccessRole",
                "Condition": {"ForAnyValue:StringLike": {"aws:ResourceOrgPaths": ["*/ou-1/*"]}},
            }
        ]
    }
    lookup = Call("iac", "organizations", "ListAccountsForParent", {"ParentId": "ou-1"})
    assume = Call(
        "iac",
        "sts",
        "AssumeRole",
        {"RoleArn": "arn:aws:iam::210987654321:role/OrganizationAccountAccessRole"},
    )
    refused, conditions = denied([lookup, assume], Policy([iac]), {})
    assert refused == ["iac: organizations:ListAccountsForParent on *"]
    assert conditions == {": ForAnyValue:StringLike aws:ResourceOrgPaths"}


def test_actions_match_case_insensitively_with_wildcards_and_transactions_per_item() -> None:
    policy = Policy(
        [{"Statement": {"Effect": "Allow", "Action": "DynamoDB:*Item", "Resource": "arn:*:t"}}]
    )
    assert policy.decide("dynamodb:PutItem", "arn:x:t").allowed
    assert not policy.decide("dynamodb:Query", "arn:x:t").allowed
    call = Call(
        "api",
        "dynamodb",
        "TransactWriteItems",
        {"TransactItems": [{"Put": {"TableName": "t"}}, {"ConditionCheck": {"TableName": "t"}}]},
    )
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/t"
    assert required(call, {}) == [
        ("dynamodb:PutItem", table),
        ("dynamodb:ConditionCheckItem", table),
    ]
