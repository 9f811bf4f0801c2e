"""Carrying out one step: driver and Terraform calls, then the applied state it leaves.

Each step is idempotent. A conditional step recomputes its hash from the fresh upstream state
and is skipped when nothing moved. State is written with optimistic concurrency: read the
enclave record and its version, apply the pure transition, write it back if nobody else did in
the meantime, and try again if somebody did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from nclav import transitions
from nclav.errors import ConflictError, NotFoundError, PermanentError, SpecError
from nclav.hashing import export_hash, import_hash, inputs_hash, partition_hash
from nclav.iac.state_backend import TerraformStateBackend
from nclav.plan import Action, resolve_partition_inputs
from nclav.records import EventKind, StepStatus
from nclav.state import EnclaveState, PartitionState, Status

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nclav.engine.driver import Driver
    from nclav.graph import Graph
    from nclav.model import Cloud
    from nclav.ports import BlobStore, IacRunner, StateStore
    from nclav.records import StepRecord

    # The engine's loader of a bundle by digest: its graph and files by "enclave/partition".
    BundleLoader = Callable[[str], tuple[Graph, Mapping[str, Mapping[str, bytes]]]]


_UNREAD: Any = object()  # ``StepContext.known`` holds nothing for that enclave


class EventSink(Protocol):
    def __call__(
        self,
        kind: EventKind,
        *,
        enclave_id: str | None = None,
        partition_id: str | None = None,
        run_id: str | None = None,
        fields: Mapping[str, str | int | bool | None] | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class StepContext:
    store: StateStore
    graph: Graph
    files: Mapping[str, Mapping[str, bytes]]  # "enclave/partition" -> its files
    drivers: Mapping[Cloud, Driver]
    default_cloud: Cloud
    iac: IacRunner
    run_id: str
    event: EventSink
    # The run's bundle digest (None for a teardown-only run), and the engine's loader of any
    # bundle by digest: a teardown needs the files a partition was last started with.
    bundle: str | None = None
    bundles: BundleLoader | None = None
    blobs: BlobStore | None = None  # to read a Terraform state's resources
    # Enclave records (and versions) this step read or wrote last (``enclave``, ``update``);
    # None: read and found missing.
    known: dict[str, tuple[EnclaveState, int] | None] = field(
        default_factory=dict, repr=False, compare=False
    )

    def holds_tf_state(self, key: str) -> bool:
        """Whether the state store's current Terraform state ``key`` holds any resource.

        A state emptied by ``terraform destroy`` (what every teardown leaves, readable after
        it) holds none; one that cannot be read or parsed counts as holding some.
        """
        pointer = self.store.get_tf_state(key)
        if pointer is None:
            return False
        if self.blobs is None:
            return True
        try:
            doc = json.loads(self.blobs.get(pointer))
        except (NotFoundError, ValueError):
            return True
        return not isinstance(doc, dict) or doc.get("resources") != []

    def driver_for(self, cloud: Cloud | None) -> Driver:
        cloud = cloud or self.default_cloud
        driver = self.drivers.get(cloud)
        if driver is None:
            raise PermanentError(f"driver not configured for cloud: {cloud.value}")
        return driver

    def applied(self) -> dict[str, EnclaveState]:
        return {s.enclave_id: s for s in self.store.list_enclaves()}

    def enclave(self, enclave_id: str) -> tuple[EnclaveState, int] | None:
        """``store.get_enclave``, remembered (found or not) for this step's next ``update``."""
        found = self.store.get_enclave(enclave_id)
        self.known[enclave_id] = found
        return found

    def applied_for(self, enclave_id: str) -> dict[str, EnclaveState]:
        """The applied state a partition of ``enclave_id`` resolves its inputs from: its own
        enclave (read with ``enclave``, so the step's first ``update`` costs no read) and
        the enclaves it imports from; every enclave when it imports from several (one list
        costs less than a read each)."""
        others = {w.exporter for w in self.graph.aliases.get(enclave_id, {}).values()}
        others.discard(enclave_id)
        if len(others) > 1:
            return self.applied()
        applied: dict[str, EnclaveState] = {}
        for eid in (enclave_id, *others):
            found = self.enclave(eid) if eid == enclave_id else self.store.get_enclave(eid)
            if found is not None:
                applied[eid] = found[0]
        return applied

    def update(
        self, enclave_id: str, change: Callable[[EnclaveState | None], EnclaveState | None]
    ) -> EnclaveState | None:
        """Read-modify-write one enclave record; ``None`` from ``change`` deletes it.

        The first attempt starts from the record as this step last read or wrote it, if it
        did: the write is conditional on its version, so a record changed meanwhile only
        costs the read that a fresh attempt makes anyway.
        """
        for _ in range(20):
            found = self.known.pop(enclave_id, _UNREAD)
            if found is _UNREAD:
                found = self.store.get_enclave(enclave_id)
            state, version = found if found else (None, None)
            new = change(state)
            try:
                if new is None:
                    if version is not None:
                        self.store.delete_enclave(enclave_id, version)
                    return None
                self.known[enclave_id] = (new, self.store.put_enclave(new, version))
                return new
            except ConflictError:
                continue
        raise ConflictError(f"enclave {enclave_id}: too many concurrent updates")


