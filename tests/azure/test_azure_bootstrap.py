"""``functions_azure.bootstrap``: what importing the app builds (nothing), which credential each
client gets, and the API token in Key Vault (through KeyVaultSecretStore and the strict fake)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from azure_api_fake import AzureApiFake, StaticCredential
from functions_azure.bootstrap import AzureRuntime
from functions_azure.secrets import KeyVaultSecretStore
from functions_azure.settings import Settings
from nclav.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterator

AZURE = {"NCLAV_STORAGE_ACCOUNT": "acct", "NCLAV_COSMOS_ENDPOINT": "https://c.documents.azure.com"}


def test_importing_the_app_builds_nothing_and_loads_no_azure_sdk() -> None:
    code = (
        "import json, sys\n"
        "import functions_azure.function_app\n"
        "heavy = ('azure.cosmos', 'azure.storage', 'azure.identity', 'azure.keyvault',"
        " 'nclav.engine', 'nclav.api.router', 'nclav.iac')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(heavy))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_clients_use_the_identity_chain_unless_a_stand_in_key_is_given() -> None:
    from azure.identity import DefaultAzureCredential

    runtime = AzureRuntime(Settings.from_env(AZURE))
    blobs = runtime.blobs
    assert blobs.container.url == "https://acct.blob.core.windows.net/nclav-blobs"
    assert isinstance(runtime.credential, DefaultAzureCredential)
    assert blobs.container.credential is runtime.credential
    steps = runtime.queues.steps
    assert steps.client.url == "https://acct.queue.core.windows.net/nclav-steps"
    assert steps.poison is not None  # the host's poison queue, counted on the status page
    assert steps.poison.url == "https://acct.queue.core.windows.net/nclav-steps-poison"
    assert runtime.queues.iac.client.queue_name == "nclav-iac"


def test_key_vault_holds_the_secrets_and_its_url_is_required() -> None:
    runtime = AzureRuntime(
        Settings.from_env({**AZURE, "NCLAV_KEY_VAULT_URL": "https://v.vault.azure.net/"})
    )
    store = runtime.secrets
    assert isinstance(store, KeyVaultSecretStore)
    assert (store.vault_url, store.prefix) == ("https://v.vault.azure.net/", "nclav-")
    with pytest.raises(ConfigurationError, match="NCLAV_KEY_VAULT_URL"):
        _ = AzureRuntime(Settings.from_env(AZURE)).secrets


class RacedSecrets:
    """A vault where another instance writes its first API token right after ours."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def put(self, name: str, value: str) -> None:
        self.values[name] = "o" * 64  # ours, then the other instance's: the later write wins

    def delete(self, name: str) -> None:
        self.values.pop(name, None)


def test_two_instances_making_the_first_token_together_agree_on_the_later_write() -> None:
    # Key Vault has no create-if-absent: the instance reads the vault back after writing and
    # serves what it finds, not the token it generated.
    assert AzureRuntime(Settings.from_env(AZURE), secrets=RacedSecrets()).token == "o" * 64


@pytest.fixture(scope="module")
def vault() -> Iterator[AzureApiFake]:
    with AzureApiFake() as fake:
        yield fake


def test_the_api_token_is_made_in_key_vault_on_first_start_and_rotations_reach_warm_instances(
    vault: AzureApiFake,
) -> None:
    vault.reset()
    store = KeyVaultSecretStore(
        vault.url, credential=StaticCredential(), transport=vault.transport()
    )
    first = AzureRuntime(Settings.from_env(AZURE), secrets=store)
    token = first.token
    assert len(token) >= 32
    assert store.get("api-token") == token
    # Another instance reads the same token instead of making one.
    assert AzureRuntime(Settings.from_env(AZURE), secrets=store).token == token
    store.put("api-token", "r" * 64)  # a rotation
    assert first.token == token  # within the TTL: the cached one
    first.api_token.ttl_s = 0.0  # the TTL has passed
    assert first.token == "r" * 64
    assert vault.violations == []
