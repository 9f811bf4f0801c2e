"""The Azure runtime's wiring: its adapters over core's ``HostedRuntime`` (which calls ``compose``).

The one module that names the Azure adapters: Cosmos DB state, Blob Storage blobs, Key Vault
secrets, two Storage queues behind core's ``StepQueues`` (terraform steps to the IaC queue, the
rest to the steps queue; each queue counts the messages the host moved to its
``<queue>-poison``).

Credentials: every client authenticates with ``DefaultAzureCredential`` (environment service
principal, workload identity, managed identity, then the Azure CLI's login: the chain the
README describes), so the deployment holds no keys. Only the local stand-ins take keys:
``NCLAV_STORAGE_CONNECTION`` (Azurite's connection string) and ``NCLAV_COSMOS_KEY``
(cosmosdb-server), never printed with the settings.

Nothing happens at import. ``runtime()`` creates the ``AzureRuntime`` on first use and keeps it
for warm invocations; each part (a client, an adapter, the API token, the composed engine and
router) is built the first time a function asks for it (``nclav.runtime.parts``), and the
Azure SDK imports happen inside the builders, so importing ``function_app`` stays cheap
(``scripts/bench_azure.py`` measures it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions_azure.settings import Settings
from nclav.errors import ConfigurationError, ConflictError
from nclav.runtime.hosted import HostedRuntime
from nclav.runtime.slot import ProcessSlot

if TYPE_CHECKING:
    from functions_azure.blob_store import AzureBlobStore
    from functions_azure.queue import StorageWorkQueue
    from nclav.iac.sandbox import TimeLimit
    from nclav.ports import SecretStore, StateStore
    from nclav.runtime.routing import StepQueues


class AzureRuntime(HostedRuntime[Settings]):
    """The Azure adapters over core's ``HostedRuntime`` (each part built on first use;
    keyword arguments replace parts, ``clients`` the storage and Cosmos clients by name)."""

    secret_service = "Key Vault"

    # -- clients -------------------------------------------------------------------------------

    @property
    def credential(self) -> Any:
        """``DefaultAzureCredential``: one per instance, shared by every client (it caches
        its tokens). Built only when a client without a stand-in key needs it."""

        def build() -> Any:
            from azure.identity import DefaultAzureCredential

            return DefaultAzureCredential(exclude_interactive_browser_credential=True)

        return self._once("credential", build)

    def _storage(self, kind: str) -> Any:
        """The ``blob`` or ``queue`` service client of the storage account, made on first use."""

        def build() -> Any:
            client: Any
            if kind == "blob":
                from azure.storage.blob import BlobServiceClient as client
            else:
                from azure.storage.queue import QueueServiceClient as client
            s = self.settings
            if s.storage_connection:
                return client.from_connection_string(s.storage_connection)
            return client(s.account_url(kind), credential=self.credential)

        return self._once(f"{kind}_service", build)

    def _cosmos_container(self) -> Any:
        """The state container's client, made on first use: the Cosmos client reads the
        account's metadata when it is created, a network call a cold start should not make
        before it needs state."""

        def build() -> Any:
            from azure.cosmos import CosmosClient

            from functions_azure._cosmos_docs import require_strong

            s = self.settings
            if s.cosmos_key:  # the stand-in: plain HTTP, no region discovery
                client = CosmosClient(
                    s.cosmos_endpoint, credential=s.cosmos_key, enable_endpoint_discovery=False
                )
            else:
                client = CosmosClient(s.cosmos_endpoint, credential=self.credential)
            require_strong(client, s.cosmos_endpoint)
            database = client.get_database_client(s.cosmos_database)
            return database.get_container_client(s.cosmos_container)

        return self._parts.lazy("cosmos", build)

    # -- adapters ------------------------------------------------------------------------------

    @property
    def store(self) -> StateStore:
        from functions_azure._cosmos_docs import CosmosDocuments
        from nclav.docstore import DocumentStateStore

        return self._once(
            "store", lambda: DocumentStateStore(CosmosDocuments(self._cosmos_container()))
        )

    @property
    def blobs(self) -> AzureBlobStore:
        from functions_azure.blob_store import AzureBlobStore

        def build() -> AzureBlobStore:
            s = self.settings
            # The client (and azure.storage.blob) on first use: GET /runs never loads them.
            container = self._parts.lazy(
                "blob_container",
                lambda: self._storage("blob").get_container_client(s.blob_container),
            )
            return AzureBlobStore(container, s.blob_prefix)

        return self._once("blobs", build)

    @property
    def secrets(self) -> SecretStore:
        def build() -> SecretStore:
            from functions_azure.secrets import KeyVaultSecretStore

            s = self.settings
            if not s.key_vault_url:
                raise ConfigurationError("NCLAV_KEY_VAULT_URL is not set (the secrets' vault)")
            return KeyVaultSecretStore(s.key_vault_url, s.secret_prefix, credential=self.credential)

        return self._once("secrets", build)

    @property
    def queues(self) -> StepQueues[StorageWorkQueue]:
        def build() -> StepQueues[StorageWorkQueue]:
            from functions_azure.queue import POISON_SUFFIX, StorageWorkQueue, queue_client
            from nclav.runtime.routing import StepQueues

            def client(name: str) -> Any:  # made on first use: a read-only request sends nothing
                return self._parts.lazy(
                    f"queue:{name}", lambda: queue_client(self._storage("queue"), name)
                )

            def queue(name: str) -> StorageWorkQueue:
                return StorageWorkQueue(client(name), poison=client(name + POISON_SUFFIX))

            return StepQueues(queue(self.settings.steps_queue), queue(self.settings.iac_queue))

        return self._once("queues", build)

    # -- the API token -------------------------------------------------------------------------

    def write_first_token(self, token: str) -> None:
        """Key Vault has no create-if-absent: two instances starting together may both write
        a token; each reads the vault back after writing and takes what it finds (the later
        write), as the loser of a race does."""
        name = self.settings.token_secret
        self.secrets.put(name, token)
        if (self.secrets.get(name) or "").strip() != token:
            raise ConflictError(f"the API token {name!r} was written by another instance")

    def time_limit(self) -> TimeLimit:
        """Terraform held to an execution's time left (``functions_iac``)."""
        from functions_azure.functions_iac import function_time_limit

        return function_time_limit(self.settings.iac_min_remaining_s, self.settings.iac_margin_s)


_slot: ProcessSlot[AzureRuntime] = ProcessSlot(lambda: AzureRuntime(Settings.from_env()))
# runtime(): this process's runtime, built from the environment on first use, then reused;
# install(new) replaces it (tests; None: the next use builds a fresh one), returning the old.
runtime, install = _slot.get, _slot.install


__all__ = ["AzureRuntime", "ConfigurationError", "Settings", "install", "runtime"]
