"""``InMemoryStateStore``: the state store for ``--ephemeral`` and unit tests.

One lock guards everything, so each method is one atomic step, which is exactly what the
conditional writes of a real store promise. Records are frozen models and are stored as given
(no copy): callers build new records with ``model_copy`` and never mutate a stored one.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from nclav.errors import ConflictError, NotFoundError
from nclav.records import (
    DriftRecord,
    RunStatus,
    StepStatus,
    TfLock,
    check_finish_status,
    check_run_steps,
)
from nclav.runtime.stores import (
    claimable,
    claimed,
    finished,
    holds,
    lease_expired,
    renewed,
    stuck_ready,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pydantic import JsonValue

    from nclav.records import AuditEvent, IacRun, Run, StepRecord
    from nclav.state import EnclaveState


class InMemoryStateStore:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._enclaves: dict[str, tuple[EnclaveState, int]] = {}
        self._runs: dict[str, Run] = {}
        self._run_seq = 0
        self._steps: dict[str, dict[str, StepRecord]] = {}
        # Per run, the ids of its steps that are not final: kept beside the steps (every
        # write goes through _store_steps or _keep) so has_unfinished_steps is O(1).
        self._unfinished: dict[str, set[str]] = {}
        self._events: list[AuditEvent] = []
        self._drift: dict[tuple[str, str], DriftRecord] = {}
        self._iac_runs: dict[str, IacRun] = {}  # insertion order breaks started_at ties
        self._locks: dict[str, TfLock] = {}
        self._tf_state: dict[str, str] = {}
        self._partitions: dict[str, tuple[str, float]] = {}

    def ping(self) -> None:
        return None

    # -- enclaves ----------------------------------------------------------------------------

    def get_enclave(self, enclave_id: str) -> tuple[EnclaveState, int] | None:
        with self._lock:
            return self._enclaves.get(enclave_id)

    def list_enclaves(self) -> list[EnclaveState]:
        with self._lock:
            return [self._enclaves[eid][0] for eid in sorted(self._enclaves)]

    def put_enclave(self, state: EnclaveState, expected_version: int | None) -> int:
        with self._lock:
            current = self._enclaves.get(state.enclave_id)
            version = current[1] if current else None
            if version != expected_version:
                raise ConflictError(
                    f"enclave {state.enclave_id}: expected version {expected_version}, "
                    f"found {version}"
                )
            new_version = (version or 0) + 1
            self._enclaves[state.enclave_id] = (state, new_version)
            return new_version

    def delete_enclave(self, enclave_id: str, expected_version: int) -> None:
        with self._lock:
            current = self._enclaves.get(enclave_id)
            version = current[1] if current else None
            if version != expected_version:
                raise ConflictError(
                    f"enclave {enclave_id}: expected version {expected_version}, found {version}"
                )
            del self._enclaves[enclave_id]

    # -- runs ----------------------------------------------------------------------------

    def create_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        check_run_steps(run, steps)
        with self._lock:
            if run.id in self._runs:
                raise ConflictError(f"run {run.id} already exists")
            self._run_seq += 1
            stored = run.model_copy(update={"seq": self._run_seq})
            self._runs[run.id] = stored
            self._store_steps(run.id, steps)
            return stored

    def get_run(self, run_id: str) -> Run | None:
        with self._lock:
            return self._runs.get(run_id)

    def list_runs(self, limit: int = 50, status: RunStatus | None = None) -> list[Run]:
        with self._lock:
            runs = sorted(self._runs.values(), key=lambda r: r.seq, reverse=True)
        return [r for r in runs if status is None or r.status == status][: max(limit, 0)]

    def update_run(self, run: Run, expect: RunStatus | None = None) -> Run:
        with self._lock:
            stored = self._runs.get(run.id)
            if stored is None:
                raise NotFoundError(f"run not found: {run.id}")
            if stored.status.final:
                raise ConflictError(f"run {run.id} is already {stored.status}")
            if expect is not None and stored.status != expect:
                raise ConflictError(f"run {run.id} is {stored.status}, not {expect}")
            updated = run.model_copy(update={"seq": stored.seq})
            self._runs[run.id] = updated
            return updated

    def begin_run(self, run: Run, steps: Sequence[StepRecord]) -> Run:
        check_run_steps(run, steps)
        with self._lock:
            stored = self._runs.get(run.id)
            if stored is None:
                raise NotFoundError(f"run not found: {run.id}")
            if stored.status != RunStatus.QUEUED or self._steps.get(run.id):
                raise ConflictError(f"run {run.id} has already begun")
            updated = run.model_copy(update={"seq": stored.seq})
            self._runs[run.id] = updated
            self._store_steps(run.id, steps)
            return updated

    def list_unfinished_runs(self) -> list[Run]:
        with self._lock:
            runs = [r for r in self._runs.values() if not r.status.final]
        return sorted(runs, key=lambda r: r.seq)

    # -- steps ---------------------------------------------------------------------------

    def list_steps(self, run_id: str) -> list[StepRecord]:
        with self._lock:
            return list(self._steps.get(run_id, {}).values())

    def get_step(self, run_id: str, step_id: str) -> StepRecord | None:
        with self._lock:
            return self._steps.get(run_id, {}).get(step_id)

    def get_steps(self, run_id: str, step_ids: Sequence[str]) -> dict[str, StepRecord]:
        with self._lock:
            steps = self._steps.get(run_id, {})
            return {i: steps[i] for i in step_ids if i in steps}

    def has_unfinished_steps(self, run_id: str) -> bool:
        with self._lock:
            return bool(self._unfinished.get(run_id))

    def _store_steps(self, run_id: str, steps: Sequence[StepRecord]) -> None:
        self._steps[run_id] = {s.step_id: s.model_copy(update={"version": 1}) for s in steps}
        self._unfinished[run_id] = {s.step_id for s in steps if not s.status.final}

    def _keep(self, new: StepRecord) -> StepRecord:
        """Store a changed step (its version already moved on)."""
        self._steps[new.run_id][new.step_id] = new
        if new.status.final:
            self._unfinished[new.run_id].discard(new.step_id)
        else:
            self._unfinished[new.run_id].add(new.step_id)
        return new

    def claim_step(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> StepRecord | None:
        with self._lock:
            step = self.get_step(run_id, step_id)
            if step is None or not claimable(step, now):
                return None
            return self._keep(claimed(step, owner, lease_s, now))

    def _held(self, run_id: str, step_id: str, owner: str) -> StepRecord | None:
        step = self.get_step(run_id, step_id)
        return step if holds(step, owner) else None

    def renew_lease(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> bool:
        with self._lock:
            step = self._held(run_id, step_id, owner)
            if step is None:
                return False
            self._keep(renewed(step, lease_s, now))
            return True

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
        check_finish_status(status)
        with self._lock:
            step = self._held(run_id, step_id, owner)
            if step is None:
                return None
            return self._keep(finished(step, status, error, now, not_before))

    def update_step(self, step: StepRecord, expected_version: int) -> StepRecord:
        with self._lock:
            stored = self.get_step(step.run_id, step.step_id)
            if stored is None:
                raise NotFoundError(f"step not found: {step.run_id}/{step.step_id}")
            if stored.version != expected_version:
                raise ConflictError(
                    f"step {step.step_id}: expected version {expected_version}, "
                    f"found {stored.version}"
                )
            return self._keep(step.model_copy(update={"version": expected_version + 1}))

    def list_expired_leases(self, now: float) -> list[StepRecord]:
        with self._lock:
            runs = sorted(self._runs.values(), key=lambda r: r.seq)
            return [
                s for run in runs for s in self._steps[run.id].values() if lease_expired(s, now)
            ]

    def list_stuck_ready_steps(self, older_than: float) -> list[StepRecord]:
        with self._lock:
            # The unfinished-step sets are the index: finished runs are never looked at.
            runs = sorted(
                (self._runs[r] for r, left in self._unfinished.items() if left),
                key=lambda r: r.seq,
            )
            return [
                s
                for run in runs
                for s in self._steps[run.id].values()
                if stuck_ready(s, older_than)
            ]

    # -- audit events ----------------------------------------------------------------------

    def append_event(self, event: AuditEvent) -> AuditEvent:
        with self._lock:
            stored = event.model_copy(update={"seq": len(self._events) + 1})
            self._events.append(stored)
            return stored

    def list_events(
        self, enclave_id: str | None = None, limit: int = 100, *, run_id: str | None = None
    ) -> list[AuditEvent]:
        found: list[AuditEvent] = []
        with self._lock:
            for event in reversed(self._events):
                if len(found) >= limit:
                    break
                if enclave_id is not None and event.enclave_id != enclave_id:
                    continue
                if run_id is not None and event.run_id != run_id:
                    continue
                found.append(event)
        found.reverse()
        return found

    # -- IaC runs ------------------------------------------------------------------------------

    def put_iac_run(self, run: IacRun) -> None:
        with self._lock:
            self._iac_runs[run.id] = run

    def get_iac_run(self, run_id: str) -> IacRun | None:
        with self._lock:
            return self._iac_runs.get(run_id)

    def list_iac_runs(self, enclave_id: str, partition_id: str, limit: int = 100) -> list[IacRun]:
        with self._lock:
            runs = [
                (r.started_at, i, r)
                for i, r in enumerate(self._iac_runs.values())
                if r.enclave_id == enclave_id and r.partition_id == partition_id
            ]
        runs.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return [r for _, _, r in runs[: max(limit, 0)]]

    # -- Terraform locks and state pointers ----------------------------------------------------

    def put_drift(self, record: DriftRecord) -> None:
        with self._lock:
            self._drift[(record.enclave_id, record.partition_id)] = record

    def get_drift(self, enclave_id: str, partition_id: str) -> DriftRecord | None:
        with self._lock:
            return self._drift.get((enclave_id, partition_id))

    def delete_drift(self, enclave_id: str, partition_id: str) -> None:
        with self._lock:
            self._drift.pop((enclave_id, partition_id), None)

    def list_drift(self, enclave_id: str | None = None) -> list[DriftRecord]:
        with self._lock:
            return [
                r
                for k, r in sorted(self._drift.items())
                if enclave_id is None or k[0] == enclave_id
            ]

    def lock(self, key: str, info: Mapping[str, JsonValue]) -> TfLock | None:
        with self._lock:
            holder = self._locks.get(key)
            if holder is not None:
                return holder
            self._locks[key] = TfLock(key=key, info=dict(info))
            return None

    def unlock(self, key: str, lock_id: str | None) -> TfLock | None:
        with self._lock:
            holder = self._locks.get(key)
            if holder is None:
                return None
            if lock_id is not None and lock_id != holder.lock_id:
                return holder
            del self._locks[key]
            return None

    def get_lock(self, key: str) -> TfLock | None:
        with self._lock:
            return self._locks.get(key)

    def get_tf_state(self, key: str) -> str | None:
        with self._lock:
            return self._tf_state.get(key)

    def set_tf_state(self, key: str, blob_key: str | None) -> None:
        with self._lock:
            if blob_key is None:
                self._tf_state.pop(key, None)
            else:
                self._tf_state[key] = blob_key

    def list_tf_states(self, enclave_id: str) -> list[str]:
        prefix = f"{enclave_id}/"
        with self._lock:
            return sorted(k for k in self._tf_state if k.startswith(prefix))

    def swap_tf_state(self, key: str, expected: str | None, blob_key: str) -> bool:
        with self._lock:
            if self._tf_state.get(key) != expected:
                return False
            self._tf_state[key] = blob_key
            return True

    # -- partition mutex -------------------------------------------------------------------------

    def acquire_partition(self, key: str, owner: str, lease_s: float, now: float) -> bool:
        with self._lock:
            current = self._partitions.get(key)
            if current is not None and current[0] != owner and current[1] > now:
                return False
            self._partitions[key] = (owner, now + lease_s)
            return True

    def release_partition(self, key: str, owner: str) -> bool:
        with self._lock:
            current = self._partitions.get(key)
            if current is None or current[0] != owner:
                return False
            del self._partitions[key]
            return True


__all__ = ["InMemoryStateStore"]
