"""Records to items and back: runs, steps and events.

Steps are plain attributes (no document) because every claim, lease and compare-and-swap is
one conditional ``UpdateItem`` on them; a ``None`` field is an absent attribute, which is also
what keeps the lease index sparse. Runs and events are JSON documents beside the few
attributes their keys and conditions need.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from functions_aws._dynamo_keys import (
    LEASE_PK,
    LEASES,
    READY,
    READY_PK,
    READY_SK,
    RUNS,
    TTL_ATTRIBUTE,
    N,
    S,
    doc_attrs,
    event_key,
    events_of_enclave,
    events_of_run,
    integer,
    number,
    present,
    read_doc,
    run_key,
    seq_text,
    step_key,
    steps_left_key,
    text,
    unfinished_key,
)
from nclav.records import AuditEvent, Run, StepRecord, StepStatus, ready_since

if TYPE_CHECKING:
    from collections.abc import Sequence

    from functions_aws._dynamo_errors import AttributeValue, Item

# The table's TTL attribute (infra/aws): DynamoDB deletes runs, steps, events and IaC records
# ``NCLAV_RETENTION_DAYS`` (default 90; 0 keeps them) after they were written. Enclave and
# partition records, state pointers, locks and counters never carry it, so they never expire.
RETENTION_ENV = "NCLAV_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 90.0


def expiry() -> Item:
    """The TTL attribute of a new history item (epoch seconds, as DynamoDB TTL expects)."""
    days = float(os.environ.get(RETENTION_ENV) or DEFAULT_RETENTION_DAYS)
    return {TTL_ATTRIBUTE: N(int(time.time() + days * 86_400))} if days > 0 else {}


# -- steps ---------------------------------------------------------------------------------------


def _opt_s(value: str | None) -> AttributeValue | None:
    return None if value is None else S(value)


def _opt_n(value: float | None) -> AttributeValue | None:
    return None if value is None else N(value)


def step_attrs(step: StepRecord) -> dict[str, AttributeValue | None]:
    """Every changeable attribute of ``step`` (``None``: absent), lease index key included."""
    leased = step.status == StepStatus.RUNNING and step.lease_expires_at is not None
    return {
        "action": S(step.action.value),
        "enclave_id": S(step.enclave_id),
        "target": _opt_s(step.target),
        "depends_on": {"L": [S(d) for d in step.depends_on]},
        "dependents": {"L": [S(d) for d in step.dependents]},
        "conditional": {"BOOL": step.conditional},
        "status": S(step.status.value),
        "attempts": N(step.attempts),
        "lease_owner": _opt_s(step.lease_owner),
        "lease_expires_at": _opt_n(step.lease_expires_at),
        "not_before": _opt_n(step.not_before),
        "error": _opt_s(step.error),  # bounded by the engine (nclav.engine.bound_error)
        "started_at": _opt_s(step.started_at),
        "finished_at": _opt_s(step.finished_at),
        "version": N(step.version),
        "sent_at": _opt_n(step.sent_at),
        LEASE_PK: S(LEASES) if leased else None,
        **ready_attrs(step.status, ready_since(step)),
    }


def ready_attrs(status: StepStatus, since: float) -> dict[str, AttributeValue | None]:
    """The ready index's key: present on ready steps only (``since``: ``ready_since``)."""
    ready = status == StepStatus.READY
    return {READY_PK: S(READY) if ready else None, READY_SK: N(since) if ready else None}


def step_item(step: StepRecord, position: int, plan: str) -> Item:
    """A new step item; ``position`` orders ``list_steps``, ``plan`` ties it to its run."""
    return {
        **step_key(step.run_id, step.step_id),
        "run_id": S(step.run_id),
        "step_id": S(step.step_id),
        "pos": N(position),
        "plan": S(plan),
        **present(step_attrs(step)),
        **expiry(),
    }


def step_from(item: Item) -> StepRecord:
    return StepRecord.model_validate(
        {
            "run_id": text(item["run_id"]),
            "step_id": text(item["step_id"]),
            "action": text(item["action"]),
            "enclave_id": text(item["enclave_id"]),
            "target": text(item.get("target")),
            "depends_on": [d["S"] for d in item["depends_on"]["L"]],
            # Absent from the items of runs begun before steps knew their dependents.
            "dependents": [d["S"] for d in item.get("dependents", {"L": []})["L"]],
            "conditional": item["conditional"]["BOOL"],
            "status": text(item["status"]),
            "attempts": integer(item["attempts"]),
            "lease_owner": text(item.get("lease_owner")),
            "lease_expires_at": number(item.get("lease_expires_at")),
            "not_before": number(item.get("not_before")),
            "error": text(item.get("error")),
            "started_at": text(item.get("started_at")),
            "finished_at": text(item.get("finished_at")),
            "version": integer(item["version"]),
            "sent_at": number(item.get("sent_at")),
        }
    )


def steps_left_item(run_id: str, steps: Sequence[StepRecord]) -> Item:
    """The run's count of unfinished steps, written in the transaction that commits its steps.

    ``n`` moves (ADD -1 / +1) in the same transaction as each write that takes a step to or
    from a final status; ``total`` marks a count that was set at commit (an item made by an
    ADD alone belongs to a run begun before the count existed, and is not trusted).
    """
    return {
        **steps_left_key(run_id),
        "n": N(sum(1 for s in steps if not s.status.final)),
        "total": N(len(steps)),
        **expiry(),
    }


# -- runs ----------------------------------------------------------------------------------------


def run_attrs(run: Run) -> dict[str, AttributeValue | None]:
    """What a run update changes: its document, its status and the status index key."""
    doc = run.model_dump_json(exclude={"seq"})
    return {
        "status": S(run.status.value),
        "gsi2pk": S(f"{RUNS}#{run.status.value}"),
        **doc_attrs(doc, f"run {run.id}"),
    }


def run_item(run: Run, plan: str | None) -> Item:
    seq = seq_text(run.seq)
    return {
        **run_key(run.id),
        "seq": N(run.seq),
        "gsi1pk": S(RUNS),
        "gsi1sk": S(seq),
        "gsi2sk": S(seq),
        **present(run_attrs(run)),
        **({"plan": S(plan)} if plan else {}),
        **expiry(),
    }


def unfinished_item(run: Run) -> Item:
    """The copy of an unfinished run that ``list_unfinished_runs`` reads in seq order."""
    return {
        **unfinished_key(run.seq),
        "seq": N(run.seq),
        "run_id": S(run.id),
        **present(doc_attrs(run.model_dump_json(exclude={"seq"}), f"run {run.id}")),
        **expiry(),
    }


def run_from(item: Item) -> Run:
    data: dict[str, Any] = json.loads(read_doc(item))
    data["seq"] = integer(item["seq"])
    return Run.model_validate(data)


# -- events --------------------------------------------------------------------------------------


def event_item(event: AuditEvent) -> Item:
    seq = seq_text(event.seq)
    item: Item = {
        **event_key(event.seq),
        "seq": N(event.seq),
        **present(doc_attrs(event.model_dump_json(exclude={"seq"}), f"event {event.id}")),
        **expiry(),
    }
    if event.enclave_id is not None:
        item |= {"gsi1pk": S(events_of_enclave(event.enclave_id)), "gsi1sk": S(seq)}
    if event.run_id is not None:
        item |= {"gsi2pk": S(events_of_run(event.run_id)), "gsi2sk": S(seq)}
    return item


def event_from(item: Item) -> AuditEvent:
    data: dict[str, Any] = json.loads(read_doc(item))
    data["seq"] = integer(item["seq"])
    return AuditEvent.model_validate(data)


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
