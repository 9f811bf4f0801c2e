"""JSON views of applied state for the API: the original shapes, extended only by new fields."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from nclav.drift.views import drift_counts

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from nclav.model import Cloud
    from nclav.records import DriftRecord
    from nclav.state import EnclaveState, ResourceMeta


def meta_json(meta: ResourceMeta) -> dict[str, Any]:
    return meta.model_dump(mode="json")


def enclave_json(state: EnclaveState) -> dict[str, Any]:
    """EnclaveState (behaviour-spec 8.4): ``desired`` carries its partitions as objects."""
    desired: dict[str, Any] | None = None
    if state.desired is not None:
        desired = state.desired.model_dump(mode="json", by_alias=True)
        desired["partitions"] = [
            p.desired.model_dump(mode="json", by_alias=True)
            for p in state.partitions.values()
            if p.desired is not None
        ]
    return {
        "enclave_id": state.enclave_id,
        "desired": desired,
        "enclave_handle": state.enclave_handle,
        "export_handles": state.export_handles,
        "import_handles": state.import_handles,
        "meta": meta_json(state.meta),
        "resolved_cloud": state.resolved_cloud.value if state.resolved_cloud else None,
        "context_vars": state.context_vars,
        "partitions": {
            pid: {
                "desired": p.desired.model_dump(mode="json", by_alias=True) if p.desired else None,
                "meta": meta_json(p.meta),
                "partition_handle": p.partition_handle,
                "resolved_outputs": p.resolved_outputs,
            }
            for pid, p in sorted(state.partitions.items())
        },
    }


def enclave_graph_json(state: EnclaveState, requested_id: str) -> dict[str, Any]:
    desired = state.desired
    nodes = [
        {
            "id": pid,
            "name": p.desired.name if p.desired else pid,
            "produces": p.desired.produces.value if p.desired and p.desired.produces else None,
            "status": p.meta.status.value,
            "last_error": p.meta.last_error.model_dump() if p.meta.last_error else None,
        }
        for pid, p in state.partitions.items()
    ]
    edges = [
        {"export_name": e.name, "from": e.target_partition, "type": e.export_type.value}
        for e in (desired.exports if desired else ())
    ]
    return {
        "enclave": requested_id,
        "nodes": nodes,
        "edges": edges,
        "status": state.meta.status.value,
    }


def system_graph_json(states: Iterable[EnclaveState]) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for state in states:
        desired = state.desired
        nodes.append(
            {
                "id": state.enclave_id,
                "name": desired.name if desired else state.enclave_id,
                "cloud": desired.cloud.value if desired and desired.cloud else None,
                "status": state.meta.status.value,
                "created_at": state.meta.created_at,
                "updated_at": state.meta.updated_at,
                "last_error": state.meta.last_error.model_dump() if state.meta.last_error else None,
                "partitions": enclave_graph_json(state, state.enclave_id)["nodes"],
            }
        )
        for imp in desired.imports if desired else ():
            edges.append(
                {
                    "alias": imp.alias,
                    "export": imp.export_name,
                    "from": imp.from_,
                    "to": state.enclave_id,
                }
            )
        for pid, part in state.partitions.items():
            for imp in part.desired.imports if part.desired else ():
                edges.append(
                    {
                        "alias": imp.alias,
                        "export": imp.export_name,
                        "from": imp.from_,
                        "to": state.enclave_id,
                        "partition": pid,
                    }
                )
    return {"nodes": nodes, "edges": edges}


def status_json(
    states: Sequence[EnclaveState],
    default_cloud: Cloud,
    drivers: Iterable[Cloud],
    drift: Iterable[DriftRecord] = (),
    dead_letters: int | None = None,
) -> dict[str, Any]:
    """The system at a glance; ``dead_letters``: messages in the runtime's dead-letter
    queues (None where the runtime has none to count, the local one)."""
    errors: list[dict[str, Any]] = []
    for state in states:
        if state.meta.last_error:
            errors.append({"enclave_id": state.enclave_id, **state.meta.last_error.model_dump()})
        for pid, part in state.partitions.items():
            if part.meta.last_error:
                errors.append(
                    {
                        "enclave_id": state.enclave_id,
                        "partition_id": pid,
                        **part.meta.last_error.model_dump(),
                    }
                )
    # An apply that changes only partitions leaves the enclave's own meta alone: count them too.
    updated = [
        stamp
        for s in states
        for stamp in (s.meta.updated_at, *(p.meta.updated_at for p in s.partitions.values()))
        if stamp
    ]
    return {
        "active_drivers": sorted(c.value for c in drivers),
        "dead_letters": dead_letters,
        "by_status": dict(Counter(s.meta.status.value for s in states)),
        "default_cloud": default_cloud.value,
        "drift": drift_counts(drift),
        "enclave_count": len(states),
        "errors": errors,
        "last_reconciled_at": max(updated) if updated else None,
    }


__all__ = ["enclave_graph_json", "enclave_json", "status_json", "system_graph_json"]
