"""The drift methods of the StateStore contract, on every adapter (``store`` in conftest.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nclav.records import DriftRecord, DriftStatus, ResourceDrift

if TYPE_CHECKING:
    from nclav.ports import StateStore


def _record(enclave: str, partition: str, **fields: object) -> DriftRecord:
    return DriftRecord(enclave_id=enclave, partition_id=partition, **fields)  # type: ignore[arg-type]


def test_missing_drift_is_none(store: StateStore) -> None:
    assert store.get_drift("e", "p") is None
    assert store.list_drift() == []


def test_put_get_replace_delete(store: StateStore) -> None:
    first = _record("e", "p", next_due=12.5)
    store.put_drift(first)
    assert store.get_drift("e", "p") == first
    drifted = first.model_copy(
        update={
            "status": DriftStatus.DRIFTED,
            "checked_at": "2026-01-01T00:00:00.000000Z",
            "resource_drift": (
                ResourceDrift(address="aws_sqs_queue.q", actions=("update",), attributes=("tags",)),
            ),
            "fingerprint": "f" * 64,
            "plan_text": "x" * 20_000,  # a long plan: compressed on DynamoDB
        }
    )
    store.put_drift(drifted)
    assert store.get_drift("e", "p") == drifted
    assert store.list_drift() == [drifted]
    store.delete_drift("e", "p")
    assert store.get_drift("e", "p") is None
    store.delete_drift("e", "p")  # a missing record is not an error


def test_list_drift_sorted_and_filtered_by_enclave(store: StateStore) -> None:
    for enclave, partition in [("b", "x"), ("a", "z"), ("a", "y"), ("ab", "w")]:
        store.put_drift(_record(enclave, partition))
    assert [(r.enclave_id, r.partition_id) for r in store.list_drift()] == [
        ("a", "y"),
        ("a", "z"),
        ("ab", "w"),
        ("b", "x"),
    ]
    # "a" must not match "ab": the enclave filter is exact, not a prefix.
    assert [r.partition_id for r in store.list_drift("a")] == ["y", "z"]
    assert store.list_drift("nope") == []
