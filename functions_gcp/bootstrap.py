"""The GCP runtime's wiring: its settings and adapters, handed to core's ``compose``.

The one module that names the GCP adapters: Firestore state, GCS blobs, Secret Manager
secrets, two Cloud Tasks queues behind one ``WorkQueue`` (``StepQueues``: terraform steps to
the IaC queue, whose tasks go to the IaC worker, the rest to the steps queue).

Nothing happens at import. ``runtime()`` builds the ``GcpRuntime`` on first use and keeps it
for the instance's later requests; each part (a client, an adapter, the API token, the
composed engine and router) is built the first time an entry point asks for it (core's
``Parts``): the step worker never reads the API token, ``/health`` builds nothing, and the
Google SDKs are imported inside the builders, so importing ``main`` stays cheap
(``scripts/bench_gcp.py`` measures it).

Emulators: the SDKs' own variables point Firestore and GCS at theirs
(``FIRESTORE_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST``); ``CLOUD_TASKS_EMULATOR_HOST``
(``host:port``) points the Cloud Tasks client at gcloud-tasks-emulator over plain gRPC, and
``NCLAV_SECRETS_EMULATOR_URL`` the Secret Manager adapter at a local stand-in.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from functions_gcp.settings import Settings, StepQueues
from nclav.errors import ConfigurationError
from nclav.runtime.cloud_parts import Lazy, Parts, ProcessSlot

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from functions_gcp.gcs_blobs import GcsBlobStore
    from nclav.api.router import Router
    from nclav.engine import Driver, Engine
    from nclav.gitsource.source import GitSource
    from nclav.iac.partition import PartitionIac
    from nclav.iac.sandbox import TimeLimit
    from nclav.model import Cloud
    from nclav.ports import Clock, SecretStore, StateStore
    from nclav.runtime.compose import Composition
    from nclav.runtime.delivery import DeliveryPolicy
    from nclav.service import Service

TASKS_EMULATOR = "CLOUD_TASKS_EMULATOR_HOST"
ALTERNATIVE = "nclav serve --cloud gcp"


def iac_time_limit(min_remaining_s: float = 120.0, margin_s: float = 60.0) -> TimeLimit:
    """Core's sandbox time limit in Cloud Tasks' words: the IaC worker answers within the
    task's dispatch deadline (30 minutes at most) or Cloud Tasks calls it failed."""
    from nclav.iac.sandbox import TimeLimit

    return TimeLimit(
        min_remaining_s=min_remaining_s,
        margin_s=margin_s,
        where="this Cloud Tasks dispatch",
        limit="Cloud Tasks' 30-minute dispatch deadline",
        min_setting="NCLAV_IAC_MIN_REMAINING_S",
        advice="Give the IaC queue's tasks the 1800 s deadline (NCLAV_IAC_DEADLINE_S).",
        alternative=ALTERNATIVE,
    )


