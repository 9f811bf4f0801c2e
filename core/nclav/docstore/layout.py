"""The documents' keys and fields, and records to documents and back (one table's layout).

Every key the store reads or writes is built here, so the documented layout (functions_aws/
README.md, "The DynamoDB store") and the code cannot drift apart. Steps are plain fields (no
JSON document) because every claim, lease and compare-and-swap is one conditional patch of
them; a ``None`` field is an absent one, which also keeps the lease index sparse. Runs, events
and the rest are JSON documents (``doc``, or ``docz`` compressed) beside the few fields their
keys and conditions need.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from nclav.docstore.port import Index
from nclav.records import AuditEvent, Run, StepRecord, StepStatus, ready_since
from nclav.runtime.stores import (
    RecordTooLargeError,
    history_expiry,
    pack_record,
    seq_text,
    unpack_record,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nclav.docstore.port import Doc, Documents, Key

ENCLAVES, UNFINISHED_RUNS, EVENTS, COUNTER = "ENCLAVES", "UNFINISHED_RUNS", "EVENTS", "COUNTER"
RUNS, LEASES, READY, DRIFT = "RUNS", "LEASES", "READY", "DRIFT"
RUN_SK = "#RUN"  # sorts before every "STEP#..." of the same run partition
STEPS_LEFT_SK = "#STEPS_LEFT"  # the run's count of unfinished steps (not a STEP# item)
STEP_PREFIX = "STEP#"
TTL_ATTRIBUTE = "expires_at"  # history documents carry it, state never

GSI1 = Index("gsi1", "gsi1pk", "gsi1sk")  # runs newest first; events of one enclave
GSI2 = Index("gsi2", "gsi2pk", "gsi2sk")  # runs of one status; events of one run
LEASE_INDEX = Index("leases", "lease_pk", "lease_expires_at")  # sparse: running steps
READY_INDEX = Index("ready", "ready_pk", "ready_at")  # sparse: ready steps by ready_since
# Without atomic transactions only (``partitions``): a partition's IaC runs by start, an index
# of the table's own partitions (one-partition queries), and GSI2 finds one by id.
IAC_INDEX = Index("iac", "pk", "iac_at")

# Every field of a step but its key, as fields of the same names.
STEP_FIELDS = tuple(f for f in StepRecord.model_fields if f not in ("run_id", "step_id"))


def run_partition(run_id: str) -> str:
    return f"RUN#{run_id}"


def run_key(run_id: str) -> Key:
    return run_partition(run_id), RUN_SK


def steps_left_key(run_id: str) -> Key:
    return run_partition(run_id), STEPS_LEFT_SK


def step_key(run_id: str, step_id: str) -> Key:
    return run_partition(run_id), f"{STEP_PREFIX}{step_id}"


def events_of_enclave(enclave_id: str) -> str:
    return f"{EVENTS}#ENCLAVE#{enclave_id}"


def events_of_run(run_id: str) -> str:
    return f"{EVENTS}#RUN#{run_id}"


def iac_partition(enclave_id: str, partition_id: str) -> str:
    # Ids never contain '#' (model.Id), so the separator cannot make two pairs collide.
    return f"IAC#{enclave_id}#{partition_id}"


def tf_states_of_enclave(enclave_id: str) -> str:
    """gsi1pk of the enclave's state pointers (a state key is ``enclave/partition``)."""
    return f"TFSTATE#{enclave_id}"


def present(fields: dict[str, Any]) -> Doc:
    return {k: v for k, v in fields.items() if v is not None}


def doc_fields(docs: Documents, doc: str, what: str) -> dict[str, Any]:
    """A JSON document as ``doc`` (plain) or ``docz`` (zlib), the other one to be removed."""
    try:
        packed = pack_record(doc, what, max_bytes=docs.max_doc_bytes, where="a document")
    except RecordTooLargeError as exc:
        raise docs.too_large(str(exc)) from None
    return (
        {"doc": packed, "docz": None} if isinstance(packed, str) else {"doc": None, "docz": packed}
    )


def read_doc(doc: Doc) -> str:
    return unpack_record(doc["docz"] if "docz" in doc else str(doc["doc"]))


def expiry() -> Doc:
    """The TTL field of a new history document (``NCLAV_RETENTION_DAYS``, core's rule)."""
    at = history_expiry()
    return {TTL_ATTRIBUTE: at} if at is not None else {}


def keyed(key: Key, **fields: Any) -> Doc:
    return {"pk": key[0], "sk": key[1], **fields}


