"""Teardown through a real ``nclav serve`` with real terraform: nothing terraform made is forgotten.

Issue 8, point 3: a partition whose first apply created a resource and then failed used to be
"torn down" in 0.0 s without ``terraform destroy`` (its config was recorded only on success),
leaving the resource and its Terraform state behind for a later partition of the same id.
Point 9: the workspaces of destroyed partitions and enclaves stay on disk; "last reconciled"
does not move after an apply that changes partitions only.
"""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING, Any

import pytest
from cli_harness import clean_env, run_cli
from serve_harness import require_terraform, server_factory_fixture, server_fixture  # noqa: F401

from support import enclave_files, write_tree

if TYPE_CHECKING:
    from pathlib import Path

    from serve_harness import Server

require_terraform()
pytestmark = pytest.mark.terraform

EID = "td"


def half_failing_main_tf(marker: Path, *, destroy_fails: bool = False) -> str:
    """Creates a resource that writes ``marker`` (and removes it on destroy), then fails."""
    on_destroy = "exit 1" if destroy_fails else "rm -f ${self.input}"
    return f"""
variable "label" {{
  type = string
}}

resource "terraform_data" "made" {{
  input            = {json.dumps(str(marker))}
  triggers_replace = var.label
  provisioner "local-exec" {{
    command = "echo made > ${{self.input}}"
  }}
  provisioner "local-exec" {{
    when    = destroy
    command = {json.dumps(on_destroy)}
  }}
}}

resource "terraform_data" "fails" {{
  depends_on = [terraform_data.made]
  provisioner "local-exec" {{
    command = "exit 1"
  }}
}}
"""


def make_tree(root: Path, marker: Path, *, destroy_fails: bool = False) -> Path:
    write_tree(root, enclave_files(EID, keep="", broken="inputs:\n  label: x\n"))
    (root / EID / "broken" / "main.tf").write_text(
        half_failing_main_tf(marker, destroy_fails=destroy_fails)
    )
    return root


def tf_state(server: Server, partition: str) -> dict[str, Any] | None:
    response = server.get(f"/terraform/state/{EID}/{partition}")
    assert response.status in (200, 204), response
    return response.json if response.status == 200 else None


def resources(state: dict[str, Any] | None) -> list[str]:
    return [f"{r['type']}.{r['name']}" for r in (state or {}).get("resources", [])]


def apply_half_failing(server: Server, tree: Path, marker: Path) -> None:
    """First apply: ``made`` is created (marker written), then ``fails`` fails."""
    run = server.reconcile(tree)
    assert run["status"] == "failed", run
    assert server.steps(run)[f"provision_partition:{EID}/broken"] == "failed"
    assert marker.read_text().strip() == "made"
    assert "terraform_data.made" in resources(tf_state(server, "broken"))
    part = server.ok("GET", f"/enclaves/{EID}")["partitions"]["broken"]
    assert part["meta"]["status"] == "error"
    assert part["desired"]["id"] == "broken"  # recorded when the apply started


@pytest.mark.parametrize("workspace", ["kept", "lost"])
def test_a_half_applied_partition_is_destroyed_and_its_workspace_removed(
    server: Server, tmp_path: Path, workspace: str
) -> None:
    """``lost``: the teardown runs where the workspace is not (another worker, a new disk):
    it is rebuilt from the bundle and the inputs recorded when the failed apply started."""
    marker = tmp_path / "marker"
    tree = make_tree(tmp_path / "tree", marker)
    apply_half_failing(server, tree, marker)

    # The failed partition shows in every graph view with its error.
    node = {n["id"]: n for n in server.ok("GET", f"/enclaves/{EID}/graph")["nodes"]}["broken"]
    assert node["status"] == "error" and node["last_error"]["message"]
    system = {n["id"]: n for n in server.ok("GET", "/graph")["nodes"]}[EID]
    assert {p["id"]: p["status"] for p in system["partitions"]}["broken"] == "error"
    desired = server.ok("GET", f"/enclaves/{EID}")["desired"]["partitions"]
    assert "broken" in {p["id"] for p in desired}  # what `nclav graph` (text) lists
    workspaces = server.home / "workspaces" / EID
    assert (workspaces / "broken").is_dir()
    if workspace == "lost":
        shutil.rmtree(workspaces / "broken")

    graph = run_cli(["graph"], clean_env(NCLAV_URL=server.url, NCLAV_TOKEN=server.token))
    assert graph.returncode == 0, graph.stderr
    assert "Partition: broken (broken) [error]" in graph.stdout
    assert "! error: " in graph.stdout

    # Remove it from the tree: terraform destroy runs with the config that made the state.
    before = server.ok("GET", "/status")["last_reconciled_at"]
    shutil.rmtree(tree / EID / "broken")
    run = server.reconcile(tree)
    assert run["status"] == "succeeded", run
    assert server.steps(run) == {f"teardown_partition:{EID}/broken": "succeeded"}
    teardowns = [r for r in server.iac_runs(EID, "broken") if r["operation"] == "teardown"]
    assert [r["status"] for r in teardowns] == ["succeeded"]
    assert not marker.exists()  # the destroy-time provisioner ran
    assert resources(tf_state(server, "broken")) == []  # a new "broken" starts from nothing
    assert "broken" not in server.ok("GET", f"/enclaves/{EID}")["partitions"]
    assert not (workspaces / "broken").exists()
    assert (workspaces / "keep").is_dir()
    status = server.ok("GET", "/status")
    assert status["errors"] == [] and status["last_reconciled_at"] > before

    # Destroying the enclave removes what is left of its workspaces.
    run = server.ok("DELETE", f"/enclaves/{EID}?wait=120&allow_delete=true")
    assert run["status"] == "succeeded", run
    assert not workspaces.exists()
    assert (server.home / "workspaces").is_dir()


def test_a_failed_destroy_keeps_the_partition_in_error(server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    tree = make_tree(tmp_path / "tree", marker, destroy_fails=True)
    apply_half_failing(server, tree, marker)

    shutil.rmtree(tree / EID / "broken")
    run = server.reconcile(tree)
    assert run["status"] == "failed", run
    assert server.steps(run)[f"teardown_partition:{EID}/broken"] == "failed"
    part = server.ok("GET", f"/enclaves/{EID}")["partitions"]["broken"]
    assert part["meta"]["status"] == "error"  # nothing created is forgotten
    assert "terraform_data.made" in resources(tf_state(server, "broken"))
    errors = server.ok("GET", "/status")["errors"]
    assert [(e["enclave_id"], e.get("partition_id")) for e in errors] == [(EID, "broken")]
    status = run_cli(["status"], clean_env(NCLAV_URL=server.url, NCLAV_TOKEN=server.token))
    assert f"! {EID}/broken: " in status.stdout, status

    # Destroying the enclave stops at the partition; the enclave record stays.
    run = server.ok("DELETE", f"/enclaves/{EID}?wait=120&allow_delete=true")
    assert run["status"] == "failed", run
    assert EID in server.enclaves()
    assert "terraform_data.made" in resources(tf_state(server, "broken"))


def test_last_reconciled_moves_after_a_partition_only_apply(server: Server, tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", enclave_files(EID, keep=""))
    assert server.reconcile(tree)["status"] == "succeeded"
    before = server.ok("GET", "/status")["last_reconciled_at"]
    assert before
    (tree / EID / "keep" / "main.tf").write_text('output "x" {\n  value = "1"\n}\n')
    run = server.reconcile(tree)
    assert run["status"] == "succeeded" and run["changes"] == 1, run
    assert server.ok("GET", "/status")["last_reconciled_at"] > before
