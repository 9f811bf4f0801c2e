"""The v2 function app, its functions called in-process as the host calls them, over Azurite and
cosmosdb-server: the HTTP trigger, the queue triggers with the host's queue processing
(``azure_harness.HostPump``), the timer, and host.json against core's delivery policy.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from typing import TYPE_CHECKING, Any

import pytest
from azure.functions.queue import QueueMessage
from azure_harness import AzureDeployment, HostPump, functions, http_request, indexed

from functions_azure import bootstrap, function_app, host
from functions_azure.functions_iac import Execution
from functions_azure.settings import Settings
from nclav.errors import ConfigurationError, ConflictError, TemporaryError
from nclav.runtime.settings import env_var

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from azure.cosmos import DatabaseProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def deployment(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    azure_storage: str,
    cosmos: DatabaseProxy,
    cosmos_server: str,
) -> Iterator[AzureDeployment]:
    monkeypatch.setenv("AzureFunctionsJobHost__extensions__queues__visibilityTimeout", "00:00:01")
    d = AzureDeployment(monkeypatch, tmp_path, azure_storage, cosmos, cosmos_server)
    try:
        yield d
    finally:
        bootstrap.install(None)


def bundle(*enclave_ids: str) -> bytes:
    """A tar.gz of local-cloud enclaves without partitions (driver steps only)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for eid in enclave_ids:
            data = f"id: {eid}\nname: {eid}\ncloud: local\nregion: local-1\n".encode()
            info = tarfile.TarInfo(f"{eid}/config.yml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def start_run(d: AzureDeployment, *enclave_ids: str) -> dict[str, Any]:
    posted = d.request(
        "POST", "/bundles", bundle(*enclave_ids), {"content-type": "application/gzip"}
    )
    assert posted.status in (200, 201), posted
    digest = json.loads(posted.body)["digest"]
    body = json.dumps({"bundle": digest}).encode()
    started = d.request("POST", "/reconcile", body, {"content-type": "application/json"})
    assert started.status == 202, started
    return json.loads(started.body)  # type: ignore[no-any-return]


def run_of(d: AzureDeployment, run_id: str) -> dict[str, Any]:
    reply = d.request("GET", f"/runs/{run_id}")
    assert reply.status == 200, reply
    return json.loads(reply.body)  # type: ignore[no-any-return]


# -- the app -------------------------------------------------------------------------------------


def test_the_app_indexes_four_functions_with_the_bindings_the_settings_name() -> None:
    found = {f.get_function_name(): json.loads(f.get_function_json()) for f in indexed()}
    assert set(found) == {"http_api", "steps_worker", "iac_worker", "sweeper"}
    http = found["http_api"]["bindings"][0]
    assert (http["route"], http["authLevel"]) == ("{*path}", "ANONYMOUS")
    queues = {name: found[name]["bindings"][0] for name in ("steps_worker", "iac_worker")}
    # The trigger's queue is the app setting Settings reads its queue name from.
    assert queues["steps_worker"]["queueName"] == f"%{env_var('steps_queue')}%"
    assert queues["iac_worker"]["queueName"] == f"%{env_var('iac_queue')}%"
    assert found["sweeper"]["bindings"][0]["type"] == "timerTrigger"


def test_health_answers_without_any_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NCLAV_STORAGE_ACCOUNT", "NCLAV_COSMOS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    bootstrap.install(None)
    result = functions()["http_api"](http_request("GET", "/health"))
    assert result.status_code == 200
    assert json.loads(result.get_body()) == {"status": "ok"}
    # ... while a route that needs the runtime says 500 with a request id, not the cause.
    broken = functions()["http_api"](http_request("GET", "/runs", token="x"))
    assert broken.status_code == 500
    assert "environment variables" not in broken.get_body().decode()
    bootstrap.install(None)


# -- HTTP ----------------------------------------------------------------------------------------


def test_requests_reach_the_router_with_the_token(deployment: AzureDeployment) -> None:
    assert deployment.request("GET", "/runs").status == 200
    denied = deployment.request("GET", "/runs", token=None)
    assert denied.status == 401
    assert denied.headers["Content-Type"].startswith("application/json")
    missing = deployment.request("GET", "/runs/nope")
    assert missing.status == 404
    assert json.loads(missing.body)["error"]["code"]


def test_wait_is_capped_below_the_front_ends_230_seconds(deployment: AzureDeployment) -> None:
    posted = deployment.request(
        "POST", "/bundles", bundle("alpha"), {"content-type": "application/gzip"}
    )
    digest = json.loads(posted.body)["digest"]
    req = http_request(
        "POST",
        "/reconcile?wait=600",
        token=deployment.token,
        body=json.dumps({"bundle": digest}).encode(),
        headers={"content-type": "application/json"},
    )
    # 229 s into the front end's 230: nothing left to wait, and the answer says so.
    late = Execution(function_app.HTTP_CUT_S, started=time.monotonic() - 229)
    result = function_app.respond(req, lambda: deployment.runtime.router, late)
    assert result.status_code == 202
    assert result.headers["X-Nclav-Wait-Capped"] == "0"
    fresh = function_app.to_api_request(req)
    assert fresh.time_left_s is None  # the translation itself sets no cap; respond does


def test_a_stream_request_gets_the_polling_form(deployment: AzureDeployment) -> None:
    reply = deployment.request("GET", "/events", headers={"accept": "text/event-stream"})
    assert reply.status == 200, reply
    assert reply.headers["X-Nclav-Streaming"] == "unsupported"


def test_a_body_over_the_hosts_limit_is_413(
    deployment: AzureDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(function_app, "MAX_REQUEST_BYTES", 10)
    reply = deployment.request("POST", "/bundles", b"x" * 11)
    assert reply.status == 413
    error = json.loads(reply.body)["error"]
    assert error["code"] == "payload_too_large"
    assert error["request_id"] and reply.headers["X-Request-Id"] == error["request_id"]


# -- queues --------------------------------------------------------------------------------------


def test_a_run_goes_through_the_queue_triggers(deployment: AzureDeployment) -> None:
    run = start_run(deployment, "alpha", "beta")
    pump = HostPump(deployment)
    pump.drain(60)
    assert run_of(deployment, run["id"])["status"] == "succeeded"
    assert {i.function for i in pump.invocations} == {"steps_worker"}
    assert all(i.raised is None for i in pump.invocations)


def test_a_temporary_store_error_is_redelivered_with_cores_backoff_and_a_higher_dequeue_count(
    deployment: AzureDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = start_run(deployment, "alpha")
    engine = deployment.runtime.engine
    real = engine.handle
    failures = {"left": 1}

    def flaky(message: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise TemporaryError("the state store is busy")
        real(message)

    monkeypatch.setattr(engine, "handle", flaky)
    pump = HostPump(deployment)
    pump.drain(60)
    assert run_of(deployment, run["id"])["status"] == "succeeded"
    counts = [i.dequeue_count for i in pump.invocations]
    # The function set the message's visibility itself and returned (no raise): the host's
    # delete missed (new pop receipt) and the message came back, its dequeue_count 2.
    assert counts[:2] == [1, 2], pump.invocations
    assert all(i.raised is None for i in pump.invocations)
    assert deployment.poison[deployment.steps.name].pending() == 0


def test_core_gives_up_before_the_host_would_poison_the_message(
    deployment: AzureDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = start_run(deployment, "alpha")
    engine = deployment.runtime.engine
    real = engine.handle

    def always(message: Any) -> None:
        if message.get("action"):
            raise TemporaryError("the state store is down")
        real(message)

    monkeypatch.setattr(engine, "handle", always)
    pump = HostPump(deployment)
    pump.drain(60)
    final = run_of(deployment, run["id"])
    assert final["status"] == "failed"
    failed = [s for s in final["steps"] if s["status"] == "failed"]
    assert failed and "gave up after 3 deliveries" in failed[0]["error"]
    assert max(i.dequeue_count for i in pump.invocations) == 3 < host.max_dequeue_count()
    assert deployment.poison[deployment.steps.name].pending() == 0


def test_a_message_nclav_did_not_write_is_acknowledged_not_poisoned(
    deployment: AzureDeployment,
) -> None:
    deployment.send_raw(deployment.steps, "not json")
    pump = HostPump(deployment)
    pump.drain(30)
    assert [i.raised for i in pump.invocations] == [None]
    assert deployment.steps.pending() == 0
    assert deployment.poison[deployment.steps.name].pending() == 0


def test_when_the_backoff_cannot_be_set_the_host_puts_the_message_back(
    deployment: AzureDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions_azure.delivery import RedeliveryError

    engine = deployment.runtime.engine
    monkeypatch.setattr(engine, "handle", lambda m: (_ for _ in ()).throw(TemporaryError("busy")))
    msg = QueueMessage(
        id="m1",
        body=b'{"run_id": "r", "step_id": "s", "action": "x"}',
        dequeue_count=1,
        pop_receipt="stale",
    )
    with pytest.raises(RedeliveryError, match="busy"):
        functions()["steps_worker"](msg)


def test_the_sweeper_sends_a_lost_step_again(
    deployment: AzureDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NCLAV_LEASE_S", "1")  # a step unclaimed for a lease is stuck
    deployment.install()
    run = start_run(deployment, "alpha")
    # The message is lost (the queue emptied): only the sweeper can bring the run on.
    deployment.steps.client.clear_messages()
    time.sleep(1.2)
    functions()["sweeper"](None)
    HostPump(deployment).drain(60)
    assert run_of(deployment, run["id"])["status"] == "succeeded"


# -- host.json and the delivery policy -------------------------------------------------------------


def test_host_json_agrees_with_the_delivery_policy() -> None:
    settings = Settings.from_env({"NCLAV_STORAGE_ACCOUNT": "a", "NCLAV_COSMOS_ENDPOINT": "e"})
    queues = host.value("extensions.queues", {})
    # Core gives up (and records the step failed) before the host moves it to -poison.
    assert settings.max_receives < queues["maxDequeueCount"]
    host.check_policy(settings)
    # A raise comes back after the policy's first backoff, as a Retry would.
    release = host.timespan_s(queues["visibilityTimeout"], "visibilityTimeout")
    assert release == settings.redelivery_backoff_s
    # Bodies are base64, as the queue adapter writes them.
    assert queues["messageEncoding"] == "base64"
    assert 1 <= queues["batchSize"] <= 32
    # An execution leaves terraform room to start and stop cleanly.
    timeout = host.function_timeout_s({})
    assert timeout is not None
    assert timeout > settings.iac_min_remaining_s + settings.iac_margin_s
    assert host.value("extensions.http.routePrefix", {}) == ""


def test_a_policy_that_would_let_the_host_poison_first_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"NCLAV_STORAGE_ACCOUNT": "a", "NCLAV_COSMOS_ENDPOINT": "e", "NCLAV_MAX_RECEIVES": "6"}
    with pytest.raises(ConfigurationError, match="maxDequeueCount=6"):
        host.check_policy(Settings.from_env(env))
    # An app setting overrides host.json, as the host reads it.
    env["AzureFunctionsJobHost__extensions__queues__maxDequeueCount"] = "10"
    host.check_policy(Settings.from_env(env))
    assert host.function_timeout_s({"AzureFunctionsJobHost__functionTimeout": "02:00:00"}) == 7200
    assert host.function_timeout_s({"AzureFunctionsJobHost__functionTimeout": "-1"}) is None
    with pytest.raises(ConfigurationError, match="functionTimeout"):
        host.function_timeout_s({"AzureFunctionsJobHost__functionTimeout": "2h"})


def test_a_message_the_host_poisons_is_counted_on_the_status_page(
    deployment: AzureDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions_azure.queue import StorageWorkQueue

    def cannot_delay(self: StorageWorkQueue, receipt: str, seconds: float) -> None:
        raise ConflictError("the queue did not answer")

    engine = deployment.runtime.engine
    monkeypatch.setattr(engine, "handle", lambda m: (_ for _ in ()).throw(TemporaryError("busy")))
    monkeypatch.setattr(engine, "give_up", lambda m, e: (_ for _ in ()).throw(TemporaryError("x")))
    monkeypatch.setattr(StorageWorkQueue, "delay", cannot_delay)
    assert json.loads(deployment.request("GET", "/status").body)["dead_letters"] == 0
    deployment.send_raw(deployment.steps, '{"run_id": "r", "step_id": "s", "action": "a"}')
    pump = HostPump(deployment)
    monkeypatch.setattr(pump, "_complete", _completes_without_the_patched_delay(pump))
    pump.drain(60)
    assert [i.dequeue_count for i in pump.invocations] == [1, 2, 3, 4, 5, 6]
    assert all(i.raised is not None for i in pump.invocations)
    assert json.loads(deployment.request("GET", "/status").body)["dead_letters"] == 1


def _completes_without_the_patched_delay(pump: HostPump) -> Any:
    """The host releases a message with its own Update Message, not the adapter's ``delay``
    (patched above to fail as the function's own update would)."""
    from functions_azure.queue import RECEIPT_SEPARATOR

    real = pump._complete  # noqa: SLF001

    def complete(queue: Any, received: Any, receipt: str, raised: BaseException | None) -> None:
        if raised is not None and received.receive_count < host.max_dequeue_count():
            message_id, pop = receipt.split(RECEIPT_SEPARATOR, 1)
            queue.client.update_message(message_id, pop, visibility_timeout=1)
            return
        real(queue, received, receipt, raised)

    return complete
