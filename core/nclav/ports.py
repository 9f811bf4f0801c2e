"""The ports: what the engine, the API and the Terraform state backend need from a runtime.

Each runtime (local, AWS, GCP, Azure) implements these protocols; every implementation passes
the same contract suite in ``tests/contract``. The rules a cloud adapter must keep:

* Every conditional write (enclave versions, step claims and leases, Terraform locks, the
  partition mutex) is a single conditional operation in the backing service, so it holds
  across processes and machines, never a read followed by a write.
* A lost condition raises ``ConflictError`` (or returns ``None``/``False`` where the method
  says so); SDK exceptions never escape an adapter.
* Times the store compares are epoch seconds passed in by the caller (``now``), never read
  from the store's own clock, so a ``ManualClock`` drives every lease in tests.
"""

from __future__ import annotations

import re
import threading
import time
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from nclav.errors import Issue, SpecError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pydantic import JsonValue

    from nclav.model import PartitionConfig
    from nclav.records import (
        AuditEvent,
        DriftRecord,
        IacRun,
        Run,
        RunStatus,
        StepRecord,
        StepStatus,
        TfLock,
    )
    from nclav.state import EnclaveState


class Clock(Protocol):
    def now(self) -> float:
        """Epoch seconds."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now


class StateStore(Protocol):
    """Applied state, runs and steps, audit events, IaC runs and Terraform locks."""

    def ping(self) -> None:
        """Return if the store answers; raise otherwise (``/ready``)."""
        ...

    # -- enclaves: versioned documents (optimistic concurrency) -------------------------

    def get_enclave(self, enclave_id: str) -> tuple[EnclaveState, int] | None: ...

    def list_enclaves(self) -> list[EnclaveState]:
        """Every enclave, sorted by id."""
        ...

    def put_enclave(self, state: EnclaveState, expected_version: int | None) -> int:
        """Write ``state`` if the stored version is ``expected_version`` and return the new one.

        ``None`` means the enclave must not exist yet. Versions start at 1.
        Raises ``ConflictError`` on a mismatch.
        """
        ...

    def delete_enclave(self, enclave_id: str, expected_version: int) -> None:
        """Raises ``ConflictError`` unless the enclave exists at ``expected_version``."""
        ...

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        """Store a run and its steps in one write; returns the run with its ``seq``.

        Steps keep the given order in ``list_steps``. Raises ``ConflictError`` if the id exists.
        """
        ...

    def get_run(self, run_id: str) -> Run | None: ...

    def list_runs(self, limit: int = 50, status: RunStatus | None = None) -> list[Run]:
        """Newest first."""
        ...

    def update_run(self, run: Run, expect: RunStatus | None = None) -> Run:
        """Replace a run's document (``seq`` stays the store's).

        Raises ``NotFoundError`` for an unknown run and ``ConflictError`` when the stored run
        is already final (succeeded, failed or cancelled), so a run is finalised exactly once,
        or, with ``expect``, when the stored run's status is not ``expect`` (a conditional
        move: queued -> awaiting approval must not overwrite a run another worker began).
        """
        ...

    def begin_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        """Move a queued run to ``run`` (running) and give it ``steps``, in one atomic write.

        A run planned when it starts (``plan_on_start``) gets its steps here, against the
        applied state of that moment. Raises ``ConflictError`` unless the stored run is still
        queued and has no steps (another worker began it first).
        """
        ...

    def list_unfinished_runs(self) -> list[Run]:
        """Queued, awaiting-approval and running runs, oldest (lowest ``seq``) first."""
        ...

    # -- steps -----------------------------------------------------------------------------

    def list_steps(self, run_id: str) -> list[StepRecord]:
        """In the order given to ``create_run``."""
        ...

    def get_step(self, run_id: str, step_id: str) -> StepRecord | None: ...

    def get_steps(self, run_id: str, step_ids: Sequence[str]) -> dict[str, StepRecord]:
        """The steps named, each read as ``get_step`` would, by id; unknown ids are absent.

        A few requests whatever their number (the engine's fan-out reads a finished step's
        dependents, then their dependencies, in one call each).
        """
        ...

    def has_unfinished_steps(self, run_id: str) -> bool:
        """Whether any step of the run is not final (pending, ready or running).

        Cheap whatever the run's size (an indexed lookup or a counter, never a listing): the
        engine asks after every finished step whether the run is done. Exact once the write
        that finished a step has returned, including under concurrent finishes: the last of
        them to return sees ``False``. An unknown run, or one without steps, has none.
        """
        ...

    def claim_step(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> StepRecord | None:
        """Take a step under a lease, or return ``None`` if it is not claimable.

        Claimable: ready with ``not_before`` unset or ``<= now``, or running with a lease
        that expired (``lease_expires_at <= now``). The claim sets status running, the lease,
        ``started_at`` and adds one to ``attempts``.
        """
        ...

    def renew_lease(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> bool:
        """Extend the lease to ``now + lease_s`` if ``owner`` still holds the step."""
        ...

    def finish_step(
        self,
        run_id: str,
        step_id: str,
        owner: str,
        status: StepStatus,
        error: str | None,
        now: float,
        *,
        not_before: float | None = None,
    ) -> StepRecord | None:
        """Record the outcome if ``owner`` still holds the step; ``None`` if it does not.

        Releases the lease. ``status`` is final, or ``ready`` with ``not_before`` to hand the
        step back for a retry after a backoff; then ``sent_at`` becomes ``now``, as the caller
        sends the step's message (delayed until ``not_before``) right after.
        """
        ...

    def update_step(self, step: StepRecord, expected_version: int) -> StepRecord:
        """Replace a step if it is at ``expected_version``; returns it at the next version.

        Raises ``NotFoundError`` for an unknown step, ``ConflictError`` on a mismatch.
        """
        ...

    def list_expired_leases(self, now: float) -> list[StepRecord]:
        """Running steps whose lease ran out (their worker died or stalled)."""
        ...

    def list_stuck_ready_steps(self, older_than: float) -> list[StepRecord]:
        """Ready steps whose ``sent_at`` and ``not_before`` are both ``<= older_than``.

        Those whose queue message was lost: sent (or due) longer ago than a delivery takes.
        An unset ``sent_at`` or ``not_before`` counts as 0. Read through an index of ready
        steps (never every step of every run): the sweeper asks on each pass. Steps of runs
        in any status are included, oldest run first, each run's in plan order.
        """
        ...

    # -- audit events ------------------------------------------------------------------------

    def append_event(self, event: AuditEvent) -> AuditEvent:
        """Append; returns the event with its ``seq`` (strictly increasing)."""
        ...

    def list_events(
        self, enclave_id: str | None = None, limit: int = 100, *, run_id: str | None = None
    ) -> list[AuditEvent]:
        """The last ``limit`` events matching the filters, oldest first."""
        ...

    # -- IaC runs ----------------------------------------------------------------------------

    def put_iac_run(self, run: IacRun) -> None:
        """Insert or replace by id."""
        ...

    def get_iac_run(self, run_id: str) -> IacRun | None: ...

    def list_iac_runs(self, enclave_id: str, partition_id: str, limit: int = 100) -> list[IacRun]:
        """Newest ``started_at`` first."""
        ...

    # -- drift: one record per partition (``nclav.drift``) ------------------------------------

    def put_drift(self, record: DriftRecord) -> None:
        """Insert or replace the record of (``enclave_id``, ``partition_id``)."""
        ...

    def get_drift(self, enclave_id: str, partition_id: str) -> DriftRecord | None: ...

    def delete_drift(self, enclave_id: str, partition_id: str) -> None:
        """Forget a partition's record (it was torn down); a missing one is not an error."""
        ...

    def list_drift(self, enclave_id: str | None = None) -> list[DriftRecord]:
        """Every record (or the enclave's), sorted by enclave id then partition id."""
        ...

    # -- Terraform state locks and state pointers --------------------------------------------

    def lock(self, key: str, info: Mapping[str, JsonValue]) -> TfLock | None:
        """Take the lock: ``None`` when acquired, else the current holder (even for its ID)."""
        ...

    def unlock(self, key: str, lock_id: str | None) -> TfLock | None:
        """Release the lock held under ``lock_id``; ``None`` forces.

        Returns ``None`` when released or when there was no lock, and the holder, untouched,
        when it holds another ID.
        """
        ...

    def get_lock(self, key: str) -> TfLock | None: ...

    def get_tf_state(self, key: str) -> str | None:
        """The blob key of the current Terraform state version."""
        ...

    def set_tf_state(self, key: str, blob_key: str | None) -> None: ...

    def list_tf_states(self, enclave_id: str) -> list[str]:
        """Keys (``enclave/partition``) of the enclave's partitions that have a current state.

        May lag a write by a moment on stores that answer it from an index (DynamoDB).
        """

    def swap_tf_state(self, key: str, expected: str | None, blob_key: str) -> bool:
        """Point ``key`` at ``blob_key`` only if it still points at ``expected`` (``None``: no
        pointer); False, changing nothing, otherwise. How concurrent state POSTs each get
        their own version number."""
        ...

    # -- partition mutex: one terraform process per partition, across processes ------------

    def acquire_partition(self, key: str, owner: str, lease_s: float, now: float) -> bool:
        """Take or renew the mutex; succeeds if free, expired, or already ``owner``'s."""
        ...

    def release_partition(self, key: str, owner: str) -> bool:
        """Release if ``owner`` holds it."""
        ...


