"""The plan: a pure function of (validated desired tree, applied state).

``plan_changes`` returns the changes a user reads (``+ ~ - > <`` lines) and the DAG of steps
that carries them out. Provisioning follows dependencies (an exporter's partition before its
importers); teardown runs the other way. A resource whose hash is unchanged and whose status is
``active`` gets no step. A resource that only *might* change, because something upstream of it
is being applied, gets a *conditional* step: at run time the engine recomputes its hash from
the fresh upstream outputs and skips it when nothing moved.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from nclav._gc import paused_gc
from nclav.config import Desired
from nclav.graph import Graph, kahn
from nclav.hashing import enclave_hash, export_hash, import_hash, inputs_hash, partition_hash
from nclav.state import EnclaveState, Status
from nclav.templates import TemplateSyntaxError, resolve_inputs, tokens

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from nclav.model import EnclaveConfig, Import


class ChangeKind(StrEnum):
    ENCLAVE_CREATED = "EnclaveCreated"
    ENCLAVE_UPDATED = "EnclaveUpdated"
    ENCLAVE_DELETED = "EnclaveDeleted"
    PARTITION_CREATED = "PartitionCreated"
    PARTITION_UPDATED = "PartitionUpdated"
    PARTITION_DELETED = "PartitionDeleted"
    EXPORT_WIRED = "ExportWired"
    EXPORT_UNWIRED = "ExportUnwired"
    IMPORT_WIRED = "ImportWired"
    IMPORT_UNWIRED = "ImportUnwired"


class Action(StrEnum):
    PROVISION_ENCLAVE = "provision_enclave"
    PROVISION_PARTITION = "provision_partition"
    WIRE_EXPORT = "wire_export"
    WIRE_IMPORT = "wire_import"
    UNWIRE_IMPORT = "unwire_import"
    UNWIRE_EXPORT = "unwire_export"
    TEARDOWN_PARTITION = "teardown_partition"
    TEARDOWN_ENCLAVE = "teardown_enclave"

    @property
    def runs_terraform(self) -> bool:
        """Whether the step runs terraform (a runtime may route it to a worker that has it)."""
        return self in (Action.PROVISION_PARTITION, Action.TEARDOWN_PARTITION)


_LINE = {
    ChangeKind.ENCLAVE_CREATED: "+ enclave {e}",
    ChangeKind.ENCLAVE_UPDATED: "~ enclave {e}",
    ChangeKind.ENCLAVE_DELETED: "- enclave {e}",
    ChangeKind.PARTITION_CREATED: "  + partition {e}/{t}",
    ChangeKind.PARTITION_UPDATED: "  ~ partition {e}/{t}",
    ChangeKind.PARTITION_DELETED: "  - partition {e}/{t}",
    ChangeKind.EXPORT_WIRED: "  > export {e}/{t}",
    ChangeKind.EXPORT_UNWIRED: "  - export {e}/{t}",
    ChangeKind.IMPORT_WIRED: "  < import {e}/{t}",
    ChangeKind.IMPORT_UNWIRED: "  - import {e}/{t}",
}


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    enclave_id: str
    target: str | None = None  # partition id, export name or import alias
    reason: str = ""
    conditional: bool = False

    def render(self) -> str:
        line = _LINE[self.kind].format(e=self.enclave_id, t=self.target)
        return f"{line}  ({self.reason})" if self.reason else line

    def to_json(self) -> dict[str, object]:
        kind = self.kind
        out: dict[str, object] = {"kind": kind.value}
        if kind.startswith("Enclave"):
            out["id"] = self.enclave_id
        elif kind.startswith("Partition"):
            out.update(enclave_id=self.enclave_id, partition_id=self.target)
        elif kind.startswith("Export"):
            out.update(enclave_id=self.enclave_id, export_name=self.target)
        else:
            out.update(importer_enclave=self.enclave_id, alias=self.target)
        if self.reason:
            out["reason"] = self.reason
        if self.conditional:
            out["conditional"] = True
        return out


@dataclass(frozen=True, slots=True)
class Step:
    id: str
    action: Action
    enclave_id: str
    target: str | None
    depends_on: tuple[str, ...]
    conditional: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "action": self.action.value,
            "enclave_id": self.enclave_id,
            "target": self.target,
            "depends_on": list(self.depends_on),
            "conditional": self.conditional,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    changes: tuple[Change, ...]
    steps: tuple[Step, ...]  # in a valid execution order

    def render_text(self) -> str:
        if not self.changes:
            return "No changes detected."
        lines = [c.render() for c in self.changes]
        maybe = sum(c.conditional for c in self.changes)
        tail = f" ({maybe} only if upstream outputs change)" if maybe else ""
        lines.append(f"{len(self.changes)} change(s) would be applied{tail}.")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "changes": [c.to_json() for c in self.changes],
            "steps": [s.to_json() for s in self.steps],
        }


_ACTION_TEXT = {a: a.value for a in Action}  # Enum.value is a slow descriptor on a hot path


def step_id(action: Action, enclave_id: str, target: str | None = None) -> str:
    name = _ACTION_TEXT[action]
    return f"{name}:{enclave_id}/{target}" if target is not None else f"{name}:{enclave_id}"


@dataclass
class _Builder:
    graph: Graph
    applied: Mapping[str, EnclaveState]
    changes: list[Change] = field(default_factory=list)
    steps: dict[str, tuple[Step, list[str]]] = field(default_factory=dict)
    alias_users: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def has(self, action: Action, enclave_id: str, target: str | None = None) -> bool:
        return step_id(action, enclave_id, target) in self.steps

    def add(
        self,
        change: Change | None,
        action: Action,
        enclave_id: str,
        target: str | None,
        deps: list[str],
        conditional: bool = False,
    ) -> str:
        if change is not None:
            self.changes.append(change)
        sid = step_id(action, enclave_id, target)
        self.steps[sid] = (Step(sid, action, enclave_id, target, (), conditional), deps)
        return sid

    def dep(self, sid: str, action: Action, enclave_id: str, target: str | None = None) -> None:
        other = step_id(action, enclave_id, target)
        if other in self.steps and other != sid:
            self.steps[sid][1].append(other)

    # -- teardown of enclaves that left the tree -----------------------------------------

    def deletions(self) -> None:
        removed = sorted(eid for eid in self.applied if eid not in self.graph.enclaves)
        if not removed:
            return
        exporters = {eid: _stored_exporters(self.applied[eid]) & set(removed) for eid in removed}
        rank = {eid: i for i, eid in enumerate(removed)}
        order = kahn(removed, exporters, rank)
        order += [eid for eid in removed if eid not in order]  # a stored cycle: keep them all
        for eid in reversed(order):  # importers before the enclaves they import from
            state = self.applied[eid]
            self.changes.append(Change(ChangeKind.ENCLAVE_DELETED, eid))
            last: list[str] = []
            for pid in _teardown_order(state, list(state.partitions)):
                last.append(self._teardown_partition(state, pid))
            for alias in state.import_handles:
                last.append(self.add(None, Action.UNWIRE_IMPORT, eid, alias, list(last)))
            for name in state.export_handles:
                last.append(self.add(None, Action.UNWIRE_EXPORT, eid, name, list(last)))
            self.add(None, Action.TEARDOWN_ENCLAVE, eid, None, last)
        for eid in removed:  # an exporter's teardown waits for its removed importers
            for importer in removed:
                if eid in exporters[importer]:
                    for sid, (step, _deps) in self.steps.items():
                        if step.enclave_id == eid and step.action == Action.TEARDOWN_PARTITION:
                            self.dep(sid, Action.TEARDOWN_ENCLAVE, importer)

    def _teardown_partition(self, state: EnclaveState, pid: str) -> str:
        self.changes.append(Change(ChangeKind.PARTITION_DELETED, state.enclave_id, pid))
        downstream = [
            step_id(Action.TEARDOWN_PARTITION, state.enclave_id, other)
            for other, ups in _stored_upstream(state).items()
            if pid in ups
        ]
        return self.add(
            None,
            Action.TEARDOWN_PARTITION,
            state.enclave_id,
            pid,
            [d for d in downstream if d in self.steps],
        )

    # -- provisioning ----------------------------------------------------------------------

    def enclave(self, eid: str) -> None:
        loaded = self.graph.enclaves[eid]
        state = self.applied.get(eid)
        if state is None:
            self.add(
                Change(ChangeKind.ENCLAVE_CREATED, eid), Action.PROVISION_ENCLAVE, eid, None, []
            )
        elif state.meta.desired_hash is not None and state.meta.desired_hash != enclave_hash(
            loaded
        ):
            reason = "settings changed"
            self.add(
                Change(ChangeKind.ENCLAVE_UPDATED, eid, reason=reason),
                Action.PROVISION_ENCLAVE,
                eid,
                None,
                [],
            )
        elif state.meta.status != Status.ACTIVE or state.meta.desired_hash is None:
            reason = f"last attempt ended {state.meta.status.value}"
            self.add(
                Change(ChangeKind.ENCLAVE_UPDATED, eid, reason=reason),
                Action.PROVISION_ENCLAVE,
                eid,
                None,
                [],
            )

        teardowns: list[str] = []
        if state is not None:
            gone = [pid for pid in state.partitions if loaded.partition(pid) is None]
            teardowns = [
                self._teardown_partition(state, pid) for pid in _teardown_order(state, gone)
            ]

        for part in self.graph.partition_order(eid):
            self._partition(eid, part.id, state, teardowns)

        for export in loaded.config.exports:
            outputs = {}
            if state is not None and export.target_partition in state.partitions:
                outputs = state.partitions[export.target_partition].resolved_outputs
            change = None
            if state is None or export.name not in state.export_handles:
                change = Change(ChangeKind.EXPORT_WIRED, eid, export.name)
            elif state.export_hashes.get(export.name) != export_hash(export, outputs):
                change = Change(ChangeKind.EXPORT_WIRED, eid, export.name, "settings changed")
            elif self.has(Action.PROVISION_PARTITION, eid, export.target_partition):
                change = Change(
                    ChangeKind.EXPORT_WIRED,
                    eid,
                    export.name,
                    f"if outputs of {eid}/{export.target_partition} change",
                    True,
                )
            if change is not None:
                sid = self.add(change, Action.WIRE_EXPORT, eid, export.name, [], change.conditional)
                self.dep(sid, Action.PROVISION_ENCLAVE, eid)
                self.dep(sid, Action.PROVISION_PARTITION, eid, export.target_partition)

        if state is not None:
            declared = {e.name for e in loaded.config.exports}
            for name in state.export_handles:
                if name not in declared:
                    self.add(
                        Change(ChangeKind.EXPORT_UNWIRED, eid, name),
                        Action.UNWIRE_EXPORT,
                        eid,
                        name,
                        [],
                    )

    def _partition(
        self, eid: str, pid: str, state: EnclaveState | None, teardowns: list[str]
    ) -> None:
        loaded = self.graph.enclaves[eid]
        part = loaded.partition(pid)
        assert part is not None
        stored = state.partitions.get(pid) if state is not None else None
        upstream = self.graph.upstream.get((eid, pid), ())
        change: Change | None = None
        if stored is None:
            change = Change(ChangeKind.PARTITION_CREATED, eid, pid)
        elif stored.meta.desired_hash is not None and stored.meta.desired_hash != partition_hash(
            part
        ):
            change = Change(ChangeKind.PARTITION_UPDATED, eid, pid, "config or files changed")
        elif stored.meta.status != Status.ACTIVE or stored.meta.desired_hash is None:
            change = Change(
                ChangeKind.PARTITION_UPDATED,
                eid,
                pid,
                f"last attempt ended {stored.meta.status.value}",
            )
        elif self._stale_inputs(eid, pid, state, stored.inputs_hash):
            change = Change(ChangeKind.PARTITION_UPDATED, eid, pid, "upstream outputs changed")
        else:
            moving = [u for u in upstream if self.has(Action.PROVISION_PARTITION, *u)]
            if moving:
                names = ", ".join(f"{e}/{p}" for e, p in moving)
                change = Change(
                    ChangeKind.PARTITION_UPDATED, eid, pid, f"if outputs of {names} change", True
                )
            elif self.has(Action.PROVISION_ENCLAVE, eid) and _uses_driver_context(
                part.config.inputs
            ):
                change = Change(
                    ChangeKind.PARTITION_UPDATED,
                    eid,
                    pid,
                    f"if the context of enclave {eid} changes",
                    True,
                )
        if change is None:
            return
        sid = self.add(
            change, Action.PROVISION_PARTITION, eid, pid, list(teardowns), change.conditional
        )
        self.dep(sid, Action.PROVISION_ENCLAVE, eid)
        for up in upstream:
            self.dep(sid, Action.PROVISION_PARTITION, *up)
        for alias, wiring in self.graph.aliases.get(eid, {}).items():
            if wiring.partition == pid or wiring.upstream in upstream:
                self.alias_users.setdefault(f"{eid}/{alias}", []).append((sid, alias))

    def _stale_inputs(
        self, eid: str, pid: str, state: EnclaveState | None, stored_hash: str | None
    ) -> bool:
        resolved, missing = resolve_partition_inputs(self.graph, self.applied, eid, pid)
        return bool(missing) or inputs_hash(resolved) != stored_hash

    def imports(self, eid: str) -> None:
        state = self.applied.get(eid)
        for alias, wiring in self.graph.aliases.get(eid, {}).items():
            exporter = self.applied.get(wiring.exporter)
            exp_hash = exporter.export_hashes.get(wiring.export.name) if exporter else None
            change = None
            if state is None or alias not in state.import_handles:
                change = Change(ChangeKind.IMPORT_WIRED, eid, alias)
            elif state.import_hashes.get(alias) != import_hash(wiring.imp, exp_hash):
                change = Change(ChangeKind.IMPORT_WIRED, eid, alias, "settings changed")
            elif self.has(Action.WIRE_EXPORT, wiring.exporter, wiring.export.name):
                change = Change(
                    ChangeKind.IMPORT_WIRED,
                    eid,
                    alias,
                    f"if export {wiring.exporter}/{wiring.export.name} changes",
                    True,
                )
            if change is not None:
                sid = self.add(change, Action.WIRE_IMPORT, eid, alias, [], change.conditional)
                self.dep(sid, Action.PROVISION_ENCLAVE, eid)
                self.dep(sid, Action.WIRE_EXPORT, wiring.exporter, wiring.export.name)
            for user, _ in self.alias_users.get(f"{eid}/{alias}", []):
                self.dep(user, Action.WIRE_IMPORT, eid, alias)
        if state is not None:
            declared = self.graph.aliases.get(eid, {})
            stored = _stored_imports(state)
            for alias in state.import_handles:
                if alias not in declared:
                    sid = self.add(
                        Change(ChangeKind.IMPORT_UNWIRED, eid, alias),
                        Action.UNWIRE_IMPORT,
                        eid,
                        alias,
                        [],
                    )
                    # Partitions that read through the import are re-applied without it first.
                    for other, (step, _) in list(self.steps.items()):
                        if step.enclave_id == eid and step.action == Action.PROVISION_PARTITION:
                            self.steps[sid][1].append(other)
                    imp = stored.get(alias)
                    if imp is not None:  # the export it used may be going away too
                        unwire = step_id(Action.UNWIRE_EXPORT, imp.from_, imp.export_name)
                        if unwire in self.steps:
                            self.steps[unwire][1].append(sid)

    def finish(self) -> Plan:
        rank = {sid: i for i, sid in enumerate(self.steps)}
        deps = {sid: deps for sid, (_, deps) in self.steps.items()}
        order = kahn(list(self.steps), deps, rank)
        steps = tuple(
            Step(
                s.id,
                s.action,
                s.enclave_id,
                s.target,
                tuple(sorted(set(deps[sid]), key=rank.__getitem__)),
                s.conditional,
            )
            for sid in order
            for s in (self.steps[sid][0],)
        )
        return Plan(tuple(self.changes), steps)


_STATIC_TOKENS = frozenset({"nclav_enclave_id", "nclav_partition_id"})


def _uses_driver_context(inputs: Mapping[str, str]) -> bool:
    for value in inputs.values():
        try:
            found = list(tokens(value))
        except TemplateSyntaxError:
            continue
        if any(t.alias is None and t.name not in _STATIC_TOKENS for t in found):
            return True
    return False


def _stored_imports(state: EnclaveState) -> dict[str, Import]:
    out: dict[str, Import] = {}
    if state.desired is not None:
        out.update((i.alias, i) for i in state.desired.imports)
    for part in state.partitions.values():
        if part.desired is not None:
            out.update((i.alias, i) for i in part.desired.imports)
    return out


def _stored_exporters(state: EnclaveState) -> set[str]:
    return {imp.from_ for imp in _stored_imports(state).values() if imp.from_ != state.enclave_id}


def _stored_upstream(state: EnclaveState) -> dict[str, set[str]]:
    """Within one applied enclave: partition id -> the partitions of that enclave it read."""
    config: EnclaveConfig | None = state.desired
    targets = {e.name: e.target_partition for e in config.exports} if config else {}
    imports = _stored_imports(state)
    out: dict[str, set[str]] = {}
    for pid, part in state.partitions.items():
        ups: set[str] = set()
        if part.desired is not None:
            aliases = {i.alias for i in part.desired.imports}
            for value in part.desired.inputs.values():
                with contextlib.suppress(TemplateSyntaxError):
                    aliases.update(t.alias for t in tokens(value) if t.alias)
            for alias in aliases:
                imp = imports.get(alias)
                if imp is not None and imp.from_ == state.enclave_id and imp.export_name in targets:
                    ups.add(targets[imp.export_name])
        out[pid] = ups
    return out


def _teardown_order(state: EnclaveState, pids: list[str]) -> list[str]:
    """``pids`` with every partition before the partitions it read (reverse of provisioning)."""
    ups = _stored_upstream(state)
    rank = {pid: i for i, pid in enumerate(pids)}
    order = kahn(pids, {p: ups.get(p, set()) & set(pids) for p in pids}, rank)
    order += [p for p in pids if p not in order]
    return list(reversed(order))


def resolve_partition_inputs(
    graph: Graph, applied: Mapping[str, EnclaveState], enclave_id: str, partition_id: str
) -> tuple[dict[str, str], list[str]]:
    """The partition's inputs with every token filled from applied state (and what failed)."""
    part = graph.enclaves[enclave_id].partition(partition_id)
    if part is None:
        raise KeyError(f"{enclave_id}/{partition_id}")
    state = applied.get(enclave_id)
    context = {
        **(state.context_vars if state else {}),
        "nclav_enclave_id": enclave_id,
        "nclav_partition_id": partition_id,
    }
    aliases = graph.aliases.get(enclave_id, {})

    def outputs(alias: str, key: str) -> str | None:
        # The import's own view first: a cloud driver may rewrite what the importer reaches
        # (an endpoint's DNS name instead of the exporter's internal address).
        handle = state.import_handles.get(alias) if state else None
        seen = handle.get("outputs") if handle else None
        if isinstance(seen, dict) and isinstance(seen.get(key), str):
            return str(seen[key])
        wiring = aliases.get(alias)
        exporter = applied.get(wiring.exporter) if wiring else None
        if wiring is None or exporter is None:
            return None
        upstream = exporter.partitions.get(wiring.export.target_partition)
        return upstream.resolved_outputs.get(key) if upstream else None

    return resolve_inputs(part.config.inputs, context, outputs)