def carry_out(ctx: StepContext, step: StepRecord) -> StepStatus:
    handler = _HANDLERS[step.action]
    return handler(ctx, step)


def record_failure(ctx: StepContext, step: StepRecord, message: str) -> None:
    """Leave the enclave or partition a failed step worked on in error, with ``message``.

    For failures a step does not record itself (retries given up, unexpected errors): without
    it the resource would stay ``provisioning`` or ``updating`` after its run ended.
    """
    if step.action in (Action.PROVISION_PARTITION, Action.TEARDOWN_PARTITION):
        _mark_failed(ctx, step.enclave_id, step.target or "", message)
    elif step.action == Action.PROVISION_ENCLAVE:
        _mark_failed(ctx, step.enclave_id, None, message)


def _require(state: EnclaveState | None, enclave_id: str) -> EnclaveState:
    if state is None:
        raise PermanentError(f"enclave {enclave_id} has not been provisioned")
    return state


def _provision_enclave(ctx: StepContext, step: StepRecord) -> StepStatus:
    eid = step.enclave_id
    loaded = ctx.graph.enclaves[eid]
    cloud = loaded.config.cloud or ctx.default_cloud
    driver = ctx.driver_for(cloud)
    found = ctx.enclave(eid)
    old = found[0] if found else None
    try:
        handle, context = driver.provision_enclave(
            loaded.config, old.enclave_handle if old else None
        )
    except PermanentError as exc:
        _mark_failed(ctx, eid, None, str(exc))
        raise
    ctx.update(
        eid, lambda s: transitions.enclave_provisioned(ctx.graph, s, eid, cloud, handle, context)
    )
    ctx.event(EventKind.ENCLAVE_PROVISIONED, enclave_id=eid, run_id=ctx.run_id)
    return StepStatus.SUCCEEDED


def _provision_partition(ctx: StepContext, step: StepRecord) -> StepStatus:
    eid, pid = step.enclave_id, step.target or ""
    loaded = ctx.graph.enclaves[eid]
    part = loaded.partition(pid)
    assert part is not None
    applied = ctx.applied_for(eid)
    state = _require(applied.get(eid), eid)
    inputs, problems = resolve_partition_inputs(ctx.graph, applied, eid, pid)
    if problems:
        message = "; ".join(problems)
        _mark_failed(ctx, eid, pid, message)
        raise PermanentError(message)
    stored = state.partitions.get(pid)
    if (
        step.conditional
        and stored is not None
        and stored.meta.status == Status.ACTIVE
        and stored.meta.desired_hash == partition_hash(part)
        and stored.inputs_hash == inputs_hash(inputs)
    ):
        return StepStatus.SKIPPED
    driver = ctx.driver_for(state.resolved_cloud)
    status = Status.UPDATING if stored and stored.partition_handle else Status.PROVISIONING
    ctx.update(
        eid,
        lambda s: transitions.partition_started(
            _require(s, eid), pid, status, part.config, ctx.bundle, inputs
        ),
    )
    try:
        handle = driver.provision_partition(
            loaded.config,
            part.config,
            stored.partition_handle if stored else None,
            enclave_handle=state.enclave_handle,
        )
        env = driver.auth_env(state.enclave_handle, handle)
        outputs = ctx.iac.apply(
            ctx.run_id,
            eid,
            part.config,
            ctx.files.get(f"{eid}/{pid}", {}),
            inputs,
            env,
            update=stored is not None,
        )
    except PermanentError as exc:
        _mark_failed(ctx, eid, pid, str(exc))
        raise
    ctx.update(
        eid,
        lambda s: transitions.partition_applied(
            ctx.graph, _require(s, eid), pid, handle, outputs, inputs
        ),
    )
    ctx.event(EventKind.PARTITION_PROVISIONED, enclave_id=eid, partition_id=pid, run_id=ctx.run_id)
    return StepStatus.SUCCEEDED


