"""Which drift checks are due, sent to the queue workers as control messages.

Called by the schedule (locally the sweeper thread, on AWS the schedule function) every few
seconds or minutes; each call is cheap: one listing of enclaves and of drift records.

* **Jittered due times.** A partition first seen gets its first check at a point spread
  evenly over one interval (a hash of its name), and each check makes the next one due an
  interval later, give or take ``jitter`` of it: many partitions applied at once do not all
  check at once, then or ever after.
* **At most ``concurrency`` at once.** A sent check counts until its worker records the
  outcome (or its ``in_flight_until`` passes: the worker died); the rest wait for a later
  call, oldest due first.
* **Only active partitions**, never one being applied (its status is provisioning or
  updating; the worker also takes the partition mutex without waiting, and an apply
  waits for a check rather than the reverse).
* **Their own interval** from ``drift: {interval: ...}`` in the partition's config as last
  submitted (the newest run's bundle: these keys do not re-apply a partition, so the applied
  record may hold older ones), ``off`` for none.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nclav.errors import NclavError
from nclav.records import DriftRecord
from nclav.state import Status

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nclav.drift.options import DriftOptions
    from nclav.graph import Graph
    from nclav.model import PartitionConfig
    from nclav.ports import StateStore, WorkQueue
    from nclav.state import EnclaveState

    BundleGraph = Callable[[str], tuple[Graph, object]]

logger = logging.getLogger(__name__)

DRIFT_KIND = "drift_check"
# The route of a drift check on runtimes with separate queues: it runs terraform.
DRIFT_ACTION = "drift_check"


def check_message(
    enclave_id: str, partition_id: str, check_id: str | None = None, until: float | None = None
) -> dict[str, str]:
    """The queue message of one check: ``kind`` for ``Engine.handle``, ``action`` for routing.

    A requested check also carries its ``check`` id (the record names it once the check is
    done) and ``until``, the engine-clock time up to which it is sent again when another check
    or an apply holds the partition (a scheduled check is simply due again later)."""
    message = {
        "kind": DRIFT_KIND,
        "action": DRIFT_ACTION,
        "enclave": enclave_id,
        "partition": partition_id,
    }
    if check_id is not None:
        message["check"] = check_id
    if until is not None:
        message["until"] = repr(until)
    return message


def spread(enclave_id: str, partition_id: str) -> float:
    """A stable fraction in [0, 1) for a partition: where its first check falls."""
    raw = hashlib.sha256(f"{enclave_id}/{partition_id}".encode()).digest()
    return int.from_bytes(raw[:8], "big") / 2**64


def configs_as_submitted(
    store: StateStore, load: BundleGraph | None
) -> dict[tuple[str, str], PartitionConfig]:
    """Each partition's config in the newest run's bundle ({} when none loads)."""
    if load is None:
        return {}
    for run in store.list_runs(limit=20):
        if run.bundle is None or run.dry_run:
            continue
        try:
            graph, _ = load(run.bundle)
        except NclavError:
            return {}
        return {(e.id, p.id): p.config for e in graph.enclaves.values() for p in e.partitions}
    return {}


def drift_config(
    submitted: Mapping[tuple[str, str], PartitionConfig],
    state: EnclaveState,
    partition_id: str,
) -> PartitionConfig | None:
    found = submitted.get((state.enclave_id, partition_id))
    if found is not None:
        return found
    part = state.partitions.get(partition_id)
    return part.desired if part else None


@dataclass
class DriftScheduler:
    store: StateStore
    queue: WorkQueue
    options: DriftOptions
    load: BundleGraph | None = None  # the engine's bundle loader, for configs as submitted

    def tick(self, now: float) -> list[tuple[str, str]]:
        """Create records for new partitions, forget removed ones, send the due checks.

        Returns the (enclave, partition) checks sent.
        """
        opts = self.options
        records = {(r.enclave_id, r.partition_id): r for r in self.store.list_drift()}
        submitted: dict[tuple[str, str], PartitionConfig] | None = None
        live: set[tuple[str, str]] = set()
        due: list[DriftRecord] = []
        for state in self.store.list_enclaves():
            for pid, part in state.partitions.items():
                where = (state.enclave_id, pid)
                live.add(where)
                record = records.get(where)
                if record is None:
                    if submitted is None:
                        submitted = configs_as_submitted(self.store, self.load)
                    interval = opts.interval_for(drift_config(submitted, state, pid))
                    first = None if interval is None else now + spread(*where) * interval
                    record = DriftRecord(enclave_id=where[0], partition_id=pid, next_due=first)
                    self.store.put_drift(record)
                    records[where] = record
                elif record.next_due is None:  # checks were off: are they on again?
                    if submitted is None:
                        submitted = configs_as_submitted(self.store, self.load)
                    interval = opts.interval_for(drift_config(submitted, state, pid))
                    if interval is not None:
                        first = now + spread(*where) * interval
                        record = record.model_copy(update={"next_due": first})
                        self.store.put_drift(record)
                        records[where] = record
                if (
                    part.meta.status == Status.ACTIVE
                    and record.next_due is not None
                    and record.next_due <= now
                    and not _in_flight(record, now)
                ):
                    due.append(record)
        for where in set(records) - live:  # torn down: no drift to watch
            self.store.delete_drift(*where)
        slots = opts.concurrency - sum(
            1 for w, r in records.items() if w in live and _in_flight(r, now)
        )
        sent: list[tuple[str, str]] = []
        if slots <= 0 or not due:
            return sent
        if submitted is None:
            submitted = configs_as_submitted(self.store, self.load)
        for record in sorted(due, key=lambda r: r.next_due or 0.0):
            found = self.store.get_enclave(record.enclave_id)
            if found is None:
                continue
            interval = opts.interval_for(drift_config(submitted, found[0], record.partition_id))
            if interval is None:  # turned off since: no check until it is turned on again
                self.store.put_drift(record.model_copy(update={"next_due": None}))
                continue
            if len(sent) >= slots:
                break
            self.store.put_drift(
                record.model_copy(update={"in_flight_until": now + opts.timeout_s})
            )
            self.queue.send(check_message(record.enclave_id, record.partition_id))
            sent.append((record.enclave_id, record.partition_id))
        return sent


def _in_flight(record: DriftRecord, now: float) -> bool:
    return record.in_flight_until is not None and record.in_flight_until > now


__all__ = [
    "DRIFT_ACTION",
    "DRIFT_KIND",
    "DriftScheduler",
    "check_message",
    "configs_as_submitted",
    "drift_config",
    "spread",
]
