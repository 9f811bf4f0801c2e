"""The table's keys, indexes and attribute encoding (the design is in ``dynamodb_store``).

Every key the store reads or writes is built here, so the documented layout and the code
cannot drift apart, and ``create_table`` declares exactly the indexes the store queries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions_aws._dynamo_errors import ItemTooLargeError
from nclav.runtime.stores import RecordTooLargeError, pack_record, seq_text, unpack_record

if TYPE_CHECKING:
    from functions_aws._dynamo_errors import AttributeValue, Item

# -- partition keys of the shared collections and sort keys of single items ---------------------

ENCLAVES = "ENCLAVES"
UNFINISHED_RUNS = "UNFINISHED_RUNS"
EVENTS = "EVENTS"
COUNTER = "COUNTER"
RUNS = "RUNS"
LEASES = "LEASES"
READY = "READY"
DRIFT = "DRIFT"  # drift records, sort key <enclave>#<partition>
RUN_SK = "#RUN"  # sorts before every "STEP#..." of the same run partition
STEPS_LEFT_SK = "#STEPS_LEFT"  # the run's count of unfinished steps (not a STEP# item)
STEP_PREFIX = "STEP#"

# -- indexes -------------------------------------------------------------------------------------

GSI1 = "gsi1"  # runs newest first; events of one enclave
GSI2 = "gsi2"  # runs of one status; events of one run
LEASE_INDEX = "leases"  # sparse: running steps by lease expiry
LEASE_PK = "lease_pk"
LEASE_SK = "lease_expires_at"  # the step's own attribute, so the index needs no copy
READY_INDEX = "ready"  # sparse: ready steps by records.ready_since (the sweeper's candidates)
READY_PK = "ready_pk"
READY_SK = "ready_at"

# The most a document may take after compression (core's ``pack_record``): the rest of the
# item (keys, index keys, small attributes) fits easily in the ~50 KB left below 400 KB.
MAX_DOC_BYTES = 350_000
MAX_ITEM_BYTES = 400 * 1024


def S(text: str) -> AttributeValue:  # noqa: N802 - DynamoDB's own type letters
    return {"S": text}


def N(number: int | float) -> AttributeValue:  # noqa: N802
    # repr() of a float round-trips exactly, and DynamoDB keeps 38 significant digits.
    return {"N": repr(number)}


def attr(value: Any) -> AttributeValue | None:
    """A plain value (text, number, bool, bytes, a sequence of them) as an attribute value;
    ``None`` stays ``None`` (an absent attribute)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return N(value)
    if isinstance(value, str):
        return S(value)
    if isinstance(value, bytes):
        return {"B": value}
    return {"L": [attr(v) for v in value]}


def plain(value: AttributeValue) -> Any:
    """The plain value of an attribute value (``attr`` reversed)."""
    (kind, inner), *_ = value.items()
    if kind == "N":
        return float(inner) if any(c in inner for c in ".eE") else int(inner)
    if kind == "L":
        return [plain(v) for v in inner]
    return inner


def text(value: AttributeValue | None) -> str | None:
    return None if value is None else str(value["S"])


def integer(value: AttributeValue) -> int:
    return int(value["N"])


def key(pk: str, sk: str) -> Item:
    return {"pk": S(pk), "sk": S(sk)}


def enclave_key(enclave_id: str) -> Item:
    return key(ENCLAVES, enclave_id)


def run_partition(run_id: str) -> str:
    return f"RUN#{run_id}"


def run_key(run_id: str) -> Item:
    return key(run_partition(run_id), RUN_SK)


def steps_left_key(run_id: str) -> Item:
    return key(run_partition(run_id), STEPS_LEFT_SK)


def step_key(run_id: str, step_id: str) -> Item:
    return key(run_partition(run_id), f"{STEP_PREFIX}{step_id}")


def unfinished_key(seq: int) -> Item:
    return key(UNFINISHED_RUNS, seq_text(seq))


def event_key(seq: int) -> Item:
    return key(EVENTS, seq_text(seq))


def events_of_enclave(enclave_id: str) -> str:
    return f"{EVENTS}#ENCLAVE#{enclave_id}"


def events_of_run(run_id: str) -> str:
    return f"{EVENTS}#RUN#{run_id}"


def iac_partition(enclave_id: str, partition_id: str) -> str:
    # Ids never contain '#' (model.Id), so the separator cannot make two pairs collide.
    return f"IAC#{enclave_id}#{partition_id}"


def iac_key(enclave_id: str, partition_id: str, started_at: str, order: int) -> Item:
    return key(iac_partition(enclave_id, partition_id), f"{started_at}#{seq_text(order)}")


def iac_locator_key(run_id: str) -> Item:
    return key(f"IACRUN#{run_id}", "#IACRUN")


def tf_lock_key(lock_key: str) -> Item:
    return key(f"TF#{lock_key}", "LOCK")


def tf_state_key(lock_key: str) -> Item:
    return key(f"TF#{lock_key}", "STATE")


def tf_states_of_enclave(enclave_id: str) -> str:
    """gsi1pk of the enclave's state pointers (a state key is ``enclave/partition``)."""
    return f"TFSTATE#{enclave_id}"


def mutex_key(mutex: str) -> Item:
    return key(f"MUTEX#{mutex}", "#MUTEX")


def drift_key(enclave_id: str, partition_id: str) -> Item:
    return key(DRIFT, f"{enclave_id}#{partition_id}")


def counter_key(name: str) -> Item:
    return key(COUNTER, name)


# -- documents -----------------------------------------------------------------------------------


def doc_attrs(doc: str, what: str) -> dict[str, AttributeValue | None]:
    """A JSON document as ``doc`` (plain) or ``docz`` (zlib), the other one to be removed.

    Raises ``ItemTooLargeError`` when even the compressed document would not fit an item.
    """
    try:
        packed = pack_record(doc, what, max_bytes=MAX_DOC_BYTES, where="a DynamoDB item")
    except RecordTooLargeError as exc:
        raise ItemTooLargeError(str(exc)) from None
    if isinstance(packed, str):
        return {"doc": S(packed), "docz": None}
    return {"doc": None, "docz": {"B": packed}}


def present(attrs: dict[str, AttributeValue | None]) -> Item:
    return {k: v for k, v in attrs.items() if v is not None}


def read_doc(item: Item) -> str:
    return unpack_record(item["docz"]["B"] if "docz" in item else str(item["doc"]["S"]))


def _value_size(value: AttributeValue) -> int:
    (kind, inner), *_ = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "B":
        return len(inner)
    if kind == "N":
        return len(str(inner)) // 2 + 2
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + _value_size(v) for k, v in inner.items())
    return 1  # BOOL, NULL


def item_size(item: Item) -> int:
    """An upper estimate of DynamoDB's size of ``item`` (names plus values)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


# The table's TTL attribute: history items carry it (``_dynamo_items.expiry``), state never.
TTL_ATTRIBUTE = "expires_at"


__all__ = [
    "DRIFT",
    "GSI1",
    "GSI2",
    "LEASE_INDEX",
    "MAX_DOC_BYTES",
    "MAX_ITEM_BYTES",
    "N",
    "READY_INDEX",
    "S",
    "TTL_ATTRIBUTE",
    "doc_attrs",
    "drift_key",
    "item_size",
    "read_doc",
]