def _wire_export(ctx: StepContext, step: StepRecord) -> StepStatus:
    eid, name = step.enclave_id, step.target or ""
    loaded = ctx.graph.enclaves[eid]
    export = next(e for e in loaded.config.exports if e.name == name)
    found = ctx.enclave(eid)
    state = _require(found[0] if found else None, eid)
    target = state.partitions.get(export.target_partition)
    outputs = target.resolved_outputs if target else {}
    if step.conditional and state.export_hashes.get(name) == export_hash(export, outputs):
        return StepStatus.SKIPPED
    handle = ctx.driver_for(state.resolved_cloud).provision_export(loaded.config, export, outputs)
    ctx.update(eid, lambda s: transitions.export_wired(ctx.graph, _require(s, eid), name, handle))
    ctx.event(
        EventKind.EXPORT_WIRED, enclave_id=eid, run_id=ctx.run_id, fields={"export_name": name}
    )
    return StepStatus.SUCCEEDED


def _wire_import(ctx: StepContext, step: StepRecord) -> StepStatus:
    eid, alias = step.enclave_id, step.target or ""
    wiring = ctx.graph.aliases[eid][alias]
    applied = ctx.applied()
    state = _require(applied.get(eid), eid)
    exporter = applied.get(wiring.exporter)
    exp_hash = exporter.export_hashes.get(wiring.export.name) if exporter else None
    if step.conditional and state.import_hashes.get(alias) == import_hash(wiring.imp, exp_hash):
        return StepStatus.SKIPPED
    export_handle = exporter.export_handles.get(wiring.export.name) if exporter else None
    driver = ctx.driver_for(state.resolved_cloud)
    handle = driver.provision_import(ctx.graph.enclaves[eid].config, wiring.imp, export_handle)
    # The export's hash as read above, with the handle the import was wired to: one that
    # changed meanwhile is not the one wired (the next run's conditional step sees it).
    ctx.update(
        eid,
        lambda s: transitions.import_wired(ctx.graph, _require(s, eid), exporter, alias, handle),
    )
    fields = {"export_name": wiring.export.name}
    ctx.event(EventKind.IMPORT_WIRED, enclave_id=eid, run_id=ctx.run_id, fields=fields)
    return StepStatus.SUCCEEDED


def _teardown_partition(ctx: StepContext, step: StepRecord) -> StepStatus:
    eid, pid = step.enclave_id, step.target or ""
    found = ctx.enclave(eid)
    if found is None or pid not in found[0].partitions:
        return StepStatus.SUCCEEDED  # already gone (a redelivered message)
    state = found[0]
    stored = state.partitions[pid]
    state_key = TerraformStateBackend.key(eid, pid)
    driver = ctx.driver_for(state.resolved_cloud)
    env = driver.auth_env(state.enclave_handle, stored.partition_handle)
    ctx.update(
        eid,
        lambda s: transitions.partition_started(_require(s, eid), pid, Status.DELETING),
    )
    try:
        if stored.desired is None and ctx.holds_tf_state(state_key):
            raise PermanentError(_unrecorded_config(eid, pid))
        files, missing = _files_as_started(ctx, eid, pid, stored)
        destroyed = ctx.iac.destroy(ctx.run_id, eid, stored.desired, files, env)
        if not destroyed and ctx.holds_tf_state(state_key):
            raise PermanentError(
                f"partition {eid}/{pid} holds Terraform state ({state_key}) but terraform "
                "destroy could not run: neither its working directory nor its files are "
                f"available{f' ({missing})' if missing else ''}. Apply the partition again, "
                "then remove it."
            )
        driver.teardown_partition(
            eid, pid, stored.partition_handle, enclave_handle=state.enclave_handle
        )
    except PermanentError as exc:
        _mark_failed(ctx, eid, pid, str(exc))
        raise
    ctx.update(eid, lambda s: transitions.removed(s, Action.TEARDOWN_PARTITION, pid) if s else None)
    ctx.event(EventKind.PARTITION_DELETED, enclave_id=eid, partition_id=pid, run_id=ctx.run_id)
    return StepStatus.SUCCEEDED


def _unrecorded_config(eid: str, pid: str) -> str:
    return (
        f"partition {eid}/{pid} holds Terraform state but nclav has no record of the "
        "configuration that produced it (written by an older nclav version), so it cannot run "
        "terraform destroy. Either apply the partition again (add it back to the tree and "
        "apply), then remove it; or destroy its resources yourself and delete the state with "
        f"DELETE /terraform/state/{eid}/{pid}, then apply again."
    )


