"""The IaC worker's long-apply design, in the parts that need no terraform binary.

(The apply stopped at the budget runs real terraform: ``test_runtime_e2e.py``.)
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aws_harness import Deployment, FakeContext, Pump

from functions_aws.lambda_iac import LambdaIac, terraform_who, workspace_blob

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


def _lock(who: str, created: float) -> dict[str, str]:
    stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    return {"ID": "lock-1", "Operation": "OperationTypeApply", "Who": who, "Created": stamp}


def test_a_lock_left_by_terraform_stopped_here_is_released(deployment: Deployment) -> None:
    runtime = deployment.runtime
    iac = runtime.iac
    store = runtime.store
    started = time.time() - 5
    store.lock("e/p", _lock(terraform_who(), started + 1))
    iac._release_left_lock(iac.partition_iac, "e", "p", started)  # noqa: SLF001
    assert store.get_lock("e/p") is None


def test_someone_elses_lock_is_kept(deployment: Deployment) -> None:
    runtime = deployment.runtime
    iac, store = runtime.iac, runtime.store
    started = time.time()
    store.lock("e/p", _lock("alice@laptop", started + 1))
    iac._release_left_lock(iac.partition_iac, "e", "p", started)  # noqa: SLF001
    assert store.get_lock("e/p") is not None
    store.unlock("e/p", None)
    store.lock("e/p", _lock(terraform_who(), started - 3600))  # an older one of ours
    iac._release_left_lock(iac.partition_iac, "e", "p", started)  # noqa: SLF001
    assert store.get_lock("e/p") is not None
    # ... nor while another nclav terraform holds the partition.
    store.unlock("e/p", None)
    store.lock("e/p", _lock(terraform_who(), started + 1))
    assert store.acquire_partition("e/p", "other-worker", 60, runtime.clock.now())
    iac._release_left_lock(iac.partition_iac, "e", "p", started)  # noqa: SLF001
    assert store.get_lock("e/p") is not None


def test_a_workspace_is_restored_from_its_blob(
    make_deployment: Callable[..., Deployment], tmp_path: Path
) -> None:
    d = make_deployment()
    iac: LambdaIac = d.runtime.iac
    workdir = tmp_path / "ws" / "e" / "p"
    workdir.mkdir(parents=True)
    (workdir / ".nclav-manifest.json").write_text('{"version": 1, "files": ["main.tf"]}')
    (workdir / "main.tf").write_text("# the partition\n")
    (workdir / ".terraform.lock.hcl").write_text("# providers\n")
    (workdir / "stray.txt").write_text("not nclav's")
    iac._save_workspace(workdir, "e", "p")  # noqa: SLF001
    assert d.runtime.blobs.exists(workspace_blob("e", "p"))
    fresh = tmp_path / "other-sandbox" / "e" / "p"
    iac._restore_workspace(fresh, "e", "p")  # noqa: SLF001
    assert sorted(p.name for p in fresh.iterdir()) == [
        ".nclav-manifest.json",
        ".terraform.lock.hcl",
        "main.tf",
    ]
    assert (fresh / "main.tf").read_text() == "# the partition\n"
