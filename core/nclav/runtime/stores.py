"""What every cloud ``StateStore`` adapter shares, whatever its database.

* **Records as stored documents.** A record is its JSON, zlib-compressed above
  ``COMPRESS_ABOVE`` (databases bill by size long before an item's limit matters); one still
  above the database's limit after compression is refused whole with ``RecordTooLargeError``
  naming the record, never cut. ``seq_text`` makes a sequence number a key that sorts as it
  counts.
* **The step lease rules.** ``claimable``, ``holds`` and the changes a claim, a renewal and a
  finish make (``claim_changes``, ``finish_changes``): a store that decides in Python (read,
  then a write conditioned on what it read: Firestore, Cosmos DB, memory) applies them with
  ``claimed`` / ``renewed`` / ``finished``; one that decides on the server (DynamoDB's
  condition expressions) writes the same changes.
* **History retention.** Runs, steps, events and IaC runs expire ``NCLAV_RETENTION_DAYS``
  (default 90; 0 keeps them) after they were written, by the database's own TTL
  (``history_expiry``); enclave state, locks and state pointers never do.
"""

from __future__ import annotations

import os
import time
import zlib
from typing import TYPE_CHECKING, Any

from nclav.errors import ServiceError
from nclav.records import StepRecord, StepStatus, iso_time, ready_since

if TYPE_CHECKING:
    from collections.abc import Mapping

COMPRESS_ABOVE = 4_096
RETENTION_ENV = "NCLAV_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 90.0


class RecordTooLargeError(ServiceError):
    """A record that does not fit in one item or document of the store, even compressed."""


def pack_record(doc: str, what: str, *, max_bytes: int, where: str) -> str | bytes:
    """``doc`` (a record's JSON) as stored: the text, or zlib bytes when it is large.

    Raises ``RecordTooLargeError`` naming ``what`` when even the compressed bytes exceed
    ``max_bytes`` (``where`` names the limit: "a DynamoDB item").
    """
    raw = doc.encode()
    if len(raw) <= COMPRESS_ABOVE:
        return doc
    packed = zlib.compress(raw, 6)
    if len(packed) > max_bytes:
        raise RecordTooLargeError(
            f"{what} is {len(raw):,} bytes ({len(packed):,} compressed); {where} holds at "
            f"most {max_bytes:,} bytes of record: make it smaller"
        )
    return packed


def unpack_record(stored: str | bytes) -> str:
    """The JSON of a record ``pack_record`` stored."""
    return stored if isinstance(stored, str) else zlib.decompress(stored).decode()


def seq_text(seq: int) -> str:
    """A sequence number as a key: zero-padded so text order is number order."""
    return f"{seq:020d}"


# -- the step lease rules --------------------------------------------------------------------


def claimable(step: StepRecord, now: float) -> bool:
    """Ready and due, or running under a lease that has expired."""
    if step.status == StepStatus.READY:
        return step.not_before is None or step.not_before <= now
    return lease_expired(step, now)


def lease_expired(step: StepRecord, now: float) -> bool:
    expires = step.lease_expires_at
    return step.status == StepStatus.RUNNING and expires is not None and expires <= now


def stuck_ready(step: StepRecord, older_than: float) -> bool:
    """A ready step whose message was sent (or became due) before ``older_than``."""
    return step.status == StepStatus.READY and ready_since(step) <= older_than


def holds(step: StepRecord | None, owner: str) -> bool:
    """Holding a step is owning its lease, expired or not, until someone else claims it."""
    return step is not None and step.status == StepStatus.RUNNING and step.lease_owner == owner


def claim_changes(owner: str, lease_s: float, now: float) -> dict[str, Any]:
    """The fields a claim sets (besides one more attempt and one more version)."""
    return {
        "status": StepStatus.RUNNING,
        "lease_owner": owner,
        "lease_expires_at": now + lease_s,
        "not_before": None,
        "started_at": iso_time(now),
    }


def finish_changes(
    status: StepStatus, error: str | None, now: float, not_before: float | None
) -> dict[str, Any]:
    """The fields ``finish_step`` sets (besides one more version). A step handed back ready
    is sent again right after (see the port): ``sent_at`` is now."""
    changes: dict[str, Any] = {
        "status": status,
        "error": error,
        "finished_at": iso_time(now),
        "not_before": not_before,
        "lease_owner": None,
        "lease_expires_at": None,
    }
    if status == StepStatus.READY:
        changes["sent_at"] = now
    return changes


def _changed(step: StepRecord, changes: Mapping[str, Any]) -> StepRecord:
    return step.model_copy(update={**changes, "version": step.version + 1})


def claimed(step: StepRecord, owner: str, lease_s: float, now: float) -> StepRecord:
    changes = {**claim_changes(owner, lease_s, now), "attempts": step.attempts + 1}
    return _changed(step, changes)


def renewed(step: StepRecord, lease_s: float, now: float) -> StepRecord:
    return _changed(step, {"lease_expires_at": now + lease_s})


def finished(
    step: StepRecord,
    status: StepStatus,
    error: str | None,
    now: float,
    not_before: float | None = None,
) -> StepRecord:
    return _changed(step, finish_changes(status, error, now, not_before))


# -- retention ---------------------------------------------------------------------------------


def history_expiry(environ: Mapping[str, str] | None = None) -> int | None:
    """When a history record written now expires (epoch seconds, as TTLs expect); None
    when history is kept (``NCLAV_RETENTION_DAYS=0``)."""
    env = os.environ if environ is None else environ
    days = float(env.get(RETENTION_ENV) or DEFAULT_RETENTION_DAYS)
    return int(time.time() + days * 86_400) if days > 0 else None


__all__ = [
    "COMPRESS_ABOVE",
    "DEFAULT_RETENTION_DAYS",
    "RETENTION_ENV",
    "RecordTooLargeError",
    "claim_changes",
    "claimable",
    "claimed",
    "finish_changes",
    "finished",
    "history_expiry",
    "holds",
    "lease_expired",
    "pack_record",
    "renewed",
    "seq_text",
    "stuck_ready",
    "unpack_record",
]
