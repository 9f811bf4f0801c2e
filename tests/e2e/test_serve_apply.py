"""Apply the examples through a real ``nclav serve`` with real terraform, over plain HTTP.

Issue 3, Tests: apply each example, read enclaves, graph and events; a second apply reports no
changes and runs no terraform; editing one main.tf re-applies that partition and its
importers; removing a partition tears it down (terraform destroy ran); destroy one enclave,
destroy all.
"""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING, Any

import pytest
from serve_harness import copy_example, require_terraform, server_factory_fixture, server_fixture  # noqa: F401

if TYPE_CHECKING:
    from pathlib import Path

    from serve_harness import Server

require_terraform()
pytestmark = pytest.mark.terraform

PRODUCT_A = [("product-a-dev", "db"), ("product-a-dev", "api"), ("web-dev", "frontend")]
CHAIN = [("hub", "resolver"), ("data", "events"), ("app", "worker")]


def iac_counts(server: Server, partitions: list[tuple[str, str]]) -> dict[str, int]:
    return {f"{e}/{p}": len(server.iac_runs(e, p)) for e, p in partitions}


def step_statuses(server: Server, run: dict[str, Any]) -> dict[str, str]:
    return server.steps(run)


def test_product_a_lifecycle(server: Server, tmp_path: Path) -> None:
    tree = copy_example("product-a", tmp_path)
    assert server.ok("GET", "/enclaves") == []

    # -- a dry run plans everything and applies nothing --------------------------------------
    plan = server.dry_run(tree)
    assert plan["dry_run"] is True and plan["errors"] == []
    kinds = {(c["kind"], c.get("id") or c.get("enclave_id")) for c in plan["changes"]}
    assert ("EnclaveCreated", "product-a-dev") in kinds
    assert ("EnclaveCreated", "web-dev") in kinds
    assert len(plan["steps"]) == 9
    assert server.ok("GET", "/enclaves") == []
    assert iac_counts(server, PRODUCT_A) == {f"{e}/{p}": 0 for e, p in PRODUCT_A}

    # -- apply ---------------------------------------------------------------------------------
    run = server.reconcile(tree)
    assert run["status"] == "succeeded", run
    assert run["errors"] == [] and run["changes"] == 9 and run["run_id"] == run["id"]
    assert set(run["enclave_ids"]) == {"product-a-dev", "web-dev"}
    assert set(step_statuses(server, run).values()) == {"succeeded"}
    assert iac_counts(server, PRODUCT_A) == {f"{e}/{p}": 1 for e, p in PRODUCT_A}

    enclaves = server.enclaves()
    assert set(enclaves) == {"product-a-dev", "web-dev"}
    product = server.ok("GET", "/enclaves/product-a-dev")
    assert product == enclaves["product-a-dev"]
    assert product["meta"]["status"] == "active" and product["meta"]["last_error"] is None
    assert product["resolved_cloud"] == "local"
    assert product["context_vars"] == {"nclav_project_id": "", "nclav_region": ""}
    assert {p["id"] for p in product["desired"]["partitions"]} == {"db", "api"}
    db, api = product["partitions"]["db"], product["partitions"]["api"]
    assert db["meta"]["status"] == api["meta"]["status"] == "active"
    assert db["resolved_outputs"] == {
        "hostname": "product-a-dev-db.postgres.internal",
        "port": "5432",
    }
    assert api["resolved_outputs"] == {"hostname": "api.product-a-dev.local", "port": "8443"}
    assert product["import_handles"]["database"]["outputs"] == db["resolved_outputs"]
    frontend = enclaves["web-dev"]["partitions"]["frontend"]
    assert frontend["resolved_outputs"] == {"hostname": "www.web-dev.local", "port": "443"}

    graph = server.ok("GET", "/graph")
    assert {n["id"]: n["status"] for n in graph["nodes"]} == {
        "product-a-dev": "active",
        "web-dev": "active",
    }
    assert {(e["from"], e["to"], e["export"]) for e in graph["edges"]} == {
        ("product-a-dev", "product-a-dev", "db-tcp"),
        ("product-a-dev", "web-dev", "api-http"),
    }
    local = server.ok("GET", "/enclaves/product-a-dev/graph")
    assert local["enclave"] == "product-a-dev" and local["status"] == "active"
    assert {n["id"] for n in local["nodes"]} == {"db", "api"}
    assert {(e["export_name"], e["from"]) for e in local["edges"]} == {
        ("api-http", "api"),
        ("db-tcp", "db"),
    }

    events = server.ok("GET", "/events?limit=1000")
    mine = [e for e in events if e.get("run_id") == run["id"]]
    kinds_seen = [e["kind"] for e in mine]
    assert kinds_seen.count("PartitionProvisioned") == 3
    assert kinds_seen.count("EnclaveProvisioned") == 2
    assert {"ReconcileStarted", "ReconcileCompleted", "ExportWired", "ImportWired"} <= set(
        kinds_seen
    )
    assert len(server.ok("GET", "/events?limit=2")) == 2
    filtered = server.ok("GET", "/events?enclave_id=web-dev&limit=1000")
    assert filtered and all(e.get("enclave_id", "web-dev") == "web-dev" for e in filtered)
    assert {"frontend"} == {e["partition_id"] for e in filtered if "partition_id" in e}

    status = server.ok("GET", "/status")
    assert status["enclave_count"] == 2 and status["by_status"] == {"active": 2}
    assert status["errors"] == [] and status["default_cloud"] == "local"
    assert status["active_drivers"] == ["local"] and status["last_reconciled_at"]

    runs = server.ok("GET", "/runs")
    assert runs[0]["id"] == run["id"] and runs[0]["status"] == "succeeded"
    detail = server.run(run["id"])
    assert {s["step_id"] for s in detail["steps"]} == {s["id"] for s in plan["steps"]}
    assert all(s["attempts"] == 1 and s["lease_owner"] is None for s in detail["steps"])

    # -- IaC runs and their logs ---------------------------------------------------------------
    base = "/enclaves/product-a-dev/partitions/db/iac/runs"
    (db_run,) = server.ok("GET", base)
    assert db_run["status"] == "succeeded" and db_run["operation"] == "provision"
    assert db_run["exit_code"] == 0 and db_run["reconcile_run_id"] == run["id"]
    assert db_run["started_at"] <= db_run["finished_at"]
    assert server.ok("GET", base + "/latest") == db_run
    assert server.ok("GET", f"{base}/{db_run['id']}") == db_run
    log = server.get(f"{base}/{db_run['id']}/log")
    assert log.status == 200 and log.headers["Content-Type"].startswith("text/plain")
    assert log.headers["X-Nclav-Run-Status"] == "succeeded"
    for header in ("=== terraform init ===", "=== terraform apply ===", "Apply complete!"):
        assert header in log.text
    assert "TF_HTTP_PASSWORD" not in log.text and server.token not in log.text
    tail = server.get(f"{base}/{db_run['id']}/log?offset=10")
    assert tail.body == log.body[10:]
    other = server.get(f"/enclaves/product-a-dev/partitions/api/iac/runs/{db_run['id']}")
    assert other.status == 404 and other.json["error"]["code"] == "not_found"
    state = server.get("/terraform/state/product-a-dev/db")
    assert state.status == 200
    assert [r["type"] for r in json.loads(state.body)["resources"]] == ["terraform_data"]

    # -- a second apply changes nothing and runs no terraform ----------------------------------
    before = iac_counts(server, PRODUCT_A)
    again = server.reconcile(tree)
    assert again["run"] is None and again["changes"] == 0  # no run recorded, again
    assert server.dry_run(tree)["changes"] == []
    assert iac_counts(server, PRODUCT_A) == before
    assert server.enclaves()["product-a-dev"]["meta"]["generation"] == product["meta"]["generation"]

    # -- editing db's main.tf re-applies db and the api that reads its hostname ----------------
    main_tf = tree / "product-a" / "dev" / "db" / "main.tf"
    main_tf.write_text(main_tf.read_text().replace(".internal", ".internal.example"))
    plan = server.dry_run(tree)
    planned = {(c["kind"], c.get("partition_id")): c for c in plan["changes"]}
    assert planned[("PartitionUpdated", "db")]["reason"] == "config or files changed"
    assert planned[("PartitionUpdated", "api")]["conditional"] is True
    assert "product-a-dev/db" in planned[("PartitionUpdated", "api")]["reason"]
    assert iac_counts(server, PRODUCT_A) == before  # the dry run applied nothing
    edited = server.reconcile(tree)
    assert edited["status"] == "succeeded", edited
    steps = step_statuses(server, edited)
    assert steps["provision_partition:product-a-dev/db"] == "succeeded"
    assert steps["provision_partition:product-a-dev/api"] == "succeeded"
    # The front end reads only api's hostname and port, which did not move.
    assert steps["provision_partition:web-dev/frontend"] == "skipped"
    assert iac_counts(server, PRODUCT_A) == {
        "product-a-dev/db": 2,
        "product-a-dev/api": 2,
        "web-dev/frontend": 1,
    }
    assert server.ok("GET", base + "/latest")["operation"] == "update"
    product = server.ok("GET", "/enclaves/product-a-dev")
    new_host = "product-a-dev-db.postgres.internal.example"
    assert product["partitions"]["db"]["resolved_outputs"]["hostname"] == new_host
    assert product["import_handles"]["database"]["outputs"]["hostname"] == new_host
    assert server.dry_run(tree)["changes"] == []

    # -- removing a partition directory tears it down -------------------------------------------
    shutil.rmtree(tree / "web" / "dev" / "frontend")
    removed = server.reconcile(tree)
    assert removed["status"] == "succeeded", removed
    assert step_statuses(server, removed) == {"teardown_partition:web-dev/frontend": "succeeded"}
    latest = server.ok("GET", "/enclaves/web-dev/partitions/frontend/iac/runs/latest")
    assert latest["operation"] == "teardown" and latest["status"] == "succeeded", latest
    assert "=== terraform destroy ===" in latest["log"] and "Destroy complete!" in latest["log"]
    web = server.ok("GET", "/enclaves/web-dev")
    assert web["partitions"] == {} and web["meta"]["status"] == "active"
    assert json.loads(server.get("/terraform/state/web-dev/frontend").body)["resources"] == []
    deleted = [
        e for e in server.ok("GET", "/events?enclave_id=web-dev") if e["kind"] == "PartitionDeleted"
    ]
    assert [e["partition_id"] for e in deleted] == ["frontend"]

    # -- DELETE one enclave, then every remaining one ----------------------------------------------
    gone = server.ok("DELETE", "/enclaves/web-dev?wait=120")
    assert gone["status"] == "succeeded", gone
    assert server.get("/enclaves/web-dev").status == 404
    # Deleting the last enclave deletes every enclave: never automatic. The run waits for
    # approval with its plan; approving it (the plan is unchanged) carries it out.
    waiting = server.ok("DELETE", "/enclaves/product-a-dev?wait=120", expect=202)
    assert waiting["status"] == "awaiting_approval", waiting
    assert waiting["approval"]["reason"] == "deletes every enclave (1)"
    assert server.iac_runs("product-a-dev", "db")[0]["operation"] != "teardown"
    gone = server.ok("POST", f"/runs/{waiting['id']}/approve?wait=120")
    assert gone["status"] == "succeeded", gone
    for enclave, partition in PRODUCT_A[:2]:
        teardown = server.iac_runs(enclave, partition)[0]
        assert teardown["operation"] == "teardown" and teardown["status"] == "succeeded"
    assert server.ok("GET", "/enclaves") == []
    assert server.ok("GET", "/graph") == {"nodes": [], "edges": []}
    assert server.ok("GET", "/status")["enclave_count"] == 0


