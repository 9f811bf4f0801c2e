"""``DynamoStateStore``: the StateStore on one DynamoDB table (single-table design).

The store's logic is core's ``nclav.docstore.DocumentStateStore``; this table is its
documents port (``_dynamo_docs``). The table's keys, indexes, access patterns, consistency,
sizes and hot keys are described in functions_aws/README.md ("The DynamoDB store");
``nclav.docstore.layout`` builds every key it names. Every compare-and-swap is a server-side
``ConditionExpression`` (never a read, then a write), and every read the engine decides on
is consistent.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from functions_aws._dynamo_docs import DynamoDocuments
from functions_aws._dynamo_errors import DynamoStoreError, ItemTooLargeError
from functions_aws.provision import create_table
from nclav.docstore import DocumentStateStore


def count_requests(client: Any) -> Counter[str]:
    """Count the DynamoDB requests ``client`` makes from now on, by operation name.

    The counter is live: read it after a workload. Each API call counts once (botocore's
    own retries of a throttled call are not separate calls).
    """
    counts: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        counts[str(model.name)] += 1

    client.meta.events.register("before-call.dynamodb.*", count)
    return counts


class DynamoStateStore(DocumentStateStore):
    docs: DynamoDocuments

    def __init__(self, table_name: str, client: Any | None = None) -> None:
        super().__init__(DynamoDocuments(table_name, client))
        self.table_name = table_name

    @property
    def client(self) -> Any:
        """The boto3 DynamoDB client (created on first use when none was given)."""
        return self.docs.client


__all__ = [
    "DynamoStateStore",
    "DynamoStoreError",
    "ItemTooLargeError",
    "count_requests",
    "create_table",
]
