"""A queue worker's drift check: ``{"kind": "drift_check", "enclave": E, "partition": P}``.

``Engine.handle`` passes such messages here (one line). The check runs on the configuration
the partition's last apply started with (its recorded bundle and inputs), through the
runtime's ``PartitionIac.drift_check``; its outcome replaces the partition's drift record:

* ``in_sync``: nothing drifted, or exactly the drift someone acknowledged (``acknowledged``);
* ``drifted``: resources changed outside Terraform (``resource_drift``, the plan text);
* ``check_failed``: the check could not run (the error is kept, the last drift is not lost).

A partition busy with an apply (or another check) is not waited for: a scheduled check is due
again in about a minute; a requested one (``POST .../drift/check``) is sent again a few seconds
later, so the request gets the outcome of a check that began after it.
Going from not drifted to drifted writes a ``DriftDetected`` audit event, the way back a
``DriftResolved`` one. A drifted partition whose config says ``drift: {remediate: true}`` is
re-applied by a run (trigger ``drift``) of the bundle it was last applied from.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

from nclav.drift.analysis import drifted_resources, fingerprint
from nclav.drift.options import BUSY_RETRY_S, DriftOptions, remediates
from nclav.drift.schedule import DRIFT_KIND, check_message, configs_as_submitted, drift_config
from nclav.errors import ConflictError, NclavError, NotFoundError, TemporaryError
from nclav.records import (
    AuditEvent,
    DriftRecord,
    DriftStatus,
    EventKind,
    RunStatus,
    iso_time,
)
from nclav.state import Status

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.engine.engine import Engine
    from nclav.iac.runner import RefreshPlan
    from nclav.state import EnclaveState, PartitionState

logger = logging.getLogger(__name__)

PLAN_TEXT_MAX = 64_000  # characters of plan text kept on the record (its end is cut)


def handle_drift_check(engine: Engine, message: Mapping[str, str]) -> None:
    """Engine.handle's entry for ``kind: drift_check`` messages (bad ones are dropped)."""
    enclave, partition = message.get("enclave"), message.get("partition")
    if not enclave or not partition:
        logger.error("dropped a drift_check message without enclave and partition")
        return
    try:
        until = float(message["until"]) if "until" in message else None
    except ValueError:
        until = None
    check_partition(
        engine, enclave, partition, DriftOptions.from_env(), message.get("check"), until
    )


def check_partition(
    engine: Engine,
    enclave_id: str,
    partition_id: str,
    options: DriftOptions,
    check_id: str | None = None,
    until: float | None = None,
) -> DriftRecord | None:
    """Check one partition now and store the outcome; ``None`` when it was not checked
    (gone, not active, or busy: then it is due again shortly). Every outcome stored names
    ``check_id``, the requested check it answers (``None``: a scheduled one).

    A requested check that finds the partition busy (another check or an apply holds it) is
    sent again a few seconds later while its ``until`` has not passed: answering then would
    give the request the outcome of a check that began before it."""
    store, now = engine.store, engine.clock.now()
    record = store.get_drift(enclave_id, partition_id) or DriftRecord(
        enclave_id=enclave_id, partition_id=partition_id
    )
    found = store.get_enclave(enclave_id)
    state = found[0] if found else None
    stored = state.partitions.get(partition_id) if state else None
    if state is None or stored is None:
        store.delete_drift(enclave_id, partition_id)
        return None
    submitted = configs_as_submitted(store, engine.bundles)
    config = drift_config(submitted, state, partition_id)
    interval = options.interval_for(config)

    def later(seconds: float | None) -> float | None:
        if seconds is None:
            return None
        return engine.clock.now() + seconds * random.uniform(1 - options.jitter, 1 + options.jitter)

    def not_checked() -> None:  # answered, and due again shortly
        update = {"in_flight_until": None, "next_due": later(BUSY_RETRY_S), "check_id": check_id}
        store.put_drift(record.model_copy(update=update))

    if stored.meta.status != Status.ACTIVE or stored.desired is None:
        not_checked()
        return None
    checked_at = iso_time(now)
    try:
        run_id, plan = _run_check(engine, state, stored)
    except TemporaryError as busy:  # an apply or another check holds the partition
        delay = busy.retry_after_s
        if check_id is not None and until is not None and engine.clock.now() + delay < until:
            engine.queue.send(
                check_message(enclave_id, partition_id, check_id, until), delay_s=delay
            )
        else:
            not_checked()
        return None
    except Exception as exc:  # the check could not run: say why, keep the last drift found
        if not isinstance(exc, NclavError):
            logger.exception("drift check of %s/%s crashed", enclave_id, partition_id)
        failed = record.model_copy(
            update={
                "status": DriftStatus.CHECK_FAILED,
                "checked_at": checked_at,
                "error": str(exc) or type(exc).__name__,
                "in_flight_until": None,
                "next_due": later(interval),
                "iac_run_id": getattr(exc, "iac_run_id", record.iac_run_id),
                "check_id": check_id,
            }
        )
        store.put_drift(failed)
        return failed
    drift = drifted_resources(plan.plan)
    mark = fingerprint(drift)
    # An acknowledgement may have come in while terraform ran: read it again.
    record = store.get_drift(enclave_id, partition_id) or record
    acknowledged = mark is not None and mark == record.acknowledged
    status = DriftStatus.DRIFTED if mark and not acknowledged else DriftStatus.IN_SYNC
    new = record.model_copy(
        update={
            "status": status,
            "checked_at": checked_at,
            "resource_drift": drift,
            "fingerprint": mark,
            # An acknowledgement lasts while the same drift does; none left: nothing to keep.
            "acknowledged": record.acknowledged if mark else None,
            "plan_text": plan.text[-PLAN_TEXT_MAX:] if mark else "",
            "error": None,
            "iac_run_id": run_id,
            "in_flight_until": None,
            "next_due": later(interval),
            "check_id": check_id,
        }
    )
    was_drifted = record.status == DriftStatus.DRIFTED
    if status == DriftStatus.DRIFTED and (not was_drifted or record.fingerprint != mark):
        _event(engine, EventKind.DRIFT_DETECTED, new)
        # Notifications (nclav.notify, kind "drift.detected") belong here.
    elif was_drifted and status == DriftStatus.IN_SYNC:
        _event(engine, EventKind.DRIFT_RESOLVED, new)
        # Notifications (nclav.notify, kind "drift.resolved") belong here.
    if status == DriftStatus.DRIFTED and remediates(config):
        new = new.model_copy(update={"remediation_run_id": remediate(engine, state, stored)})
    store.put_drift(new)
    return new


