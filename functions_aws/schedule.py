"""The schedule: a Lambda function on an EventBridge schedule (every minute in infra/aws).

Each invocation is one tick of core's schedule (``nclav.runtime.schedule``): the sweep that
recovers lost or dead-lettered step messages, the git source's poll, the due drift checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths

from functions_aws import bootstrap
from nclav.runtime.schedule import scheduled_tick

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="nclav-schedule")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    bootstrap.route_logs(logger)
    return {"resent": scheduled_tick(bootstrap.runtime().composition).resent}


__all__ = ["handler"]
