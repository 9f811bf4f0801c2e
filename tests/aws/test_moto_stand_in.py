"""The moto stand-in itself: it starts, speaks the AWS protocol, and is reset between tests."""

from __future__ import annotations

import boto3


def test_moto_speaks_dynamodb_and_resets(aws: str) -> None:
    client = boto3.client("dynamodb")
    assert client.meta.endpoint_url == aws
    client.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    assert client.list_tables()["TableNames"] == ["t"]


def test_each_test_starts_from_an_empty_moto(aws: str) -> None:
    assert boto3.client("dynamodb").list_tables()["TableNames"] == []
