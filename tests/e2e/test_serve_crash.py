"""Stopping ``nclav serve`` in the middle of an apply, then starting it again on the same home.

Issue 3, Tests: kill -9 the server in the middle of an apply and start it again: the run
completes, no step is carried out twice to completion, nothing applied is lost. The middle is
made reliable by a partition whose terraform sleeps (a ``local-exec`` on ``terraform_data``,
built in) and by killing while its IaC run is ``running``. ``NCLAV_LEASE_S=3`` lets the
restarted server take over the dead worker's step within seconds instead of 30.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from serve_harness import (
    copy_example,
    require_terraform,
    server_factory_fixture,  # noqa: F401
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from serve_harness import Server

require_terraform()
pytestmark = pytest.mark.terraform

CHAIN = [("hub", "resolver"), ("data", "events"), ("app", "worker")]
SLOW = """
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "sleep 3"
  }
}
"""
QUEUE_URL = "queue://data-events?via=ns1.hub.internal:53"


def slow_chain(tmp_path: Path) -> Path:
    """The chain example whose middle partition (data/events) takes 3 s to apply."""
    tree = copy_example("chain", tmp_path)
    main_tf = tree / "data" / "events" / "main.tf"
    main_tf.write_text(main_tf.read_text() + SLOW)
    return tree


def start_and_catch_events_running(
    server: Server, tree: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start an apply; return it and the data/events IaC run once terraform is running."""
    run = server.start_reconcile(tree)
    assert run["status"] in ("queued", "running"), run

    def events_running() -> dict[str, Any] | None:
        found = [r for r in server.iac_runs("data", "events") if r["status"] == "running"]
        return found[0] if found else None

    iac = wait_until(events_running, 60, "data/events terraform never started")
    # Past init and into the sleeping apply: the provisioner is on its way.
    log_url = f"/enclaves/data/partitions/events/iac/runs/{iac['id']}/log"
    wait_until(
        lambda: "terraform_data.slow: Provisioning with 'local-exec'" in server.get(log_url).text,
        30,
        "the slow provisioner never started",
    )
    return run, iac


def check_recovered(server: Server, run_id: str, tree: Path) -> dict[str, Any]:
    run = server.wait_run(run_id, timeout=90)
    assert run["status"] == "succeeded", run
    assert run["errors"] == []
    enclaves = server.enclaves()
    assert {e: s["meta"]["status"] for e, s in enclaves.items()} == {
        "hub": "active",
        "data": "active",
        "app": "active",
    }
    for enclave, partition in CHAIN:
        part = enclaves[enclave]["partitions"][partition]
        assert part["meta"]["status"] == "active", (enclave, partition, part["meta"])
        # No step carried out twice to completion: one successful terraform per partition.
        mine = [r for r in server.iac_runs(enclave, partition) if r["reconcile_run_id"] == run_id]
        succeeded = [r for r in mine if r["status"] == "succeeded"]
        assert len(succeeded) == 1, (enclave, partition, mine)
        assert not [r for r in mine if r["status"] == "running"], mine
    assert enclaves["data"]["partitions"]["events"]["resolved_outputs"] == {"queue_url": QUEUE_URL}
    worker = enclaves["app"]["partitions"]["worker"]["resolved_outputs"]
    assert worker == {"consumer": f"app/worker <- {QUEUE_URL}"}
    steps = server.run(run_id)["steps"]
    assert {s["status"] for s in steps} == {"succeeded"}
    assert not [s for s in steps if s["lease_owner"]]
    # The state is settled: nothing left to do, and the next apply runs no terraform.
    assert server.dry_run(tree)["changes"] == []
    counts = {(e, p): len(server.iac_runs(e, p)) for e, p in CHAIN}
    again = server.reconcile(tree)
    assert again["run"] is None and again["changes"] == 0  # no run recorded
    assert {(e, p): len(server.iac_runs(e, p)) for e, p in CHAIN} == counts
    # The Terraform state lock of the interrupted partition was released.
    lock = {"ID": "probe", "Operation": "probe", "Who": "test"}
    assert server.request("POST", "/terraform/state/data/events/lock", lock).status == 200
    assert server.request("DELETE", "/terraform/state/data/events/lock", lock).status == 200
    return {s["step_id"]: s for s in steps}


def test_kill_9_mid_apply_then_restart_completes_the_run(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    tree = slow_chain(tmp_path)
    server = server_factory(env={"NCLAV_LEASE_S": "3"})
    run, killed_iac = start_and_catch_events_running(server, tree)
    hub_before = server.ok("GET", "/enclaves/hub")
    hub_state_before = server.get("/terraform/state/hub/resolver").body
    assert hub_before["partitions"]["resolver"]["meta"]["status"] == "active"

    server.kill_server_only()  # kill -9: terraform, in its own session, lives on for a while
    server.start()

    steps = check_recovered(server, run["id"], tree)
    # The interrupted step ran again (once or, if it found the partition still leased, a
    # few times); every other step ran exactly once.
    events_step = steps.pop("provision_partition:data/events")
    assert 2 <= events_step["attempts"] <= 4, events_step
    assert {s["attempts"] for s in steps.values()} == {1}, steps
    # The terraform the crash interrupted is not left "running" forever.
    abandoned = server.ok("GET", f"/enclaves/data/partitions/events/iac/runs/{killed_iac['id']}")
    assert abandoned["status"] == "failed" and abandoned["finished_at"], abandoned
    assert "abandoned" in abandoned["log"]
    statuses = Counter(r["status"] for r in server.iac_runs("data", "events"))
    assert statuses == {"succeeded": 1, "failed": 1}
    # Nothing applied before the crash was lost or redone.
    hub_after = server.ok("GET", "/enclaves/hub")
    assert hub_after["partitions"]["resolver"] == hub_before["partitions"]["resolver"]
    assert len(server.iac_runs("hub", "resolver")) == 1
    assert server.get("/terraform/state/hub/resolver").body == hub_state_before


def test_sigterm_mid_apply_lets_the_step_finish_then_resumes(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    tree = slow_chain(tmp_path)
    server = server_factory(env={"NCLAV_LEASE_S": "3"})
    run, iac = start_and_catch_events_running(server, tree)

    assert server.stop(timeout=60) == 0  # SIGTERM: clean exit once the step in flight ends
    assert "stopping" in server.stderr()
    server.start()

    steps = check_recovered(server, run["id"], tree)
    # The step in flight finished before the stop: it was not carried out again.
    assert {s["attempts"] for s in steps.values()} == {1}, steps
    (only,) = server.iac_runs("data", "events")
    assert only["id"] == iac["id"] and only["status"] == "succeeded"