class GcpRuntime:
    """Every part of the GCP runtime, each built on first use and then kept.

    Keyword arguments replace a part (tests hand in a ``ManualClock``, local drivers, a
    store that fails on purpose, a secret store); everything else comes from ``settings``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        drivers: Mapping[Cloud, Driver] | None = None,
        store: StateStore | None = None,
        secrets: SecretStore | None = None,
        clients: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        given = {"clock": clock, "store": store, "secrets": secrets, **dict(clients or {})}
        given["drivers"] = None if drivers is None else dict(drivers)
        self._parts = Parts(given)

    def client(self, service: str) -> Any:
        """One client per service ("firestore", "storage", "tasks"), shared by the adapters,
        made (and its SDK imported) on its first call."""
        s = self.settings

        def build() -> Any:
            if service == "firestore":
                from google.cloud import firestore

                return firestore.Client(project=s.project, database=s.database)
            if service == "storage":
                from google.cloud import storage

                return storage.Client(project=s.project)
            if service == "tasks":
                from functions_gcp.tasks_queue import tasks_client

                return tasks_client(s.environ.get(TASKS_EMULATOR) or None)
            raise ValueError(f"no client {service!r}")

        lazy = Lazy(lambda: self._parts.once(service, build))
        return self._parts.once(f"lazy:{service}", lambda: lazy)

    # -- adapters ------------------------------------------------------------------------------

    @property
    def store(self) -> StateStore:
        def build() -> StateStore:
            from functions_gcp.firestore_store import FirestoreStateStore

            return FirestoreStateStore(self.client("firestore"), self.settings.collection_prefix)

        return self._parts.once("store", build)

    @property
    def blobs(self) -> GcsBlobStore:
        def build() -> GcsBlobStore:
            from functions_gcp.gcs_blobs import GcsBlobStore

            s = self.settings
            return GcsBlobStore(s.bucket, s.blob_prefix, client=self.client("storage"))

        return self._parts.once("blobs", build)

    @property
    def secrets(self) -> SecretStore:
        def build() -> SecretStore:
            from functions_gcp.secrets import SecretManagerSecretStore

            s = self.settings
            if not s.secrets_emulator_url:
                return SecretManagerSecretStore(s.project, s.secret_prefix)
            from google.auth.credentials import AnonymousCredentials
            from google.auth.transport.requests import AuthorizedSession

            anonymous = AuthorizedSession(AnonymousCredentials())  # type: ignore[no-untyped-call]
            return SecretManagerSecretStore(
                s.project, s.secret_prefix, session=anonymous, endpoint=s.secrets_emulator_url
            )

        return self._parts.once("secrets", build)

    @property
    def api_token(self) -> Callable[[], str]:
        """The API token in Secret Manager: generated by the API on its first start (not by
        Terraform), re-read after a TTL so a rotation reaches warm instances."""
        from nclav.runtime.cloud_parts import SecretToken

        name = self.settings.token_secret
        return self._parts.once("api_token", lambda: SecretToken(self.secrets, name))

    @property
    def queues(self) -> StepQueues:
        def build() -> StepQueues:
            from functions_gcp.tasks_queue import CloudTasksWorkQueue

            s, client = self.settings, self.client("tasks")
            return StepQueues(
                CloudTasksWorkQueue(
                    s.steps_queue,
                    s.worker_url,
                    client,
                    service_account=s.tasks_service_account,
                    dispatch_deadline_s=s.worker_deadline_s,
                ),
                CloudTasksWorkQueue(
                    s.iac_queue,
                    s.iac_worker_url,
                    client,
                    service_account=s.tasks_service_account,
                    dispatch_deadline_s=s.iac_deadline_s,
                ),
            )

        return self._parts.once("queues", build)

    @property
    def clock(self) -> Clock:
        from nclav.ports import SystemClock

        return self._parts.once("clock", SystemClock)

    @property
    def drivers(self) -> dict[Cloud, Driver]:
        from nclav.runtime.drivers import drivers_for

        s = self.settings
        return self._parts.once(
            "drivers",
            lambda: drivers_for(s.default_cloud, s.clouds[1:], s.driver_options or None, s.environ),
        )

    @property
    def policy(self) -> DeliveryPolicy:
        from nclav.runtime.delivery import DeliveryPolicy

        s = self.settings
        return DeliveryPolicy(s.max_receives, s.redelivery_backoff_s, s.redelivery_max_s)

    def set_time_left(self, time_left: Callable[[], float | None]) -> None:
        """The current request's time left, for the drivers (no cloud call starts that the
        request could not see through)."""
        for driver in self.drivers.values():
            setter = getattr(driver, "set_time_left", None)
            if callable(setter):
                setter(time_left)

    # -- core ----------------------------------------------------------------------------------

    @property
    def composition(self) -> Composition:
        def build() -> Composition:
            from nclav.api.auth import RotatingTokenAuth
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
                token=lambda: self.api_token(),
                time_limit=iac_time_limit(s.iac_min_remaining_s, s.iac_margin_s),
                git=self._build_git,
                drift=DriftOptions.from_env(s.environ),
                secrets=lambda: self.secrets,
                auth=RotatingTokenAuth(lambda: self.api_token()),
            )

        return self._parts.once("composition", build)

    @property
    def engine(self) -> Engine:
        return self.composition.engine

    @property
    def iac(self) -> PartitionIac:
        return self.composition.iac

    @property
    def router(self) -> Router:
        return self._parts.once("router", lambda: self.composition.router)

    @property
    def service(self) -> Service:
        return self.composition.service

    @property
    def git(self) -> GitSource | None:
        return self.composition.git

    def _build_git(self, service: Service) -> GitSource | None:
        from nclav.gitsource.source import WEBHOOK_SECRET
        from nclav.runtime.cloud_parts import build_git_source

        s = self.settings
        return build_git_source(
            service,
            secrets=self.secrets,
            blobs=self.blobs,
            queue=self.queues,
            secret_hint=f"Secret Manager secret {s.secret_prefix}{WEBHOOK_SECRET} in {s.project}",
            environ=s.environ,
        )


_slot: ProcessSlot[GcpRuntime] = ProcessSlot(lambda: GcpRuntime(Settings.from_env()))
_logs_routed = False


def runtime() -> GcpRuntime:
    """This process's runtime: built from the environment on first use, then reused."""
    return _slot.get()


def install(new: GcpRuntime | None) -> GcpRuntime | None:
    """Replace this process's runtime (tests); ``None``: the next use builds a fresh one."""
    return _slot.install(new)


def route_logs() -> None:
    """Once per process, on Cloud Run only (``K_SERVICE`` set): every log line as JSON on
    stderr, which Cloud Logging parses (severity, message, the ``extra`` fields)."""
    global _logs_routed
    if _logs_routed or not os.environ.get("K_SERVICE"):
        return
    from nclav.runtime.logs import use_json_logs

    use_json_logs("nclav")
    _logs_routed = True


__all__ = [
    "ALTERNATIVE",
    "ConfigurationError",
    "GcpRuntime",
    "Settings",
    "StepQueues",
    "iac_time_limit",
    "install",
    "route_logs",
    "runtime",
]
