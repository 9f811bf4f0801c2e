"""Drift records as the API serves them, with the models the OpenAPI document publishes."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from nclav.records import DriftRecord, DriftStatus, ResourceDrift, iso_time

if TYPE_CHECKING:
    from collections.abc import Iterable

    from nclav.ports import StateStore

_VIEW = ConfigDict(extra="forbid", defer_build=True)


def every_partition(store: StateStore, enclave_id: str | None = None) -> list[DriftRecord]:
    """The drift record of every applied partition (of ``enclave_id``), by enclave then
    partition id; a partition the schedule has not seen yet reads ``not_checked``."""
    records = {(r.enclave_id, r.partition_id): r for r in store.list_drift(enclave_id)}
    found: list[DriftRecord] = []
    for state in store.list_enclaves():
        if enclave_id is not None and state.enclave_id != enclave_id:
            continue
        for pid in sorted(state.partitions):
            where = (state.enclave_id, pid)
            found.append(records.get(where) or DriftRecord(enclave_id=where[0], partition_id=pid))
    return found


def drift_json(record: DriftRecord, *, plan_text: bool = False) -> dict[str, Any]:
    """One partition's drift; ``plan_text`` adds the plan's text (long: single views only)."""
    doc: dict[str, Any] = {
        "enclave_id": record.enclave_id,
        "partition_id": record.partition_id,
        "status": record.status.value,
        "acknowledged": record.is_acknowledged,
        "checked_at": record.checked_at,
        "next_check_at": iso_time(record.next_due) if record.next_due is not None else None,
        "checking": record.in_flight_until is not None,
        "resource_drift": [r.model_dump(mode="json") for r in record.resource_drift],
        "fingerprint": record.fingerprint,
        "error": record.error,
        "iac_run_id": record.iac_run_id,
        "remediation_run_id": record.remediation_run_id,
    }
    if plan_text:
        doc["plan_text"] = record.plan_text
    return doc


def drift_counts(records: Iterable[DriftRecord]) -> dict[str, int]:
    """Partitions by drift status, plus ``acknowledged`` (in sync only by acknowledgement)."""
    found = list(records)
    counts = Counter(r.status.value for r in found)
    out = {s.value: counts.get(s.value, 0) for s in DriftStatus}
    out["acknowledged"] = sum(1 for r in found if r.is_acknowledged)
    return out


def unresolved(records: Iterable[DriftRecord]) -> int:
    """Partitions drifted and not acknowledged (what ``nclav drift`` exits 1 for)."""
    return sum(1 for r in records if r.status == DriftStatus.DRIFTED)


class DriftView(BaseModel):
    """``drift_json``: a partition's last drift check and the next one."""

    model_config = _VIEW
    enclave_id: str
    partition_id: str
    status: DriftStatus
    acknowledged: bool
    checked_at: str | None
    next_check_at: str | None
    checking: bool
    resource_drift: list[ResourceDrift]
    fingerprint: str | None
    error: str | None
    iac_run_id: str | None
    remediation_run_id: str | None
    plan_text: str | None = None


class DriftCounts(BaseModel):
    model_config = _VIEW
    not_checked: int
    in_sync: int
    drifted: int
    check_failed: int
    acknowledged: int


class DriftList(BaseModel):
    """``GET /drift``: every partition's drift (or one enclave's) and the counts."""

    model_config = _VIEW
    partitions: list[DriftView]
    counts: DriftCounts


class DriftCheckQueued(BaseModel):
    """``POST .../drift/check``: the check was sent to the workers."""

    model_config = _VIEW
    enclave_id: str
    partition_id: str
    status: str
    drift: str
    iac_runs: str


__all__ = [
    "DriftCheckQueued",
    "DriftCounts",
    "DriftList",
    "DriftView",
    "drift_counts",
    "drift_json",
    "every_partition",
    "unresolved",
]
