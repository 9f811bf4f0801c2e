"""SqsWorkQueue beyond the WorkQueue contract: the DLQ, visibility backoff, long delays, events.

Against moto server (the ``aws`` fixture); what moto cannot produce (throttling, the exact
parameters of a send whose delay cannot be waited out) through botocore's Stubber.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from functions_aws._errors import AwsServiceError
from functions_aws.sqs_queue import (
    MAX_DELAY_S,
    NOT_BEFORE,
    Received,
    SqsWorkQueue,
    create_queues,
)
from nclav.errors import NotFoundError, PermanentError, TemporaryError

STEP = {"run_id": "r1", "step_id": "s1"}
URL = "https://sqs.us-east-1.amazonaws.com/123456789012/nclav-steps"


@pytest.fixture
def sqs(aws: str) -> Any:
    return boto3.client("sqs")


def queue_pair(sqs: Any, max_receive_count: int = 2) -> tuple[SqsWorkQueue, SqsWorkQueue]:
    url, dlq_url = create_queues(sqs, "nclav-steps", max_receive_count)
    return SqsWorkQueue(url, client=sqs), SqsWorkQueue(dlq_url, client=sqs)


def receive_one(queue: SqsWorkQueue, wait_s: float = 1) -> Received:
    got = queue.receive(1, wait_s=wait_s)
    assert len(got) == 1, got
    return got[0]


def test_create_queues_sets_the_redrive_policy_and_is_idempotent(sqs: Any) -> None:
    url, dlq_url = create_queues(sqs, "nclav-steps", 4, visibility_timeout_s=120)
    assert create_queues(sqs, "nclav-steps", 4, visibility_timeout_s=120) == (url, dlq_url)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": 4,
    }
    assert attributes["VisibilityTimeout"] == "120"
    assert dlq_url.endswith("/nclav-steps-dlq")


def test_body_is_the_step_as_json(sqs: Any) -> None:
    queue, _ = queue_pair(sqs)
    queue.send(STEP)
    received = receive_one(queue)
    assert json.loads(received.body) == STEP
    assert received.message == STEP
    assert received.receive_count == 1
    assert received.not_before is None


def test_a_sent_message_waits_for_a_consumer(sqs: Any) -> None:
    queue, _ = queue_pair(sqs)
    queue.send(STEP)
    queue.close()  # the producer has nothing to stop; the message stays in SQS
    assert queue.pending() == 1
    assert receive_one(SqsWorkQueue(queue.queue_url, client=sqs)).message == STEP


def test_delay_hides_a_message_and_counts_a_receive(sqs: Any) -> None:
    queue, _ = queue_pair(sqs, max_receive_count=5)
    queue.send(STEP)
    first = receive_one(queue)
    queue.delay(first.receipt, 1)
    assert queue.receive(1, wait_s=0) == []
    time.sleep(1.1)
    again = receive_one(queue)
    assert (again.message, again.receive_count) == (STEP, 2)
    queue.delete(again.receipt)
    assert queue.pending() == 0


def test_the_dlq_takes_a_message_after_max_receive_count(sqs: Any) -> None:
    queue, dlq = queue_pair(sqs, max_receive_count=2)
    queue.send(STEP)
    for attempt in (1, 2):
        received = receive_one(queue)
        assert received.receive_count == attempt
        queue.delay(received.receipt, 0)  # failed: back at once
    assert queue.receive(1, wait_s=0) == []  # the third receive moved it instead
    dead = receive_one(dlq)
    assert dead.message == STEP
    assert queue.pending() == 0


def test_a_long_delay_is_sent_as_the_cap_and_a_due_time() -> None:
    client = boto3.client("sqs", region_name="us-east-1")
    queue = SqsWorkQueue(URL, client=client, clock=lambda: 1000.0)
    with Stubber(client) as stub:
        for delay_s, sent_delay in ((0.2, 1), (900, 900)):
            stub.add_response(
                "send_message",
                {"MessageId": "m"},
                {"QueueUrl": URL, "MessageBody": ANY, "DelaySeconds": sent_delay},
            )
            queue.send(STEP, delay_s)
        stub.add_response(
            "send_message",
            {"MessageId": "m"},
            {
                "QueueUrl": URL,
                "MessageBody": json.dumps(STEP, sort_keys=True),
                "DelaySeconds": MAX_DELAY_S,
                "MessageAttributes": {NOT_BEFORE: {"DataType": "Number", "StringValue": "4600.0"}},
            },
        )
        queue.send(STEP, 3600)
        stub.assert_no_pending_responses()


def test_an_early_message_is_deferred_for_the_rest_of_its_delay(sqs: Any) -> None:
    queue, _ = queue_pair(sqs)
    due = time.time() + 1.5  # as if sent with a long delay whose capped part has passed
    sqs.send_message(
        QueueUrl=queue.queue_url,
        MessageBody=json.dumps(STEP),
        MessageAttributes={NOT_BEFORE: {"DataType": "Number", "StringValue": repr(due)}},
    )
    early = receive_one(queue)
    assert early.not_before == pytest.approx(due)
    assert queue.defer(early)
    queue.delete(early.receipt)
    assert queue.receive(1, wait_s=0) == []  # delayed again, for the rest (2 s, rounded up)
    time.sleep(2.1)
    on_time = receive_one(queue)
    # A fresh message: no due time left on it, and its receive count starts again.
    assert (on_time.message, on_time.not_before, on_time.receive_count) == (STEP, None, 1)
    assert not queue.defer(on_time)


def test_a_message_still_far_off_is_deferred_by_the_cap_again() -> None:
    client = boto3.client("sqs", region_name="us-east-1")
    queue = SqsWorkQueue(URL, client=client, clock=lambda: 1000.0)
    far = Received(body="{}", receipt="h", receive_count=1, not_before=3000.0)
    with Stubber(client) as stub:
        stub.add_response(
            "send_message",
            {"MessageId": "m"},
            {
                "QueueUrl": URL,
                "MessageBody": "{}",
                "DelaySeconds": MAX_DELAY_S,
                "MessageAttributes": {NOT_BEFORE: {"DataType": "Number", "StringValue": "3000.0"}},
            },
        )
        assert queue.defer(far)
        stub.assert_no_pending_responses()
    assert not queue.defer(Received(body="{}", receipt="h", receive_count=1, not_before=999.0))


def test_a_lambda_event_record_is_read() -> None:
    record = {
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
        "body": json.dumps(STEP),
        "attributes": {
            "ApproximateReceiveCount": "3",
            "SentTimestamp": "1545082649183",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185",
        },
        "messageAttributes": {
            NOT_BEFORE: {
                "stringValue": "1767225600.5",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Number",
            }
        },
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:nclav-steps",
        "awsRegion": "us-east-1",
    }
    received = Received.from_record(record)
    assert received.message == STEP
    assert (received.receive_count, received.not_before) == (3, 1767225600.5)
    assert received.receipt.startswith("AQEB")
    assert received.message_id == record["messageId"]


@pytest.mark.parametrize("body", ["not json", "[1]", '{"run_id": 1}', "null"])
def test_a_malformed_body_is_a_permanent_error(body: str) -> None:
    with pytest.raises(PermanentError):
        _ = Received(body=body, receipt="h", receive_count=1).message


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("AWS.SimpleQueueService.RequestThrottled", 400, TemporaryError),
        ("ThrottlingException", 400, TemporaryError),
        ("InternalError", 500, TemporaryError),
        ("AWS.SimpleQueueService.NonExistentQueue", 400, NotFoundError),
        ("AccessDenied", 403, AwsServiceError),
    ],
)
def test_sdk_errors_are_translated(code: str, status: int, expected: type[Exception]) -> None:
    client = boto3.client("sqs", region_name="us-east-1")
    queue = SqsWorkQueue(URL, client=client)
    with Stubber(client) as stub:
        stub.add_client_error("send_message", code, "nope", http_status_code=status)
        with pytest.raises(expected) as caught:
            queue.send(STEP)
    assert isinstance(caught.value.__cause__, ClientError)
    assert "sqs:SendMessage" in str(caught.value)
