"""The documents port on DynamoDB: core's conditions and patches become one request's
ConditionExpression / UpdateExpression (server-side, so a compare-and-swap is one call)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from functions_aws._dynamo_docs import DynamoDocuments
from functions_aws.dynamodb_store import count_requests, create_table
from nclav.docstore import ConditionFailedError
from nclav.docstore.port import Delete, Patch, Put, Query, absent, eq, le, lt, one_of


@pytest.fixture
def docs(aws: str) -> DynamoDocuments:
    client = boto3.client("dynamodb")
    create_table(client, "docs")
    return DynamoDocuments("docs", client)


def test_a_condition_is_one_server_side_expression(docs: DynamoDocuments) -> None:
    kind, params = docs._op(
        Patch(
            ("R", "x"),
            {"status": "running", "gone": None},
            {"version": 1},
            (eq("status", "ready") & absent("plan")) | le("at", 5.0),
        )
    )
    assert kind == "Update"
    assert params["ConditionExpression"] == (
        "((#n0 = :v2) AND (attribute_not_exists(#n3))) OR (#n4 <= :v3)"
    )
    assert params["UpdateExpression"] == "SET #n0 = :v0 REMOVE #n1 ADD #n2 :v1"
    assert params["ExpressionAttributeNames"]["#n0"] == "status"  # a reserved word, aliased
    assert params["ExpressionAttributeValues"][":v3"] == {"N": "5.0"}
    assert params["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"


def test_writes_round_trip_plain_values_and_report_the_stored_item(
    docs: DynamoDocuments,
) -> None:
    counts = count_requests(docs.client)
    doc: dict[str, Any] = {"pk": "R", "sk": "x", "n": 2, "at": 1.5, "on": True, "l": ["a"]}
    docs.write(Put(doc, absent("pk")))
    assert docs.get(("R", "x")) == doc
    new = docs.write(Patch(("R", "x"), {"on": None}, {"n": 3}, one_of("n", [1, 2])), "new")
    assert new["n"] == 5 and "on" not in new
    with pytest.raises(ConditionFailedError) as lost:
        docs.write(Delete(("R", "x"), lt("n", 5)))
    assert lost.value.item is not None and lost.value.item["n"] == 5  # a document, not an item
    assert dict(counts) == {"PutItem": 1, "GetItem": 1, "UpdateItem": 1, "DeleteItem": 1}


def test_a_failed_transaction_names_its_write_with_documents(docs: DynamoDocuments) -> None:
    docs.write(Put({"pk": "R", "sk": "a", "v": 1}))
    with pytest.raises(ConditionFailedError) as lost:
        docs.transact([Put({"pk": "R", "sk": "b"}), Patch(("R", "a"), {"v": 2}, when=eq("v", 9))])
    assert lost.value.failed(1) and not lost.value.failed(0)
    assert docs.query(Query("R", prefix="b", consistent=True)) == []


def test_a_filtered_query_pages_on_until_its_limit_passes_the_filter(
    docs: DynamoDocuments,
) -> None:
    # DynamoDB judges a FilterExpression after its Limit: asking for 2 reads 2 items, both
    # filtered out here, so the adapter must page on to find the two that pass.
    docs.batch_write(puts=[{"pk": "Q", "sk": f"{i}", "odd": i % 2} for i in range(8)])
    found = docs.query(Query("Q", where=eq("odd", 1), limit=2, consistent=True))
    assert [d["sk"] for d in found] == ["1", "3"]
    assert len(docs.query(Query("Q", where=eq("odd", 1)))) == 4
