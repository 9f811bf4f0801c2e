"""The terraform step worker: an SQS-triggered Lambda function (container image, see the
Dockerfile) for ``provision_partition`` and ``teardown_partition`` steps (the IaC queue).

The same delivery as the step worker (``delivery.deliver``), plus two things terraform needs:

* the record's visibility is extended while the step runs: every ``NCLAV_IAC_HEARTBEAT_S``
  a ChangeMessageVisibility to ``NCLAV_IAC_VISIBILITY_S`` from then, so a long apply is not
  delivered again meanwhile;
* terraform runs within the invocation's time left (``context.get_remaining_time_in_millis``):
  core's sandbox time limit (``nclav.iac.sandbox``) in Lambda's words
  (``functions_aws.lambda_iac``): not started with less than ``NCLAV_IAC_MIN_REMAINING_S``
  left; one deadline for the step; either way the step fails with an error naming the
  long-running runtime, ``nclav serve --cloud aws``.

Terraform's state never leaves this function: it is served to terraform on 127.0.0.1 by core's
loopback backend, over DynamoDB and S3, with a credential valid for one partition during one
run (no API token, no payload limit of the API function).

Run it with a batch size of 1 and the 900 s timeout: the budget is per invocation.
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
from functions_aws.delivery import deliver, visibility_kept

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="nclav-iac-worker")
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    runtime = bootstrap.runtime()
    settings, queue = runtime.settings, runtime.queues.iac

    def remaining_s() -> float:
        return lambda_context.get_remaining_time_in_millis() / 1000

    runtime.set_time_left(remaining_s)
    with (
        runtime.iac.time_limited(remaining_s),
        visibility_kept(
            queue, record.raw_event, settings.iac_heartbeat_s, settings.iac_visibility_s
        ),
    ):
        deliver(runtime, queue, record.raw_event)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    bootstrap.route_logs(logger)
    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )


__all__ = ["handler", "record_handler"]
