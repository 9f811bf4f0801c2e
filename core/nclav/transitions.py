"""Pure state transitions: the record a finished step leaves behind.

The engine calls these after a driver or Terraform call succeeds, so the hashes it stores are
exactly the ones ``plan_changes`` compares against. ``simulate_apply`` runs a whole plan through
them with made-up outputs (tests, benchmarks, seeding a store).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nclav.hashing import enclave_hash, export_hash, import_hash, inputs_hash, partition_hash
from nclav.model import Cloud
from nclav.plan import Action, Plan, plan_changes, resolve_partition_inputs
from nclav.state import EnclaveState, Handle, PartitionState, Status, utc_now

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nclav.graph import Graph
    from nclav.model import PartitionConfig


def enclave_provisioned(
    graph: Graph,
    state: EnclaveState | None,
    enclave_id: str,
    cloud: Cloud,
    handle: Handle,
    context_vars: Mapping[str, str],
) -> EnclaveState:
    loaded = graph.enclaves[enclave_id]
    base = state or EnclaveState(enclave_id=enclave_id)
    return base.model_copy(
        update={
            "desired": loaded.config,
            "resolved_cloud": cloud,
            "enclave_handle": handle,
            "context_vars": dict(context_vars),
            "meta": base.meta.active(enclave_hash(loaded)),
        }
    )


def partition_started(
    state: EnclaveState,
    partition_id: str,
    status: Status,
    config: PartitionConfig | None = None,
    bundle: str | None = None,
    resolved_inputs: Mapping[str, str] | None = None,
) -> EnclaveState:
    """The record as a partition's apply (``config`` given) or teardown starts.

    An apply records what it is about to run before terraform touches anything: the config,
    the bundle holding its files and the resolved inputs. Whatever terraform then leaves
    behind, success or not, the teardown can destroy it with exactly that configuration.
    """
    old = state.partitions.get(partition_id) or PartitionState()
    update: dict[str, object] = {"meta": old.meta.started(status)}
    if config is not None:
        update |= {
            "desired": config,
            "bundle": bundle,
            "started_inputs": dict(resolved_inputs or {}),
        }
    new = old.model_copy(update=update)
    return state.model_copy(update={"partitions": {**state.partitions, partition_id: new}})


def partition_applied(
    graph: Graph,
    state: EnclaveState,
    partition_id: str,
    handle: Handle,
    outputs: Mapping[str, str],
    resolved_inputs: Mapping[str, str],
) -> EnclaveState:
    part = graph.enclaves[state.enclave_id].partition(partition_id)
    assert part is not None
    old = state.partitions.get(partition_id) or PartitionState()
    new = old.model_copy(
        update={
            "desired": part.config,
            "partition_handle": handle,
            "resolved_outputs": dict(outputs),
            "inputs_hash": inputs_hash(resolved_inputs),
            "meta": old.meta.active(partition_hash(part)),
        }
    )
    return state.model_copy(update={"partitions": {**state.partitions, partition_id: new}})


def export_wired(graph: Graph, state: EnclaveState, name: str, handle: Handle) -> EnclaveState:
    export = next(e for e in graph.enclaves[state.enclave_id].config.exports if e.name == name)
    target = state.partitions.get(export.target_partition)
    outputs = target.resolved_outputs if target else {}
    return state.model_copy(
        update={
            "export_handles": {**state.export_handles, name: handle},
            "export_hashes": {**state.export_hashes, name: export_hash(export, outputs)},
        }
    )


def import_wired(
    graph: Graph, state: EnclaveState, exporter: EnclaveState | None, alias: str, handle: Handle
) -> EnclaveState:
    wiring = graph.aliases[state.enclave_id][alias]
    exp_hash = exporter.export_hashes.get(wiring.export.name) if exporter else None
    return state.model_copy(
        update={
            "import_handles": {**state.import_handles, alias: handle},
            "import_hashes": {**state.import_hashes, alias: import_hash(wiring.imp, exp_hash)},
        }
    )


def removed(state: EnclaveState, action: Action, target: str) -> EnclaveState:
    """The record after a partition teardown, an export or an import unwiring.

    The enclave's ``updated_at`` moves: its record changed, and "last reconciled" (the newest
    ``updated_at``) must move after an apply that only removed something.
    """
    field = {
        Action.TEARDOWN_PARTITION: ("partitions",),
        Action.UNWIRE_EXPORT: ("export_handles", "export_hashes"),
        Action.UNWIRE_IMPORT: ("import_handles", "import_hashes"),
    }[action]
    update = {
        name: {k: v for k, v in getattr(state, name).items() if k != target} for name in field
    }
    meta = state.meta.model_copy(update={"updated_at": utc_now()})
    return state.model_copy(update={**update, "meta": meta})


def simulate_apply(
    graph: Graph,
    applied: Mapping[str, EnclaveState],
    outputs: Callable[[str, str, str], str] = lambda e, p, k: f"{e}/{p}/{k}",
    plan: Plan | None = None,
) -> dict[str, EnclaveState]:
    """Carry out a plan as if every step succeeded, with ``outputs(enclave, partition, key)``."""
    plan = plan or plan_changes(graph, applied)
    states = dict(applied)
    for step in plan.steps:
        eid, target = step.enclave_id, step.target
        if step.action == Action.PROVISION_ENCLAVE:
            cloud = graph.enclaves[eid].config.cloud or graph.default_cloud or Cloud.LOCAL
            handle = {"driver": "simulated", "kind": "enclave", "id": eid}
            context = {"nclav_project_id": "", "nclav_region": ""}
            states[eid] = enclave_provisioned(graph, states.get(eid), eid, cloud, handle, context)
        elif step.action == Action.PROVISION_PARTITION:
            assert target is not None
            part = graph.enclaves[eid].partition(target)
            assert part is not None
            inputs, _ = resolve_partition_inputs(graph, states, eid, target)
            outs = {k: outputs(eid, target, k) for k in part.config.declared_outputs}
            handle = {"driver": "simulated", "kind": "partition", "id": target}
            states[eid] = partition_applied(graph, states[eid], target, handle, outs, inputs)
        elif step.action == Action.WIRE_EXPORT:
            assert target is not None
            states[eid] = export_wired(graph, states[eid], target, {"export": target})
        elif step.action == Action.WIRE_IMPORT:
            assert target is not None
            wiring = graph.aliases[eid][target]
            states[eid] = import_wired(
                graph, states[eid], states.get(wiring.exporter), target, {"alias": target}
            )
        elif step.action == Action.TEARDOWN_ENCLAVE:
            states.pop(eid, None)
        elif eid in states:
            assert target is not None
            states[eid] = removed(states[eid], step.action, target)
    return states


__all__ = [
    "enclave_provisioned",
    "export_wired",
    "import_wired",
    "partition_applied",
    "partition_started",
    "removed",
    "simulate_apply",
]
