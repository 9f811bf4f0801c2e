"""Steps: claims, leases and compare-and-swap, each one conditional write.

Every lease decision is a condition on the step document itself, so it holds across
processes. A write that takes a step to a final status (or, never in the engine, back from
one) moves the run's ``#STEPS_LEFT`` count in the same transaction, so
``has_unfinished_steps`` is one read, exact under concurrent finishes. Every other step write
stays one conditional patch; without atomic transactions (``Documents.atomic``) there is no
count, and every step write is one conditional patch. The reads are ``reads``.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from nclav.docstore import layout as lay
from nclav.docstore.port import (
    ConditionFailedError,
    ContendedError,
    Patch,
    absent,
    eq,
    exists,
    key_of,
    le,
    one_of,
)
from nclav.docstore.reads import DocStepReads
from nclav.errors import ConflictError, NotFoundError, TemporaryError
from nclav.records import StepRecord, StepStatus, check_finish_status
from nclav.runtime import backoff
from nclav.runtime.stores import claim_changes, finish_changes

if TYPE_CHECKING:
    from nclav.docstore.port import Cond, Doc, Key, Write

# Every finish of a run's steps moves the run's one count, so two finishes at the same
# instant can cancel each other's transaction: a short wait and a retry settles it (the
# step's lease is still ours; giving up would leave it running until expiry).
_CONTENDED_ATTEMPTS = 10
# Steps this process claimed and has not finished (``finish_step`` reads none back).
_HELD_MAX = 1024
_UNFINISHED = [s.value for s in StepStatus if not s.final]
_FINAL = [s.value for s in StepStatus if s.final]


def forget_oldest(items: dict[Any, Any]) -> None:
    """Drop the oldest entry of a small cache that lease-renewing threads write as well."""
    # Changed by another thread meanwhile (RuntimeError), or emptied: next time, then.
    with contextlib.suppress(RuntimeError, StopIteration):
        items.pop(next(iter(items)), None)


def _held(owner: str) -> Cond:
    # Holding a step means owning its lease, expired or not, until someone else claims it.
    return eq("status", StepStatus.RUNNING.value) & eq("lease_owner", owner)


def _plain(changes: dict[str, Any]) -> dict[str, Any]:
    """Core's field changes (``nclav.runtime.stores``) as plain field values."""
    return {name: getattr(v, "value", v) for name, v in changes.items()}


