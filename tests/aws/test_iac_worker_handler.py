"""The IaC worker's long-apply design, in the parts that need no terraform binary.

(The apply stopped at the budget runs real terraform: ``test_runtime_e2e.py``. The rule for
breaking a lock a stopped terraform left is core's: ``tests/terraform/test_partition_iac.py``.)
"""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import TYPE_CHECKING

import pytest
from aws_harness import Deployment, FakeContext, Pump

from functions_aws.lambda_iac import workspace_blob
from nclav.iac.sandbox import restore_workspace, save_workspace

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def partition_tree(root: Path) -> Path:
    (root / "e" / "p").mkdir(parents=True)
    (root / "e" / "config.yml").write_text("id: e\nname: e\ncloud: local\nregion: local-1\n")
    (root / "e" / "p" / "config.yml").write_text("id: p\nname: p\n")
    (root / "e" / "p" / "main.tf").write_text('resource "terraform_data" "x" {}\n')
    return root


def test_terraform_steps_go_to_the_iac_worker(deployment: Deployment, tmp_path: Path) -> None:
    pump = Pump(
        deployment, iac_context=lambda: FakeContext("nclav-iac-worker", remaining_ms=30_000)
    )
    run = pump.run(deployment.api.start_reconcile(partition_tree(tmp_path / "t")))
    handled = {
        (name, json.loads(rec["body"])["step_id"])
        for name, event, _ in pump.invocations
        for rec in event["Records"]
    }
    assert handled == {
        ("worker", "provision_enclave:e"),
        ("iac_worker", "provision_partition:e/p"),
    }
    assert run["status"] == "failed"  # 30 s left: see below


def test_too_little_time_left_fails_the_step_without_starting_terraform(
    deployment: Deployment, tmp_path: Path
) -> None:
    pump = Pump(
        deployment, iac_context=lambda: FakeContext("nclav-iac-worker", remaining_ms=30_000)
    )
    run = pump.run(deployment.api.start_reconcile(partition_tree(tmp_path / "t")))
    assert run["status"] == "failed"
    step = {s["step_id"]: s for s in run["steps"]}["provision_partition:e/p"]
    assert step["status"] == "failed" and step["attempts"] == 1
    assert "was not started" in step["error"] and "30 s left" in step["error"]
    assert "NCLAV_IAC_MIN_REMAINING_S" in step["error"]
    assert "nclav serve --cloud aws" in step["error"]
    # No IaC run: terraform never started. The partition shows the error.
    assert deployment.api.ok("GET", "/enclaves/e/partitions/p/iac/runs") == []
    partition = deployment.api.ok("GET", "/enclaves/e")["partitions"]["p"]
    assert partition["meta"]["status"] == "error"
    assert "was not started" in partition["meta"]["last_error"]["message"]
    # Acknowledged: nothing left to redeliver.
    assert deployment.pending(deployment.iac.url) == 0


def test_a_workspace_is_restored_from_its_blob(
    make_deployment: Callable[..., Deployment], tmp_path: Path
) -> None:
    d = make_deployment()
    blobs = d.runtime.blobs
    workdir = tmp_path / "ws" / "e" / "p"
    workdir.mkdir(parents=True)
    (workdir / ".nclav-manifest.json").write_text('{"version": 1, "files": ["main.tf"]}')
    (workdir / "main.tf").write_text("# the partition\n")
    (workdir / ".terraform.lock.hcl").write_text("# providers\n")
    (workdir / "stray.txt").write_text("not nclav's")
    save_workspace(blobs, workdir, "e", "p")
    assert blobs.exists(workspace_blob("e", "p"))
    fresh = tmp_path / "other-sandbox" / "e" / "p"
    assert restore_workspace(blobs, fresh, "e", "p")
    assert sorted(p.name for p in fresh.iterdir()) == [
        ".nclav-manifest.json",
        ".terraform.lock.hcl",
        "main.tf",
    ]
    assert (fresh / "main.tf").read_text() == "# the partition\n"


def test_a_missing_workspace_blob_restores_nothing(deployment: Deployment, tmp_path: Path) -> None:
    assert not restore_workspace(deployment.runtime.blobs, tmp_path / "w", "e", "nothing")
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_a_50_mb_state_saves_and_loads_through_the_workers_loopback(
    deployment: Deployment,
) -> None:
    # The state never reaches the API function (6 MB payload limit): the IaC worker serves it
    # to terraform itself, over DynamoDB (the pointer) and S3 (the version).
    iac = deployment.runtime.iac
    data = json.dumps({"version": 4, "pad": "x" * 52_000_000}).encode()
    with iac.loopback.grant("e", "big", "run-1") as backend:
        auth = base64.b64encode(f"nclav:{backend.password}".encode()).decode()
        headers = {"Authorization": f"Basic {auth}"}
        post = urllib.request.Request(backend.state_url, data=data, headers=headers)
        with urllib.request.urlopen(post, timeout=120) as response:
            assert response.status == 200
        get = urllib.request.Request(backend.state_url, headers=headers)
        with urllib.request.urlopen(get, timeout=120) as response:
            assert response.read() == data
    assert deployment.runtime.store.get_tf_state("e/big") is not None
