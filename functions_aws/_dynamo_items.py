"""Records to items and back: runs, steps and events.

Steps are plain attributes (no document) because every claim, lease and compare-and-swap is
one conditional ``UpdateItem`` on them; a ``None`` field is an absent attribute, which is also
what keeps the lease index sparse. Runs and events are JSON documents beside the few
attributes their keys and conditions need.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from functions_aws import _dynamo_keys as k
from functions_aws._dynamo_keys import LEASE_PK, READY_PK, READY_SK, TTL_ATTRIBUTE, N, S
from nclav.records import AuditEvent, Run, StepRecord, StepStatus, ready_since
from nclav.runtime.stores import history_expiry, seq_text

if TYPE_CHECKING:
    from collections.abc import Sequence

    from functions_aws._dynamo_errors import AttributeValue, Item

# Every field of a step but its key, as attributes of the same names.
STEP_FIELDS = tuple(f for f in StepRecord.model_fields if f not in ("run_id", "step_id"))


def expiry() -> Item:
    """The TTL attribute of a new history item (``NCLAV_RETENTION_DAYS``, core's rule):
    DynamoDB deletes runs, steps, events and IaC records after it. Enclave and partition
    records, state pointers, locks and counters never carry it, so they never expire."""
    at = history_expiry()
    return {TTL_ATTRIBUTE: N(at)} if at is not None else {}


# -- steps ---------------------------------------------------------------------------------------


def step_attrs(step: StepRecord) -> dict[str, AttributeValue | None]:
    """Every changeable attribute of ``step`` (``None``: absent), index keys included.

    The error is bounded by the engine (``nclav.engine.bound_error``)."""
    data = step.model_dump(mode="json")
    leased = step.status == StepStatus.RUNNING and step.lease_expires_at is not None
    return {
        **{f: k.attr(data[f]) for f in STEP_FIELDS},
        LEASE_PK: S(k.LEASES) if leased else None,
        **ready_attrs(step.status, ready_since(step)),
    }


def ready_attrs(status: StepStatus, since: float) -> dict[str, AttributeValue | None]:
    """The ready index's key: present on ready steps only (``since``: ``ready_since``)."""
    ready = status == StepStatus.READY
    return {READY_PK: S(k.READY) if ready else None, READY_SK: N(since) if ready else None}


def step_item(step: StepRecord, position: int, plan: str) -> Item:
    """A new step item; ``position`` orders ``list_steps``, ``plan`` ties it to its run."""
    return {
        **k.step_key(step.run_id, step.step_id),
        "run_id": S(step.run_id),
        "step_id": S(step.step_id),
        "pos": N(position),
        "plan": S(plan),
        **k.present(step_attrs(step)),
        **expiry(),
    }


def step_from(item: Item) -> StepRecord:
    # A field absent from an item (``dependents`` of runs begun before steps knew them) is
    # the record's default.
    fields = ("run_id", "step_id", *STEP_FIELDS)
    return StepRecord.model_validate({f: k.plain(item[f]) for f in fields if f in item})


def steps_left_item(run_id: str, steps: Sequence[StepRecord]) -> Item:
    """The run's count of unfinished steps, written in the transaction that commits its steps.

    ``n`` moves (ADD -1 / +1) in the same transaction as each write that takes a step to or
    from a final status; ``total`` marks a count that was set at commit (an item made by an
    ADD alone belongs to a run begun before the count existed, and is not trusted).
    """
    return {
        **k.steps_left_key(run_id),
        "n": N(sum(1 for s in steps if not s.status.final)),
        "total": N(len(steps)),
        **expiry(),
    }


# -- runs and events: documents ------------------------------------------------------------------


def run_attrs(run: Run) -> dict[str, AttributeValue | None]:
    """What a run update changes: its document, its status and the status index key."""
    return {
        "status": S(run.status.value),
        "gsi2pk": S(f"{k.RUNS}#{run.status.value}"),
        **k.doc_attrs(run.model_dump_json(exclude={"seq"}), f"run {run.id}"),
    }


def run_item(run: Run, plan: str | None) -> Item:
    seq = seq_text(run.seq)
    return {
        **k.run_key(run.id),
        "seq": N(run.seq),
        "gsi1pk": S(k.RUNS),
        "gsi1sk": S(seq),
        "gsi2sk": S(seq),
        **k.present(run_attrs(run)),
        **({"plan": S(plan)} if plan else {}),
        **expiry(),
    }


def unfinished_item(run: Run) -> Item:
    """The copy of an unfinished run that ``list_unfinished_runs`` reads in seq order."""
    return {
        **k.unfinished_key(run.seq),
        "seq": N(run.seq),
        "run_id": S(run.id),
        **k.present(k.doc_attrs(run.model_dump_json(exclude={"seq"}), f"run {run.id}")),
        **expiry(),
    }


def run_from(item: Item) -> Run:
    data: dict[str, Any] = json.loads(k.read_doc(item))
    return Run.model_validate({**data, "seq": k.integer(item["seq"])})


def event_item(event: AuditEvent) -> Item:
    seq = seq_text(event.seq)
    doc = event.model_dump_json(exclude={"seq"})
    item: Item = {
        **k.event_key(event.seq),
        "seq": N(event.seq),
        **k.present(k.doc_attrs(doc, f"event {event.id}")),
        **expiry(),
    }
    if event.enclave_id is not None:
        item |= {"gsi1pk": S(k.events_of_enclave(event.enclave_id)), "gsi1sk": S(seq)}
    if event.run_id is not None:
        item |= {"gsi2pk": S(k.events_of_run(event.run_id)), "gsi2sk": S(seq)}
    return item


def event_from(item: Item) -> AuditEvent:
    data: dict[str, Any] = json.loads(k.read_doc(item))
    return AuditEvent.model_validate({**data, "seq": k.integer(item["seq"])})


__all__ = [
    "TTL_ATTRIBUTE",
    "event_from",
    "event_item",
    "expiry",
    "ready_attrs",
    "run_attrs",
    "run_from",
    "run_item",
    "step_attrs",
    "step_from",
    "step_item",
    "steps_left_item",
    "unfinished_item",
]
