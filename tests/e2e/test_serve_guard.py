"""Issue 8 through a real ``nclav serve`` with real terraform, over plain HTTP.

Point 1: the delete guard lives in the server (limit, delete-everything, approval, cancel,
supersede). Point 2: a destroy is planned when its run begins, so a partition an earlier
queued run added is torn down too. Point 4: a cloud without a driver is refused before any
run. Point 5: ``resources_only`` keeps the enclave. And a reconcile with nothing to change
records no run.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from serve_harness import require_terraform, server_factory_fixture, server_fixture  # noqa: F401

from support import write_tree

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from serve_harness import Server

require_terraform()
pytestmark = pytest.mark.terraform

RESOURCE = 'resource "terraform_data" "r" {\n  input = "%s"\n}\n'
SLOW = (
    'resource "terraform_data" "slow" {\n  input = "slow"\n'
    '  provisioner "local-exec" {\n    command = "sleep 6"\n  }\n}\n'
)


def make_tree(root: Path, enclaves: dict[str, dict[str, str]], extra: str = "") -> Path:
    """``{enclave: {partition: main.tf}}`` written as a fresh tree at ``root``."""
    import shutil

    if root.exists():
        shutil.rmtree(root)
    files: dict[str, str] = {}
    for eid, parts in enclaves.items():
        files[f"{eid}/config.yml"] = f"id: {eid}\nname: {eid}\nregion: r\n{extra}"
        for pid, main_tf in parts.items():
            files[f"{eid}/{pid}/config.yml"] = f"id: {pid}\nname: {pid}\n"
            files[f"{eid}/{pid}/main.tf"] = main_tf
    return write_tree(root, files)


def post(server: Server, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = server.request("POST", path, body)
    return response.status, response.json if response.body else None


def test_a_destroy_is_planned_when_it_begins(server: Server, tmp_path: Path) -> None:
    """The issue's reproduction: the destroy is queued behind a slow replace of p1 and a
    reconcile adding p2; it must tear down p2 too (before: only p1, and p2's state leaked)."""
    tree = tmp_path / "tree"
    first = make_tree(tree, {"st": {"p1": RESOURCE % "one"}, "keep": {}})
    assert server.reconcile(first)["status"] == "succeeded"

    slow = server.start_reconcile(make_tree(tmp_path / "slow", {"st": {"p1": SLOW}, "keep": {}}))
    both = {"st": {"p1": SLOW, "p2": RESOURCE % "two"}, "keep": {}}
    adding = server.start_reconcile(make_tree(tmp_path / "both", both))
    assert adding["status"] == "queued"
    destroy = server.request("DELETE", "/enclaves/st")  # 3 deletions at most: no approval
    assert destroy.status == 202, destroy
    assert destroy.json["status"] == "queued"
    assert destroy.json["teardown_enclaves"] == ["st"]
    assert server.run(destroy.json["id"])["steps"] == []  # not planned yet

    for run in (slow, adding):
        assert server.wait_run(run["id"])["status"] == "succeeded"
    done = server.wait_run(destroy.json["id"])
    assert done["status"] == "succeeded", done
    assert {s["step_id"] for s in done["steps"]} == {
        "teardown_partition:st/p1",
        "teardown_partition:st/p2",
        "teardown_enclave:st",
    }
    assert server.get("/enclaves/st").status == 404
    latest = server.iac_runs("st", "p2")[0]
    assert (latest["operation"], latest["status"]) == ("teardown", "succeeded"), latest
    state = server.get("/terraform/state/st/p2")
    assert state.status == 204 or json.loads(state.body)["resources"] == []


def test_the_guard_over_the_api(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    server = server_factory(env={"NCLAV_MAX_DELETES": "2"})
    tree = tmp_path / "tree"
    make_tree(tree, {"a": {"p": "", "q": ""}, "b": {}})
    assert server.reconcile(tree)["status"] == "succeeded"

    # 3 deletions (a, a/p, a/q) over the server's limit of 2: the run waits, with its plan.
    make_tree(tree, {"b": {}})
    status, run = post(server, "/reconcile?wait=30", {"enclaves_dir": str(tree)})
    assert status == 202 and run["status"] == "awaiting_approval", run
    shown = server.run(run["id"])
    assert shown["steps"] == []
    assert shown["approval"]["reason"] == "3 deletions, limit 2"
    assert shown["approval"]["limit"] == 2
    assert sorted(shown["approval"]["deletions"]) == ["enclave a", "partition a/p", "partition a/q"]
    assert {c["kind"] for c in shown["approval"]["changes"]} == {
        "EnclaveDeleted",
        "PartitionDeleted",
    }
    assert set(server.enclaves()) == {"a", "b"}
    # Later runs on the same enclaves wait behind it (here: a destroy of b).
    behind = server.request("DELETE", "/enclaves/b?max_deletes=0")
    assert behind.status == 202 and behind.json["status"] == "queued"
    cancelled = server.ok("POST", f"/runs/{run['id']}/cancel")
    assert cancelled["status"] == "cancelled" and cancelled["errors"] == ["cancelled"]
    # The destroy of b began after it: 1 deletion over its own limit of 0, so it waits too.
    assert server.wait_run(behind.json["id"])["status"] == "awaiting_approval"
    assert server.ok("POST", f"/runs/{behind.json['id']}/cancel")["status"] == "cancelled"
    assert set(server.enclaves()) == {"a", "b"}

    # A request cannot raise the limit; approving the unchanged plan applies it.
    status, run = post(server, "/reconcile", {"enclaves_dir": str(tree), "max_deletes": 50})
    assert status == 202 and run["approval"]["reason"] == "3 deletions, limit 2", run
    approved = server.ok("POST", f"/runs/{run['id']}/approve?wait=120")
    assert approved["status"] == "succeeded", approved
    assert set(server.enclaves()) == {"b"}
    again = server.request("POST", f"/runs/{run['id']}/approve")
    assert again.status == 409 and "not awaiting approval" in again.json["error"]["message"]
    assert server.request("POST", "/runs/nope/approve").status == 404
    assert server.request("POST", f"/runs/{run['id']}/cancel").status == 409

    # Deleting every enclave stops even under the limit; allow_delete lifts it.
    make_tree(tree, {"z": {}})
    status, run = post(server, "/reconcile?wait=30", {"enclaves_dir": str(tree)})
    assert run["approval"]["reason"] == "deletes every enclave (1)", run
    body = {"enclaves_dir": str(tree), "allow_delete": True}
    status, run = post(server, "/reconcile?wait=60", body)
    assert status == 200 and run["status"] == "succeeded", run
    assert set(server.enclaves()) == {"z"}

    # Bad guard fields are named.
    bad = server.request("POST", "/reconcile", {"enclaves_dir": str(tree), "max_deletes": -1})
    assert bad.status == 422 and bad.json["error"]["details"][0]["field"] == "max_deletes"
    bad = server.request("DELETE", "/enclaves/z?max_deletes=lots")
    assert bad.status == 400 and "max_deletes" in bad.json["error"]["message"]
    bad = server.request("DELETE", "/enclaves/z?allow_delete=perhaps")
    assert bad.status == 400 and "allow_delete" in bad.json["error"]["message"]


def test_no_run_for_no_change_and_no_driver_no_run(server: Server, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", {"a": {"p": ""}})
    assert server.reconcile(tree)["status"] == "succeeded"
    runs = len(server.ok("GET", "/runs"))
    status, doc = post(server, "/reconcile?wait=5", {"enclaves_dir": str(tree)})
    assert status == 200
    assert doc["run"] is None and doc["run_id"] is None
    assert (doc["changes"], doc["message"]) == (0, "no changes")
    assert len(server.ok("GET", "/runs")) == runs

    # A cloud without a driver here: refused before any step, naming enclave and file.
    make_tree(tree, {"a": {"p": ""}, "far": {"p": ""}, "farther": {}}, "cloud: gcp\n")
    expected = [(f"{tree}/{e}/config.yml", 4, "cloud") for e in ("a", "far", "farther")]
    for path in ("/reconcile/dry-run", "/reconcile?wait=5"):
        response = server.request("POST", path, {"enclaves_dir": str(tree)})
        assert response.status == 422, response
        details = response.json["error"]["details"]
        assert [(d["path"], d["line"], d["field"]) for d in details] == expected
        assert details[0]["message"] == (
            "no driver for cloud 'gcp' on this server (enabled: local)"
        )
    assert len(server.ok("GET", "/runs")) == runs
    assert server.enclaves()["a"]["partitions"]["p"]["meta"]["status"] == "active"


def test_resources_only(server: Server, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_tree(tree, {"a": {"p": RESOURCE % "a"}, "b": {"q": ""}, "c": {"r": ""}})
    assert server.reconcile(tree)["status"] == "succeeded"

    # DELETE ?resources_only=true: terraform destroy of its partitions; the enclave stays.
    run = server.ok("DELETE", "/enclaves/a?resources_only=true&wait=120")
    assert run["status"] == "succeeded" and run["resources_only"] is True, run
    assert set(server.steps(run)) == {"teardown_partition:a/p"}
    enclave = server.ok("GET", "/enclaves/a")
    assert enclave["partitions"] == {} and enclave["meta"]["status"] == "active"
    assert server.iac_runs("a", "p")[0]["operation"] == "teardown"
    assert json.loads(server.get("/terraform/state/a/p").body)["resources"] == []

    # The same in the body.
    response = server.request("DELETE", "/enclaves/b?wait=120", {"resources_only": True})
    assert response.status == 200 and set(server.steps(response.json)) == {"teardown_partition:b/q"}
    assert server.ok("GET", "/enclaves/b")["partitions"] == {}

    # A partition destroy has no enclave to keep: refused, naming the field.
    refused = server.request("DELETE", "/enclaves/c/partitions/r?resources_only=true")
    assert refused.status == 400 and refused.json["error"]["message"].startswith("resources_only:")
    assert "r" in server.ok("GET", "/enclaves/c")["partitions"]

    # A reconcile with resources_only: enclaves that left the tree only lose their partitions.
    make_tree(tree, {"a": {"p": RESOURCE % "a"}, "b": {"q": ""}})
    body = {"enclaves_dir": str(tree), "resources_only": True}
    status, run = post(server, "/reconcile?wait=120", body)
    assert status == 200 and run["status"] == "succeeded", run
    assert "teardown_partition:c/r" in server.steps(run)
    assert not any(s.startswith("teardown_enclave") for s in server.steps(run))
    assert server.ok("GET", "/enclaves/c")["partitions"] == {}
