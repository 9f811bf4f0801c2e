"""Drift detection through a real ``nclav serve`` and the ``nclav`` CLI: the sweeper schedules
checks (``NCLAV_DRIFT_INTERVAL_S``), an in-sync check writes no Terraform state version, a state
edited through the state backend is reported drifted (``nclav drift`` exits 1 for CI), checked
on request (``nclav drift check``), acknowledged (``nclav drift ack``), counted by ``nclav
status``, and written to the audit log."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from cli_harness import clean_env, run_cli
from serve_harness import require_terraform, server_factory_fixture, wait_until  # noqa: F401

from drift_harness import DATA_PARTITION, write_tree

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from serve_harness import Server

require_terraform()


def cli(server: Server, *args: str) -> tuple[int, str, str]:
    env = clean_env(NCLAV_URL=server.url, NCLAV_TOKEN=server.token)
    done = run_cli(list(args), env, timeout_s=300)
    return done.returncode, done.stdout, done.stderr


def versions(server: Server) -> int:
    folder = server.home / "blobs" / "tfstate" / "e" / "p"
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def drift_of(server: Server) -> dict[str, object]:
    doc = server.ok("GET", "/drift?enclave=e")
    return doc["partitions"][0]  # type: ignore[no-any-return]


def test_drift_through_the_api_and_cli(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory(env={"NCLAV_DRIFT_INTERVAL_S": "2"})
    tree = write_tree(tmp_path / "tree", {"p": DATA_PARTITION % "hello"})
    assert server.reconcile(tree)["status"] == "succeeded"
    applied_versions = versions(server)
    assert applied_versions >= 1

    # Scheduled by the sweeper: in sync, and no state version written by the checks.
    first = wait_until(
        lambda: (d := drift_of(server))["checked_at"] and d, 60, "a scheduled drift check"
    )
    assert first["status"] == "in_sync", first
    wait_until(
        lambda: len([r for r in server.iac_runs("e", "p") if r["operation"] == "drift_check"]) >= 2,
        60,
        "a second scheduled check",
    )
    assert versions(server) == applied_versions
    assert cli(server, "drift")[0] == 0

    # The state edited behind nclav's back, through the state backend.
    state = json.loads(server.request("GET", "/terraform/state/e/p").body)
    state["serial"] += 1
    state["outputs"]["v"]["value"] = "edited"
    assert server.request("POST", "/terraform/state/e/p", json.dumps(state)).status == 200

    code, stdout, stderr = cli(server, "drift", "check", "e", "p")
    assert code == 1, (stdout, stderr)
    assert "e/p: drifted" in stdout and "output.v" in stdout
    code, stdout, _ = cli(server, "drift")
    assert code == 1 and "output.v" in stdout
    code, stdout, _ = cli(server, "drift", "--enclave", "e", "--output", "json")
    assert code == 1 and json.loads(stdout)["counts"]["drifted"] == 1
    one = server.ok("GET", "/enclaves/e/partitions/p/drift")
    assert "edited" in one["plan_text"]
    code, stdout, _ = cli(server, "status")
    assert code == 0 and "Drift: 1 drifted" in stdout

    code, stdout, _ = cli(server, "drift", "ack", "e", "p")
    assert code == 0 and "Acknowledged" in stdout
    code, stdout, _ = cli(server, "drift")
    assert code == 0 and "in_sync (acknowledged)" in stdout
    # The scheduled checks keep finding the same drift: still acknowledged.
    before = drift_of(server)["checked_at"]
    wait_until(lambda: drift_of(server)["checked_at"] != before, 60, "another scheduled check")
    assert (drift_of(server)["status"], drift_of(server)["acknowledged"]) == ("in_sync", True)

    # A check now, queued without waiting: 202 and where to look.
    response = server.request("POST", "/enclaves/e/partitions/p/drift/check")
    assert response.status == 202 and response.json["drift"] == "/enclaves/e/partitions/p/drift"

    kinds = [e["kind"] for e in server.ok("GET", "/events?enclave_id=e")]
    assert "DriftDetected" in kinds
    ops = {r["operation"] for r in server.iac_runs("e", "p")}
    assert ops == {"provision", "drift_check"}
    assert server.request("POST", "/enclaves/e/partitions/nope/drift/ack").status == 404