# -- steps ---------------------------------------------------------------------------------------


def step_fields(step: StepRecord) -> dict[str, Any]:
    """Every changeable field of ``step`` (``None``: absent), index keys included."""
    data = step.model_dump(mode="json")
    leased = step.status == StepStatus.RUNNING and step.lease_expires_at is not None
    return {
        **{f: data[f] for f in STEP_FIELDS},
        LEASE_INDEX.pk: LEASES if leased else None,
        **ready_fields(step.status, ready_since(step)),
    }


def ready_fields(status: StepStatus, since: float) -> dict[str, Any]:
    """The ready index's key: present on ready steps only (``since``: ``ready_since``)."""
    ready = status == StepStatus.READY
    return {READY_INDEX.pk: READY if ready else None, READY_INDEX.sk: since if ready else None}


def step_doc(step: StepRecord, position: int, plan: str) -> Doc:
    """A new step; ``position`` orders ``list_steps``, ``plan`` ties it to its run."""
    return keyed(
        step_key(step.run_id, step.step_id),
        run_id=step.run_id,
        step_id=step.step_id,
        pos=position,
        plan=plan,
        **present(step_fields(step)),
        **expiry(),
    )


def step_from(doc: Doc) -> StepRecord:
    # An absent field (``dependents`` of runs begun before steps knew them) is the default.
    fields = ("run_id", "step_id", *STEP_FIELDS)
    return StepRecord.model_validate({f: doc[f] for f in fields if f in doc})


def steps_left_doc(run_id: str, steps: Sequence[StepRecord]) -> Doc:
    """The run's count of unfinished steps, written in the transaction that commits its steps.

    ``n`` moves (-1 / +1) in the same transaction as each write that takes a step to or from a
    final status; ``total`` marks a count set at commit (a document made by an addition alone
    belongs to a run begun before the count existed, and is not trusted).
    """
    n = sum(1 for s in steps if not s.status.final)
    return keyed(steps_left_key(run_id), n=n, total=len(steps), **expiry())


# -- runs and events: documents ------------------------------------------------------------------


def run_fields(docs: Documents, run: Run) -> dict[str, Any]:
    """What a run update changes: its document, its status and the status index key."""
    return {
        "status": run.status.value,
        GSI2.pk: f"{RUNS}#{run.status.value}",
        **doc_fields(docs, run.model_dump_json(exclude={"seq"}), f"run {run.id}"),
    }


def run_doc(docs: Documents, run: Run, plan: str | None) -> Doc:
    seq = seq_text(run.seq)
    extra = {"plan": plan} if plan else {}
    fields = present(run_fields(docs, run))
    return keyed(
        run_key(run.id),
        seq=run.seq,
        gsi1pk=RUNS,
        gsi1sk=seq,
        gsi2sk=seq,
        **fields,
        **extra,
        **expiry(),
    )


def unfinished_doc(docs: Documents, run: Run) -> Doc:
    """The copy of an unfinished run that ``list_unfinished_runs`` reads in seq order."""
    packed = doc_fields(docs, run.model_dump_json(exclude={"seq"}), f"run {run.id}")
    key = (UNFINISHED_RUNS, seq_text(run.seq))
    return keyed(key, seq=run.seq, run_id=run.id, **present(packed), **expiry())


def run_from(doc: Doc) -> Run:
    data: dict[str, Any] = json.loads(read_doc(doc))
    return Run.model_validate({**data, "seq": int(doc["seq"])})


def event_doc(docs: Documents, event: AuditEvent) -> Doc:
    seq = seq_text(event.seq)
    packed = doc_fields(docs, event.model_dump_json(exclude={"seq"}), f"event {event.id}")
    doc = keyed((EVENTS, seq), seq=event.seq, **present(packed), **expiry())
    if event.enclave_id is not None:
        doc |= {GSI1.pk: events_of_enclave(event.enclave_id), GSI1.sk: seq}
    if event.run_id is not None:
        doc |= {GSI2.pk: events_of_run(event.run_id), GSI2.sk: seq}
    return doc


def event_from(doc: Doc) -> AuditEvent:
    data: dict[str, Any] = json.loads(read_doc(doc))
    return AuditEvent.model_validate({**data, "seq": int(doc["seq"])})


__all__ = [
    "GSI1",
    "GSI2",
    "LEASE_INDEX",
    "READY_INDEX",
    "TTL_ATTRIBUTE",
    "event_doc",
    "event_from",
    "run_doc",
    "run_from",
    "step_doc",
    "step_from",
]
