"""KeyVaultSecretStore through azure-keyvault-secrets against the strict Key Vault fake.

The fake checks every request against the Key Vault secrets spec (2025-07-01) and answers a
request without a token with Key Vault's 401 challenge, which the SDK must follow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from azure_api_fake import AzureApiFake, StaticCredential
from functions_azure.secrets import KeyVaultSecretStore, vault_secret_name
from nclav.errors import ConfigurationError, SpecError
from nclav.ports import InvalidKeyError

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def server() -> Iterator[AzureApiFake]:
    with AzureApiFake() as fake:
        yield fake


@pytest.fixture
def fake(server: AzureApiFake) -> Iterator[AzureApiFake]:
    server.reset()
    yield server
    assert server.violations == []


@pytest.fixture
def store(fake: AzureApiFake) -> KeyVaultSecretStore:
    return KeyVaultSecretStore(fake.url, credential=StaticCredential(), transport=fake.transport())


def test_missing_put_get_replace(store: KeyVaultSecretStore, fake: AzureApiFake) -> None:
    assert store.get("api-token") is None
    store.put("api-token", "a" * 64)
    assert store.get("api-token") == "a" * 64
    store.put("api-token", "b" * 64)
    assert store.get("api-token") == "b" * 64
    assert len(fake.secrets["nclav-api-token"]["versions"]) == 2  # a new version, not a rewrite
    assert fake.secrets["nclav-api-token"]["versions"][0]["tags"] == {"nclav-managed": "true"}


def test_the_sdk_follows_the_challenge_and_asks_for_the_vault_scope(fake: AzureApiFake) -> None:
    credential = StaticCredential()
    store = KeyVaultSecretStore(fake.url, credential=credential, transport=fake.transport())
    store.put("api-token", "t")
    # The first request carried no token and was answered 401 with the challenge.
    assert fake.requests[0][0] == "PUT"
    assert credential.scopes == [f"https://0.0.1:{fake.port}/.default"]


def test_values_are_kept_exactly(store: KeyVaultSecretStore) -> None:
    value = "  multi\nline\tvalue ünïcødé\n"
    store.put("webhook.github", value)
    assert store.get("webhook.github") == value


def test_names_map_to_distinct_vault_names(store: KeyVaultSecretStore, fake: AzureApiFake) -> None:
    assert vault_secret_name("nclav-", "api-token") == "nclav-api-token"
    names = ["a-b", "a.b", "a_b", "A-b"]
    mapped = {vault_secret_name("nclav-", n) for n in names}
    assert len(mapped) == 4 and all(len(m) <= 127 for m in mapped)
    assert len(vault_secret_name("nclav-", "x" * 128)) == 127
    for i, name in enumerate(names):
        store.put(name, f"v{i}")
    assert [store.get(n) for n in names] == ["v0", "v1", "v2", "v3"]


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 129, "a b"])
def test_bad_names_are_rejected(store: KeyVaultSecretStore, name: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.put(name, "v")
    with pytest.raises(InvalidKeyError):
        store.get(name)


def test_empty_values_and_bad_prefixes_are_refused(store: KeyVaultSecretStore) -> None:
    with pytest.raises(SpecError, match="cannot be empty"):
        store.put("api-token", "")
    with pytest.raises(ConfigurationError, match="prefix"):
        KeyVaultSecretStore("https://x", prefix="nclav/")


def test_a_soft_deleted_secret_reads_missing_and_put_recovers_it(
    store: KeyVaultSecretStore, fake: AzureApiFake
) -> None:
    store.put("api-token", "old")
    fake.deleted_secrets["nclav-api-token"] = fake.secrets.pop("nclav-api-token")
    assert store.get("api-token") is None
    store.put("api-token", "new")
    assert store.get("api-token") == "new"
    assert "nclav-api-token" not in fake.deleted_secrets


def test_the_fake_rejects_what_the_spec_does_not_allow(fake: AzureApiFake) -> None:
    """The fake is strict: an unknown body property or another api-version is a violation."""
    import json

    auth = {"Authorization": "Bearer fake-keyvault-token"}
    bad = fake.handle("PUT", "/secrets/x?api-version=2025-07-01", auth, b'{"value":"v","colour":1}')
    assert bad.status == 400 and "body.colour: unknown property" in fake.violations[-1]
    old = fake.handle(
        "PUT", "/secrets/x?api-version=7.4", auth, json.dumps({"value": "v"}).encode()
    )
    assert old.status == 400 and "api-version '7.4'" in fake.violations[-1]
    fake.violations.clear()
