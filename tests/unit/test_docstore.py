"""The documents port's in-memory adapter: conditions, patches, transactions and queries as
the port promises them (the StateStore contract runs over it as ``store[documents]``)."""

from __future__ import annotations

import pytest

from nclav.docstore import ConditionFailedError, MemoryDocuments
from nclav.docstore.port import (
    Delete,
    Index,
    Patch,
    Put,
    Query,
    absent,
    doc_size,
    eq,
    exists,
    holds,
    le,
    lt,
    one_of,
)


def test_conditions_judge_like_a_server() -> None:
    doc = {"pk": "p", "sk": "s", "n": 3, "status": "ready"}
    assert holds(eq("n", 3) & exists("status") & absent("gone"), doc)
    assert holds(lt("n", 4) & le("n", 3) & one_of("status", ["ready", "running"]), doc)
    assert not holds(lt("n", 3) | eq("gone", 1), doc)
    assert not holds(lt("n", "9"), doc)  # text and numbers never compare
    assert holds(absent("pk"), {})


def test_patch_makes_sets_removes_and_adds() -> None:
    docs = MemoryDocuments()
    made = docs.write(Patch(("C", "x"), {"a": "1"}, {"n": 1}), returns="new")
    assert made == {"pk": "C", "sk": "x", "a": "1", "n": 1}
    old = docs.write(Patch(("C", "x"), {"a": None}, {"n": 2}, when=eq("n", 1)), returns="old")
    assert old["n"] == 1
    assert docs.get(("C", "x")) == {"pk": "C", "sk": "x", "n": 3}


def test_a_lost_condition_carries_the_stored_document() -> None:
    docs = MemoryDocuments()
    docs.write(Put({"pk": "E", "sk": "a", "version": 2}))
    with pytest.raises(ConditionFailedError) as lost:
        docs.write(Delete(("E", "a"), eq("version", 1)))
    assert lost.value.item == {"pk": "E", "sk": "a", "version": 2}
    with pytest.raises(ConditionFailedError) as missing:
        docs.write(Patch(("E", "b"), {"x": 1}, when=exists("pk")))
    assert missing.value.item is None
    assert docs.get(("E", "b")) is None


def test_a_transaction_is_all_or_nothing_and_names_the_failed_write() -> None:
    docs = MemoryDocuments()
    docs.write(Put({"pk": "R", "sk": "1", "v": 1}))
    ops = [Put({"pk": "R", "sk": "2"}), Patch(("R", "1"), {"v": 2}, when=eq("v", 5))]
    with pytest.raises(ConditionFailedError) as lost:
        docs.transact(ops)
    assert lost.value.failed(1) and not lost.value.failed(0)
    assert lost.value.items[1] == {"pk": "R", "sk": "1", "v": 1}
    assert docs.get(("R", "2")) is None
    with pytest.raises(ValueError, match="once"):
        docs.transact([Put({"pk": "R", "sk": "1"}), Delete(("R", "1"))])


def test_queries_read_one_partition_in_order() -> None:
    docs = MemoryDocuments()
    by_at = Index("ready", "ready_pk", "ready_at")
    docs.batch_write(
        puts=[
            {"pk": "P", "sk": "STEP#b", "ready_pk": "READY", "ready_at": 5.0},
            {"pk": "P", "sk": "STEP#a", "ready_pk": "READY", "ready_at": 2.0},
            {"pk": "P", "sk": "#RUN"},
            {"pk": "Q", "sk": "STEP#c"},
        ]
    )
    assert [d["sk"] for d in docs.query(Query("P", prefix="STEP#"))] == ["STEP#a", "STEP#b"]
    assert [d["sk"] for d in docs.query(Query("P", forward=False, limit=2))] == [
        "STEP#b",
        "STEP#a",
    ]
    # A sparse index holds the documents with both its fields only.
    assert [d["sk"] for d in docs.query(Query("READY", by_at, upto=4.0))] == ["STEP#a"]
    docs.batch_write(deletes=[("P", "STEP#a")])
    assert [d["sk"] for d in docs.query(Query("READY", by_at))] == ["STEP#b"]


def test_doc_size_counts_names_and_values() -> None:
    assert doc_size({"ab": "xyz"}) == 3 + 2 + 1 + 3
    assert doc_size(b"12345") == 5


def test_a_filter_is_judged_before_the_limit_and_transactions_can_be_refused() -> None:
    docs = MemoryDocuments(atomic=False)
    docs.batch_write(puts=[{"pk": "Q", "sk": f"{i}", "odd": i % 2} for i in range(6)])
    found = docs.query(Query("Q", where=eq("odd", 1) | eq("sk", "0"), limit=3))
    assert [d["sk"] for d in found] == ["0", "1", "3"]
    with pytest.raises(NotImplementedError):
        docs.transact([Put({"pk": "Q", "sk": "9"})])
    assert docs.get(("Q", "9")) is None
