"""The AWS runtime's settings: core's ``NCLAV_*`` settings plus the names of its resources,
and ``StepQueues``, the engine's one queue over the two SQS queues."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nclav.runtime.routing import RoutedQueue
from nclav.runtime.settings import Settings as CoreSettings

if TYPE_CHECKING:
    from functions_aws.sqs_queue import SqsWorkQueue


@dataclass(frozen=True, kw_only=True)
class Settings(CoreSettings):
    """Core's settings plus the AWS resource names (each ``NCLAV_<FIELD>``; infra/aws sets them)."""

    table: str  # DynamoDB table: applied state, runs, steps, events, locks
    bucket: str  # S3 bucket: bundles, IaC logs, Terraform state versions
    steps_queue_url: str  # SQS queue of driver steps
    iac_queue_url: str  # SQS queue of terraform steps
    cloud: str = "aws"
    blob_prefix: str = ""  # key prefix inside the bucket
    secret_prefix: str = "nclav/"  # Secrets Manager name prefix
    token_secret: str = "api-token"  # the API token's secret name, under the prefix
    # terraform on Lambda (functions_aws.lambda_iac: the long-apply design)
    iac_min_remaining_s: float = 120.0  # refuse to start terraform with less left
    iac_margin_s: float = 60.0  # kept back at the end to stop terraform cleanly
    iac_heartbeat_s: float = 60.0  # how often the message's visibility is extended
    iac_visibility_s: float = 180.0  # ...and to how long from then


class StepQueues(RoutedQueue):
    """The engine's one queue: terraform steps to ``iac``, every other step to ``steps``."""

    def __init__(self, steps: SqsWorkQueue, iac: SqsWorkQueue) -> None:
        routed = RoutedQueue.terraform_apart(steps, iac)
        super().__init__(routed.default, routed.by_action)
        self.steps, self.iac = steps, iac

    def dead_letter_count(self) -> int | None:
        """Both queues' dead-lettered messages (the ``DeadLetters`` capability)."""
        counts = [q.dead_letter_count() for q in (self.steps, self.iac)]
        known = [c for c in counts if c is not None]
        return sum(known) if known else None


__all__ = ["Settings", "StepQueues"]
