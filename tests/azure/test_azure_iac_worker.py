"""The IaC queue's function (``iac_worker``) with real terraform: terraform steps go to it, and
it holds terraform to the execution's time left (the host's ``functionTimeout``, here set by
the app setting override as the Container Apps deployment does)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from azure_harness import AzureDeployment, HostPump

from functions_azure import bootstrap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from serve_harness import require_terraform  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

    from azure.cosmos import DatabaseProxy

pytestmark = [pytest.mark.slow, pytest.mark.terraform]
TIMEOUT = "AzureFunctionsJobHost__functionTimeout"


@pytest.fixture
def deployment(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    azure_storage: str,
    cosmos: DatabaseProxy,
    cosmos_server: str,
) -> Iterator[AzureDeployment]:
    require_terraform()
    monkeypatch.setenv("AzureFunctionsJobHost__extensions__queues__visibilityTimeout", "00:00:01")
    d = AzureDeployment(monkeypatch, tmp_path, azure_storage, cosmos, cosmos_server)
    try:
        yield d
    finally:
        built = bootstrap.install(None)
        if built is not None:
            built.close()


def tree(main_tf: str) -> bytes:
    import io
    import tarfile

    files = {
        "e/config.yml": "id: e\nname: e\ncloud: local\nregion: local-1\n",
        "e/p/config.yml": "id: p\nname: p\n",
        "e/p/main.tf": main_tf,
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def reconcile(d: AzureDeployment, bundle: bytes) -> dict[str, Any]:
    posted = d.request("POST", "/bundles", bundle, {"content-type": "application/gzip"})
    digest = json.loads(posted.body)["digest"]
    started = d.request(
        "POST",
        "/reconcile",
        json.dumps({"bundle": digest}).encode(),
        {"content-type": "application/json"},
    )
    assert started.status == 202, started
    pump = HostPump(d)
    pump.drain(180)
    reply = d.request("GET", f"/runs/{json.loads(started.body)['id']}")
    run: dict[str, Any] = json.loads(reply.body)
    run["_invocations"] = [(i.function, i.dequeue_count) for i in pump.invocations]
    return run


def test_terraform_steps_go_to_the_iac_worker(deployment: AzureDeployment) -> None:
    run = reconcile(deployment, tree('resource "terraform_data" "x" {}\n'))
    assert run["status"] == "succeeded", run
    assert ("iac_worker", 1) in run["_invocations"]
    assert {f for f, _ in run["_invocations"]} == {"steps_worker", "iac_worker"}


def test_too_little_time_left_fails_the_step_without_starting_terraform(
    deployment: AzureDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TIMEOUT, "00:00:30")  # below NCLAV_IAC_MIN_REMAINING_S (120 s)
    run = reconcile(deployment, tree('resource "terraform_data" "x" {}\n'))
    assert run["status"] == "failed"
    step = {s["step_id"]: s for s in run["steps"]}["provision_partition:e/p"]
    assert "was not started" in step["error"] and "this function execution" in step["error"]
    assert "nclav serve --cloud azure" in step["error"]
    assert deployment.iac.pending() == 0  # acknowledged, not redelivered


def test_an_apply_that_outlasts_the_execution_is_stopped_and_names_the_alternative(
    deployment: AzureDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TIMEOUT, "00:00:06")
    monkeypatch.setenv("NCLAV_IAC_MIN_REMAINING_S", "1")
    monkeypatch.setenv("NCLAV_IAC_MARGIN_S", "1")
    deployment.install()
    slow = (
        'resource "terraform_data" "slow" {\n'
        '  provisioner "local-exec" { command = "sleep 60" }\n'
        "}\n"
    )
    run = reconcile(deployment, tree(slow))
    assert run["status"] == "failed"
    step = {s["step_id"]: s for s in run["steps"]}["provision_partition:e/p"]
    assert "cannot finish within the function app's functionTimeout" in step["error"]
    assert "nclav serve --cloud azure" in step["error"]
    assert deployment.runtime.store.get_lock("e/p") is None  # no lock left behind


def test_the_step_keeps_its_lease_while_terraform_runs(
    deployment: AzureDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 6 s apply under a 2 s lease: the engine renews the lease while terraform runs, so the
    sweeper (run every 0.3 s meanwhile, as a timer would) never hands the step out again."""
    import threading

    from functions_azure.function_app import sweep

    monkeypatch.setenv("NCLAV_LEASE_S", "2")
    deployment.install()
    slow = (
        'resource "terraform_data" "slow" {\n'
        '  provisioner "local-exec" { command = "sleep 6" }\n'
        "}\n"
    )
    resent: list[int] = []
    stop = threading.Event()

    def sweeper() -> None:
        while not stop.wait(0.3):
            resent.append(sweep().resent)

    thread = threading.Thread(target=sweeper, daemon=True)
    thread.start()
    try:
        run = reconcile(deployment, tree(slow))
    finally:
        stop.set()
        thread.join()
    assert run["status"] == "succeeded", run
    assert len(resent) > 10 and sum(resent) == 0
    assert [f for f, _ in run["_invocations"]].count("iac_worker") == 1
    runs = deployment.request("GET", "/enclaves/e/partitions/p/iac/runs")
    assert len(json.loads(runs.body)) == 1  # terraform applied once