def plan_changes(graph: Graph, applied: Mapping[str, EnclaveState]) -> Plan:
    """Changes and steps that take ``applied`` to the desired ``graph``."""
    with paused_gc():
        builder = _Builder(graph, applied)
        builder.deletions()
        for eid in graph.order:
            builder.enclave(eid)
        for eid in graph.order:
            builder.imports(eid)
        return builder.finish()


def plan_teardown(applied: Mapping[str, EnclaveState], enclave_ids: Iterable[str]) -> Plan:
    """Steps that tear down the given applied enclaves (imperative destroy), importers first."""
    chosen = {eid: applied[eid] for eid in enclave_ids if eid in applied}
    builder = _Builder(empty_graph(Desired(())), chosen)
    builder.deletions()
    return builder.finish()


def plan_partition_teardown(state: EnclaveState, partition_id: str) -> Plan:
    """The one step that tears down a single applied partition (imperative destroy)."""
    builder = _Builder(empty_graph(Desired(())), {state.enclave_id: state})
    builder._teardown_partition(state, partition_id)
    return builder.finish()


def empty_graph(desired: Desired) -> Graph:
    return Graph(desired=desired, order=(), enclaves={}, aliases={})


__all__ = [
    "Action",
    "Change",
    "ChangeKind",
    "Plan",
    "Step",
    "empty_graph",
    "plan_changes",
    "plan_partition_teardown",
    "plan_teardown",
    "resolve_partition_inputs",
    "step_id",
]
