"""The sweeper: a Lambda function on an EventBridge schedule (every minute in infra/aws).

``Engine.sweep`` sends again the steps whose lease expired (their worker died or was
stopped) and the ready steps whose delay has passed, and starts the runs that may start. It
is what recovers a step whose message was lost or dead-lettered, so no run waits forever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths

from functions_aws import bootstrap

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="nclav-schedule")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    bootstrap.route_logs(logger)
    resent = bootstrap.runtime().engine.sweep()
    if resent:
        logger.info("stuck steps sent again", extra={"resent": resent})
    return {"resent": resent}


__all__ = ["handler"]
