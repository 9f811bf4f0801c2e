"""The Azure runtime's settings: core's ``NCLAV_*`` settings plus the names of its resources."""

from __future__ import annotations

from dataclasses import dataclass, field

from nclav.runtime.settings import HostedSettings


@dataclass(frozen=True, kw_only=True)
class Settings(HostedSettings):
    """Core's settings plus the Azure resource names (each ``NCLAV_<FIELD>``; infra/azure sets
    them). Credentials are not settings: the clients use ``DefaultAzureCredential`` (managed
    identity in Azure, a service principal or the CLI elsewhere) unless ``storage_connection``
    or ``cosmos_key`` is given, which only the local stand-ins (Azurite, cosmosdb-server) need."""

    storage_account: str  # the storage account: queues and blob containers
    cosmos_endpoint: str  # https://<account>.documents.azure.com:443/
    cloud: str = "azure"
    # A connection string instead of an identity (Azurite's well-known key in tests). It
    # holds an account key, so it is never printed with the settings.
    storage_connection: str = field(default="", repr=False)
    cosmos_key: str = field(default="", repr=False)  # a key instead of an identity: stand-in only
    blob_container: str = "nclav-blobs"  # bundles, IaC logs, Terraform state versions
    steps_queue: str = "nclav-steps"  # driver steps (poison: nclav-steps-poison)
    iac_queue: str = "nclav-iac"  # terraform steps (poison: nclav-iac-poison)
    cosmos_database: str = "nclav"
    cosmos_container: str = "state"  # applied state, runs, steps, events, locks
    key_vault_url: str = ""  # https://<vault>.vault.azure.net/ (token, webhook secret)
    # terraform in a function execution (functions_azure.functions_iac: the long-apply design)

    def account_url(self, kind: str) -> str:
        """The storage account's ``blob`` or ``queue`` endpoint."""
        return f"https://{self.storage_account}.{kind}.core.windows.net"


__all__ = ["Settings"]
