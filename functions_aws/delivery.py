"""One SQS delivery of a step message: core's delivery policy applied with SQS's mechanism.

The record becomes a ``Delivery`` (body, ``ApproximateReceiveCount``, message id) for core's
``deliver`` (``nclav.runtime.delivery``: the engine handles it; temporary errors are retried
with backoff, permanent ones and the last delivery record the step failed). The outcome is
applied here: ``Retry`` sets the message's visibility timeout to the delay
(ChangeMessageVisibility) and raises, so the record is a batch item failure and comes back
after the delay; ``Ack`` and ``GaveUp`` return, and Lambda deletes the record.

A message that arrived before its due time (a delay beyond SQS's 900 s cap) is sent again for
the rest of its delay and acknowledged first (``SqsWorkQueue.defer``). ``NCLAV_MAX_RECEIVES``
stays below the redrive policy's ``maxReceiveCount``; a message that still reaches the DLQ
(the failure could not be recorded either) leaves a ready step the sweeper sends again.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from nclav.runtime import heartbeat

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from functions_aws.bootstrap import AwsRuntime
    from functions_aws.sqs_queue import SqsWorkQueue

logger = logging.getLogger(__name__)

METRICS_NAMESPACE = "nclav"


class RedeliveryError(RuntimeError):
    """Raised to make a record a batch item failure: SQS delivers it again after its delay."""


def deliver(runtime: AwsRuntime, queue: SqsWorkQueue, record: Mapping[str, Any]) -> None:
    """Handle one record of a Lambda SQS event; raises to hand it back for redelivery."""
    from functions_aws.sqs_queue import Received
    from nclav.runtime.delivery import Delivery, GaveUp, Retry
    from nclav.runtime.delivery import deliver as deliver_step

    received = Received.from_record(record)
    if queue.defer(received):
        return
    delivery = Delivery(received.body, received.receive_count, received.message_id)
    outcome = deliver_step(runtime.engine, delivery, runtime.policy)
    if isinstance(outcome, GaveUp) and outcome.recorded:
        _count("StepsGivenUp")
    if not isinstance(outcome, Retry):
        return
    try:
        queue.delay(received.receipt, outcome.delay_s)
    except Exception:  # the record still comes back, after the queue's own timeout
        logger.exception("could not set the redelivery backoff")
    _count("StepsRedelivered")
    raise RedeliveryError(outcome.error)


@contextmanager
def visibility_kept(
    queue: SqsWorkQueue, record: Mapping[str, Any], every_s: float, visibility_s: float
) -> Iterator[None]:
    """Keep a record invisible while the block runs: every ``every_s`` seconds, push its
    visibility timeout to ``visibility_s`` from then (ChangeMessageVisibility). A missed beat
    only risks a duplicate delivery, which the engine's claim absorbs."""
    receipt = str(record["receiptHandle"])
    with heartbeat(every_s, lambda: queue.delay(receipt, visibility_s), name="sqs-heartbeat"):
        yield


def _count(name: str) -> None:
    """One CloudWatch metric data point (embedded metric format, written to the log)."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(name=name, unit=MetricUnit.Count, value=1, namespace=METRICS_NAMESPACE):
        pass


__all__ = ["METRICS_NAMESPACE", "RedeliveryError", "deliver", "visibility_kept"]
