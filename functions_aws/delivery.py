"""One SQS delivery of a step message: what both step workers do with a record.

* A message that arrived before its due time (a delay beyond SQS's 900 s cap) is sent again
  for the rest of its delay and acknowledged (``SqsWorkQueue.defer``).
* A body nclav did not write is logged and acknowledged: another delivery cannot fix it.
* Otherwise the engine handles it: it claims the step under a lease, carries it out and
  records the outcome, retrying a ``TemporaryError`` of the step itself with its own backoff
  (a new, delayed message). The claim is a conditional write, so a second delivery of the same
  message finds the step taken or done and does nothing: the work happens once.
* An exception out of the engine (the state store or S3 failing around the step):
  - before the ``NCLAV_MAX_RECEIVES``-th delivery, the record goes back to the queue after a
    backoff (ChangeMessageVisibility to ``retry_delay``: what a ``TemporaryError`` asks for,
    else exponential in the receive count) and is reported as a batch item failure;
  - on that delivery, the step is recorded failed with the error (``Engine.give_up``: its
    dependents are blocked, the run can end) and the message acknowledged, so it does not
    loop and no run waits forever. ``NCLAV_MAX_RECEIVES`` stays below the redrive policy's
    ``maxReceiveCount``; a message that still reaches the DLQ (the failure could not be
    recorded either) leaves a ready step that the sweeper sends again.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from functions_aws.bootstrap import AwsRuntime
    from functions_aws.sqs_queue import SqsWorkQueue

logger = logging.getLogger(__name__)

METRICS_NAMESPACE = "nclav"


def deliver(runtime: AwsRuntime, queue: SqsWorkQueue, record: Mapping[str, Any]) -> None:
    """Handle one record of a Lambda SQS event; raises to hand it back for redelivery."""
    from functions_aws.sqs_queue import Received, retry_delay
    from nclav.errors import PermanentError

    received = Received.from_record(record)
    if queue.defer(received):
        return
    try:
        message = received.message
    except PermanentError:
        message = {}
    if message.get("kind"):  # a control message: the git source's work (issue 15)
        from nclav.gitsource.worker import dispatch

        dispatch(message, runtime.git)
        return
    if not message.get("run_id") or not message.get("step_id"):
        logger.error("dropped a malformed message", extra={"message_id": received.message_id})
        return
    ids = {"run_id": message["run_id"], "step_id": message["step_id"]}
    try:
        runtime.engine.handle(message)
        return
    except Exception as exc:
        failure: Exception = exc
    settings = runtime.settings
    if received.receive_count >= settings.max_receives:
        error = f"{_describe(failure)} (gave up after {received.receive_count} deliveries)"
        try:
            recorded = runtime.engine.give_up(message, error)
        except Exception as exc:  # not even that: back to the queue, towards the DLQ
            logger.exception("could not record the step failed", extra=ids)
            failure = exc
        else:
            logger.error(
                "step given up",
                extra={**ids, "receive_count": received.receive_count, "recorded": recorded},
            )
            _count("StepsGivenUp")
            return
    delay = retry_delay(
        failure,
        received.receive_count,
        base_s=settings.redelivery_backoff_s,
        max_s=settings.redelivery_max_s,
    )
    try:
        queue.delay(received.receipt, delay)
    except Exception:  # the record still goes back, after the queue's own timeout
        logger.exception("could not set the redelivery backoff", extra=ids)
    logger.warning(
        "step handed back for redelivery",
        extra={**ids, "receive_count": received.receive_count, "delay_s": delay},
    )
    _count("StepsRedelivered")
    raise failure


@contextmanager
def visibility_kept(
    queue: SqsWorkQueue, record: Mapping[str, Any], every_s: float, visibility_s: float
) -> Iterator[None]:
    """Keep a record invisible while the block runs: every ``every_s`` seconds, push its
    visibility timeout to ``visibility_s`` from then (ChangeMessageVisibility)."""
    receipt = str(record["receiptHandle"])
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                queue.delay(receipt, visibility_s)
            except Exception:  # a missed beat only risks a duplicate, which a claim absorbs
                logger.warning("visibility heartbeat failed", exc_info=True)

    thread = threading.Thread(target=beat, name="sqs-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _count(name: str) -> None:
    """One CloudWatch metric data point (embedded metric format, written to the log)."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(name=name, unit=MetricUnit.Count, value=1, namespace=METRICS_NAMESPACE):
        pass


__all__ = ["METRICS_NAMESPACE", "deliver", "visibility_kept"]
