"""``CosmosDocuments`` specifics on the Cosmos stand-in (the port's contract is in
tests/contract/test_documents.py): items as stored, sizes, TTL, and requests per write."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import TYPE_CHECKING

import pytest

from functions_azure._cosmos_docs import (
    ID_MAX_BYTES,
    TTL_GRACE_S,
    CosmosDocuments,
    create_container,
    item_id,
    require_strong,
    where_sql,
)
from nclav.docstore import DocumentStateStore
from nclav.docstore.layout import ENCLAVES
from nclav.docstore.port import Patch, Put, absent, eq, le
from nclav.errors import ConfigurationError, NclavError
from nclav.records import AuditEvent, EventKind, iso_time
from nclav.runtime.stores import RecordTooLargeError
from nclav.state import EnclaveState
from support import Counted

if TYPE_CHECKING:
    from azure.cosmos import ContainerProxy, DatabaseProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def container(cosmos: DatabaseProxy) -> ContainerProxy:
    return create_container(cosmos, "state")


def test_an_item_keeps_its_key_escaped_and_cosmos_names_aside(container: ContainerProxy) -> None:
    docs = CosmosDocuments(container)
    docs.write(Put({"pk": "TF", "sk": "STATE#e/p?x#1", "id": "run-1", "ttl": 3, "docz": b"z"}))
    item = container.read_item("STATE~23e~2Fp~3Fx~231", partition_key="TF")
    assert (item["sk"], item["~id"], item["~ttl"], item["docz"]) == (
        "STATE#e/p?x#1",
        "run-1",
        3,
        {"b64": base64.b64encode(b"z").decode()},
    )
    assert "ttl" not in item  # no expires_at: kept forever


def test_expires_at_sets_the_items_ttl(container: ContainerProxy) -> None:
    assert container.read()["defaultTtl"] == -1  # per-item TTL on, none by default
    docs = CosmosDocuments(container)
    now = time.time()
    docs.write(Put({"pk": "EVENTS", "sk": "1", "expires_at": now + 3_600}))
    ttl = container.read_item("1", partition_key="EVENTS")["ttl"]
    assert 3_600 + TTL_GRACE_S - 5 <= ttl <= 3_601 + TTL_GRACE_S
    docs.write(Patch(("EVENTS", "1"), {"expires_at": now + 60}))
    assert container.read_item("1", partition_key="EVENTS")["ttl"] <= 61 + TTL_GRACE_S
    docs.write(Patch(("EVENTS", "1"), {"expires_at": None}))
    assert container.read_item("1", partition_key="EVENTS")["ttl"] == -1
    assert docs.get(("EVENTS", "1")) == {"pk": "EVENTS", "sk": "1"}


def test_a_free_mutex_is_one_create_and_counters_are_made_with_the_container(
    container: ContainerProxy,
) -> None:
    counted = Counted(container)
    store = DocumentStateStore(CosmosDocuments(counted))  # type: ignore[arg-type]
    for key in ("e/p", "e/q"):
        assert store.acquire_partition(key, "me", 60.0, 0.0)
    assert counted.calls == {"create_item": 2}, counted.calls
    assert not store.acquire_partition("e/p", "them", 60.0, 1.0)  # held: 409, then 412
    assert store.acquire_partition("e/p", "me", 60.0, 1.0)  # renewed: one patch
    counted.calls.clear()
    store.append_event(AuditEvent(kind=EventKind.RECONCILE_STARTED, at=iso_time(0)))
    assert counted.calls == {"patch_item": 1, "upsert_item": 1}, counted.calls


def test_no_transactions(container: ContainerProxy) -> None:
    docs = CosmosDocuments(container)
    assert docs.atomic is False
    with pytest.raises(NotImplementedError):
        docs.transact([Put({"pk": "a", "sk": "b"})])


def test_a_large_record_is_stored_compressed(container: ContainerProxy) -> None:
    store = DocumentStateStore(CosmosDocuments(container))
    big = EnclaveState(enclave_id="a", context_vars={f"k{i}": "v" * 1_000 for i in range(2_500)})
    assert len(big.model_dump_json()) > 2_500_000  # past Cosmos's 2 MB item as plain JSON
    store.put_enclave(big, None)
    stored = container.read_item("a", partition_key=ENCLAVES)
    assert "b64" in stored["docz"] and "doc" not in stored
    assert len(json.dumps(stored)) < 100_000
    assert DocumentStateStore(CosmosDocuments(container)).get_enclave("a") == (big, 1)
    small = EnclaveState(enclave_id="a")
    store.put_enclave(small, 1)  # a replacement drops the other encoding
    stored = container.read_item("a", partition_key=ENCLAVES)
    assert "doc" in stored and "docz" not in stored
    assert store.get_enclave("a") == (small, 2)


def test_a_record_too_large_even_compressed_is_refused_by_name(container: ContainerProxy) -> None:
    store = DocumentStateStore(CosmosDocuments(container))
    noise = base64.b64encode(os.urandom(1_700_000)).decode()  # ~1.7 MB even compressed
    with pytest.raises(RecordTooLargeError, match=r"enclave a is .* smaller"):
        store.put_enclave(EnclaveState(enclave_id="a", context_vars={"n": noise}), None)
    assert store.get_enclave("a") is None
    # 1.5 MB compressed (the most a document takes) still fits in an item, base64 and all.
    fits = base64.b64encode(os.urandom(1_100_000)).decode()
    store.put_enclave(EnclaveState(enclave_id="b", context_vars={"n": fits}), None)
    assert store.get_enclave("b") is not None


def test_writes_cost_one_request_when_cosmos_can_judge_or_memory_knows(
    container: ContainerProxy,
) -> None:
    counted = Counted(container)
    docs = CosmosDocuments(counted)  # type: ignore[arg-type]
    key, doc = ("P", "S"), {"pk": "P", "sk": "S", "v": 1}
    docs.write(Put(doc))
    docs.write(Patch(key, {"v": 2}, {"n": 1}, when=eq("v", 1)))  # a filter predicate
    docs.write(Put({**doc, "v": 3}, eq("v", 2)))  # judged on memory, sent with its etag
    wide = {f"f{i:02d}": i for i in range(12)}
    docs.write(Patch(key, wide, when=eq("v", 3)))  # wider than a patch: the same
    assert sum(counted.calls.values()) == 4, counted.calls
    assert "read_item" not in counted.calls
    # Changed elsewhere, still meeting the condition: the etag loses, read, write again.
    other = CosmosDocuments(container)
    other.write(Patch(key, {"x": 1}))
    counted.calls.clear()
    docs.write(Put({**doc, "v": 4}, eq("v", 3)))
    assert counted.calls == {"replace_item": 2, "read_item": 1}, counted.calls
    # Changed elsewhere so that memory says "lost": read before deciding, then written.
    other.write(Patch(key, {"v": 5}))
    counted.calls.clear()
    docs.write(Put({**doc, "v": 6}, eq("v", 5)))
    assert counted.calls == {"replace_item": 1, "read_item": 1}, counted.calls


def test_keys_cosmos_would_refuse_as_ids_round_trip(container: ContainerProxy) -> None:
    # Cosmos ids cannot hold / \\ ? #: terraform keys (enclave/partition) and odd ids do.
    store = DocumentStateStore(CosmosDocuments(container))
    for key in ("e/p", "e/p#1", "e/p?x", "e/~7E", "e/b\\s"):
        store.set_tf_state(key, f"blob-{key}")
        assert store.get_tf_state(key) == f"blob-{key}"
    assert store.list_tf_states("e") == ["e/b\\s", "e/p", "e/p#1", "e/p?x", "e/~7E"]
    store.put_enclave(EnclaveState(enclave_id="a/b#c"), None)
    assert [e.enclave_id for e in store.list_enclaves()] == ["a/b#c"]
    # Over Cosmos's 1,023 bytes of id (escapes counted): refused by name before any request.
    assert len(item_id("x" * ID_MAX_BYTES)) == ID_MAX_BYTES
    with pytest.raises(NclavError, match="is 1024 bytes as a Cosmos DB item id; at most 1023"):
        item_id("x" * 1021 + "/")


def test_conditions_nest_parentheses_only_where_precedence_needs_them() -> None:
    # The stand-in's parser takes seconds at 5 levels: a claim's condition once took 13 s.
    ready = eq("status", "ready") & (absent("not_before") | le("not_before", 1.0))
    claim = ready | eq("status", "running") & le("lease_expires_at", 1.0)
    sql = where_sql(claim, json.dumps)
    depth, deepest = 0, 0
    for ch in sql:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        deepest = max(deepest, depth)
    assert deepest == 2, sql  # (NOT IS_DEFINED(c["not_before"]) OR ...)


def test_batches_stay_under_the_request_size(container: ContainerProxy) -> None:
    counted = Counted(container)
    docs = CosmosDocuments(counted)  # type: ignore[arg-type]
    big = [{"pk": "P", "sk": f"S{i}", "docz": os.urandom(700_000)} for i in range(3)]
    small = [{"pk": "P", "sk": f"T{i}"} for i in range(150)]
    docs.batch_write([*big, *small])
    # 933 KB each in base64: one per batch of at most 1.5 MB (the last one with 97 small
    # documents: 100 operations), then the other 53.
    assert counted.calls == {"execute_item_batch": 4}, counted.calls
    assert len(docs.batch_get([(d["pk"], d["sk"]) for d in [*big, *small]])) == 153
    assert docs.get(("P", "S2")) == big[2]


def test_an_account_below_strong_consistency_is_refused_unless_it_is_a_local_stand_in(
    cosmos_server: str,
) -> None:
    from azure.cosmos import CosmosClient

    from azure_stand_ins import COSMOS_KEY

    # The stand-in's account says Session, as a new Cosmos account does by default.
    client = CosmosClient(cosmos_server, credential=COSMOS_KEY, enable_endpoint_discovery=False)
    require_strong(client, cosmos_server)  # on 127.0.0.1: one process, let through
    deployed = "https://nclav-state.documents.azure.com:443/"
    with pytest.raises(ConfigurationError, match="at Session consistency: .* needs Strong"):
        require_strong(client, deployed)
    client.client_connection.default_headers["x-ms-consistency-level"] = "Strong"
    require_strong(client, deployed)
