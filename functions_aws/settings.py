"""The AWS runtime's settings: core's ``NCLAV_*`` settings plus the names of its resources,
and ``StepQueues``, core's one queue over the two SQS queues."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nclav.runtime.routing import StepQueues as CoreStepQueues
from nclav.runtime.settings import HostedSettings

if TYPE_CHECKING:
    from functions_aws.sqs_queue import SqsWorkQueue


@dataclass(frozen=True, kw_only=True)
class Settings(HostedSettings):
    """Core's settings plus the AWS resource names (each ``NCLAV_<FIELD>``; infra/aws sets them)."""

    table: str  # DynamoDB table: applied state, runs, steps, events, locks
    bucket: str  # S3 bucket: bundles, IaC logs, Terraform state versions
    steps_queue_url: str  # SQS queue of driver steps
    iac_queue_url: str  # SQS queue of terraform steps
    cloud: str = "aws"
    secret_prefix: str = "nclav/"  # Secrets Manager names may hold "/"
    # terraform on Lambda (functions_aws.lambda_iac: the long-apply design)
    iac_heartbeat_s: float = 60.0  # how often the message's visibility is extended
    iac_visibility_s: float = 180.0  # ...and to how long from then


class StepQueues(CoreStepQueues[Any]):
    """The engine's one queue: terraform steps to ``iac``, every other step to ``steps``."""

    steps: SqsWorkQueue
    iac: SqsWorkQueue


__all__ = ["Settings", "StepQueues"]
