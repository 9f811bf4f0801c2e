"""The AWS runtime's wiring: the environment in; adapters, engine, service and router out.

The one module that names concrete adapters (cosmicpython's ``bootstrap``), mirroring
``nclav.local.runtime`` with AWS adapters: DynamoDB state, S3 blobs, Secrets Manager secrets,
two SQS queues behind one ``WorkQueue`` (``StepQueues``: terraform steps to the IaC queue,
every other step to the steps queue).

Nothing happens at import. ``runtime()`` creates the ``AwsRuntime`` on first use and caches it
for warm invocations, and each of its parts (a boto3 client, an adapter, the API token, the
engine, the router) is built the first time a handler asks for it: the step worker never
fetches the API token, and no handler pays for a part it does not use. Core and boto3 are
imported inside those builders too, so importing a handler module stays cheap
(``scripts/bench_aws.py`` measures it).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from functions_aws import constants as env

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from functions_aws.lambda_iac import LambdaIac
    from functions_aws.s3_blobs import S3BlobStore
    from functions_aws.secrets import SecretsManagerSecretStore
    from functions_aws.sqs_queue import SqsWorkQueue
    from nclav.api.router import Router
    from nclav.engine import Driver, Engine
    from nclav.model import Cloud
    from nclav.ports import Clock, StateStore

_T = TypeVar("_T")


class ConfigurationError(RuntimeError):
    """The function's environment cannot make a runtime (a missing or malformed variable)."""


@dataclass(frozen=True)
class Settings:
    """The runtime's configuration, read once from the environment (``constants``)."""

    table: str
    bucket: str
    steps_queue_url: str
    iac_queue_url: str
    blob_prefix: str = ""
    secret_prefix: str = "nclav/"
    token_secret: str = "api-token"
    api_url: str | None = None
    workspaces: Path = Path("/tmp/nclav/workspaces")
    cloud: str = "aws"
    enable_clouds: tuple[str, ...] = ()
    lease_s: float = 120.0
    max_attempts: int = 4
    backoff_s: float = 2.0
    max_receives: int = 5
    redelivery_backoff_s: float = 5.0
    redelivery_max_s: float = 900.0
    iac_min_remaining_s: float = 120.0
    iac_margin_s: float = 60.0
    iac_heartbeat_s: float = 60.0
    iac_visibility_s: float = 180.0
    aws_driver: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        source = os.environ if environ is None else environ
        missing = [name for name in env.REQUIRED if not source.get(name)]
        if missing:
            raise ConfigurationError(f"environment variables not set: {', '.join(missing)}")

        def text(name: str) -> str:
            return source.get(name) or env.DEFAULTS[name]

        def number(name: str) -> float:
            raw = text(name)
            try:
                value = float(raw)
            except ValueError:
                raise ConfigurationError(f"{name}: expected a number, got {raw!r}") from None
            if value < 0:
                raise ConfigurationError(f"{name}: expected a number >= 0, got {raw!r}")
            return value

        driver = {name: source[name] for name in env.AWS_DRIVER_OPTIONS if source.get(name)}
        return cls(
            table=source[env.TABLE],
            bucket=source[env.BUCKET],
            steps_queue_url=source[env.STEPS_QUEUE_URL],
            iac_queue_url=source[env.IAC_QUEUE_URL],
            blob_prefix=text(env.BLOB_PREFIX),
            secret_prefix=text(env.SECRET_PREFIX),
            token_secret=text(env.TOKEN_SECRET),
            api_url=source.get(env.API_URL) or None,
            workspaces=Path(text(env.WORKSPACES)),
            cloud=text(env.CLOUD),
            enable_clouds=tuple(c.strip() for c in text(env.ENABLE_CLOUDS).split(",") if c.strip()),
            lease_s=number(env.LEASE_S),
            max_attempts=max(int(number(env.MAX_ATTEMPTS)), 1),
            backoff_s=number(env.BACKOFF_S),
            max_receives=max(int(number(env.MAX_RECEIVES)), 1),
            redelivery_backoff_s=number(env.REDELIVERY_BACKOFF_S),
            redelivery_max_s=number(env.REDELIVERY_MAX_S),
            iac_min_remaining_s=number(env.IAC_MIN_REMAINING_S),
            iac_margin_s=number(env.IAC_MARGIN_S),
            iac_heartbeat_s=max(number(env.IAC_HEARTBEAT_S), 1.0),
            iac_visibility_s=number(env.IAC_VISIBILITY_S),
            aws_driver=driver,
        )


