"""The AWS runtime's wiring: its adapters over core's ``HostedRuntime`` (which calls ``compose``).

The one module that names the AWS adapters: DynamoDB state, S3 blobs, Secrets Manager secrets,
two SQS queues behind one ``WorkQueue`` (``functions_aws.settings.StepQueues``: terraform steps
to the IaC queue, the rest to the steps queue, by the action the engine puts in each message).

Nothing happens at import. ``runtime()`` creates the ``AwsRuntime`` on first use and caches it
for warm invocations; each part (a botocore client, an adapter, the API token, the composed
engine and router) is built the first time a handler asks for it, and
imports of core and botocore happen inside the builders, so importing a handler stays cheap
(``scripts/bench_aws.py`` measures it).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from functions_aws.settings import Settings, StepQueues
from nclav.errors import ConfigurationError
from nclav.runtime.hosted import HostedRuntime
from nclav.runtime.slot import ProcessSlot

if TYPE_CHECKING:
    from functions_aws.s3_blobs import S3BlobStore
    from functions_aws.secrets import SecretsManagerSecretStore
    from nclav.iac.sandbox import TimeLimit
    from nclav.ports import StateStore


class AwsRuntime(HostedRuntime[Settings]):
    """The AWS adapters over core's ``HostedRuntime`` (each part built on first use;
    keyword arguments replace parts, ``clients`` the botocore clients by service name)."""

    secret_service = "Secrets Manager"

    def client(self, service: str) -> Any:
        """One botocore client per service, shared by every adapter (clients are thread-safe),
        created on its first call: a request that reads DynamoDB loads no S3 or SQS model."""

        def build() -> Any:
            # botocore, not boto3: boto3 adds nothing the adapters use and ~50 ms of imports.
            import botocore.session
            from botocore.config import Config

            # Standard retry mode: throttling and 5xx retried with backoff before an adapter
            # sees them; timeouts well inside a function's lifetime.
            config = Config(
                retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5, read_timeout=30
            )
            session: Any = self._once("session", botocore.session.get_session)
            return session.create_client(service, config=config)

        return self._parts.lazy(service, build)

    @property
    def store(self) -> StateStore:
        from functions_aws.dynamodb_store import DynamoStateStore

        client = self.client("dynamodb")
        return self._once("store", lambda: DynamoStateStore(self.settings.table, client=client))

    @property
    def blobs(self) -> S3BlobStore:
        from functions_aws.s3_blobs import S3BlobStore

        s, client = self.settings, self.client("s3")
        return self._once("blobs", lambda: S3BlobStore(s.bucket, s.blob_prefix, client=client))

    @property
    def secrets(self) -> SecretsManagerSecretStore:
        from functions_aws.secrets import SecretsManagerSecretStore

        prefix, client = self.settings.secret_prefix, self.client("secretsmanager")
        return self._once("secrets", lambda: SecretsManagerSecretStore(prefix, client=client))

    @property
    def queues(self) -> StepQueues:
        from functions_aws.sqs_queue import SqsWorkQueue

        s, sqs = self.settings, self.client("sqs")
        return self._once(
            "queues",
            lambda: StepQueues(
                SqsWorkQueue(s.steps_queue_url, client=sqs),
                SqsWorkQueue(s.iac_queue_url, client=sqs),
            ),
        )

    def write_first_token(self, token: str) -> None:
        """Secrets Manager takes one first version (``put_first``): a racing sandbox loses."""
        self.secrets.put_first(self.settings.token_secret, token)

    def time_limit(self) -> TimeLimit:
        """Terraform held to an invocation's time left (``lambda_iac``)."""
        from functions_aws.lambda_iac import lambda_time_limit

        return lambda_time_limit(self.settings.iac_min_remaining_s, self.settings.iac_margin_s)


_slot: ProcessSlot[AwsRuntime] = ProcessSlot(lambda: AwsRuntime(Settings.from_env()))
# runtime(): this process's runtime, built from the environment on first use, then reused;
# install(new) replaces it (tests; None: the next use builds a fresh one), returning the old.
runtime, install = _slot.get, _slot.install
_logs_lock = threading.Lock()
_logs_routed = False


def route_logs(source: Any) -> None:
    """Once per process: core's and the adapters' stdlib loggers write through ``source``, a
    powertools ``Logger`` (JSON on stdout, with its keys and correlation id).

    Called by each handler on its first invocation, not at import: the change is process-wide
    (those loggers stop propagating to the root logger).
    """
    global _logs_routed
    with _logs_lock:
        if _logs_routed:
            return
        from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

        names = {"nclav", "functions_aws"}
        for name in names:
            logging.getLogger(name)  # registered, so the copy reaches their children too
        copy_config_to_registered_loggers(source_logger=source, include=names)
        _logs_routed = True


__all__ = [
    "AwsRuntime",
    "ConfigurationError",
    "Settings",
    "StepQueues",
    "install",
    "route_logs",
    "runtime",
]
