"""What the engine persists besides ``EnclaveState``: runs, steps, audit events, IaC runs, locks.

Every record is a frozen pydantic model, so the same document travels through every store and
the HTTP API. Fields a store owns (a run's and an event's ``seq``, a step's ``version``) are
assigned by the store on write; whatever the caller put there is ignored.

Times people read (``created_at``, ``at``, ...) are RFC 3339 strings in UTC, like the applied
state's; times the engine compares (``lease_expires_at``, ``not_before``) are epoch seconds
from the injected ``Clock``, so tests can move time by hand.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from nclav.plan import Action, Step

if TYPE_CHECKING:
    from collections.abc import Sequence

_RECORD = ConfigDict(frozen=True, extra="forbid", defer_build=True)


def new_id() -> str:
    return str(uuid.uuid4())


def iso_time(ts: float) -> str:
    """Epoch seconds as the fixed-width UTC text used in every record (sorts as it reads)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RunStatus(StrEnum):
    QUEUED = "queued"
    # Planned, but its plan exceeds the delete guard: it holds its enclaves (later runs wait
    # behind it) until ``approve`` or ``cancel`` decides it, or a later reconcile supersedes it.
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # cancelled, or superseded, before any step ran

    @property
    def final(self) -> bool:
        return self in _FINAL_RUN


_FINAL_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
UNFINISHED_RUN = tuple(s for s in RunStatus if not s.final)


class StepStatus(StrEnum):
    PENDING = "pending"  # waiting for dependencies
    READY = "ready"  # dependencies met; may be claimed once not_before has passed
    RUNNING = "running"  # claimed under a lease
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"  # a conditional step whose inputs did not move
    FAILED = "failed"
    BLOCKED = "blocked"  # a dependency failed

    @property
    def final(self) -> bool:
        return self in _FINAL_STEP


_FINAL_STEP = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.SKIPPED, StepStatus.FAILED, StepStatus.BLOCKED}
)


class Approval(BaseModel):
    """Why a run waits for approval, and the plan that was shown (``GET /runs/{id}``).

    ``plan_digest`` identifies the plan: approving re-plans, and the run begins only when the
    new plan has the same digest (otherwise the new plan is shown and asked about again).
    """

    model_config = _RECORD

    reason: str  # "7 deletions, limit 5" or "deletes every enclave (3)"
    deletions: tuple[str, ...]  # "enclave a", "partition a/p" (an enclave's own included)
    limit: int  # the run's delete limit
    every: int = 0  # enclaves held when the plan deletes every one of them, else 0
    plan_digest: str
    changes: tuple[dict[str, JsonValue], ...] = ()  # the plan's changes (at most 1000 kept)


class RunOrigin(BaseModel):
    """Where a run's tree came from when a git push (or the source's poll) started it."""

    model_config = _RECORD

    repository: str  # the source URL, never with credentials in it
    ref: str
    commit: str
    author: str = ""
    message: str = ""  # the first line of the commit message
    delivery: str | None = None  # the webhook delivery id; None for a poll or a manual sync


class RunAttempt(BaseModel):
    """An earlier try of a retried run, kept on each later try (``Run.attempts``)."""

    model_config = _RECORD

    attempt: int  # 1 for the original run
    run_id: str
    status: RunStatus
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    errors: tuple[str, ...] = ()


class Run(BaseModel):
    """One reconcile or destroy: the plan's steps carried out for a bundle (or a teardown)."""

    model_config = _RECORD

    id: str = Field(default_factory=new_id)
    seq: int = 0
    status: RunStatus = RunStatus.QUEUED
    dry_run: bool = False
    bundle: str | None = None  # the bundle's sha256 digest
    enclave_ids: tuple[str, ...] = ()
    trigger: str = "api"
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    changes: int = 0
    errors: tuple[str, ...] = ()
    # Planned when it begins (behind earlier runs on the same enclaves), not when requested.
    plan_on_start: bool = False
    # An imperative destroy (no bundle), planned when it begins: these enclaves, or with
    # ``teardown_partition`` that one partition of the single enclave in ``enclave_ids``.
    teardown_enclaves: tuple[str, ...] = ()
    teardown_partition: str | None = None
    # Tear down partitions only; enclaves (account, project, network) and their records stay.
    resources_only: bool = False
    # The delete guard: the request's own limit (only ever lowers the server's) and whether
    # the request lifted the guard for this run.
    max_deletes: int | None = None
    allow_delete: bool = False
    approval: Approval | None = None  # set while (and after) the run awaited approval
    approved_digest: str | None = None  # the plan an approver accepted
    origin: RunOrigin | None = None  # set for runs started from the git source
    # A retry (``Engine.retry``) is a new run re-planning the same tree (or teardown) when
    # it begins: ``retry_of`` names the run it retries, ``attempt`` counts the tries (1 for
    # a first run) and ``attempts`` keeps every earlier try (which, when, its errors).
    retry_of: str | None = None
    attempt: int = 1
    attempts: tuple[RunAttempt, ...] = ()