class StepQueues:
    """The engine's one ``WorkQueue`` over two SQS queues, routed by the step's action.

    ``provision_partition`` and ``teardown_partition`` run terraform, so they go to the IaC
    queue (the container-image worker that has terraform and tofu); every other step goes to
    the steps queue (the small zip worker). The action is the message's ``action`` when it
    has one, else the prefix of its step id (``plan.step_id``: ``"<action>:<enclave>..."``),
    so routing costs no read.
    """

    def __init__(self, steps: SqsWorkQueue, iac: SqsWorkQueue) -> None:
        self.steps = steps
        self.iac = iac

    def queue_for(self, message: Mapping[str, str]) -> SqsWorkQueue:
        action = message.get("action") or message.get("step_id", "").partition(":")[0]
        return self.iac if action in env.IAC_ACTIONS else self.steps

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None:
        self.queue_for(message).send(message, delay_s)

    def close(self) -> None:
        self.steps.close()
        self.iac.close()


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
        if clock is not None:
            self._parts["clock"] = clock
        if drivers is not None:
            self._parts["drivers"] = dict(drivers)
        if store is not None:
            self._parts["store"] = store
        for service, client in (clients or {}).items():
            self._parts[f"client:{service}"] = client

    def _once(self, name: str, build: Callable[[], _T]) -> _T:
        with self._lock:
            if name not in self._parts:
                self._parts[name] = build()
            part: _T = self._parts[name]
            return part

    # -- boto3 ---------------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        """One boto3 client per service, shared by every adapter (clients are thread-safe)."""

        def build() -> Any:
            import boto3
            from botocore.config import Config

            # Standard retry mode: throttling and 5xx retried with backoff before an adapter
            # sees them; timeouts well inside a function's lifetime.
            config = Config(
                retries={"mode": "standard", "max_attempts": 4},
                connect_timeout=5,
                read_timeout=30,
            )
            session: Any = self._once("session", boto3.session.Session)
            return session.client(service, config=config)

        return self._once(f"client:{service}", build)

    # -- adapters ------------------------------------------------------------------------------

    @property
    def store(self) -> StateStore:
        def build() -> StateStore:
            from functions_aws.dynamodb_store import DynamoStateStore

            return DynamoStateStore(self.settings.table, client=self.client("dynamodb"))

        return self._once("store", build)

    @property
    def blobs(self) -> S3BlobStore:
        def build() -> S3BlobStore:
            from functions_aws.s3_blobs import S3BlobStore

            s = self.settings
            return S3BlobStore(s.bucket, s.blob_prefix, client=self.client("s3"))

        return self._once("blobs", build)

    @property
    def secrets(self) -> SecretsManagerSecretStore:
        def build() -> SecretsManagerSecretStore:
            from functions_aws.secrets import SecretsManagerSecretStore

            prefix = self.settings.secret_prefix
            return SecretsManagerSecretStore(prefix, client=self.client("secretsmanager"))

        return self._once("secrets", build)

    @property
    def token(self) -> str:
        """The API token, from Secrets Manager: the API checks it, terraform presents it."""

        def build() -> str:
            name = self.settings.token_secret
            value = self.secrets.get(name)
            if not value:
                where = f"{self.settings.secret_prefix}{name}"
                raise ConfigurationError(f"the API token secret {where!r} is missing or empty")
            return value.strip()

        return self._once("token", build)

    @property
    def queues(self) -> StepQueues:
        def build() -> StepQueues:
            from functions_aws.sqs_queue import SqsWorkQueue

            s, sqs = self.settings, self.client("sqs")
            return StepQueues(
                SqsWorkQueue(s.steps_queue_url, client=sqs),
                SqsWorkQueue(s.iac_queue_url, client=sqs),
            )

        return self._once("queues", build)

    @property
    def clock(self) -> Clock:
        def build() -> Clock:
            from nclav.ports import SystemClock

            return SystemClock()

        return self._once("clock", build)

    @property
    def drivers(self) -> dict[Cloud, Driver]:
        return self._once("drivers", self._build_drivers)

    def _build_drivers(self) -> dict[Cloud, Driver]:
        from nclav.engine import LocalDriver
        from nclav.model import Cloud

        out: dict[Cloud, Driver] = {}
        for name in dict.fromkeys((self.settings.cloud, *self.settings.enable_clouds)):
            try:
                cloud = Cloud(name)
            except ValueError:
                raise ConfigurationError(f"unknown cloud {name!r} in the environment") from None
            if cloud == Cloud.LOCAL:
                out[cloud] = LocalDriver()
            elif cloud == Cloud.AWS:
                out[cloud] = self._aws_driver()
            else:
                raise ConfigurationError(f"the {name} driver does not run in the AWS runtime")
        return out

    def _aws_driver(self) -> Driver:
        from functions_aws.driver import make_driver
        from nclav.errors import SpecError

        given = self.settings.aws_driver
        options = {key: given.get(name) for name, key in env.AWS_DRIVER_OPTIONS.items()}
        try:
            driver: Driver = make_driver(options)
        except SpecError as exc:
            raise ConfigurationError(f"the aws driver cannot start: {exc}") from exc
        return driver

    # -- core ----------------------------------------------------------------------------------

    @property
    def iac(self) -> LambdaIac:
        """Terraform for the engine; its token and workspace are only touched when it runs."""

        def build() -> LambdaIac:
            from functions_aws.lambda_iac import LambdaIac

            return LambdaIac(
                self._partition_iac,
                self.blobs,
                min_remaining_s=self.settings.iac_min_remaining_s,
                margin_s=self.settings.iac_margin_s,
            )

        return self._once("iac", build)

    def _partition_iac(self) -> Any:
        from nclav.engine import PartitionIac

        s = self.settings
        iac = PartitionIac(
            self.store,
            self.blobs,
            self.clock,
            s.workspaces,
            api_base=s.api_url,
            token=self.token,
            lease_s=s.lease_s,
        )
        iac.owner = self.engine.owner
        return iac

    @property
    def engine(self) -> Engine:
        def build() -> Engine:
            from nclav.engine import Engine

            s = self.settings
            return Engine(
                self.store,
                self.queues,
                self.blobs,
                self.clock,
                self.drivers,
                self.default_cloud,
                self.iac,
                self.bundles.load,
                lease_s=s.lease_s,
                max_attempts=s.max_attempts,
                backoff_s=s.backoff_s,
            )

        return self._once("engine", build)

    @property
    def default_cloud(self) -> Cloud:
        from nclav.model import Cloud

        return Cloud(self.settings.cloud)

    @property
    def bundles(self) -> Any:
        def build() -> Any:
            from nclav.service import Bundles

            return Bundles(self.blobs, self.default_cloud)

        return self._once("bundles", build)

    @property
    def router(self) -> Router:
        def build() -> Router:
            from nclav.api.auth import TokenAuth
            from nclav.api.routes import build_router
            from nclav.iac.state_backend import TerraformStateBackend

            service = self.service
            tf_state = TerraformStateBackend(self.store, self.blobs, self.clock)
            auth = TokenAuth(self.token)
            return build_router(service, tf_state, self.blobs, auth, git=self.git)

        return self._once("router", build)

    @property
    def service(self) -> Any:
        def build() -> Any:
            from nclav.service import Service

            return Service(self.store, self.bundles, self.engine, self.drivers, self.default_cloud)

        return self._once("service", build)

    @property
    def git(self) -> Any:
        """The git source (issue 15): NCLAV_GIT_* settings, the token and the webhook secret
        in Secrets Manager, fetched objects kept in /tmp while the container lives. None
        (no /source or /webhooks routes) when its secret cannot be read or created."""
        return self._once("git", self._build_git)

    def _build_git(self) -> Any:
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
            self.service,
            self.blobs,
            self.queues,
            self.secrets,
            GitFetcher(Path(tempfile.gettempdir()) / "nclav-git"),
            secret.strip(),
            rotate_secret=rotate,
            secret_hint=hint,
            shared=True,  # the API, worker and schedule functions each hold one
        )


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