class IacRunner(Protocol):
    """Runs a partition's Terraform/OpenTofu: apply returns its declared outputs.

    ``nclav.iac.partition.PartitionIac`` is the implementation (workspace, IaC run record, shipped
    log, per-partition mutex, loopback state backend); a runtime that runs Terraform elsewhere
    provides another.
    """

    def apply(
        self,
        run_id: str | None,
        enclave_id: str,
        config: PartitionConfig,
        files: Mapping[str, bytes],
        inputs: Mapping[str, str],
        env: Mapping[str, str],
        *,
        update: bool,
    ) -> dict[str, str]: ...

    def destroy(
        self,
        run_id: str | None,
        enclave_id: str,
        config: PartitionConfig | None,
        files: Mapping[str, bytes],
        env: Mapping[str, str],
    ) -> bool:
        """``terraform destroy``; False when there was nothing to destroy.

        ``files``: the partition's files as last started (from the bundle recorded when its
        apply began): when the working directory is not on this machine (and none was saved),
        it is rebuilt from them. A successful destroy removes the working directory and the
        saved workspace.
        """
        ...


class WorkQueue(Protocol):
    """Messages such as ``{"run_id": ..., "step_id": ...}``, delivered at least once.

    How messages are consumed is the runtime's: a worker pool calling a handler locally, a
    function trigger in the cloud. A handler that raises gets the message again later.
    """

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None: ...

    def close(self) -> None:
        """Stop consuming; a message being handled finishes first."""
        ...


