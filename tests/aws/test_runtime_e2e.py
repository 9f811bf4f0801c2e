"""The local end-to-end scenarios again, through the AWS handlers.

API calls are function URL events to ``functions_aws.api.handler``; a pump receives from
moto's SQS and invokes the worker and IaC worker handlers with real SQS event shapes until the
queues are empty; state is in moto's DynamoDB, blobs in moto's S3; the IaC worker runs real
terraform, whose HTTP state backend reaches the API handler through a tiny local HTTP server
that turns each request into a function URL event (what a function URL does in AWS).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aws_harness import Api, Deployment, FakeContext, Pump, Result, http_event

from functions_aws import api, bootstrap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

if shutil.which("terraform") is None:
    if os.environ.get("CI") == "true":
        pytest.fail("terraform is not on PATH: CI must run the terraform tests", pytrace=False)
    pytest.skip("terraform is not on PATH", allow_module_level=True)

pytestmark = pytest.mark.terraform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PRODUCT_A = [("product-a-dev", "db"), ("product-a-dev", "api"), ("web-dev", "frontend")]
CHAIN = [("hub", "resolver"), ("data", "events"), ("app", "worker")]


class FunctionUrl(BaseHTTPRequestHandler):
    """One HTTP request -> a function URL event -> the API handler -> the HTTP response."""

    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "host"}
        event = http_event(self.command, self.path, body=body, headers=headers)
        result = Result.of(api.handler(event, FakeContext("nclav-api")))
        self.send_response(result.status)
        for name, value in result.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(result.body)))
        self.end_headers()
        self.wfile.write(result.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def function_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FunctionUrl)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def stack(make_deployment: Callable[..., Deployment], function_url: str) -> Deployment:
    """A deployment whose IaC worker reaches the API (Terraform's state backend) over HTTP."""
    return make_deployment(NCLAV_API_URL=function_url)


def copy_example(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(EXAMPLES / name / "enclaves", target)
    return target


def iac_runs(d: Deployment, enclave: str, partition: str) -> list[dict[str, Any]]:
    return d.api.ok("GET", f"/enclaves/{enclave}/partitions/{partition}/iac/runs")  # type: ignore[no-any-return]


def iac_counts(d: Deployment, partitions: list[tuple[str, str]]) -> dict[str, int]:
    return {f"{e}/{p}": len(iac_runs(d, e, p)) for e, p in partitions}


def enclaves(d: Deployment) -> dict[str, dict[str, Any]]:
    return {e["enclave_id"]: e for e in d.api.ok("GET", "/enclaves")}


def reconcile(d: Deployment, tree: Path) -> dict[str, Any]:
    answer = d.api.start_reconcile(tree)
    if "run" in answer and answer["run"] is None:  # nothing to change: no run recorded
        return answer
    return Pump(d).run(answer)


def destroy(d: Deployment, target: str) -> dict[str, Any]:
    return Pump(d).run(d.api.ok("DELETE", target, expect=202))


def new_sandboxes(d: Deployment) -> None:
    """The next terraform runs in other Lambda sandboxes: no working directory survives."""
    shutil.rmtree(d.workspaces, ignore_errors=True)


def test_product_a_lifecycle(stack: Deployment, tmp_path: Path) -> None:
    d = stack
    tree = copy_example("product-a", tmp_path)
    assert d.api.ok("GET", "/enclaves") == []

    # -- a dry run plans everything and applies nothing --------------------------------------
    plan = d.api.dry_run(tree)
    assert plan["dry_run"] is True and plan["errors"] == [] and len(plan["steps"]) == 9
    kinds = {(c["kind"], c.get("id") or c.get("enclave_id")) for c in plan["changes"]}
    assert {("EnclaveCreated", "product-a-dev"), ("EnclaveCreated", "web-dev")} <= kinds
    assert d.api.ok("GET", "/enclaves") == []

    # -- apply ---------------------------------------------------------------------------------
    run = reconcile(d, tree)
    assert run["status"] == "succeeded", run
    assert run["errors"] == [] and run["changes"] == 9
    assert set(run["enclave_ids"]) == {"product-a-dev", "web-dev"}
    assert {s["status"] for s in run["steps"]} == {"succeeded"}
    assert all(s["attempts"] == 1 and s["lease_owner"] is None for s in run["steps"])
    assert iac_counts(d, PRODUCT_A) == {f"{e}/{p}": 1 for e, p in PRODUCT_A}

    found = enclaves(d)
    product = found["product-a-dev"]
    assert product["meta"]["status"] == "active" and product["resolved_cloud"] == "local"
    db, app = product["partitions"]["db"], product["partitions"]["api"]
    assert db["resolved_outputs"] == {
        "hostname": "product-a-dev-db.postgres.internal",
        "port": "5432",
    }
    assert app["resolved_outputs"] == {"hostname": "api.product-a-dev.local", "port": "8443"}
    assert product["import_handles"]["database"]["outputs"] == db["resolved_outputs"]
    frontend = found["web-dev"]["partitions"]["frontend"]
    assert frontend["resolved_outputs"] == {"hostname": "www.web-dev.local", "port": "443"}
    graph = d.api.ok("GET", "/graph")
    assert {(e["from"], e["to"], e["export"]) for e in graph["edges"]} == {
        ("product-a-dev", "product-a-dev", "db-tcp"),
        ("product-a-dev", "web-dev", "api-http"),
    }
    kinds_seen = [
        e["kind"] for e in d.api.ok("GET", "/events?limit=1000") if e.get("run_id") == run["id"]
    ]
    assert kinds_seen.count("PartitionProvisioned") == 3
    assert kinds_seen.count("EnclaveProvisioned") == 2
    status = d.api.ok("GET", "/status")
    assert status["enclave_count"] == 2 and status["by_status"] == {"active": 2}

    # -- IaC runs, their logs, and the state the HTTP backend stored ---------------------------
    base = "/enclaves/product-a-dev/partitions/db/iac/runs"
    (db_run,) = d.api.ok("GET", base)
    assert db_run["status"] == "succeeded" and db_run["operation"] == "provision"
    assert db_run["reconcile_run_id"] == run["id"]
    log = d.api.request("GET", f"{base}/{db_run['id']}/log")
    assert log.status == 200 and log.headers["X-Nclav-Run-Status"] == "succeeded"
    for line in ("=== terraform init ===", "=== terraform apply ===", "Apply complete!"):
        assert line in log.text
    assert "TF_HTTP_PASSWORD" not in log.text and d.token not in log.text
    state = d.api.request("GET", "/terraform/state/product-a-dev/db")
    assert state.status == 200
    assert [r["type"] for r in json.loads(state.body)["resources"]] == ["terraform_data"]
    assert d.runtime.store.get_lock("product-a-dev/db") is None

    # -- a second apply changes nothing and runs no terraform ----------------------------------
    before = iac_counts(d, PRODUCT_A)
    again = reconcile(d, tree)
    assert again["run"] is None and again["changes"] == 0, again
    assert d.api.dry_run(tree)["changes"] == []
    assert iac_counts(d, PRODUCT_A) == before

    # -- editing db's main.tf re-applies db and its importer, in fresh sandboxes ---------------
    new_sandboxes(d)
    main_tf = tree / "product-a" / "dev" / "db" / "main.tf"
    main_tf.write_text(main_tf.read_text().replace(".internal", ".internal.example"))
    edited = reconcile(d, tree)
    assert edited["status"] == "succeeded", edited
    steps = {s["step_id"]: s["status"] for s in edited["steps"]}
    assert steps["provision_partition:product-a-dev/db"] == "succeeded"
    assert steps["provision_partition:product-a-dev/api"] == "succeeded"
    assert steps["provision_partition:web-dev/frontend"] == "skipped"
    assert iac_counts(d, PRODUCT_A) == {
        "product-a-dev/db": 2,
        "product-a-dev/api": 2,
        "web-dev/frontend": 1,
    }
    host = d.api.ok("GET", "/enclaves/product-a-dev")["partitions"]["db"]["resolved_outputs"]
    assert host["hostname"] == "product-a-dev-db.postgres.internal.example"

    # -- removing a partition tears it down: terraform destroy in a sandbox that never saw it --
    new_sandboxes(d)
    shutil.rmtree(tree / "web" / "dev" / "frontend")
    removed = reconcile(d, tree)
    assert removed["status"] == "succeeded", removed
    assert {s["step_id"]: s["status"] for s in removed["steps"]} == {
        "teardown_partition:web-dev/frontend": "succeeded"
    }
    latest = d.api.ok("GET", "/enclaves/web-dev/partitions/frontend/iac/runs/latest")
    assert latest["operation"] == "teardown" and latest["status"] == "succeeded", latest
    assert "Destroy complete!" in latest["log"]
    state = d.api.request("GET", "/terraform/state/web-dev/frontend")
    assert json.loads(state.body)["resources"] == []
    assert d.api.ok("GET", "/enclaves/web-dev")["partitions"] == {}

    # -- DELETE one enclave, then the other ---------------------------------------------------
    new_sandboxes(d)
    assert destroy(d, "/enclaves/web-dev")["status"] == "succeeded"
    assert d.api.request("GET", "/enclaves/web-dev").status == 404
    # The last enclave: deleting every enclave needs allow_delete (or an approval).
    assert destroy(d, "/enclaves/product-a-dev?allow_delete=true")["status"] == "succeeded"
    for enclave, partition in PRODUCT_A[:2]:
        teardown = iac_runs(d, enclave, partition)[0]
        assert teardown["operation"] == "teardown" and teardown["status"] == "succeeded"
        assert "Destroy complete!" in teardown["log"]
    assert d.api.ok("GET", "/enclaves") == []
    assert d.api.ok("GET", "/graph") == {"nodes": [], "edges": []}


def test_chain_apply_then_destroy_one_then_all(stack: Deployment, tmp_path: Path) -> None:
    d = stack
    tree = copy_example("chain", tmp_path)
    run = reconcile(d, tree)
    assert run["status"] == "succeeded", run
    found = enclaves(d)
    assert set(found) == {"hub", "data", "app"}
    assert found["data"]["partitions"]["events"]["resolved_outputs"] == {
        "queue_url": "queue://data-events?via=ns1.hub.internal:53"
    }
    worker_outputs = found["app"]["partitions"]["worker"]["resolved_outputs"]
    assert worker_outputs == {
        "consumer": "app/worker <- queue://data-events?via=ns1.hub.internal:53"
    }

    before = iac_counts(d, CHAIN)
    assert before == {f"{e}/{p}": 1 for e, p in CHAIN}
    again = reconcile(d, tree)
    assert again["run"] is None and again["changes"] == 0
    assert iac_counts(d, CHAIN) == before

    main_tf = tree / "hub" / "resolver" / "main.tf"
    main_tf.write_text(main_tf.read_text().replace("ns1.", "ns2."))
    assert reconcile(d, tree)["status"] == "succeeded"
    assert iac_counts(d, CHAIN) == {f"{e}/{p}": 2 for e, p in CHAIN}
    worker_outputs = d.api.ok("GET", "/enclaves/app")["partitions"]["worker"]["resolved_outputs"]
    assert worker_outputs["consumer"].endswith("via=ns2.hub.internal:53")

    new_sandboxes(d)
    assert destroy(d, "/enclaves/app/partitions/worker")["status"] == "succeeded"
    assert d.api.ok("GET", "/enclaves/app")["partitions"] == {}
    latest = iac_runs(d, "app", "worker")[0]
    assert (latest["operation"], latest["status"]) == ("teardown", "succeeded"), latest
    assert d.api.dry_run(tree)["changes"] == [
        {"enclave_id": "app", "kind": "PartitionCreated", "partition_id": "worker"}
    ]
    back = reconcile(d, tree)
    assert back["status"] == "succeeded" and back["changes"] == 1, back

    new_sandboxes(d)
    assert destroy(d, "/enclaves/app")["status"] == "succeeded"
    assert d.api.request("GET", "/enclaves/app").status == 404
    empty = tmp_path / "empty"
    empty.mkdir()
    digest = d.api.upload(empty)
    refused = d.api.request("POST", "/reconcile", {"bundle": digest})
    assert refused.status == 422, refused  # an empty tree needs allow_delete
    body = {"bundle": digest, "allow_delete": True}
    destroyed = Pump(d).run(d.api.ok("POST", "/reconcile", body, expect=202))
    assert destroyed["status"] == "succeeded", destroyed
    assert d.api.ok("GET", "/enclaves") == []
    for enclave, partition in CHAIN:
        last = iac_runs(d, enclave, partition)[0]
        assert (last["operation"], last["status"]) == ("teardown", "succeeded"), last
        assert "Destroy complete!" in last["log"]


def test_two_api_invocations_reconciling_at_once(stack: Deployment, tmp_path: Path) -> None:
    d = stack
    tree = copy_example("product-a", tmp_path)
    digest = d.api.upload(tree)
    # Two API function instances (two runtimes: their own engine, clients and caches).
    instances = [
        Api(d.token, bootstrap.AwsRuntime(bootstrap.Settings.from_env())) for _ in range(2)
    ]
    barrier = threading.Barrier(2, timeout=30)
    answers: list[Result] = []

    def call(instance: Api) -> None:
        barrier.wait()
        answers.append(instance.request("POST", "/reconcile", {"bundle": digest}))

    threads = [threading.Thread(target=call, args=(i,)) for i in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(a.status for a in answers) == [202, 202], answers
    runs = [Pump(d).run(a.json) for a in answers]
    assert {r["status"] for r in runs} == {"succeeded"}
    assert sorted(r["changes"] for r in runs) == [0, 9]  # the later one planned after the first
    assert iac_counts(d, PRODUCT_A) == {f"{e}/{p}": 1 for e, p in PRODUCT_A}


def test_an_apply_that_outlasts_lambda_is_stopped_and_names_the_alternative(
    make_deployment: Callable[..., Deployment], function_url: str, tmp_path: Path
) -> None:
    d = make_deployment(
        NCLAV_API_URL=function_url, NCLAV_IAC_MIN_REMAINING_S="1", NCLAV_IAC_MARGIN_S="1"
    )
    tree = tmp_path / "slow"
    (tree / "e" / "p").mkdir(parents=True)
    (tree / "e" / "config.yml").write_text("id: e\nname: e\ncloud: local\nregion: local-1\n")
    (tree / "e" / "p" / "config.yml").write_text("id: p\nname: p\n")
    slow = (
        'resource "terraform_data" "slow" {\n'
        '  provisioner "local-exec" { command = "sleep 60" }\n'
        "}\n"
    )
    (tree / "e" / "p" / "main.tf").write_text(slow)
    # Lambda started the IaC worker 5 s before its timeout: a 4 s budget.
    pump = Pump(d, iac_context=lambda: FakeContext("nclav-iac-worker", remaining_ms=5_000))
    run = pump.run(d.api.start_reconcile(tree))
    assert run["status"] == "failed"
    step = {s["step_id"]: s for s in run["steps"]}["provision_partition:e/p"]
    assert "cannot finish within Lambda's 15 minutes" in step["error"]
    assert "nclav serve --cloud aws" in step["error"]
    (record,) = iac_runs(d, "e", "p")
    assert record["status"] == "failed" and "timed out" in record["log"]
    partition = d.api.ok("GET", "/enclaves/e")["partitions"]["p"]
    assert partition["meta"]["status"] == "error"
    assert d.runtime.store.get_lock("e/p") is None  # no lock left behind

    # Made fast, the same partition applies on Lambda: nothing was left locked.
    (tree / "e" / "p" / "main.tf").write_text('resource "terraform_data" "fast" {}\n')
    pump = Pump(d, iac_context=lambda: FakeContext("nclav-iac-worker", remaining_ms=60_000))
    assert pump.run(d.api.start_reconcile(tree))["status"] == "succeeded"
