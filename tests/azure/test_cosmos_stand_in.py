"""The Cosmos DB stand-in (patched @vercel/cosmosdb-server) does what the state store will
rely on, and its errors come out of ``azure_errors`` as core's errors.

Every compare-and-swap of the planned Cosmos store is one single-item write conditioned on
the etag read (``MatchConditions.IfNotModified``), or a patch with a ``filter_predicate``:
these tests pin that the stand-in enforces both, so the store's contract tests mean something.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from azure.core import MatchConditions
from azure.cosmos import PartitionKey

from functions_azure._errors import azure_errors
from nclav.errors import ConflictError, NotFoundError

if TYPE_CHECKING:
    from azure.cosmos import ContainerProxy, DatabaseProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def container(cosmos: DatabaseProxy) -> ContainerProxy:
    return cosmos.create_container("state", partition_key=PartitionKey("/pk"))


def test_a_missing_document_is_not_found(container: ContainerProxy) -> None:
    # unpatched, the server answers 500 "Cannot read properties of undefined"
    with pytest.raises(NotFoundError, match="404"), azure_errors("read"):
        container.read_item("nope", partition_key="p")


def test_a_duplicate_create_is_a_conflict(container: ContainerProxy) -> None:
    container.create_item({"id": "a", "pk": "p"})
    with pytest.raises(ConflictError, match="409"), azure_errors("create"):
        container.create_item({"id": "a", "pk": "p"})


def test_writes_conditioned_on_a_stale_etag_lose(container: ContainerProxy) -> None:
    first = container.create_item({"id": "a", "pk": "p", "v": 1})
    second = container.replace_item(
        "a",
        {"id": "a", "pk": "p", "v": 2},
        etag=first["_etag"],
        match_condition=MatchConditions.IfNotModified,
    )
    assert second["_etag"] != first["_etag"]
    stale = {"etag": first["_etag"], "match_condition": MatchConditions.IfNotModified}
    with pytest.raises(ConflictError, match="412"), azure_errors("replace"):
        container.replace_item("a", {"id": "a", "pk": "p", "v": 3}, **stale)
    with pytest.raises(ConflictError, match="412"), azure_errors("upsert"):
        container.upsert_item({"id": "a", "pk": "p", "v": 3}, **stale)
    with pytest.raises(ConflictError, match="412"), azure_errors("delete"):
        container.delete_item("a", partition_key="p", **stale)
    assert container.read_item("a", partition_key="p")["v"] == 2


def test_a_patch_with_a_false_filter_predicate_loses(container: ContainerProxy) -> None:
    container.create_item({"id": "s", "pk": "r", "status": "ready", "attempts": 0})
    claim = [
        {"op": "set", "path": "/status", "value": "running"},
        {"op": "incr", "path": "/attempts", "value": 1},
    ]
    won = container.patch_item("s", "r", claim, filter_predicate="FROM c WHERE c.status = 'ready'")
    assert (won["status"], won["attempts"]) == ("running", 1)
    with pytest.raises(ConflictError, match="412"), azure_errors("patch"):
        container.patch_item("s", "r", claim, filter_predicate="FROM c WHERE c.status = 'ready'")


def test_a_batch_takes_its_partition_key_from_the_request(container: ContainerProxy) -> None:
    # unpatched: 500 "Failed to parse x-ms-documentdb-partitionkey headers: undefined"
    container.execute_item_batch(
        [("create", ({"id": "1", "pk": "r"},)), ("create", ({"id": "2", "pk": "r"},))],
        partition_key="r",
    )
    found = container.query_items(
        "SELECT VALUE c.id FROM c WHERE c.pk = @pk",
        parameters=[{"name": "@pk", "value": "r"}],
        partition_key="r",
    )
    assert sorted(found) == ["1", "2"]
