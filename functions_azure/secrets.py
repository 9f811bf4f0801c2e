"""``KeyVaultSecretStore``: nclav's secrets (API token, webhook secrets, git token) in Key Vault.

A secret ``name`` is the Key Vault secret ``prefix + name`` holding the value unchanged, so the
deployment (infra/azure) and an operator can create or rotate the same secrets with their own
tools (``az keyvault secret set --name nclav-api-token``). ``put`` adds a new version; Key Vault
keeps the earlier ones.

Key Vault names allow only letters, digits and '-', and compare case-insensitively, while nclav
names may hold '.' and '_' and are case-sensitive. A name that is already lower-case letters,
digits and '-' maps to itself; any other (``webhook.github``, ``Api-Token``) maps to its
characters with '.'/'_' as '-', lower-cased, plus '-' and 8 hex digits of its sha256, so two
nclav names never share a vault secret.

A soft-deleted secret reads as missing; ``put`` recovers it first (Key Vault refuses to set a
secret in that state with 409 ``ObjectIsDeletedButRecoverable``). An empty value is refused, as
on AWS, so a store never holds a secret no reader can tell from a missing one.

The client authenticates with the ``DefaultAzureCredential`` chain (environment service
principal, workload identity, managed identity, Azure CLI) unless given a credential; it pins
the api-version its calls are checked against (tests/data/azure-specs).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from functions_azure._errors import azure_errors
from nclav.errors import ConfigurationError, ConflictError, Issue, NotFoundError, SpecError
from nclav.naming import MANAGED, short_hash
from nclav.ports import check_secret_name

API_VERSION = "2025-07-01"
_MAX_NAME = 127
_PLAIN = re.compile(r"[a-z0-9-]+")
_PREFIX = re.compile(r"[A-Za-z0-9-]*")


def vault_secret_name(prefix: str, name: str) -> str:
    """The Key Vault secret holding nclav's secret ``name`` (see the module docstring)."""
    check_secret_name(name)
    full = prefix + name
    if _PLAIN.fullmatch(name) and len(full) <= _MAX_NAME:
        return full
    slug = re.sub(r"[^A-Za-z0-9-]", "-", name).lower()
    room = _MAX_NAME - len(prefix) - 9
    return f"{prefix}{slug[:room]}-{short_hash(name)}"


class KeyVaultSecretStore:
    def __init__(
        self,
        vault_url: str,
        prefix: str = "nclav-",
        *,
        credential: Any | None = None,
        transport: Any | None = None,
    ) -> None:
        if not _PREFIX.fullmatch(prefix) or len(prefix) > 64:
            raise ConfigurationError(
                f"Key Vault secret prefix {prefix!r}: letters, digits and '-' only (at most 64)"
            )
        self.vault_url = vault_url
        self.prefix = prefix
        self._credential = credential
        self._transport = transport
        self._client: Any = None

    @property
    def client(self) -> Any:
        # Created on first use, so importing a handler module reaches no network or credentials.
        if self._client is None:
            from azure.keyvault.secrets import SecretClient

            credential = self._credential
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            options: dict[str, Any] = {"api_version": API_VERSION}
            if self._transport is not None:
                options["transport"] = self._transport
            self._client = SecretClient(self.vault_url, credential, **options)
        return self._client

    def get(self, name: str) -> str | None:
        secret = vault_secret_name(self.prefix, name)
        try:
            with azure_errors(f"keyvault:GetSecret {secret}"):
                value = self.client.get_secret(secret).value
        except NotFoundError:  # never set, or soft-deleted
            return None
        return None if value is None else str(value)

    def put(self, name: str, value: str) -> None:
        secret = vault_secret_name(self.prefix, name)
        if not value:
            raise SpecError(
                [Issue(path=repr(name), line=None, field="", message="a secret cannot be empty")]
            )
        try:
            self._set(secret, value)
        except ConflictError:
            if not self._deleted(secret):
                raise
            with azure_errors(f"keyvault:RecoverDeletedSecret {secret}"):
                self.client.begin_recover_deleted_secret(secret).wait()
            self._set(secret, value)

    def _set(self, secret: str, value: str) -> None:
        with azure_errors(f"keyvault:SetSecret {secret}"):
            self.client.set_secret(secret, value, tags={MANAGED: "true"})

    def _deleted(self, secret: str) -> bool:
        try:
            with azure_errors(f"keyvault:GetDeletedSecret {secret}"):
                self.client.get_deleted_secret(secret)
        except NotFoundError:
            return False
        return True


if TYPE_CHECKING:
    from nclav.ports import SecretStore

    def _implements(adapter: KeyVaultSecretStore) -> SecretStore:  # mypy proves the port
        return adapter


__all__ = ["API_VERSION", "KeyVaultSecretStore", "vault_secret_name"]
