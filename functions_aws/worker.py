"""The step worker: an SQS-triggered Lambda function for the driver steps (the steps queue).

Each record of the batch is one step message (``delivery.deliver``: redelivery with a
backoff, giving up after ``NCLAV_MAX_RECEIVES`` deliveries, duplicates absorbed by the
engine's claim). Failed records are reported with powertools' partial batch response, so only
they come back; the event source mapping needs ``ReportBatchItemFailures``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)

from functions_aws import bootstrap
from functions_aws.delivery import deliver

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="nclav-worker")
# Every record failing is still a partial response (all of them listed), not an exception.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    runtime = bootstrap.runtime()
    runtime.set_time_left(lambda: lambda_context.get_remaining_time_in_millis() / 1000)
    deliver(runtime, runtime.queues.steps, record.raw_event)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    bootstrap.route_logs(logger)
    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )


__all__ = ["handler", "record_handler"]
