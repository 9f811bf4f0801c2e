"""Text the CLI prints, rendered from the API's JSON (pure functions, no I/O).

The change lines mirror ``nclav.plan.Change.render`` (a unit test keeps them in step), without
importing the core: the thin client renders whatever the server sends.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

Doc = dict[str, Any]

_LINE = {
    "EnclaveCreated": "+ enclave {e}",
    "EnclaveUpdated": "~ enclave {e}",
    "EnclaveDeleted": "- enclave {e}",
    "PartitionCreated": "  + partition {e}/{t}",
    "PartitionUpdated": "  ~ partition {e}/{t}",
    "PartitionDeleted": "  - partition {e}/{t}",
    "ExportWired": "  > export {e}/{t}",
    "ExportUnwired": "  - export {e}/{t}",
    "ImportWired": "  < import {e}/{t}",
    "ImportUnwired": "  - import {e}/{t}",
}
_SEPARATOR = "\u2500"


def change_subject(change: Mapping[str, Any]) -> tuple[str, str | None]:
    """(enclave id, partition id / export name / alias) of a change's JSON form."""
    enclave = change.get("id") or change.get("enclave_id") or change.get("importer_enclave")
    target = change.get("partition_id") or change.get("export_name") or change.get("alias")
    return str(enclave or "?"), (str(target) if target is not None else None)


def change_line(change: Mapping[str, Any]) -> str:
    """``+ enclave e``, ``  ~ partition e/p  (reason)``... as the seed README shows them."""
    template = _LINE.get(str(change.get("kind")))
    if template is None:  # a kind this client does not know: show it rather than hide it
        return f"  ? {json.dumps(dict(change), sort_keys=True)}"
    enclave, target = change_subject(change)
    line = template.format(e=enclave, t=target)
    reason = change.get("reason")
    return f"{line}  ({reason})" if reason else line