class BlobStore(Protocol):
    """Bytes under '/'-separated keys (bundles, IaC logs, Terraform state versions)."""

    def put(self, key: str, data: bytes) -> None:
        """Replace the whole object at once: a reader sees the old or the new bytes."""
        ...

    def get(self, key: str) -> bytes:
        """Raises ``NotFoundError``."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Deleting a missing key is not an error."""
        ...

    def append(self, key: str, data: bytes) -> None:
        """Add to the end, creating the object; what was appended is readable at once."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        ...


@runtime_checkable
class SignedUploads(Protocol):
    """Optional ``BlobStore`` capability: a client uploads an object straight to the store.

    For runtimes whose API cannot take large request bodies (an AWS function URL takes 6 MB;
    GCS and Azure Blob have the same signed-URL shape). The URL is good for one PUT of exactly
    ``size`` bytes whose SHA-256 is ``sha256`` (hex) where the store can bind it; the API
    checks the digest of what arrived before using it either way.
    """

    def upload_url(
        self, key: str, size: int, sha256: str, expires_s: int
    ) -> tuple[str, dict[str, str]]:
        """A URL to PUT the object at ``key`` to, and the headers the PUT must send."""
        ...


class SecretStore(Protocol):
    def get(self, name: str) -> str | None: ...

    def put(self, name: str, value: str) -> None: ...


class InvalidKeyError(SpecError):
    """A blob key or secret name that could escape its namespace or is malformed."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__([Issue(path=repr(key), line=None, field="", message=message)])
        self.key = key


_MAX_KEY = 1024
_SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_blob_key(key: str) -> str:
    """Return ``key`` if it is a relative '/'-separated key with no empty, '.' or '..' part."""
    if not key or len(key) > _MAX_KEY:
        raise InvalidKeyError(key, f"a blob key has 1-{_MAX_KEY} characters")
    if "\\" in key or "\0" in key:
        raise InvalidKeyError(key, "a blob key cannot contain '\\' or NUL")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidKeyError(key, "a blob key is relative, with no empty, '.' or '..' part")
    return key


def check_secret_name(name: str) -> str:
    if not _SECRET_NAME.fullmatch(name):
        raise InvalidKeyError(name, "a secret name is 1-128 letters, digits, '.', '_' or '-'")
    return name


__all__ = [
    "BlobStore",
    "Clock",
    "InvalidKeyError",
    "ManualClock",
    "SecretStore",
    "SignedUploads",
    "StateStore",
    "SystemClock",
    "WorkQueue",
    "check_blob_key",
    "check_secret_name",
]
