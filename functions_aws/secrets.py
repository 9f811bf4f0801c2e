"""``SecretsManagerSecretStore``: nclav's secrets (API token, webhook secrets) in Secrets Manager.

A secret ``name`` is the Secrets Manager secret ``prefix + name`` holding the value as its
``SecretString``, unchanged, so the deployment (infra/aws) and an operator can create or
rotate the same secrets with their own tools. ``put`` adds a new ``AWSCURRENT`` version to an
existing secret and creates the secret otherwise; earlier versions stay as ``AWSPREVIOUS``
and are what Secrets Manager keeps for recovery.

A secret scheduled for deletion reads as missing; ``put`` restores it first (Secrets Manager
refuses new versions of it otherwise, and refuses to create another secret with its name).
Secrets Manager cannot hold an empty value, so ``put`` refuses one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions_aws._errors import AwsServiceError, aws_errors, lazy_client
from nclav.errors import ConflictError, Issue, NotFoundError, SpecError
from nclav.ports import check_secret_name

MANAGED_TAG = {"Key": "nclav-managed", "Value": "true"}
# The request token of a secret's first version: idempotent, so only one first value lands.
FIRST_VERSION = "nclav-first-api-token-0000000000000"


class SecretsManagerSecretStore:
    def __init__(
        self, prefix: str = "nclav/", client: Any = None, *, kms_key_id: str | None = None
    ) -> None:
        self.prefix = prefix
        self.client = client if client is not None else lazy_client("secretsmanager")
        self._kms_key_id = kms_key_id

    def get(self, name: str) -> str | None:
        secret_id = self.prefix + check_secret_name(name)
        try:
            with aws_errors(f"secretsmanager:GetSecretValue {secret_id}"):
                response = self.client.get_secret_value(SecretId=secret_id)
        except NotFoundError:
            return None
        except AwsServiceError as exc:
            if exc.code == "InvalidRequestException" and self._scheduled_for_deletion(secret_id):
                return None
            raise
        value = response.get("SecretString")
        if value is None:  # a binary secret written by another tool: not one of ours
            raise AwsServiceError(f"secret {secret_id} holds binary data, expected a string")
        return str(value)

    def put_first(self, name: str, value: str) -> None:
        """The secret's first value, written under a fixed ``ClientRequestToken``: Secrets
        Manager accepts exactly one first version under it, so of two writers racing (two
        cold sandboxes making the API token) one wins and the other gets ``ConflictError``."""
        secret_id = self.prefix + check_secret_name(name)
        with aws_errors(f"secretsmanager:PutSecretValue {secret_id}"):
            self.client.put_secret_value(
                SecretId=secret_id, SecretString=value, ClientRequestToken=FIRST_VERSION
            )

    def put(self, name: str, value: str) -> None:
        secret_id = self.prefix + check_secret_name(name)
        if not value:
            raise SpecError(
                [Issue(path=repr(name), line=None, field="", message="a secret cannot be empty")]
            )
        try:
            self._put_version(secret_id, value)
        except NotFoundError:
            self._create(secret_id, value)
        except AwsServiceError as exc:
            if exc.code != "InvalidRequestException" or not self._scheduled_for_deletion(secret_id):
                raise
            with aws_errors(f"secretsmanager:RestoreSecret {secret_id}"):
                self.client.restore_secret(SecretId=secret_id)
            self._put_version(secret_id, value)

    def _create(self, secret_id: str, value: str) -> None:
        params: dict[str, Any] = {"Name": secret_id, "SecretString": value, "Tags": [MANAGED_TAG]}
        if self._kms_key_id:
            params["KmsKeyId"] = self._kms_key_id
        try:
            with aws_errors(f"secretsmanager:CreateSecret {secret_id}"):
                self.client.create_secret(**params)
        except ConflictError:  # ResourceExists: another process created it since our put
            self._put_version(secret_id, value)

    def _put_version(self, secret_id: str, value: str) -> None:
        with aws_errors(f"secretsmanager:PutSecretValue {secret_id}"):
            self.client.put_secret_value(SecretId=secret_id, SecretString=value)

    def _scheduled_for_deletion(self, secret_id: str) -> bool:
        with aws_errors(f"secretsmanager:DescribeSecret {secret_id}"):
            return "DeletedDate" in self.client.describe_secret(SecretId=secret_id)


if TYPE_CHECKING:
    from nclav.ports import SecretStore

    def _implements(
        adapter: SecretsManagerSecretStore,
    ) -> SecretStore:  # mypy proves the port is implemented
        return adapter


__all__ = ["SecretsManagerSecretStore"]
