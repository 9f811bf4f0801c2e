"""The AWS runtime's wiring: its settings and adapters, handed to core's ``compose``.

The one module that names the AWS adapters: DynamoDB state, S3 blobs, Secrets Manager secrets,
two SQS queues behind one ``WorkQueue`` (``functions_aws.settings.StepQueues``: terraform steps
to the IaC queue, the rest to the steps queue, by the action the engine puts in each message).

Nothing happens at import. ``runtime()`` creates the ``AwsRuntime`` on first use and caches it
for warm invocations, and each part (a boto3 client, an adapter, the API token, the composed
engine and router) is built the first time a handler asks for it: the step worker never
fetches the API token, ``/health`` builds nothing, and imports of core and boto3 happen inside
the builders, so importing a handler stays cheap (``scripts/bench_aws.py`` measures it).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from functions_aws.settings import Settings, StepQueues
from nclav.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from functions_aws.api_token import ApiToken
    from functions_aws.s3_blobs import S3BlobStore
    from functions_aws.secrets import SecretsManagerSecretStore
    from nclav.api.router import Router
    from nclav.engine import Driver, Engine
    from nclav.gitsource.source import GitSource
    from nclav.iac.partition import PartitionIac
    from nclav.model import Cloud
    from nclav.ports import Clock, StateStore
    from nclav.runtime.compose import Composition
    from nclav.runtime.delivery import DeliveryPolicy
    from nclav.service import Service

_T = TypeVar("_T")


class AwsRuntime:
    """Every part of the AWS runtime, each built on first use (thread-safe) and then kept.

    Keyword arguments replace a part (tests hand in a ``ManualClock``, local drivers, a
    store that fails on purpose); everything else comes from ``settings``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        drivers: Mapping[Cloud, Driver] | None = None,
        store: StateStore | None = None,
        clients: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._parts: dict[str, Any] = {}
        given = {"clock": clock, "drivers": None if drivers is None else dict(drivers)}
        self._parts.update({k: v for k, v in {**given, "store": store}.items() if v is not None})
        for service, client in (clients or {}).items():
            self._parts[service] = client

    def _once(self, name: str, build: Callable[[], _T]) -> _T:
        with self._lock:
            if name not in self._parts:
                self._parts[name] = build()
            part: _T = self._parts[name]
            return part

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

        return self._once(f"lazy:{service}", lambda: _Lazy(lambda: self._once(service, build)))

    # -- adapters ------------------------------------------------------------------------------

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

    def set_time_left(self, time_left: Callable[[], float | None]) -> None:
        """The current invocation's time left, for the drivers: no cloud call starts that the
        invocation could not see through (the handlers set it per invocation)."""
        for driver in self.drivers.values():
            setter = getattr(driver, "set_time_left", None)
            if callable(setter):
                setter(time_left)

    @property
    def api_token(self) -> ApiToken:
        """The API token in Secrets Manager: generated by the function on first start (not by
        terraform), re-read after a TTL so a rotation reaches warm sandboxes (``api_token``)."""
        from functions_aws.api_token import ApiToken

        s = self.settings
        return self._once("api_token", lambda: ApiToken(self.secrets, s.token_secret))

    @property
    def token(self) -> str:
        """The current API token (the API checks it; terraform never sees it)."""
        return self.api_token()

    def _rotating_auth(self) -> Any:
        from nclav.api.auth import RotatingTokenAuth

        return RotatingTokenAuth(self.api_token)

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

    @property
    def clock(self) -> Clock:
        from nclav.ports import SystemClock

        return self._once("clock", SystemClock)

    @property
    def drivers(self) -> dict[Cloud, Driver]:
        from nclav.runtime.drivers import drivers_for

        s = self.settings
        return self._once(
            "drivers",
            lambda: drivers_for(s.default_cloud, s.clouds[1:], s.driver_options or None, s.environ),
        )

    @property
    def policy(self) -> DeliveryPolicy:
        from nclav.runtime.delivery import DeliveryPolicy

        s = self.settings
        return DeliveryPolicy(s.max_receives, s.redelivery_backoff_s, s.redelivery_max_s)

    # -- core ----------------------------------------------------------------------------------

    @property
    def composition(self) -> Composition:
        def build() -> Composition:
            from functions_aws.lambda_iac import lambda_time_limit
            from nclav.drift.options import DriftOptions
            from nclav.runtime.compose import compose

            s = self.settings
            return compose(
                s,
                store=self.store,
                queue=self.queues,
                blobs=self.blobs,
                clock=self.clock,
                drivers=self.drivers,
                token=lambda: self.token,
                time_limit=lambda_time_limit(s.iac_min_remaining_s, s.iac_margin_s),
                git=self._build_git,
                drift=DriftOptions.from_env(),
                secrets=lambda: self.secrets,
                auth=self._rotating_auth(),
            )

        return self._once("composition", build)

    @property
    def engine(self) -> Engine:
        return self.composition.engine

    @property
    def iac(self) -> PartitionIac:
        """Core's terraform runner, held to an invocation's time left (``lambda_iac``)."""
        return self.composition.iac

    @property
    def router(self) -> Router:
        return self._once("router", lambda: self.composition.router)

    @property
    def service(self) -> Service:
        return self.composition.service

    @property
    def git(self) -> GitSource | None:
        """The git source (issue 15): NCLAV_GIT_* settings, the token and the webhook secret
        in Secrets Manager, fetched objects kept in /tmp while the container lives. None
        (no /source or /webhooks routes) when its secret cannot be read or created."""
        return self.composition.git

    def _build_git(self, service: Service) -> GitSource | None:
        import os
        import tempfile
        from pathlib import Path

        from nclav.api.auth import generate_token
        from nclav.errors import SpecError
        from nclav.gitsource.fetch import GitFetcher
        from nclav.gitsource.settings import GitSettings
        from nclav.gitsource.source import WEBHOOK_SECRET, GitSource

        try:
            settings = GitSettings.from_env(os.environ)
        except SpecError as exc:
            raise ConfigurationError(f"the git source settings are invalid: {exc}") from exc
        try:
            secret = self.secrets.get(WEBHOOK_SECRET)
            if not secret:  # generated on first use, like the local server's
                secret = generate_token()
                self.secrets.put(WEBHOOK_SECRET, secret)
        except Exception:  # e.g. no IAM right on the secret: the rest of the API still serves
            logging.getLogger(__name__).exception(
                "the git source is off: its webhook secret cannot be read or created"
            )
            return None

        def rotate() -> str:
            new = generate_token()
            self.secrets.put(WEBHOOK_SECRET, new)
            return new

        hint = f"Secrets Manager secret {self.settings.secret_prefix}{WEBHOOK_SECRET}"
        return GitSource(
            settings,
            service,
            self.blobs,
            self.queues,
            self.secrets,
            GitFetcher(Path(tempfile.gettempdir()) / "nclav-git"),
            secret.strip(),
            rotate_secret=rotate,
            secret_hint=hint,
            shared=True,  # the API, worker and schedule functions each hold one
        )