def _files_as_started(
    ctx: StepContext, eid: str, pid: str, stored: PartitionState
) -> tuple[Mapping[str, bytes], str | None]:
    """The partition's files from the bundle its last apply started with, or why there are none.

    A bundle that no longer loads is not an error by itself: the working directory may still
    be on this machine. It becomes one only when terraform destroy then could not run.
    """
    key = f"{eid}/{pid}"
    if stored.bundle is None:
        return {}, "no bundle was recorded for it"
    if stored.bundle == ctx.bundle:
        return ctx.files.get(key, {}), None
    if ctx.bundles is None:
        return {}, "no bundle loader"
    try:
        _, files = ctx.bundles(stored.bundle)
    except (NotFoundError, SpecError) as exc:
        return {}, f"bundle {stored.bundle} its last apply started with does not load: {exc}"
    return files.get(key, {}), None


def _unwire(ctx: StepContext, step: StepRecord) -> StepStatus:
    eid, target = step.enclave_id, step.target or ""
    found = ctx.enclave(eid)
    if found is None:
        return StepStatus.SUCCEEDED
    state = found[0]
    driver = ctx.driver_for(state.resolved_cloud)
    if step.action == Action.UNWIRE_EXPORT:
        driver.teardown_export(eid, target, state.export_handles.get(target))
        kind, fields = EventKind.EXPORT_UNWIRED, {"export_name": target}
    else:
        driver.teardown_import(eid, target, state.import_handles.get(target))
        kind, fields = EventKind.IMPORT_UNWIRED, {"alias": target}
    ctx.update(eid, lambda s: transitions.removed(s, step.action, target) if s else None)
    ctx.event(kind, enclave_id=eid, run_id=ctx.run_id, fields=fields)
    return StepStatus.SUCCEEDED


def _teardown_enclave(ctx: StepContext, step: StepRecord) -> StepStatus:
    eid = step.enclave_id
    found = ctx.enclave(eid)
    if found is None:
        return StepStatus.SUCCEEDED
    state = found[0]
    left = _still_held(ctx, state)
    if left:
        message = (
            f"enclave {eid} was not torn down: it still holds {'; '.join(left)}. Tear those "
            "down first (apply a tree without them, or nclav destroy the enclave again)."
        )
        _mark_failed(ctx, eid, None, message)
        raise PermanentError(message)
    ctx.update(
        eid,
        lambda s: s.model_copy(update={"meta": s.meta.started(Status.DELETING)}) if s else None,
    )
    ctx.driver_for(state.resolved_cloud).teardown_enclave(state.desired, state.enclave_handle)
    ctx.update(eid, lambda s: None)
    ctx.event(EventKind.ENCLAVE_DELETED, enclave_id=eid, run_id=ctx.run_id)
    return StepStatus.SUCCEEDED


def _still_held(ctx: StepContext, state: EnclaveState) -> list[str]:
    """What dropping this enclave's record would forget: partitions, Terraform states."""
    left: list[str] = []
    if state.partitions:
        left.append(f"partitions {', '.join(sorted(state.partitions))}")
    states = sorted(k for k in ctx.store.list_tf_states(state.enclave_id) if ctx.holds_tf_state(k))
    if states:
        left.append(f"Terraform state {', '.join(states)}")
    return left


def _mark_failed(ctx: StepContext, eid: str, pid: str | None, message: str) -> None:
    def change(state: EnclaveState | None) -> EnclaveState | None:
        if pid is None:
            base = state or EnclaveState(enclave_id=eid)
            return base.model_copy(update={"meta": base.meta.failed(message)})
        if state is None:
            return None
        old = state.partitions.get(pid) or PartitionState()
        new = old.model_copy(update={"meta": old.meta.failed(message)})
        return state.model_copy(update={"partitions": {**state.partitions, pid: new}})

    ctx.update(eid, change)
    if pid is None:
        ctx.event(
            EventKind.ENCLAVE_ERROR, enclave_id=eid, run_id=ctx.run_id, fields={"message": message}
        )
    else:
        ctx.event(
            EventKind.PARTITION_ERROR,
            enclave_id=eid,
            partition_id=pid,
            run_id=ctx.run_id,
            fields={"message": message},
        )


_HANDLERS: dict[Action, Callable[[StepContext, StepRecord], StepStatus]] = {
    Action.PROVISION_ENCLAVE: _provision_enclave,
    Action.PROVISION_PARTITION: _provision_partition,
    Action.WIRE_EXPORT: _wire_export,
    Action.WIRE_IMPORT: _wire_import,
    Action.TEARDOWN_PARTITION: _teardown_partition,
    Action.UNWIRE_EXPORT: _unwire,
    Action.UNWIRE_IMPORT: _unwire,
    Action.TEARDOWN_ENCLAVE: _teardown_enclave,
}

__all__ = ["StepContext", "carry_out", "record_failure"]
