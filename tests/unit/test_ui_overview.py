"""The dashboard's overview document: counts from the applied state of the example tree, runs
sorted into in flight / awaiting approval / recent, the commit a git push last applied, and
its published schema (``nclav.ui.models.Overview`` forbids unknown fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nclav.config import load_directory
from nclav.graph import validate_graph
from nclav.model import Cloud
from nclav.records import Run, RunStatus
from nclav.state import LastError, Status
from nclav.transitions import simulate_apply
from nclav.ui.models import AppliedCommit, Overview
from nclav.ui.routes import MAX_ERRORS, drift_counts, overview_json

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
AT = "2026-12-05T10:00:00.000000Z"


def applied() -> list[Any]:
    states = simulate_apply(validate_graph(load_directory(EXAMPLES / "product-a" / "enclaves")), {})
    web = states["web-dev"]
    broken = web.partitions["frontend"].model_copy(
        update={
            "meta": web.partitions["frontend"].meta.model_copy(
                update={
                    "status": Status.ERROR,
                    "last_error": LastError(message="boom", occurred_at=AT),
                }
            )
        }
    )
    states["web-dev"] = web.model_copy(update={"partitions": {"frontend": broken}})
    return list(states.values())


def run(status: RunStatus | str, created: str, **extra: Any) -> dict[str, Any]:
    """A run as GET /runs serves it; ``awaiting_approval`` and ``origin`` come with issues 8
    and 15 (this tree's ``Run`` lacks them, so such documents are not schema-checked here)."""
    doc = Run(created_at=created, status=RunStatus.QUEUED).model_dump(mode="json")
    return {**doc, "status": str(status), **extra}


def test_counts_errors_and_runs() -> None:
    runs = [
        run(RunStatus.RUNNING, "2026-12-05T10:00:05.000000Z"),
        run("awaiting_approval", "2026-12-05T10:00:04.000000Z"),
        run(RunStatus.QUEUED, "2026-12-05T10:00:03.000000Z"),
        *(run(RunStatus.SUCCEEDED, f"2026-12-05T09:00:{i:02d}.000000Z") for i in range(12)),
    ]
    doc = overview_json(applied(), runs, Cloud.LOCAL.value)
    assert doc["enclave_count"] == 2
    assert doc["partition_count"] == 3
    assert doc["by_cloud"] == {"local": 2}
    assert doc["partitions_by_status"] == {"active": 2, "error": 1}
    assert doc["errors"] == [
        {"enclave_id": "web-dev", "partition_id": "frontend", "message": "boom", "occurred_at": AT}
    ]
    assert [r["status"] for r in doc["runs_in_flight"]] == ["running", "queued"]
    assert [r["status"] for r in doc["awaiting_approval"]] == ["awaiting_approval"]
    assert doc["recent_runs"] == runs[:10]
    assert doc["source"] is None and doc["drift"] is None


def test_errors_are_capped_and_counted() -> None:
    states = applied()
    many = [
        s.model_copy(
            update={
                "enclave_id": f"e{i}",
                "meta": s.meta.model_copy(
                    update={"last_error": LastError(message=f"m{i}", occurred_at=AT)}
                ),
            }
        )
        for i, s in enumerate(states * 40)
    ]
    doc = overview_json(many, [], "local")
    Overview.model_validate(doc)
    assert doc["error_count"] == 80 + 40  # every enclave, and the one partition of each web-dev
    assert len(doc["errors"]) == MAX_ERRORS


def test_the_last_commit_applied_from_git() -> None:
    origin = {"repository": "https://git.example/x", "ref": "refs/heads/main", "commit": "c" * 40}
    runs = [
        run(RunStatus.FAILED, "2026-12-05T10:00:03.000000Z", origin={**origin, "commit": "f" * 40}),
        run(RunStatus.SUCCEEDED, "2026-12-05T10:00:02.000000Z"),  # from the CLI
        run(RunStatus.SUCCEEDED, "2026-12-05T10:00:01.000000Z", origin=origin),
    ]
    doc = overview_json(applied(), runs, "local")
    assert doc["source"]["commit"] == "c" * 40
    assert doc["source"]["run_id"] == runs[2]["id"]
    # (Run records carry ``origin`` once the git source is in: the source part is checked here.)
    AppliedCommit.model_validate(doc["source"])


def test_drift_counts_only_where_the_store_keeps_drift() -> None:
    class NoDrift:
        pass

    assert drift_counts(NoDrift()) is None