class DocSteps(DocStepReads):
    """The step writes of ``DocumentStateStore``."""

    _held_docs: dict[Key, Doc]  # see _remember

    def _count_op(self, run_id: str, delta: int) -> Write:
        return Patch(lay.steps_left_key(run_id), add={"n": delta})

    def _transact_retrying(self, ops: list[Write]) -> None:
        for attempt in range(_CONTENDED_ATTEMPTS):
            try:
                self.docs.transact(ops)
            except ContendedError:
                time.sleep(backoff(attempt + 1, 0.01, 1.0, jitter=0.5))
            else:
                return
        raise TemporaryError("a run's step count is too contended; try again", retry_after_s=1.0)

    def claim_step(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> StepRecord | None:
        ready = eq("status", StepStatus.READY.value) & (
            absent("not_before") | le("not_before", now)
        )
        expired = eq("status", StepStatus.RUNNING.value) & le("lease_expires_at", now)
        changes = {
            **_plain(claim_changes(owner, lease_s, now)),
            lay.LEASE_INDEX.pk: lay.LEASES,
            **lay.ready_fields(StepStatus.RUNNING, now),
        }
        patch = Patch(
            lay.step_key(run_id, step_id), changes, {"attempts": 1, "version": 1}, ready | expired
        )
        try:
            doc = self.docs.write(patch, returns="new")
        except ConditionFailedError:
            return None  # not claimable, or no such step
        self._remember(doc)
        return lay.step_from(doc)

    def _remember(self, doc: Doc) -> None:
        """Keep a step this process holds, as it last wrote it (``finish_step``)."""
        held = self._held_docs
        if len(held) >= _HELD_MAX:  # steps claimed and never finished here: forget the oldest
            forget_oldest(held)
        held[key_of(doc)] = doc

    def renew_lease(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> bool:
        patch = Patch(
            lay.step_key(run_id, step_id),
            {"lease_expires_at": now + lease_s},
            {"version": 1},
            _held(owner),
        )
        try:
            doc = self.docs.write(patch, returns="new")
        except ConditionFailedError:
            return False
        self._remember(doc)
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
        changes = {
            **_plain(finish_changes(status, error, now, not_before)),
            lay.LEASE_INDEX.pk: None,
            **lay.ready_fields(status, max(now, not_before or 0.0)),
        }
        target = lay.step_key(run_id, step_id)
        held = self._held_docs.pop(target, None)
        bump = {"version": 1}
        if not status.final or not self.docs.atomic:
            # Handed back for a retry (still unfinished, the count stays), or no count kept.
            try:
                doc = self.docs.write(Patch(target, changes, bump, _held(owner)), returns="new")
            except ConditionFailedError:
                return None
            return lay.step_from(doc)
        if held is not None:
            # A transaction returns no fields; the step this process last wrote (claim,
            # renewals) plus this write is what it stores, if its version is still the one
            # held: the condition checks it, so no read is needed after.
            version = int(held["version"])
            patch = Patch(target, changes, bump, _held(owner) & eq("version", version))
            try:
                self._transact_retrying([patch, self._count_op(run_id, -1)])
            except ConditionFailedError:
                pass  # changed meanwhile, or not ours: the general way below decides
            else:
                kept = {a: v for a, v in held.items() if a not in changes}
                return lay.step_from({**kept, **lay.present(changes), "version": version + 1})
        try:
            self._transact_retrying(
                [Patch(target, changes, bump, _held(owner)), self._count_op(run_id, -1)]
            )
        except ConditionFailedError:
            return None
        # A final step is never written again by the engine, so this consistent read sees
        # what the transaction wrote.
        stored = self.docs.get(target)
        return lay.step_from(stored) if stored is not None else None

    def update_step(self, step: StepRecord, expected_version: int) -> StepRecord:
        # The stored status decides whether the count moves, and only the condition can tell
        # it without a read first: guess "unfinished" (the engine only ever updates pending or
        # ready steps), and on a lost condition at the expected version, the stored step was
        # final: write again with that knowledge (same version, so still the same CAS).
        if not self.docs.atomic:  # no count to move: the version alone decides
            return self._update_step(step, expected_version, was_final=None)
        try:
            return self._update_step(step, expected_version, was_final=False)
        except ConditionFailedError as exc:
            stored = exc.item if exc.item is not None else next(iter(exc.items[:1]), None)
            if stored is None:
                raise NotFoundError(f"step not found: {step.run_id}/{step.step_id}") from exc
            found = int(stored["version"])
            if found != expected_version:
                raise ConflictError(
                    f"step {step.step_id}: expected version {expected_version}, found {found}"
                ) from exc
        try:
            return self._update_step(step, expected_version, was_final=True)
        except ConditionFailedError as exc:
            raise ConflictError(
                f"step {step.step_id}: changed while at expected version {expected_version}"
            ) from exc

    def _update_step(
        self, step: StepRecord, expected: int, *, was_final: bool | None
    ) -> StepRecord:
        """The CAS write of ``step``, given whether the stored one is final (``None``: no
        count kept, it does not matter).

        Raises ``ConditionFailedError`` carrying the stored document (``item`` for a single
        write, ``items[0]`` for a transaction) when the version or the guess is wrong.
        """
        when = exists("pk") & eq("version", expected)
        if was_final is not None:
            when &= one_of("status", _FINAL if was_final else _UNFINISHED)
        new = step.model_copy(update={"version": expected + 1})
        fields = lay.step_fields(new)
        patch = Patch(lay.step_key(step.run_id, step.step_id), fields, when=when)
        if was_final is None:
            try:
                return lay.step_from(self.docs.write(patch, returns="new"))
            except ConditionFailedError as exc:
                if exc.item is None:
                    raise NotFoundError(f"step not found: {step.run_id}/{step.step_id}") from exc
                found = int(exc.item["version"])
                raise ConflictError(
                    f"step {step.step_id}: expected version {expected}, found {found}"
                ) from exc
        delta = int(was_final) - int(new.status.final)  # unfinished steps gained
        if delta == 0:
            return lay.step_from(self.docs.write(patch, returns="new"))
        self._transact_retrying([patch, self._count_op(step.run_id, delta)])
        # What the transaction wrote, read back from the same fields (an error is kept
        # bounded exactly as stored).
        return lay.step_from(
            {"run_id": step.run_id, "step_id": step.step_id, **lay.present(fields)}
        )


__all__ = ["DocSteps", "forget_oldest"]