class StepRecord(BaseModel):
    """A plan ``Step`` inside a run, with its progress and lease."""

    model_config = _RECORD

    run_id: str
    step_id: str
    action: Action
    enclave_id: str
    target: str | None = None
    depends_on: tuple[str, ...] = ()
    # The steps that depend on this one (``depends_on`` inverted, in plan order), so that a
    # finished step visits only those instead of every step of its run.
    dependents: tuple[str, ...] = ()
    conditional: bool = False
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    not_before: float | None = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    version: int = 0
    # When the engine last sent the step's queue message (epoch seconds; None: never). A
    # ready step is stuck, its message lost, only once both this and ``not_before`` are
    # older than the lease window: the sweeper re-sends those and no other ready step.
    sent_at: float | None = None

    @classmethod
    def of(cls, run_id: str, step: Step, dependents: tuple[str, ...] = ()) -> StepRecord:
        """A fresh record: ready when the step has no dependencies, pending otherwise.

        A run's records come from ``step_records``, which also fills in ``dependents``.
        """
        return cls(
            run_id=run_id,
            step_id=step.id,
            action=step.action,
            enclave_id=step.enclave_id,
            target=step.target,
            depends_on=step.depends_on,
            dependents=dependents,
            conditional=step.conditional,
            status=StepStatus.PENDING if step.depends_on else StepStatus.READY,
        )


def ready_since(step: StepRecord) -> float:
    """When a ready step's message was sent or became deliverable, whichever is later.

    The one rule of ``StateStore.list_stuck_ready_steps`` (an unset time counts as 0), which
    the stores index: a delayed retry is not stuck before its ``not_before`` has passed.
    """
    return max(step.sent_at or 0.0, step.not_before or 0.0)


def step_records(run_id: str, steps: Sequence[Step]) -> list[StepRecord]:
    """The fresh records of a run's plan steps, each knowing the steps that depend on it.

    ``dependents`` is computed here, once per run, so the engine's fan-out after a finished
    step touches only that step's neighbours, never the whole run. A dependency outside
    ``steps`` is ignored, as the engine ignores it when it decides whether a step is ready.
    """
    known = {s.id for s in steps}
    dependents: dict[str, list[str]] = {s.id: [] for s in steps}
    for step in steps:
        for dep in dict.fromkeys(step.depends_on):  # a repeated dependency counts once
            if dep in known:
                dependents[dep].append(step.id)
    return [StepRecord.of(run_id, s, tuple(dependents[s.id])) for s in steps]


def check_run_steps(run: Run, steps: Sequence[StepRecord]) -> None:
    """What every store checks before ``create_run``."""
    ids = [s.step_id for s in steps]
    if len(set(ids)) != len(ids):
        raise ValueError(f"run {run.id}: duplicate step ids")
    if any(s.run_id != run.id for s in steps):
        raise ValueError(f"run {run.id}: every step must carry its run's id")


def check_finish_status(status: StepStatus) -> None:
    """What every store checks before ``finish_step``: a finished step is not running."""
    if status in (StepStatus.RUNNING, StepStatus.PENDING):
        raise ValueError(f"a step cannot finish as {status}")


class EventKind(StrEnum):
    RECONCILE_STARTED = "ReconcileStarted"
    RECONCILE_COMPLETED = "ReconcileCompleted"
    ENCLAVE_PROVISIONED = "EnclaveProvisioned"
    PARTITION_PROVISIONED = "PartitionProvisioned"
    EXPORT_WIRED = "ExportWired"
    IMPORT_WIRED = "ImportWired"
    ENCLAVE_ERROR = "EnclaveError"
    PARTITION_ERROR = "PartitionError"
    # Added kinds: the original wrote no events for teardown.
    ENCLAVE_DELETED = "EnclaveDeleted"
    PARTITION_DELETED = "PartitionDeleted"
    EXPORT_UNWIRED = "ExportUnwired"
    IMPORT_UNWIRED = "ImportUnwired"
    # The delete guard: a run stopped for approval, and an approval given.
    RECONCILE_AWAITING_APPROVAL = "ReconcileAwaitingApproval"
    RUN_APPROVED = "RunApproved"
    # Drift detection (``nclav.drift``): a check found drift, or drift went away.
    DRIFT_DETECTED = "DriftDetected"
    DRIFT_RESOLVED = "DriftResolved"


_RUN_KINDS = frozenset(
    {
        EventKind.RECONCILE_STARTED,
        EventKind.RECONCILE_COMPLETED,
        EventKind.RECONCILE_AWAITING_APPROVAL,
        EventKind.RUN_APPROVED,
    }
)
_IMPORT_KINDS = frozenset({EventKind.IMPORT_WIRED, EventKind.IMPORT_UNWIRED})

EventField = str | int | bool | None


