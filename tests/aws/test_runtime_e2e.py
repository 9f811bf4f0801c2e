"""End-to-end tests that only the AWS runtime has: Lambda sandboxes, containers, time limits.

The scenarios every runtime must pass (apply, no-op, failures, duplicates, crashes, give-up,
destroy, big states and logs) are in tests/scenarios, run there on AWS too.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aws_harness import Api, Deployment, FakeContext, Pump, Result, function_url_server

from functions_aws import bootstrap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

if shutil.which("terraform") is None:
    if os.environ.get("CI") == "true":
        pytest.fail("terraform is not on PATH: CI must run the terraform tests", pytrace=False)
    pytest.skip("terraform is not on PATH", allow_module_level=True)

pytestmark = pytest.mark.terraform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PRODUCT_A = [("product-a-dev", "db"), ("product-a-dev", "api"), ("web-dev", "frontend")]


@pytest.fixture
def function_url() -> Iterator[str]:
    with function_url_server() as url:
        yield url


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


def reconcile(d: Deployment, tree: Path) -> dict[str, Any]:
    return Pump(d).run(d.api.start_reconcile(tree))


def new_sandboxes(d: Deployment) -> None:
    """The next terraform runs in other Lambda sandboxes: no working directory survives."""
    shutil.rmtree(d.workspaces, ignore_errors=True)


def test_fresh_sandboxes_re_apply_and_tear_down(stack: Deployment, tmp_path: Path) -> None:
    """What only a short-lived sandbox tests: terraform in a Lambda whose disk never saw the
    partition (workspace and state restored through S3 and the API). The runtime-neutral
    scenarios (apply, no-op, failures, destroy...) are in tests/scenarios."""
    d = stack
    tree = copy_example("product-a", tmp_path)
    assert reconcile(d, tree)["status"] == "succeeded"
    base = "/enclaves/product-a-dev/partitions/db/iac/runs"
    (db_run,) = d.api.ok("GET", base)
    log = d.api.request("GET", f"{base}/{db_run['id']}/log")
    assert log.status == 200 and log.headers["X-Nclav-Run-Status"] == "succeeded"
    for line in ("=== terraform init ===", "=== terraform apply ===", "Apply complete!"):
        assert line in log.text
    assert "TF_HTTP_PASSWORD" not in log.text and d.token not in log.text
    assert d.runtime.store.get_lock("product-a-dev/db") is None

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
