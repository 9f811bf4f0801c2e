"""Failing terraform through a real ``nclav serve``: the partition goes to error with the log
tail in ``meta.last_error``, the run ends failed listing every error, and the next apply
retries it.

Transient failures (retried with backoff) are not tested here: every terraform failure,
including "state already locked", is permanent by design (IacCommandError), and the only
retryable errors (a partition held by another worker, SQLite busy) cannot be caused through
the API without faking them. The retry and backoff logic is covered by tests/unit/test_engine.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from serve_harness import copy_example, require_terraform, server_factory_fixture, server_fixture  # noqa: F401

if TYPE_CHECKING:
    from pathlib import Path

    from serve_harness import Server

require_terraform()
pytestmark = pytest.mark.terraform

DB_STEP = "provision_partition:product-a-dev/db"
DEPENDENTS = {
    "wire_export:product-a-dev/db-tcp",
    "wire_import:product-a-dev/database",
    "provision_partition:product-a-dev/api",
    "wire_export:product-a-dev/api-http",
    "wire_import:web-dev/product_api",
    "provision_partition:web-dev/frontend",
}

PRECONDITION = """
resource "terraform_data" "size_guard" {
  input = var.storage_gb
  lifecycle {
    precondition {
      condition     = var.storage_gb >= 100
      error_message = "storage_gb must be at least 100, got ${var.storage_gb}."
    }
  }
}
"""


def db_paths(tree: Path) -> tuple[Path, Path]:
    base = tree / "product-a" / "dev" / "db"
    return base / "main.tf", base / "config.yml"


def assert_db_failed(
    server: Server, run: dict[str, Any], *needles: str, first: bool = True
) -> dict[str, Any]:
    """The run failed at db, blocked what depends on it, and left db in error."""
    assert run["status"] == "failed", run
    errors = run["errors"]
    assert any(e.startswith(f"{DB_STEP}: ") for e in errors), errors
    steps = server.steps(run)
    assert steps[DB_STEP] == "failed"
    assert {s for s, status in steps.items() if status == "blocked"} == DEPENDENTS
    if first:  # the independent branch carried on
        assert steps["provision_enclave:web-dev"] == "succeeded"
    # One error line per failed or blocked step.
    assert len(errors) == 1 + len(DEPENDENTS), errors
    db = server.ok("GET", "/enclaves/product-a-dev")["partitions"]["db"]
    assert db["meta"]["status"] == "error", db["meta"]
    error = db["meta"]["last_error"]
    assert error["occurred_at"], error
    for needle in needles:
        assert needle in error["message"], error["message"]
    latest = server.ok("GET", "/enclaves/product-a-dev/partitions/db/iac/runs/latest")
    assert latest["status"] == "failed" and latest["exit_code"] == 1, latest
    log = server.get(f"/enclaves/product-a-dev/partitions/db/iac/runs/{latest['id']}/log")
    assert log.headers["X-Nclav-Run-Status"] == "failed"
    for needle in needles:
        assert needle in log.text
    status = server.ok("GET", "/status")
    assert any(
        e.get("partition_id") == "db" and needles[0] in e["message"] for e in status["errors"]
    ), status["errors"]
    failed = [
        e
        for e in server.ok("GET", "/events?enclave_id=product-a-dev&limit=1000")
        if e["kind"] == "PartitionError" and e.get("run_id") == run["id"]
    ]
    assert [e["partition_id"] for e in failed] == ["db"]
    return db  # type: ignore[no-any-return]


def assert_all_active(server: Server, run: dict[str, Any]) -> None:
    assert run["status"] == "succeeded" and run["errors"] == [], run
    for state in server.enclaves().values():
        assert state["meta"]["status"] == "active"
        for pid, part in state["partitions"].items():
            assert part["meta"]["status"] == "active", pid
            assert part["meta"]["last_error"] is None, pid
    assert server.ok("GET", "/status")["errors"] == []


def test_syntax_error_fails_the_partition_then_a_fix_retries_it(
    server: Server, tmp_path: Path
) -> None:
    tree = copy_example("product-a", tmp_path)
    main_tf, _ = db_paths(tree)
    good = main_tf.read_text()
    main_tf.write_text(good + '\nresource "terraform_data" "broken" {\n  input = \n')

    run = server.reconcile(tree)
    db = assert_db_failed(server, run, "terraform", "Error:")
    assert "main.tf" in db["meta"]["last_error"]["message"]
    assert "Traceback" not in db["meta"]["last_error"]["message"]

    main_tf.write_text(good)
    plan = server.dry_run(tree)
    assert {(c["kind"], c.get("partition_id")) for c in plan["changes"]} >= {
        ("PartitionUpdated", "db"),  # in state, in error
        ("PartitionCreated", "api"),
        ("PartitionCreated", "frontend"),
    }
    fixed = server.reconcile(tree)
    assert_all_active(server, fixed)
    assert server.steps(fixed)[DB_STEP] == "succeeded"
    assert [r["status"] for r in server.iac_runs("product-a-dev", "db")] == [
        "succeeded",
        "failed",
    ]
    assert server.reconcile(tree)["changes"] == 0


def test_failing_precondition_then_a_config_fix(server: Server, tmp_path: Path) -> None:
    tree = copy_example("product-a", tmp_path)
    main_tf, config = db_paths(tree)
    main_tf.write_text(main_tf.read_text() + PRECONDITION)

    run = server.reconcile(tree)
    assert_db_failed(
        server, run, "Resource precondition failed", "storage_gb must be at least 100, got 20."
    )

    # The next apply retries the failed partition (same files: it is in error, not active).
    again = server.reconcile(tree)
    assert_db_failed(server, again, "Resource precondition failed", first=False)
    assert len(server.iac_runs("product-a-dev", "db")) == 2

    config.write_text(config.read_text().replace("storage_gb: 20", "storage_gb: 200"))
    fixed = server.reconcile(tree)
    assert_all_active(server, fixed)
    db = server.ok("GET", "/enclaves/product-a-dev")["partitions"]["db"]
    assert db["desired"]["inputs"]["storage_gb"] == "200"


def test_a_foreign_state_lock_fails_the_apply_until_it_is_released(
    server: Server, tmp_path: Path
) -> None:
    """The Terraform state lock is the last defence: nclav never breaks a lock it did not
    leave behind, the apply fails naming the lock, and after a force-unlock it goes through."""
    tree = copy_example("product-a", tmp_path)
    assert server.reconcile(tree)["status"] == "succeeded"
    foreign = {"ID": "someone-else", "Operation": "OperationTypeApply", "Who": "alice@laptop"}
    lock_url = "/terraform/state/product-a-dev/db/lock"
    assert server.request("POST", lock_url, foreign).status == 200

    main_tf, _ = db_paths(tree)
    main_tf.write_text(main_tf.read_text().replace(".internal", ".internal.example"))
    run = server.reconcile(tree)
    assert run["status"] == "failed", run
    assert any(e.startswith(f"{DB_STEP}: ") for e in run["errors"]), run["errors"]
    db = server.ok("GET", "/enclaves/product-a-dev")["partitions"]["db"]
    assert db["meta"]["status"] == "error"
    assert "Error acquiring the state lock" in db["meta"]["last_error"]["message"]
    # The previous outputs are kept while the partition is in error.
    assert db["resolved_outputs"]["hostname"] == "product-a-dev-db.postgres.internal"
    held = server.request("POST", lock_url, {"ID": "probe"})
    assert held.status == 423 and held.json["ID"] == "someone-else"

    assert server.request("DELETE", lock_url).status == 200  # terraform force-unlock
    fixed = server.reconcile(tree)
    assert_all_active(server, fixed)
    db = server.ok("GET", "/enclaves/product-a-dev")["partitions"]["db"]
    assert db["resolved_outputs"]["hostname"] == "product-a-dev-db.postgres.internal.example"
