"""The Azure runtime's wiring: its settings and adapters, handed to core's ``compose``.

The one module that names the Azure adapters: Cosmos DB state, Blob Storage blobs, Key Vault
secrets, two Storage queues behind one ``WorkQueue`` (``functions_azure.settings.StepQueues``:
terraform steps to the IaC queue, the rest to the steps queue).

Credentials: every client authenticates with ``DefaultAzureCredential`` (environment service
principal, workload identity, managed identity, then the Azure CLI's login: the chain the
README describes), so the deployment holds no keys. Only the local stand-ins take keys:
``NCLAV_STORAGE_CONNECTION`` (Azurite's connection string) and ``NCLAV_COSMOS_KEY``
(cosmosdb-server), never printed with the settings.

Nothing happens at import. ``runtime()`` creates the ``AzureRuntime`` on first use and keeps it
for warm invocations; each part (a client, an adapter, the API token, the composed engine and
router) is built the first time a function asks for it (``nclav.runtime.lazy_parts``), and
the Azure SDK imports happen inside the builders, so importing ``function_app`` stays cheap
(``scripts/bench_azure.py`` measures it).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from functions_azure.settings import Settings, StepQueues
from nclav.errors import ConfigurationError
from nclav.runtime.lazy_parts import LazyParts, LazyProxy

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from functions_azure.blob_store import AzureBlobStore
    from functions_azure.queue import StorageWorkQueue
    from nclav.api.router import Router
    from nclav.engine import Driver, Engine
    from nclav.gitsource.source import GitSource
    from nclav.iac.partition import PartitionIac
    from nclav.model import Cloud
    from nclav.ports import Clock, SecretStore, StateStore
    from nclav.runtime.compose import Composition
    from nclav.runtime.delivery import DeliveryPolicy
    from nclav.service import Service

logger = logging.getLogger(__name__)

TOKEN_TTL_S = 300.0  # a rotated API token reaches warm instances within this


class AzureRuntime:
    """Every part of the Azure runtime, each built on first use (thread-safe) and then kept.

    Keyword arguments replace a part (tests hand in a ``ManualClock``, local drivers, a secret
    store); everything else comes from ``settings``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        drivers: Mapping[Cloud, Driver] | None = None,
        store: StateStore | None = None,
        secrets: SecretStore | None = None,
    ) -> None:
        self.settings = settings
        self.parts = LazyParts(
            clock=clock,
            drivers=None if drivers is None else dict(drivers),
            store=store,
            secrets=secrets,
        )
        self._token: tuple[str, float] | None = None
        self._token_lock = threading.Lock()

    # -- clients -------------------------------------------------------------------------------

    @property
    def credential(self) -> Any:
        """``DefaultAzureCredential``: one per instance, shared by every client (it caches
        its tokens). Built only when a client without a stand-in key needs it."""

        def build() -> Any:
            from azure.identity import DefaultAzureCredential

            return DefaultAzureCredential(exclude_interactive_browser_credential=True)

        return self.parts.once("credential", build)

    def _blob_service(self) -> Any:
        def build() -> Any:
            from azure.storage.blob import BlobServiceClient

            s = self.settings
            if s.storage_connection:
                return BlobServiceClient.from_connection_string(s.storage_connection)
            return BlobServiceClient(s.blob_account_url(), credential=self.credential)

        return self.parts.once("blob_service", build)

    def _queue_service(self) -> Any:
        def build() -> Any:
            from azure.storage.queue import QueueServiceClient

            s = self.settings
            if s.storage_connection:
                return QueueServiceClient.from_connection_string(s.storage_connection)
            return QueueServiceClient(s.queue_account_url(), credential=self.credential)

        return self.parts.once("queue_service", build)

    def _cosmos_container(self) -> Any:
        """The state container's client, made on first use: the Cosmos client reads the
        account's metadata when it is created, a network call a cold start should not make
        before it needs state."""

        def build() -> Any:
            from azure.cosmos import CosmosClient

            s = self.settings
            if s.cosmos_key:  # the stand-in: plain HTTP, no region discovery
                client = CosmosClient(
                    s.cosmos_endpoint, credential=s.cosmos_key, enable_endpoint_discovery=False
                )
            else:
                client = CosmosClient(s.cosmos_endpoint, credential=self.credential)
            database = client.get_database_client(s.cosmos_database)
            return database.get_container_client(s.cosmos_container)

        return self.parts.once("cosmos", lambda: LazyProxy(build))

    # -- adapters ------------------------------------------------------------------------------

    @property
    def store(self) -> StateStore:
        from functions_azure.cosmos_store import CosmosStateStore

        return self.parts.once("store", lambda: CosmosStateStore(self._cosmos_container()))

    @property
    def blobs(self) -> AzureBlobStore:
        from functions_azure.blob_store import AzureBlobStore

        def build() -> AzureBlobStore:
            s = self.settings
            # The client (and azure.storage.blob) on first use: GET /runs never loads them.
            container: Any = LazyProxy(
                lambda: self._blob_service().get_container_client(s.blob_container)
            )
            return AzureBlobStore(container, s.blob_prefix)

        return self.parts.once("blobs", build)

    @property
    def secrets(self) -> SecretStore:
        def build() -> SecretStore:
            from functions_azure.secrets import KeyVaultSecretStore

            s = self.settings
            if not s.key_vault_url:
                raise ConfigurationError("NCLAV_KEY_VAULT_URL is not set (the secrets' vault)")
            return KeyVaultSecretStore(s.key_vault_url, s.secret_prefix, credential=self.credential)

        return self.parts.once("secrets", build)

    @property
    def queues(self) -> StepQueues:
        def build() -> StepQueues:
            from functions_azure.queue import POISON_SUFFIX, StorageWorkQueue, queue_client

            s = self.settings

            def client(name: str) -> Any:  # made on first use: a read-only request sends nothing
                return LazyProxy(lambda: queue_client(self._queue_service(), name))

            names = (s.steps_queue, s.iac_queue)
            return StepQueues(
                StorageWorkQueue(client(s.steps_queue)),
                StorageWorkQueue(client(s.iac_queue)),
                tuple(StorageWorkQueue(client(name + POISON_SUFFIX)) for name in names),
            )

        return self.parts.once("queues", build)

    def queue(self, name: str) -> StorageWorkQueue:
        """The adapter of the queue a trigger names (the steps or the IaC queue)."""
        queues, s = self.queues, self.settings
        found = {s.steps_queue: queues.steps, s.iac_queue: queues.iac}.get(name)
        if found is not None:
            return found
        raise ConfigurationError(f"queue {name!r} is neither the steps nor the IaC queue")

    @property
    def clock(self) -> Clock:
        from nclav.ports import SystemClock

        return self.parts.once("clock", SystemClock)

    @property
    def drivers(self) -> dict[Cloud, Driver]:
        from nclav.runtime.drivers import drivers_for

        s = self.settings
        return self.parts.once(
            "drivers",
            lambda: drivers_for(s.default_cloud, s.clouds[1:], s.driver_options or None, s.environ),
        )

    @property
    def policy(self) -> DeliveryPolicy:
        from nclav.runtime.delivery import DeliveryPolicy

        s = self.settings
        return DeliveryPolicy(s.max_receives, s.redelivery_backoff_s, s.redelivery_max_s)

    def set_time_left(self, time_left: Callable[[], float | None]) -> None:
        """The current execution's time left, for the drivers (set per invocation)."""
        for driver in self.drivers.values():
            setter = getattr(driver, "set_time_left", None)
            if callable(setter):
                setter(time_left)

    # -- the API token -------------------------------------------------------------------------

    @property
    def token(self) -> str:
        """The API token in Key Vault, re-read after ``TOKEN_TTL_S`` (a rotation reaches warm
        instances). Generated on first start when the vault has none: Key Vault has no
        create-if-absent, so two instances starting together may both write one; each reads
        the vault back after writing and the later write wins within one TTL."""
        with self._token_lock:
            now = time.monotonic()
            if self._token is not None and now - self._token[1] < TOKEN_TTL_S:
                return self._token[0]
            name = self.settings.token_secret
            value = (self.secrets.get(name) or "").strip()
            if not value:
                from nclav.api.auth import generate_token

                self.secrets.put(name, generate_token())
                value = (self.secrets.get(name) or "").strip()
                if not value:
                    raise ConfigurationError(f"the API token secret {name!r} cannot be read back")
            self._token = (value, now)
            return value

    # -- core ----------------------------------------------------------------------------------

    @property
    def composition(self) -> Composition:
        def build() -> Composition:
            from functions_azure.functions_iac import function_time_limit
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
                token=lambda: self.token,
                time_limit=function_time_limit(s.iac_min_remaining_s, s.iac_margin_s),
                git=self._build_git,
                drift=DriftOptions.from_env(s.environ),
                secrets=lambda: self.secrets,
                auth=RotatingTokenAuth(lambda: self.token),
            )

        return self.parts.once("composition", build)

    @property
    def engine(self) -> Engine:
        return self.composition.engine

    @property
    def iac(self) -> PartitionIac:
        return self.composition.iac

    @property
    def router(self) -> Router:
        return self.parts.once("router", lambda: self.composition.router)

    @property
    def service(self) -> Service:
        return self.composition.service

    @property
    def git(self) -> GitSource | None:
        return self.composition.git

    def _build_git(self, service: Service) -> GitSource | None:
        """The git source (issue 15): NCLAV_GIT_* settings, its webhook secret in Key Vault
        (generated on first use); None (no /source or /webhooks routes) when that secret
        cannot be read or created."""
        import tempfile
        from pathlib import Path

        from nclav.api.auth import generate_token
        from nclav.errors import SpecError
        from nclav.gitsource.fetch import GitFetcher
        from nclav.gitsource.settings import GitSettings
        from nclav.gitsource.source import WEBHOOK_SECRET, GitSource

        try:
            settings = GitSettings.from_env(self.settings.environ)
        except SpecError as exc:
            raise ConfigurationError(f"the git source settings are invalid: {exc}") from exc
        try:
            secret = self.secrets.get(WEBHOOK_SECRET)
            if not secret:
                secret = generate_token()
                self.secrets.put(WEBHOOK_SECRET, secret)
        except Exception:  # e.g. no Key Vault role: the rest of the API still serves
            logger.exception("the git source is off: its webhook secret cannot be read or created")
            return None

        def rotate() -> str:
            new = generate_token()
            self.secrets.put(WEBHOOK_SECRET, new)
            return new

        return GitSource(
            settings,
            service,
            self.blobs,
            self.queues,
            self.secrets,
            GitFetcher(Path(tempfile.gettempdir()) / "nclav-git"),
            secret.strip(),
            rotate_secret=rotate,
            secret_hint=f"Key Vault secret {self.settings.secret_prefix}{WEBHOOK_SECRET}",
            shared=True,  # the API, worker and timer functions each hold one
        )


_runtime: AzureRuntime | None = None
_runtime_lock = threading.Lock()


def runtime() -> AzureRuntime:
    """This process's runtime: built from the environment on first use, then reused."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = AzureRuntime(Settings.from_env())
        return _runtime


def install(new: AzureRuntime | None) -> AzureRuntime | None:
    """Replace this process's runtime (tests); ``None`` makes the next use build a fresh one.
    Returns the one it replaced."""
    global _runtime
    with _runtime_lock:
        old, _runtime = _runtime, new
        return old


__all__ = ["AzureRuntime", "ConfigurationError", "Settings", "StepQueues", "install", "runtime"]
