"""Dead letters on AWS: counted in ``GET /status``, and safe to redrive to the source queue.

A message lands in a DLQ when every delivery failed before its step could record an outcome.
Here deliveries fail the way they do in AWS: the message is received (the worker function
dies, times out) and never deleted, ``maxReceiveCount`` times; SQS's redrive policy moves it
on its next receive. The operator's redrive (``aws sqs start-message-move-task``, which moto
does not implement) is done as it works: each DLQ message is received, sent back to the
source queue, and deleted from the DLQ. Then the handlers (the pump) take it: a step still
ready runs; a finished or failed one is acknowledged without running twice.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from aws_harness import Deployment, Pump, Queue, enclaves_tree, function_url_server

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

MAX_RECEIVES = 2  # the redrive policy's maxReceiveCount in these tests

FAILING = (
    'variable "nclav_enclave" { type = string }\n'
    'variable "nclav_partition" { type = string }\n'
    'resource "terraform_data" "broken" {\n'
    '  provisioner "local-exec" { command = "exit 3" }\n'
    "}\n"
)


@pytest.fixture
def function_url() -> Iterator[str]:
    with function_url_server() as url:
        yield url


@pytest.fixture
def d(make_deployment: Callable[..., Deployment], function_url: str) -> Deployment:
    return make_deployment(
        NCLAV_API_URL=function_url,
        redrive_max_receive_count=str(MAX_RECEIVES),
        queue_visibility_s="1",
    )


def dead_letter(d: Deployment, queue: Queue, body: dict[str, str]) -> None:
    """``body`` sent to ``queue`` and delivered ``MAX_RECEIVES`` times, each delivery ending
    without a result; the next receive finds it gone to the DLQ."""
    d.sqs.send_message(QueueUrl=queue.url, MessageBody=json.dumps(body, sort_keys=True))
    for _ in range(MAX_RECEIVES):
        got = d.sqs.receive_message(QueueUrl=queue.url, VisibilityTimeout=0)
        assert len(got.get("Messages", [])) == 1, got
    assert "Messages" not in d.sqs.receive_message(QueueUrl=queue.url)
    assert d.pending(queue.dlq_url) == 1


def redrive(d: Deployment, queue: Queue) -> int:
    """What ``aws sqs start-message-move-task --source-arn <dlq>`` does: every DLQ message
    back on its source queue, then gone from the DLQ. Returns how many moved."""
    moved = 0
    while True:
        got = d.sqs.receive_message(QueueUrl=queue.dlq_url, MaxNumberOfMessages=10)
        messages = got.get("Messages", [])
        if not messages:
            return moved
        for m in messages:
            d.sqs.send_message(QueueUrl=queue.url, MessageBody=m["Body"])
            d.sqs.delete_message(QueueUrl=queue.dlq_url, ReceiptHandle=m["ReceiptHandle"])
            moved += 1


def step_message(step: dict[str, Any]) -> dict[str, str]:
    return {"run_id": step["run_id"], "step_id": step["step_id"], "action": step["action"]}


def test_status_counts_dead_letters_and_a_redriven_finished_step_does_nothing(
    d: Deployment, tmp_path: Path
) -> None:
    pump = Pump(d)
    tree = enclaves_tree(tmp_path / "t", "alpha")
    run = pump.run(d.api.start_reconcile(tree))
    assert run["status"] == "succeeded", run
    assert d.api.ok("GET", "/status")["dead_letters"] == 0
    (step,) = run["steps"]
    events = len(d.api.ok("GET", "/events?limit=1000"))

    dead_letter(d, d.steps, step_message(step))
    assert d.api.ok("GET", "/status")["dead_letters"] == 1  # seen, not found

    assert redrive(d, d.steps) == 1
    assert d.api.ok("GET", "/status")["dead_letters"] == 0
    pump.drain()
    assert pump.invocations[-1][2] == {"batchItemFailures": []}  # acknowledged
    after = d.api.run(run["id"])
    assert after["steps"] == run["steps"]  # not run again: same attempts, same times
    assert after["steps"][0]["attempts"] == 1
    assert len(d.api.ok("GET", "/events?limit=1000")) == events
    assert d.pending(d.steps.url) == 0 and d.pending(d.steps.dlq_url) == 0


def test_a_redriven_ready_step_runs(d: Deployment, tmp_path: Path) -> None:
    """The message of a step nobody could carry out went to the DLQ while the step stayed
    ready (the sweeper was off): redriven, it runs and the run ends."""
    pump = Pump(d)
    started = d.api.start_reconcile(enclaves_tree(tmp_path / "t", "alpha"))
    (message,) = pump.receive(d.steps)  # taken off the queue: its copy goes to the DLQ
    d.sqs.delete_message(QueueUrl=d.steps.url, ReceiptHandle=message["ReceiptHandle"])
    dead_letter(d, d.steps, json.loads(message["Body"]))
    assert d.api.run(started["id"])["steps"][0]["status"] == "ready"

    redrive(d, d.steps)
    final = pump.run(started)
    assert final["status"] == "succeeded", final
    assert final["steps"][0]["attempts"] == 1
    assert d.api.ok("GET", "/status")["dead_letters"] == 0


def test_a_redriven_failed_step_is_not_run_again(d: Deployment, tmp_path: Path) -> None:
    """A failed step is retried by `runs retry`, not by a redrive of its old message."""
    pump = Pump(d)
    root = enclaves_tree(tmp_path / "t", "alpha")
    part = root / "alpha" / "bad"
    part.mkdir()
    (part / "config.yml").write_text("id: bad\nname: bad\nbackend: terraform\n")
    (part / "main.tf").write_text(FAILING)
    run = pump.run(d.api.start_reconcile(root))
    assert run["status"] == "failed", run
    bad = next(s for s in run["steps"] if s["step_id"] == "provision_partition:alpha/bad")
    assert bad["status"] == "failed"

    dead_letter(d, d.iac, step_message(bad))
    assert d.api.ok("GET", "/status")["dead_letters"] == 1
    redrive(d, d.iac)
    pump.drain()
    assert d.api.run(run["id"])["steps"] == run["steps"]
    iac = d.api.ok("GET", "/enclaves/alpha/partitions/bad/iac/runs")
    assert [r["status"] for r in iac] == ["failed"]  # terraform did not run again


def test_a_queue_without_a_redrive_policy_counts_none(d: Deployment) -> None:
    from functions_aws.sqs_queue import SqsWorkQueue

    url = d.sqs.create_queue(QueueName="no-dlq")["QueueUrl"]
    assert SqsWorkQueue(url, client=d.sqs).dead_letter_count() is None
    assert SqsWorkQueue(d.steps.url, client=d.sqs).dead_letter_count() == 0
