"""``SqsWorkQueue``: the work queue on an SQS standard queue with a dead-letter queue.

Producer side (the ``WorkQueue`` port): ``send`` puts ``{"run_id", "step_id"}`` as a JSON body.
Consumer side (the SQS-triggered worker Lambda, and the tests' pump): ``receive``, ``delete``,
``delay`` and ``defer``, plus ``Received.from_record`` for the records of a Lambda SQS event.

Delivery is at least once and a failed message comes back after a backoff: the consumer sets
the message's visibility timeout (``delay``, ChangeMessageVisibility) to the delay core's
delivery policy chose (``functions_aws.delivery``) and lets it go. Every receive counts, so
after ``maxReceiveCount`` failed deliveries SQS's redrive policy moves the message to the DLQ
on its next receive (``create_queues``).

Delays longer than SQS's 900 s ``DelaySeconds`` cap: the message is sent with 900 s and the
time it is due in the ``nclav-not-before`` attribute. A consumer that receives it early calls
``defer``, which sends it again with the rest of the delay (at most 900 s again), and then
deletes the early copy. Re-sending, rather than extending the visibility timeout, keeps the
receive count for real delivery attempts, so a long wait never pushes a message towards the
DLQ, and it has no upper bound (a visibility timeout ends 12 h after the receive).

SQS counts whole seconds: delays are rounded up, never down, so a message is never early.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from functions_aws._errors import aws_errors, lazy_client
from functions_aws.provision import create_queues

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

MAX_DELAY_S = 900  # SQS DelaySeconds cap
MAX_VISIBILITY_S = 43_200  # SQS visibility timeout cap (12 h)
MAX_BATCH = 10  # SQS ReceiveMessage cap
MAX_WAIT_S = 20  # SQS long-poll cap
NOT_BEFORE = "nclav-not-before"  # message attribute: epoch seconds the message is due


@dataclass(frozen=True, slots=True)
class Received:
    """One delivery of a message: the body, the handle to act on it, and its attempt number."""

    body: str
    receipt: str
    receive_count: int
    not_before: float | None = None
    message_id: str = ""

    @property
    def message(self) -> dict[str, str]:
        """The step message in the body (core's decoding); ``PermanentError`` if malformed."""
        from nclav.runtime.delivery import Delivery, decode

        return decode(Delivery(self.body, self.receive_count, self.message_id))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Received:
        """A record of a Lambda SQS event (``event["Records"][i]``)."""
        attributes = record.get("messageAttributes") or {}
        due = attributes.get(NOT_BEFORE, {}).get("stringValue")
        return cls(
            body=record["body"],
            receipt=record["receiptHandle"],
            receive_count=int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)),
            not_before=float(due) if due is not None else None,
            message_id=record.get("messageId", ""),
        )

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Received:
        """A message of a ReceiveMessage response."""
        attributes = message.get("MessageAttributes") or {}
        due = attributes.get(NOT_BEFORE, {}).get("StringValue")
        return cls(
            body=message["Body"],
            receipt=message["ReceiptHandle"],
            receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            not_before=float(due) if due is not None else None,
            message_id=message.get("MessageId", ""),
        )


def _whole_seconds(seconds: float, cap: int) -> int:
    return min(max(math.ceil(seconds), 0), cap)