def by_enclave(changes: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The changes grouped under their enclave (in the order enclaves first appear), each
    group in plan order. A plan wires imports after every enclave is created; shown in that
    order, an enclave's imports would sit under the enclave listed last."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for change in changes:
        groups.setdefault(change_subject(change)[0], []).append(change)
    return [change for group in groups.values() for change in group]


def change_lines(changes: Sequence[Mapping[str, Any]]) -> list[str]:
    """The plan as text: one line per change, grouped under its enclave."""
    return [change_line(c) for c in by_enclave(changes)]


def diff_summary(changes: Sequence[Mapping[str, Any]]) -> str:
    if not changes:
        return "No changes detected."
    maybe = sum(bool(c.get("conditional")) for c in changes)
    tail = f" ({maybe} only if upstream outputs change)" if maybe else ""
    return f"{len(changes)} change(s) would be applied{tail}."


def deletions(changes: Sequence[Mapping[str, Any]]) -> list[str]:
    """What a plan destroys: each enclave (its partitions go with it) and each partition of an
    enclave that stays. Unwiring an export or import destroys nothing and does not count."""
    enclaves = {change_subject(c)[0] for c in changes if c.get("kind") == "EnclaveDeleted"}
    found = [f"enclave {e}" for e in sorted(enclaves)]
    for c in changes:
        if c.get("kind") == "PartitionDeleted":
            enclave, part = change_subject(c)
            if enclave not in enclaves:
                found.append(f"partition {enclave}/{part}")
    return found


# -- runs and steps ---------------------------------------------------------------------------


def step_label(step: Mapping[str, Any]) -> str:
    """``provision partition e/p`` from a step record."""
    action = str(step.get("action", "step")).replace("_", " ")
    target = step.get("target")
    where = f"{step.get('enclave_id')}/{target}" if target is not None else step.get("enclave_id")
    return f"{action} {where}"


def seconds_between(start: str | None, end: str | None) -> float | None:
    from datetime import datetime

    if not start or not end:
        return None
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def step_counts(steps: Sequence[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for s in steps:
        counts[str(s.get("status"))] = counts.get(str(s.get("status")), 0) + 1
    order = ["succeeded", "skipped", "failed", "blocked", "running", "ready", "pending"]
    known = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    known += [f"{n} {k}" for k, n in sorted(counts.items()) if k not in order]
    return ", ".join(known) if known else "no steps"


def error_lines(errors: Sequence[str]) -> list[str]:
    """``N error(s):`` and each error as ``  ! first line``, further lines indented."""
    if not errors:
        return []
    lines = [f"{len(errors)} error(s):"]
    for error in errors:
        first, *rest = str(error).rstrip("\n").split("\n") or [""]
        lines.append(f"  ! {first}")
        lines.extend(f"    {line}" if line else "" for line in rest)
    return lines


def run_summary(run: Mapping[str, Any]) -> str:
    steps = run.get("steps") or []
    took = duration(seconds_between(run.get("started_at"), run.get("finished_at")))
    when = f" in {took}" if took != "-" else ""
    return f"Run {run.get('id')} {run.get('status')}{when}: {step_counts(steps)}."


def run_detail(run: Mapping[str, Any]) -> list[str]:
    """``nclav runs show``: the run's fields, then one line per step."""
    steps = run.get("steps") or []
    lines = [
        f"Run:       {run.get('id')}",
        f"Status:    {run.get('status')}  Trigger: {run.get('trigger')}  "
        f"Changes: {run.get('changes')}",
        f"Bundle:    {run.get('bundle') or '-'}",
        f"Created:   {run.get('created_at') or '-'}",
        f"Started:   {run.get('started_at') or '-'}",
        f"Finished:  {run.get('finished_at') or '-'}"
        + (
            f"  ({duration(seconds_between(run.get('started_at'), run.get('finished_at')))})"
            if run.get("finished_at")
            else ""
        ),
        f"Steps:     {len(steps)} ({step_counts(steps)})",
    ]
    if run.get("retry_of"):  # a retry: which try, and the earlier ones (issue 14)
        tries = [f"Retry of:  {run['retry_of']} (try {run.get('attempt')})"]
        for a in run.get("attempts") or []:
            n = len(a.get("errors") or [])
            tries.append(
                f"  try {a.get('attempt')}: run {a.get('run_id')} {a.get('status')} at "
                f"{a.get('finished_at') or '-'} ({n} error{'' if n == 1 else 's'})"
            )
        lines[2:2] = tries
    if steps:
        lines.append(_SEPARATOR * 60)
        lines += table(
            ["STATUS", "TIME", "TRIES", "STEP"],
            [
                [
                    str(s.get("status")),
                    duration(seconds_between(s.get("started_at"), s.get("finished_at"))),
                    str(s.get("attempts", 0)),
                    step_label(s) + ("  (conditional)" if s.get("conditional") else ""),
                ]
                for s in steps
            ],
            [11, 8, 6],
        )
    return lines


def _trigger(run: Mapping[str, Any]) -> str:
    """The trigger, and for a run from the git source its commit (issue 15)."""
    origin = run.get("origin")
    commit = origin.get("commit") if isinstance(origin, dict) else None
    return f"{run.get('trigger')} {str(commit)[:7]}" if commit else str(run.get("trigger"))


def runs_table(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    return table(
        ["ID", "STATUS", "TRIGGER", "CHANGES", "ERRORS", "CREATED"],
        [
            [
                str(r.get("id")),
                str(r.get("status")),
                _trigger(r),
                str(r.get("changes")),
                str(len(r.get("errors") or ())),
                _time(r.get("created_at")),
            ]
            for r in runs
        ],
        [38, 11, 9, 9, 8],
    )


_EVENT_KEYS = frozenset(
    {"kind", "id", "at", "enclave_id", "importer_enclave", "partition_id", "seq", "run_id"}
)


def events_table(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """``nclav events``: SEQ, TIME, KIND, WHERE (enclave[/partition]) and the event's details
    (its other fields; an error message by its first line)."""
    rows = []
    for event in events:
        where = event.get("enclave_id") or event.get("importer_enclave") or "-"
        if event.get("partition_id"):
            where = f"{where}/{event['partition_id']}"
        extra = {k: v for k, v in event.items() if k not in _EVENT_KEYS and k != "message"}
        details = [f"{k}={_first_line(v)}" for k, v in sorted(extra.items())]
        if event.get("run_id"):
            details.insert(0, f"run={event['run_id']}")
        if event.get("message"):
            details.append(_first_line(event["message"]))
        rows.append(
            [
                str(event.get("seq", "-")),
                _time(event.get("at")),
                str(event.get("kind")),
                str(where),
                " ".join(details),
            ]
        )
    return table(["SEQ", "TIME", "KIND", "WHERE", "DETAILS"], rows, [7, 21, 21, 28])


# -- tables ------------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Iterable[Sequence[str]], widths: Sequence[int]) -> list[str]:
    """Columns padded to ``widths`` (the last column is free), header first."""

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.ljust(w) if len(c) < w else c + " " for c, w in zip(cells, widths, strict=False)
        ]
        return ("".join(padded) + "".join(cells[len(widths) :])).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _time(value: object) -> str:
    return str(value)[:19] if value else "-"


def iac_runs_table(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """behaviour-spec 9.7: newest first, ``started_at`` cut to seconds, exit code as JSON."""
    ordered = sorted(runs, key=lambda r: str(r.get("started_at") or ""), reverse=True)
    widths = [38, 12, 12, 22]
    head = table(["ID", "OPERATION", "STATUS", "STARTED", "EXIT"], [], widths)
    rows = table(
        ["", "", "", "", ""],
        [
            [
                str(r.get("id") or "-"),
                str(r.get("operation") or "-"),
                str(r.get("status") or "-"),
                _time(r.get("started_at")),
                json.dumps(r.get("exit_code")),
            ]
            for r in ordered
        ],
        widths,
    )[1:]
    return [*head, _SEPARATOR * 90, *rows]


def iac_log_header(run: Mapping[str, Any]) -> list[str]:
    return [
        f"Run:       {run.get('id', '-')}",
        f"Operation: {run.get('operation', '-')}  Status: {run.get('status', '-')}  "
        f"Exit: {json.dumps(run.get('exit_code'))}",
        f"Started:   {run.get('started_at') or '-'}",
        _SEPARATOR * 60,
    ]


def orphan_rows(orphans: Sequence[Mapping[str, Any]]) -> list[str]:
    """behaviour-spec 9.6: ENCLAVE (22) PARTITION (16) RESOURCE TYPE (28) RESOURCE NAME."""

    def pick(o: Mapping[str, Any], *keys: str) -> str:
        for key in keys:
            if o.get(key) is not None:
                return str(o[key])
        return "-"

    widths = [22, 16, 28]
    head = table(["ENCLAVE", "PARTITION", "RESOURCE TYPE", "RESOURCE NAME"], [], widths)
    rows = [
        [
            pick(o, "enclave_id", "enclave"),
            pick(o, "partition_id", "partition"),
            pick(o, "resource_type", "type"),
            pick(o, "resource_id", "resource_name", "name"),
        ]
        for o in orphans
    ]
    return [*head, _SEPARATOR * 100, *table(["", "", "", ""], rows, widths)[1:]]


def orphan_enclave(orphan: Mapping[str, Any]) -> str | None:
    value = orphan.get("enclave_id", orphan.get("enclave"))
    return str(value) if value is not None else None


# -- status -------------------------------------------------------------------------------------


def status_lines(doc: Mapping[str, Any]) -> list[str]:
    by_status = doc.get("by_status") or {}
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(by_status.items()))
    lines = [
        f"Enclaves: {doc.get('enclave_count', 0)}" + (f" ({counts})" if counts else ""),
        f"Default cloud: {doc.get('default_cloud')}",
        f"Active drivers: {', '.join(doc.get('active_drivers') or []) or '-'}",
        f"Last reconciled: {doc.get('last_reconciled_at') or 'never'}",
    ]
    dead = doc.get("dead_letters")
    if dead is not None:  # None: the runtime has no dead-letter queue (local)
        hint = " (redrive them to the queue: see the README, Retries)" if dead else ""
        lines.append(f"Dead-lettered messages: {dead}{hint}")
    drift = doc.get("drift")
    if drift:
        lines.append(f"Drift: {drift_summary(drift)}")
    errors = doc.get("errors") or []
    if errors:
        lines.append(f"Errors: {len(errors)}")
        for e in errors:
            where = e.get("enclave_id", "?")
            if e.get("partition_id"):
                where += f"/{e['partition_id']}"
            first = str(e.get("message", "")).split("\n", 1)[0]
            lines.append(f"  ! {where}: {first}")
    return lines


# -- drift (GET /drift, POST .../drift/check) ----------------------------------------------------


def drift_summary(counts: Mapping[str, Any]) -> str:
    acked = counts.get("acknowledged", 0)
    in_sync = f"{counts.get('in_sync', 0)} in sync" + (f" ({acked} acknowledged)" if acked else "")
    return (
        f"{counts.get('drifted', 0)} drifted, {in_sync}, "
        f"{counts.get('check_failed', 0)} check failed, {counts.get('not_checked', 0)} not checked"
    )


def _drift_status(doc: Mapping[str, Any]) -> str:
    status = str(doc.get("status"))
    return "in_sync (acknowledged)" if status == "in_sync" and doc.get("acknowledged") else status


def drift_lines(doc: Mapping[str, Any]) -> list[str]:
    parts = doc.get("partitions") or []
    if not parts:
        return ["No applied partitions."]
    rows = [
        [
            f"{p['enclave_id']}/{p['partition_id']}",
            _drift_status(p),
            _time(p.get("checked_at")) if p.get("checked_at") else "never",
            ", ".join(r["address"] for r in p.get("resource_drift") or [])
            or _first_line(p.get("error") or ""),
        ]
        for p in parts
    ]
    lines = table(["PARTITION", "DRIFT", "CHECKED", "RESOURCES"], rows, [30, 23, 20])
    lines.append(f"Drift: {drift_summary(doc.get('counts') or {})}")
    return lines


def drift_detail(doc: Mapping[str, Any]) -> list[str]:
    lines = [
        f"{doc['enclave_id']}/{doc['partition_id']}: {_drift_status(doc)}",
        f"Checked: {doc.get('checked_at') or 'never'}",
    ]
    for r in doc.get("resource_drift") or []:
        lines.append(f"  ~ {r['address']}: {', '.join(r.get('attributes') or []) or '(whole)'}")
    if doc.get("error"):
        lines.append(f"Error: {doc['error']}")
    if doc.get("remediation_run_id"):
        lines.append(f"Remediation run: {doc['remediation_run_id']}")
    return lines


# -- graph (behaviour-spec 9.4, rendered from GET /enclaves) ------------------------------------


def _target(to: object) -> str:
    if isinstance(to, dict) and len(to) == 1:
        ((kind, ident),) = to.items()
        return f"{kind}:{ident}"
    return str(to)


def _first_line(text: object) -> str:
    return str(text).split("\n", 1)[0]


def _partition_status(state: Mapping[str, Any] | None) -> str:
    return str(state["meta"]["status"]) if state and state.get("meta") else "pending"


def select(enclaves: Sequence[Doc], only: str | None) -> list[Doc]:
    return [e for e in enclaves if only is None or e.get("enclave_id") == only]


def graph_text(enclaves: Sequence[Doc]) -> list[str]:
    lines: list[str] = []
    for state in enclaves:
        desired = state.get("desired") or {}
        meta = state.get("meta") or {}
        eid = state.get("enclave_id")
        cloud = state.get("resolved_cloud")
        name = desired.get("name", eid)
        lines.append(
            f"Enclave: {name}{f' [{cloud}]' if cloud else ''} ({eid}) [{meta.get('status')}]"
        )
        if meta.get("last_error"):
            lines.append(f"  ! error: {_first_line(meta['last_error'].get('message'))}")
        parts = state.get("partitions") or {}
        for part in desired.get("partitions") or []:
            pid = part.get("id")
            pstate = parts.get(pid)
            lines.append(
                f"  Partition: {part.get('name', pid)} ({pid}) [{_partition_status(pstate)}]"
            )
            if pstate:
                error = (pstate.get("meta") or {}).get("last_error")
                if error:
                    lines.append(f"    ! error: {_first_line(error.get('message'))}")
                if part.get("produces"):
                    lines.append(f"    produces: {part['produces']}")
                for key, value in sorted((pstate.get("resolved_outputs") or {}).items()):
                    lines.append(f"    output {key}: {value}")
            for imp in part.get("imports") or []:
                lines.append(
                    f"    imports: {imp.get('from')}.{imp.get('export_name')} as {imp.get('alias')}"
                )
        for exp in desired.get("exports") or []:
            kind, to = exp.get("export_type"), _target(exp.get("to"))
            lines.append(f"  Export: {exp.get('name')} ({kind}) -> {to}")
        for imp in desired.get("imports") or []:
            lines.append(
                f"  Import: {imp.get('from')}.{imp.get('export_name')} as {imp.get('alias')}"
            )
        lines.append("")
    return lines


_COLOR = {
    "active": "#c8e6c9",
    "error": "#ffcdd2",
    "degraded": "#ffe0b2",
    "provisioning": "#fff9c4",
    "updating": "#fff9c4",
    "deleting": "#f5f5f5",
    "deleted": "#f5f5f5",
}


def _dot_id(text: object) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _export_node(by_id: Mapping[str, Doc], exporter: str, export_name: object) -> str:
    """The node an import reads from: the partition its export targets, else the exporter's
    enclave node (an exporter or export the state does not hold)."""
    desired = (by_id.get(exporter) or {}).get("desired") or {}
    for exp in desired.get("exports") or []:
        if exp.get("name") == export_name:
            target = exp.get("target_partition")
            if any(p.get("id") == target for p in desired.get("partitions") or []):
                return f"{exporter}:{target}"
    return exporter


def graph_dot(enclaves: Sequence[Doc], only: str | None = None) -> str:
    """Graphviz: one cluster per enclave holding its partitions, one edge per import from the
    partition the export targets to the importing partition, or to the enclave's own node for
    an enclave-level import. With ``only``: that enclave's cluster and the edges touching it;
    their far ends are drawn as dashed nodes outside any cluster.

    Node ids: ``enclave`` and ``enclave:partition`` (an id never holds ':')."""
    by_id = {str(e.get("enclave_id")): e for e in enclaves}
    edges: list[tuple[str, str, object]] = []
    for state in enclaves:
        eid = str(state.get("enclave_id"))
        desired = state.get("desired") or {}
        sites = [(eid, imp) for imp in desired.get("imports") or []]
        for part in desired.get("partitions") or []:
            sites.extend((f"{eid}:{part.get('id')}", imp) for imp in part.get("imports") or [])
        for dst, imp in sites:
            src = _export_node(by_id, str(imp.get("from")), imp.get("export_name"))
            if only is None or only in (src.split(":", 1)[0], eid):
                edges.append((src, dst, imp.get("export_name")))
    referenced = {node for src, dst, _ in edges for node in (src, dst)}
    declared: set[str] = set()
    lines = ["digraph nclav {", "  rankdir=LR;", "  node [shape=box, style=filled];", ""]
    for state in enclaves:
        eid = str(state.get("enclave_id"))
        if only is not None and eid != only:
            continue
        desired = state.get("desired") or {}
        status = (state.get("meta") or {}).get("status")
        cloud = state.get("resolved_cloud")
        cluster = re.sub(r"[^A-Za-z0-9_]", "_", eid)
        label = f"{desired.get('name', eid)}{f' [{cloud}]' if cloud else ''} [{status}]"
        lines.append(f"  subgraph cluster_{cluster} {{")
        lines.append(f"    label={_dot_id(label)};")
        if eid in referenced:  # the target of enclave-level imports
            color = _COLOR.get(str(status), "#ffffff")
            lines.append(
                f"    {_dot_id(eid)} [label={_dot_id(f'enclave {eid}')}, shape=folder, "
                f'fillcolor="{color}"];'
            )
            declared.add(eid)
        parts = state.get("partitions") or {}
        for part in desired.get("partitions") or []:
            pid = part.get("id")
            pstatus = _partition_status(parts.get(pid))
            node = f"{eid}:{pid}"
            plabel = _dot_id(f"{part.get('name', pid)} [{pstatus}]")
            color = _COLOR.get(pstatus, "#ffffff")
            lines.append(f'    {_dot_id(node)} [label={plabel}, fillcolor="{color}"];')
            declared.add(node)
        lines.append("  }")
        lines.append("")
    outside = sorted(referenced - declared)
    for node in outside:  # an exporter not shown (--enclave) or not applied
        lines.append(
            f'  {_dot_id(node)} [label={_dot_id(node)}, style=dashed, fillcolor="#ffffff"];'
        )
    if outside:
        lines.append("")
    for src, dst, name in edges:
        lines.append(f"  {_dot_id(src)} -> {_dot_id(dst)} [label={_dot_id(name)}];")
    return "\n".join([*lines, "}"])


__all__ = [
    "by_enclave",
    "change_line",
    "change_lines",
    "change_subject",
    "deletions",
    "diff_summary",
    "error_lines",
    "events_table",
    "graph_dot",
    "graph_text",
    "iac_log_header",
    "iac_runs_table",
    "orphan_enclave",
    "orphan_rows",
    "run_detail",
    "run_summary",
    "runs_table",
    "select",
    "status_lines",
    "step_counts",
    "step_label",
    "table",
]