def _run_check(
    engine: Engine, state: EnclaveState, stored: PartitionState
) -> tuple[str, RefreshPlan]:
    from nclav.iac.partition import PartitionIac  # the runner that can check

    iac = engine.iac
    if not isinstance(iac, PartitionIac):
        raise NclavError("this runtime's Terraform runner cannot check drift")
    assert stored.desired is not None
    pid = stored.desired.id
    key = f"{state.enclave_id}/{pid}"
    if stored.bundle is None:
        raise NclavError(f"no bundle was recorded for {key}'s last apply: apply it again")
    try:
        _, files = engine.bundles(stored.bundle)
    except (NotFoundError, NclavError) as exc:
        raise NclavError(f"the bundle {key} was last applied from does not load: {exc}") from exc
    driver = engine.drivers.get(state.resolved_cloud or engine.default_cloud)
    if driver is None:
        raise NclavError(f"no driver for the cloud of enclave {state.enclave_id}")
    env = driver.auth_env(state.enclave_handle, stored.partition_handle)
    return iac.drift_check(
        state.enclave_id, stored.desired, files.get(key, {}), stored.started_inputs, env
    )


def remediate(engine: Engine, state: EnclaveState, stored: PartitionState) -> str | None:
    """Re-apply a drifted partition: mark it degraded (the plan re-applies a partition whose
    last attempt did not end active) and start a run (trigger ``drift``) of the newest bundle.

    Only when the newest run succeeded: its bundle is then what is applied, so the run
    re-applies the degraded partition and nothing else (drift keys alone start no steps, so
    the partition's own recorded bundle may be older, with the same content hash). A newer
    tree not applied yet, or a failed run, is the user's to deal with. Returns the run's id.
    """
    assert stored.desired is not None
    eid, pid = state.enclave_id, stored.desired.id
    newest = next((r for r in engine.store.list_runs(limit=20) if r.bundle and not r.dry_run), None)
    if newest is None or newest.bundle is None or newest.status != RunStatus.SUCCEEDED:
        logger.warning(
            "%s/%s drifted; not remediated: the newest run has not succeeded (%s)",
            eid,
            pid,
            newest.id if newest else "none",
        )
        return None
    message = "drifted: re-applied to undo changes made outside nclav"
    for _ in range(20):
        found = engine.store.get_enclave(eid)
        if found is None or pid not in found[0].partitions:
            return None
        current, version = found
        part = current.partitions[pid]
        if part.meta.status != Status.ACTIVE:
            return None  # being applied already
        meta = part.meta.model_copy(update={"status": Status.DEGRADED})
        changed = current.model_copy(
            update={
                "partitions": {**current.partitions, pid: part.model_copy(update={"meta": meta})}
            }
        )
        try:
            engine.store.put_enclave(changed, version)
            break
        except ConflictError:
            continue
    else:
        return None
    logger.info("%s/%s: %s", eid, pid, message)
    return engine.start_run(newest.bundle, trigger="drift").id


def _event(engine: Engine, kind: EventKind, record: DriftRecord) -> None:
    engine.store.append_event(
        AuditEvent(
            kind=kind,
            at=record.checked_at or iso_time(engine.clock.now()),
            enclave_id=record.enclave_id,
            partition_id=record.partition_id,
            fields={
                "resources": len(record.resource_drift),
                "addresses": ", ".join(r.address for r in record.resource_drift)[:2000],
                "fingerprint": record.fingerprint,
                "iac_run_id": record.iac_run_id,
            },
        )
    )


__all__ = ["DRIFT_KIND", "PLAN_TEXT_MAX", "check_partition", "handle_drift_check", "remediate"]