class AuditEvent(BaseModel):
    """One line of the append-only audit log.

    ``enclave_id`` is the enclave the event is filed under (for imports, the importer).
    ``fields`` holds the kind's remaining fields (``message``, ``export_name``, ``changes``,
    ``dry_run``) so the original's flat JSON shape comes back from ``to_json``.
    """

    model_config = _RECORD

    seq: int = 0
    id: str = Field(default_factory=new_id)
    kind: EventKind
    at: str
    enclave_id: str | None = None
    partition_id: str | None = None
    run_id: str | None = None
    fields: dict[str, EventField] = Field(default_factory=dict)

    def to_json(self) -> dict[str, JsonValue]:
        # The original's Reconcile events carry the run id as their id.
        ident = self.run_id if self.kind in _RUN_KINDS and self.run_id else self.id
        out: dict[str, JsonValue] = {"kind": self.kind.value, "id": ident, "at": self.at}
        if self.enclave_id is not None:
            key = "importer_enclave" if self.kind in _IMPORT_KINDS else "enclave_id"
            out[key] = self.enclave_id
        if self.partition_id is not None:
            out["partition_id"] = self.partition_id
        out.update(self.fields)
        out["seq"] = self.seq
        if self.run_id is not None:
            out["run_id"] = self.run_id
        return out


class IacOperation(StrEnum):
    PROVISION = "provision"
    UPDATE = "update"
    TEARDOWN = "teardown"
    DRIFT_CHECK = "drift_check"  # a read-only ``plan -refresh-only`` (``nclav.drift``)


class IacStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class IacRun(BaseModel):
    """One terraform invocation on a partition; stored from the moment it starts.

    ``log`` keeps the original's field (a tail, or empty while running). The whole combined
    log is in chunks under ``log_chunks`` (``nclav.iac.logs``), ``log_size`` bytes once the
    run ended; runs recorded before chunks have it in one blob at ``log_blob``.

    ``pgid``, ``host`` and ``boot_id`` name the process group of the terraform command that
    runs partition code (apply or destroy) and the machine and boot it runs in, so recovery
    after a crash can stop what is left of it on that machine only (``None``: not recorded).
    """

    model_config = _RECORD

    id: str = Field(default_factory=new_id)
    enclave_id: str
    partition_id: str
    operation: IacOperation
    status: IacStatus = IacStatus.RUNNING
    started_at: str
    finished_at: str | None = None
    exit_code: int | None = None
    reconcile_run_id: str | None = None
    log: str = ""
    log_blob: str | None = None
    log_chunks: str | None = None
    log_size: int | None = None
    pgid: int | None = None
    host: str | None = None
    boot_id: str | None = None


class DriftStatus(StrEnum):
    NOT_CHECKED = "not_checked"
    IN_SYNC = "in_sync"
    DRIFTED = "drifted"
    CHECK_FAILED = "check_failed"


class ResourceDrift(BaseModel):
    """One resource whose real state differs from its Terraform state.

    ``attributes`` are the top-level attribute names whose values changed (their values are
    left out: they may be secrets; the plan text, which terraform masks, shows them).
    ``values_digest`` hashes the new values of the changed attributes terraform does not mark
    sensitive, so other values of the same attributes make other drift.
    """

    model_config = _RECORD

    address: str
    actions: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    values_digest: str | None = None


class DriftRecord(BaseModel):
    """A partition's drift: the last check's outcome and when the next one is due.

    ``next_due`` and ``in_flight_until`` are epoch seconds from the engine's clock: a check is
    sent when ``next_due`` has passed, and counts against the concurrency limit until it
    finishes or ``in_flight_until`` passes (its worker died). ``fingerprint`` hashes the
    drifted addresses and attributes; ``acknowledged`` is the fingerprint someone accepted:
    while the two are equal the partition reads ``in_sync`` with ``acknowledged`` true.
    ``check_id`` names the requested check (``POST .../drift/check``) whose outcome this is, so
    the request waits for its own check, not one that started before it; ``None`` for a
    scheduled check.
    """

    model_config = _RECORD

    enclave_id: str
    partition_id: str
    status: DriftStatus = DriftStatus.NOT_CHECKED
    checked_at: str | None = None
    next_due: float | None = None
    in_flight_until: float | None = None
    resource_drift: tuple[ResourceDrift, ...] = ()
    fingerprint: str | None = None
    acknowledged: str | None = None
    plan_text: str = ""
    error: str | None = None
    iac_run_id: str | None = None
    remediation_run_id: str | None = None
    check_id: str | None = None

    @property
    def is_acknowledged(self) -> bool:
        return self.fingerprint is not None and self.fingerprint == self.acknowledged


class TfLock(BaseModel):
    """A Terraform state lock: the lock info exactly as terraform sent it."""

    model_config = _RECORD

    key: str
    info: dict[str, JsonValue]

    @property
    def lock_id(self) -> str | None:
        """Terraform's ``ID`` field, when it is a string."""
        value = self.info.get("ID")
        return value if isinstance(value, str) else None


__all__ = [
    "UNFINISHED_RUN",
    "Approval",
    "AuditEvent",
    "DriftRecord",
    "DriftStatus",
    "EventField",
    "EventKind",
    "IacOperation",
    "IacRun",
    "IacStatus",
    "ResourceDrift",
    "Run",
    "RunAttempt",
    "RunOrigin",
    "RunStatus",
    "StepRecord",
    "StepStatus",
    "TfLock",
    "check_finish_status",
    "check_run_steps",
    "iso_time",
    "new_id",
    "ready_since",
    "step_records",
]
