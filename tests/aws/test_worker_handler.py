"""The step worker and the sweeper: real SQS event shapes, received from moto's SQS.

Driver steps only (local-cloud enclaves without partitions), so no terraform runs here.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from aws_harness import Deployment, FakeContext, Pump, enclaves_tree, load_event, sqs_record

from functions_aws import bootstrap, schedule, worker
from functions_aws._dynamo_errors import DynamoStoreError
from functions_aws.delivery import RedeliveryError, deliver, visibility_kept
from functions_aws.dynamodb_store import DynamoStateStore
from nclav.engine import LocalDriver
from nclav.errors import TemporaryError
from nclav.model import Cloud
from nclav.plan import Action
from nclav.ports import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from nclav.records import StepRecord


class FailingStore(DynamoStateStore):
    """The real store, whose ``claim_step`` of the chosen steps fails for a while."""

    def __init__(
        self, table: str, client: Any, *, times: int, steps: set[str], retry_after_s: float = 0
    ) -> None:
        super().__init__(table, client)
        self.retry_after_s = retry_after_s
        self.left = times
        self.steps = steps
        self.guard = threading.Lock()

    def claim_step(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> StepRecord | None:
        with self.guard:
            failing = step_id in self.steps and self.left != 0
            if failing and self.left > 0:
                self.left -= 1
        if failing:
            raise TemporaryError("dynamodb: throttled", retry_after_s=self.retry_after_s)
        return super().claim_step(run_id, step_id, owner, lease_s, now)


class FlakyDriver(LocalDriver):
    """Fails ``provision_enclave`` of one enclave with a TemporaryError, ``times`` times."""

    def __init__(self, enclave_id: str, times: int) -> None:
        self.enclave_id, self.left = enclave_id, times

    def provision_enclave(self, enclave: Any, handle: Any) -> Any:
        if enclave.id == self.enclave_id and self.left > 0:
            self.left -= 1
            raise TemporaryError("organizations: TooManyRequestsException", retry_after_s=0)
        return super().provision_enclave(enclave, handle)


def step_id(enclave_id: str) -> str:
    return f"provision_enclave:{enclave_id}"


def test_step_messages_are_routed_to_their_queue_by_their_action(deployment: Deployment) -> None:
    queues = deployment.runtime.queues
    for action in Action:
        message = {"run_id": "r", "step_id": f"{action.value}:e/x", "action": action.value}
        expected = queues.iac if action.runs_terraform else queues.steps
        assert queues.queue_for(message) is expected, action
    assert {a for a in Action if a.runs_terraform} == {
        Action.PROVISION_PARTITION,
        Action.TEARDOWN_PARTITION,
    }


def test_a_reconcile_runs_through_the_worker(
    deployment: Deployment, pump: Pump, tmp_path: Path
) -> None:
    run = deployment.api.start_reconcile(enclaves_tree(tmp_path / "t", "alpha", "beta", "gamma"))
    assert deployment.pending(deployment.steps.url) == 3
    assert deployment.pending(deployment.iac.url) == 0
    final = pump.run(run)
    assert final["status"] == "succeeded" and final["errors"] == []
    assert {s["status"] for s in final["steps"]} == {"succeeded"}
    # One invocation with the three records, in the shape Lambda sends.
    ((name, event, result),) = pump.invocations
    assert name == "worker" and result == {"batchItemFailures": []}
    record = event["Records"][0]
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == deployment.steps.arn
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert json.loads(record["body"])["run_id"] == run["id"]
    assert (
        sorted(deployment.api.ok("GET", "/enclaves"), key=lambda e: e["enclave_id"])[0][
            "enclave_id"
        ]
        == "alpha"
    )


def test_a_failed_record_is_handed_back_alone_after_its_backoff(
    make_deployment: Callable[..., Deployment], tmp_path: Path
) -> None:
    d = make_deployment()
    store = FailingStore(d.table, d.dynamodb, times=1, steps={step_id("beta")}, retry_after_s=2)
    d.runtime_with(store=store)
    run = d.api.start_reconcile(enclaves_tree(tmp_path / "t", "alpha", "beta", "gamma"))
    pump = Pump(d)
    messages = pump.receive(d.steps)
    assert len(messages) == 3
    result = pump.invoke(d.steps, messages)
    (failed,) = [m for m in messages if json.loads(m["Body"])["step_id"] == step_id("beta")]
    assert result == {"batchItemFailures": [{"itemIdentifier": failed["MessageId"]}]}
    # ChangeMessageVisibility set the backoff: not back at once, back after it.
    assert pump.receive(d.steps) == []
    time.sleep(2.5)
    (again,) = pump.receive(d.steps)
    assert again["MessageId"] == failed["MessageId"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"
    assert pump.invoke(d.steps, [again]) == {"batchItemFailures": []}
    final = pump.run(run)
    assert final["status"] == "succeeded"
    attempts = {s["step_id"]: s["attempts"] for s in final["steps"]}
    assert attempts == {step_id("alpha"): 1, step_id("beta"): 1, step_id("gamma"): 1}


def test_when_every_record_fails_the_response_lists_them_all(
    make_deployment: Callable[..., Deployment], tmp_path: Path
) -> None:
    d = make_deployment()
    steps = {step_id("alpha"), step_id("beta")}
    d.runtime_with(store=FailingStore(d.table, d.dynamodb, times=2, steps=steps))
    d.api.start_reconcile(enclaves_tree(tmp_path / "t", "alpha", "beta"))
    pump = Pump(d)
    messages = pump.receive(d.steps)
    result = pump.invoke(d.steps, messages)
    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == sorted(
        m["MessageId"] for m in messages
    )


def test_deliveries_exhausted_fail_the_step_and_end_the_run(
    make_deployment: Callable[..., Deployment], tmp_path: Path
) -> None:
    d = make_deployment(NCLAV_MAX_RECEIVES="3")
    # Three deliveries fail; the third records the step failed (give_up claims it once more).
    d.runtime_with(store=FailingStore(d.table, d.dynamodb, times=3, steps={step_id("beta")}))
    run = d.api.start_reconcile(enclaves_tree(tmp_path / "t", "alpha", "beta"))
    final = Pump(d).run(run)
    assert final["status"] == "failed"
    steps = {s["step_id"]: s for s in final["steps"]}
    assert steps[step_id("alpha")]["status"] == "succeeded"
    beta = steps[step_id("beta")]
    assert beta["status"] == "failed" and beta["lease_owner"] is None
    assert "throttled" in beta["error"] and "gave up after 3 deliveries" in beta["error"]
    assert any("gave up after 3 deliveries" in e for e in final["errors"])
    # Acknowledged, not dead-lettered: nothing loops, nothing waits.
    assert d.pending(d.steps.url) == 0 and d.dead_letters(d.steps) == []
    enclave = d.api.ok("GET", "/enclaves/beta")
    assert enclave["meta"]["status"] == "error"
    assert "gave up after 3 deliveries" in enclave["meta"]["last_error"]["message"]


class DeniedStore(FailingStore):
    """``claim_step`` of the chosen steps is refused, as DynamoDB refuses a missing permission."""

    def claim_step(
        self, run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> StepRecord | None:
        with self.guard:
            failing = step_id in self.steps and self.left > 0
            self.left -= failing
        if failing:
            raise DynamoStoreError(
                "dynamodb:UpdateItem: AccessDeniedException: not authorized",
                status=400,
                code="AccessDeniedException",
            )
        return DynamoStateStore.claim_step(self, run_id, step_id, owner, lease_s, now)


def test_a_permanent_store_error_fails_the_step_at_once(
    make_deployment: Callable[..., Deployment], tmp_path: Path
) -> None:
    # Before: AccessDenied went back to the queue for 5, 10, 20 s... like a throttle.
    d = make_deployment(NCLAV_MAX_RECEIVES="5", NCLAV_REDELIVERY_BACKOFF_S="5")
    d.runtime_with(store=DeniedStore(d.table, d.dynamodb, times=1, steps={step_id("beta")}))
    run = d.api.start_reconcile(enclaves_tree(tmp_path / "t", "alpha", "beta"))
    pump = Pump(d)
    messages = pump.receive(d.steps)
    assert pump.invoke(d.steps, messages) == {"batchItemFailures": []}
    final = pump.run(run, timeout=10)
    beta = {s["step_id"]: s for s in final["steps"]}[step_id("beta")]
    assert beta["status"] == "failed" and "AccessDeniedException" in beta["error"]
    assert "permanent: not retried" in beta["error"]
    assert final["status"] == "failed" and d.pending(d.steps.url) == 0


def test_throttling_is_redelivered_with_a_growing_backoff(
    make_deployment: Callable[..., Deployment], tmp_path: Path
) -> None:
    # Before: each redelivery of a throttled store came back after the error's 2 s.
    d = make_deployment(NCLAV_MAX_RECEIVES="5", NCLAV_REDELIVERY_BACKOFF_S="5")
    store = FailingStore(d.table, d.dynamodb, times=-1, steps={step_id("alpha")}, retry_after_s=2)
    runtime = d.runtime_with(store=store)
    delays: list[float] = []
    runtime.queues.steps.delay = lambda receipt, seconds: delays.append(seconds)  # type: ignore[method-assign]
    d.api.start_reconcile(enclaves_tree(tmp_path / "t", "alpha"))
    (message,) = Pump(d).receive(d.steps)
    record = sqs_record(message, d.steps.arn)
    for count in (1, 2, 3):
        record["attributes"]["ApproximateReceiveCount"] = str(count)
        with pytest.raises(RedeliveryError):
            deliver(runtime, runtime.queues.steps, record)
    for delay, expected in zip(delays, (5, 10, 20), strict=True):  # +-20 % jitter
        assert 0.8 * expected <= delay <= 1.2 * expected, delays


def test_a_message_in_the_dlq_does_not_strand_its_run(
    make_deployment: Callable[..., Deployment], tmp_path: Path
) -> None:
    # The store fails even the give-up: SQS's redrive moves the message to the DLQ, and the
    # sweeper sends the still-ready step again once the store answers and the step has been
    # ready for longer than a lease (1 s here) without being claimed.
    d = make_deployment(NCLAV_MAX_RECEIVES="2", NCLAV_LEASE_S="1", redrive_max_receive_count="3")
    store = FailingStore(d.table, d.dynamodb, times=-1, steps={step_id("alpha")})
    d.runtime_with(store=store)
    run = d.api.start_reconcile(enclaves_tree(tmp_path / "t", "alpha"))
    pump = Pump(d)
    for _ in range(3):
        (message,) = pump.receive(d.steps)
        assert pump.invoke(d.steps, [message])["batchItemFailures"]
    assert pump.receive(d.steps) == []  # the 4th receive moved it
    (dead,) = d.dead_letters(d.steps)
    assert json.loads(dead["Body"])["step_id"] == step_id("alpha")
    assert d.api.run(run["id"])["status"] == "running"
    with store.guard:
        store.left = 0  # the store recovers
    time.sleep(1.0)
    assert schedule.handler(load_event("eventbridge_scheduled"), FakeContext()) == {"resent": 1}
    final = pump.run(run)
    assert final["status"] == "succeeded"


def test_a_duplicate_delivery_does_the_work_once(
    deployment: Deployment, pump: Pump, tmp_path: Path
) -> None:
    run = deployment.api.start_reconcile(enclaves_tree(tmp_path / "t", "alpha"))
    (original,) = pump.receive(deployment.steps)
    deployment.sqs.change_message_visibility(
        QueueUrl=deployment.steps.url, ReceiptHandle=original["ReceiptHandle"], VisibilityTimeout=0
    )
    deployment.send_raw(deployment.steps, original["Body"])  # SQS delivered it twice
    both = pump.receive(deployment.steps)
    assert len(both) == 2 and {m["Body"] for m in both} == {original["Body"]}
    assert pump.invoke(deployment.steps, both) == {"batchItemFailures": []}
    # ... and once more, later, in a batch of its own.
    deployment.send_raw(deployment.steps, original["Body"])
    final = pump.run(run)
    assert final["status"] == "succeeded"
    (step,) = final["steps"]
    assert step["attempts"] == 1
    events = deployment.api.ok("GET", "/events?limit=100")
    assert [e["kind"] for e in events].count("EnclaveProvisioned") == 1


def test_a_step_error_is_retried_by_the_engine(
    deployment: Deployment, pump: Pump, tmp_path: Path
) -> None:
    deployment.runtime_with(drivers={Cloud.LOCAL: FlakyDriver("alpha", times=2)})
    run = deployment.api.start_reconcile(enclaves_tree(tmp_path / "t", "alpha"))
    final = pump.run(run)
    assert final["status"] == "succeeded"
    assert final["steps"][0]["attempts"] == 3


def test_a_worker_dying_mid_step_is_recovered_by_the_sweeper(
    deployment: Deployment, pump: Pump, tmp_path: Path
) -> None:
    clock = ManualClock()
    runtime = deployment.runtime_with(clock=clock)
    run = deployment.api.start_reconcile(enclaves_tree(tmp_path / "t", "alpha"))
    # A worker took the step and died: its claim stands, under a lease, until it expires.
    lease = runtime.settings.lease_s
    dead = runtime.store.claim_step(run["id"], step_id("alpha"), "dead-worker", lease, clock.now())
    assert dead is not None and dead.status == "running"
    pump.drain()  # the message comes back: the claim is live, so it is a no-op and acked
    assert deployment.api.run(run["id"])["status"] == "running"
    event = load_event("eventbridge_scheduled")
    assert schedule.handler(event, FakeContext("nclav-schedule")) == {"resent": 0}
    clock.advance(lease + 1)
    assert schedule.handler(event, FakeContext("nclav-schedule")) == {"resent": 1}
    final = pump.run(run)
    assert final["status"] == "succeeded"
    (step,) = final["steps"]
    assert step["attempts"] == 2 and step["lease_owner"] is None


def test_a_step_whose_workers_keep_dying_fails_after_its_attempts(
    make_deployment: Callable[..., Deployment], tmp_path: Path
) -> None:
    d = make_deployment(NCLAV_MAX_ATTEMPTS="2")
    clock = ManualClock()
    runtime = d.runtime_with(clock=clock)
    run = d.api.start_reconcile(enclaves_tree(tmp_path / "t", "alpha"))
    pump, lease = Pump(d), runtime.settings.lease_s
    for n in (1, 2):
        taken = runtime.store.claim_step(
            run["id"], step_id("alpha"), f"dead-{n}", lease, clock.now()
        )
        assert taken is not None and taken.attempts == n
        pump.drain()
        clock.advance(lease + 1)
        assert schedule.handler(load_event("eventbridge_scheduled"), FakeContext()) == {"resent": 1}
    final = pump.run(run)
    assert final["status"] == "failed"
    (step,) = final["steps"]
    assert step["status"] == "failed" and "gave up after 2 attempts" in step["error"]


def test_a_malformed_message_is_dropped(deployment: Deployment, pump: Pump) -> None:
    deployment.send_raw(deployment.steps, "not json")
    deployment.send_raw(deployment.steps, json.dumps({"run_id": "r"}))
    messages = pump.receive(deployment.steps)
    assert pump.invoke(deployment.steps, messages) == {"batchItemFailures": []}
    assert deployment.pending(deployment.steps.url) == 0


def test_a_message_due_later_than_sqs_can_delay_is_sent_again(
    deployment: Deployment, pump: Pump
) -> None:
    runtime = deployment.runtime
    runtime.queues.send({"run_id": "r", "step_id": step_id("alpha")}, delay_s=3600)
    found = deployment.sqs.receive_message(
        QueueUrl=deployment.steps.url, MessageAttributeNames=["All"], AttributeNames=["All"]
    )
    assert found.get("Messages", []) == []  # delayed 900 s by SQS
    # Deliver an early copy (as SQS does after 900 s): the worker sends it on and acks it.
    body = json.dumps({"run_id": "r", "step_id": step_id("alpha")}, sort_keys=True)
    due = str(time.time() + 2000)
    deployment.sqs.send_message(
        QueueUrl=deployment.steps.url,
        MessageBody=body,
        MessageAttributes={"nclav-not-before": {"DataType": "Number", "StringValue": due}},
    )
    (early,) = pump.receive(deployment.steps)
    assert pump.invoke(deployment.steps, [early]) == {"batchItemFailures": []}
    assert deployment.pending(deployment.steps.url) == 2  # the original and the re-sent one


def test_the_heartbeat_keeps_a_long_step_invisible(deployment: Deployment, pump: Pump) -> None:
    deployment.send_raw(deployment.iac, "{}")
    (message,) = pump.receive(deployment.iac)
    deployment.sqs.change_message_visibility(
        QueueUrl=deployment.iac.url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=2
    )
    record = {"receiptHandle": message["ReceiptHandle"]}
    with visibility_kept(deployment.runtime.queues.iac, record, every_s=0.5, visibility_s=2):
        time.sleep(4)  # twice the visibility timeout: without the beats it would be back
        assert pump.receive(deployment.iac) == []
    time.sleep(2.5)
    assert len(pump.receive(deployment.iac)) == 1


def test_the_worker_handler_module_builds_no_runtime_at_import() -> None:
    assert bootstrap.install(None) is None  # nothing was built (install answers what it replaced)
    assert worker.processor is not None


@pytest.mark.parametrize(
    "missing", ["NCLAV_TABLE", "NCLAV_BUCKET", "NCLAV_STEPS_QUEUE_URL", "NCLAV_IAC_QUEUE_URL"]
)
def test_a_missing_variable_is_named(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.delenv(missing)
    with pytest.raises(bootstrap.ConfigurationError, match=missing):
        bootstrap.Settings.from_env()