class _Lazy:
    """A client made on first attribute use (``AwsRuntime.client``)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make

    def __getattr__(self, name: str) -> Any:
        return getattr(self._make(), name)


_runtime: AwsRuntime | None = None
_runtime_lock = threading.Lock()
_logs_routed = False


def runtime() -> AwsRuntime:
    """This process's runtime: built from the environment on first use, then reused."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = AwsRuntime(Settings.from_env())
        return _runtime


def route_logs(source: Any) -> None:
    """Once per process: core's and the adapters' stdlib loggers write through ``source``, a
    powertools ``Logger`` (JSON on stdout, with its keys and correlation id).

    Called by each handler on its first invocation, not at import: the change is process-wide
    (those loggers stop propagating to the root logger).
    """
    global _logs_routed
    with _runtime_lock:
        if _logs_routed:
            return
        from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

        names = {"nclav", "functions_aws"}
        for name in names:
            logging.getLogger(name)  # registered, so the copy reaches their children too
        copy_config_to_registered_loggers(source_logger=source, include=names)
        _logs_routed = True


def install(new: AwsRuntime | None) -> AwsRuntime | None:
    """Replace this process's runtime (tests); ``None`` makes the next use build a fresh one.

    Returns the one it replaced.
    """
    global _runtime
    with _runtime_lock:
        old, _runtime = _runtime, new
        return old


__all__ = [
    "AwsRuntime",
    "ConfigurationError",
    "Settings",
    "StepQueues",
    "install",
    "route_logs",
    "runtime",
]