class SqsWorkQueue:
    def __init__(
        self,
        queue_url: str,
        client: Any = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue_url = queue_url
        self.client = client if client is not None else lazy_client("sqs")
        self._clock = clock  # wall clock: due times cross processes, like SQS's own timers
        self._dlq_url: str | None = None  # ``_dead_letter_url``, once known
        self._dlq_known = False

    # -- producer: the WorkQueue port --------------------------------------------------------

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None:
        due = self._clock() + delay_s if delay_s > MAX_DELAY_S else None
        self._send(json.dumps(dict(message), sort_keys=True), delay_s, due)

    def _send(self, body: str, delay_s: float, due: float | None) -> None:
        params: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MessageBody": body,
            "DelaySeconds": _whole_seconds(delay_s, MAX_DELAY_S),
        }
        if due is not None:
            params["MessageAttributes"] = {
                NOT_BEFORE: {"DataType": "Number", "StringValue": repr(due)}
            }
        with aws_errors("sqs:SendMessage"):
            self.client.send_message(**params)

    def close(self) -> None:
        """Nothing to stop: consuming is the worker function's (or a pump's) business."""

    # -- consumer ----------------------------------------------------------------------------

    def receive(
        self, max_messages: int = MAX_BATCH, wait_s: float = 0, *, visibility_s: float | None = None
    ) -> list[Received]:
        """Up to ``max_messages``, long-polling up to ``wait_s`` seconds for the first."""
        params: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": min(max(max_messages, 1), MAX_BATCH),
            "WaitTimeSeconds": _whole_seconds(wait_s, MAX_WAIT_S),
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
            "MessageAttributeNames": [NOT_BEFORE],
        }
        if visibility_s is not None:
            params["VisibilityTimeout"] = _whole_seconds(visibility_s, MAX_VISIBILITY_S)
        with aws_errors("sqs:ReceiveMessage"):
            response = self.client.receive_message(**params)
        return [Received.from_message(m) for m in response.get("Messages", [])]

    def delete(self, receipt: str) -> None:
        """Acknowledge: the message is done."""
        with aws_errors("sqs:DeleteMessage"):
            self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)

    def delay(self, receipt: str, seconds: float) -> None:
        """Let a received message come back after ``seconds`` (0: now), up to 12 h.

        ChangeMessageVisibility counts from now; the next receive adds one to the receive
        count, so this is the backoff of a failed attempt, not a way to wait for a due time.
        """
        with aws_errors("sqs:ChangeMessageVisibility"):
            self.client.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=receipt,
                VisibilityTimeout=_whole_seconds(seconds, MAX_VISIBILITY_S),
            )

    def defer(self, received: Received) -> bool:
        """Send an early message again for the rest of its delay; True if it was early.

        The caller then deletes (acknowledges) the early copy. Should that fail, the copy
        comes back and is deferred again: two copies of a step message are harmless, the
        engine's claim makes the second a no-op.
        """
        if received.not_before is None:
            return False
        left = received.not_before - self._clock()
        if left <= 0:
            return False
        due = received.not_before if left > MAX_DELAY_S else None
        self._send(received.body, left, due)
        return True

    def pending(self) -> int:
        """Messages waiting, delayed or in flight (SQS's approximate counts)."""
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        with aws_errors("sqs:GetQueueAttributes"):
            response = self.client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=names
            )
        return sum(int(response["Attributes"].get(name, 0)) for name in names)

    def dead_letter_count(self) -> int | None:
        """Messages waiting in this queue's DLQ (its RedrivePolicy's target); None without
        one. The ``DeadLetters`` capability: ``GET /status`` shows it."""
        url = self._dead_letter_url()
        if url is None:
            return None
        with aws_errors(f"sqs:GetQueueAttributes {url}"):
            attributes = self.client.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
            ).get("Attributes", {})
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    def _dead_letter_url(self) -> str | None:
        """The DLQ's URL from the RedrivePolicy, read once per adapter (it does not change
        under a running deployment, and ``GET /status`` is polled by the dashboard)."""
        if self._dlq_known:
            return self._dlq_url
        with aws_errors("sqs:GetQueueAttributes"):
            policy = (
                self.client.get_queue_attributes(
                    QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"]
                )
                .get("Attributes", {})  # no Attributes without one
                .get("RedrivePolicy")
            )
        if policy:
            arn = str(json.loads(policy)["deadLetterTargetArn"])  # arn:aws:sqs:region:acct:name
            # The DLQ's URL is the source queue's with the DLQ's name (a DLQ lives in the same
            # account and region): no sqs:GetQueueUrl needed, only GetQueueAttributes on it.
            self._dlq_url = f"{self.queue_url.rsplit('/', 1)[0]}/{arn.rsplit(':', 1)[1]}"
        self._dlq_known = True
        return self._dlq_url


if TYPE_CHECKING:
    from nclav.ports import WorkQueue

    def _implements(adapter: SqsWorkQueue) -> WorkQueue:  # mypy proves the port is implemented
        return adapter


__all__ = [
    "MAX_DELAY_S",
    "NOT_BEFORE",
    "Received",
    "SqsWorkQueue",
    "create_queues",
]