def test_chain_apply_then_destroy_one_then_all(server: Server, tmp_path: Path) -> None:
    tree = copy_example("chain", tmp_path)
    run = server.reconcile(tree)
    assert run["status"] == "succeeded", run
    enclaves = server.enclaves()
    assert set(enclaves) == {"hub", "data", "app"}
    assert all(e["meta"]["status"] == "active" for e in enclaves.values())
    assert enclaves["data"]["partitions"]["events"]["resolved_outputs"] == {
        "queue_url": "queue://data-events?via=ns1.hub.internal:53"
    }
    worker = enclaves["app"]["partitions"]["worker"]["resolved_outputs"]
    assert worker == {"consumer": "app/worker <- queue://data-events?via=ns1.hub.internal:53"}
    graph = server.ok("GET", "/graph")
    assert {(e["from"], e["to"]) for e in graph["edges"]} == {("hub", "data"), ("data", "app")}

    # Nothing changed: no terraform.
    before = iac_counts(server, CHAIN)
    assert before == {f"{e}/{p}": 1 for e, p in CHAIN}
    again = server.reconcile(tree)
    assert again["run"] is None and again["changes"] == 0  # no run recorded
    assert iac_counts(server, CHAIN) == before

    # A change at the root of the chain flows down to every importer.
    main_tf = tree / "hub" / "resolver" / "main.tf"
    main_tf.write_text(main_tf.read_text().replace("ns1.", "ns2."))
    edited = server.reconcile(tree)
    assert edited["status"] == "succeeded", edited
    assert iac_counts(server, CHAIN) == {f"{e}/{p}": 2 for e, p in CHAIN}
    worker = server.ok("GET", "/enclaves/app")["partitions"]["worker"]["resolved_outputs"]
    assert worker["consumer"].endswith("via=ns2.hub.internal:53")

    # DELETE one partition; the next apply of the tree brings it back.
    gone = server.ok("DELETE", "/enclaves/app/partitions/worker?wait=120")
    assert gone["status"] == "succeeded", gone
    assert server.ok("GET", "/enclaves/app")["partitions"] == {}
    latest = server.iac_runs("app", "worker")[0]
    assert (latest["operation"], latest["status"]) == ("teardown", "succeeded"), latest
    assert server.dry_run(tree)["changes"] == [
        {"enclave_id": "app", "kind": "PartitionCreated", "partition_id": "worker"}
    ]
    back = server.reconcile(tree)
    assert back["status"] == "succeeded" and back["changes"] == 1, back
    assert server.iac_runs("app", "worker")[0]["operation"] == "provision"

    # Destroy one enclave (the last importer), then everything by applying an empty tree.
    gone = server.ok("DELETE", "/enclaves/app?wait=120")
    assert gone["status"] == "succeeded", gone
    assert server.get("/enclaves/app").status == 404
    assert server.iac_runs("app", "worker")[0]["operation"] == "teardown"
    # An empty tree is refused unless the request allows deleting (issue 8, point 1).
    empty = tmp_path / "empty"
    empty.mkdir()
    for path in ("/reconcile/dry-run", "/reconcile?wait=5"):
        refused = server.request("POST", path, {"enclaves_dir": str(empty)})
        assert refused.status == 422, refused
        assert refused.json["error"]["details"][0]["field"] == "enclaves_dir"
    allowed = {"enclaves_dir": str(empty), "allow_delete": True}
    plan = server.ok("POST", "/reconcile/dry-run", allowed)
    assert {c["kind"] for c in plan["changes"]} >= {"EnclaveDeleted", "PartitionDeleted"}
    assert server.ok("GET", "/enclaves") != []
    destroyed = server.ok("POST", "/reconcile?wait=120", allowed)
    assert destroyed["status"] == "succeeded", destroyed
    assert server.ok("GET", "/enclaves") == []
    for enclave, partition in CHAIN:
        last = server.iac_runs(enclave, partition)[0]
        assert (last["operation"], last["status"]) == ("teardown", "succeeded"), last
    kinds = [
        e["kind"]
        for e in server.ok("GET", "/events?limit=1000")
        if e.get("run_id") == destroyed["id"]
    ]
    assert kinds.count("EnclaveDeleted") == 2 and kinds.count("PartitionDeleted") == 2
