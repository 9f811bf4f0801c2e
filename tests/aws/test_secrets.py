"""SecretsManagerSecretStore beyond the SecretStore contract: names, versions, secrets made by
other tools, deletion, and SDK error translation (Stubber)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from functions_aws._errors import AwsServiceError
from functions_aws.secrets import SecretsManagerSecretStore
from nclav.errors import NotFoundError, SpecError, TemporaryError

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:nclav/api-token-AbCdEf"


@pytest.fixture
def sm(aws: str) -> Any:
    return boto3.client("secretsmanager")


def test_a_secret_is_the_prefixed_name_and_put_adds_versions(sm: Any) -> None:
    secrets = SecretsManagerSecretStore("nclav/", client=sm)
    secrets.put("api-token", "first")
    secrets.put("api-token", "second")
    described = sm.describe_secret(SecretId="nclav/api-token")
    assert {"Key": "nclav-managed", "Value": "true"} in described["Tags"]
    stages = sorted(s for v in described["VersionIdsToStages"].values() for s in v)
    assert stages == ["AWSCURRENT", "AWSPREVIOUS"]
    previous = sm.get_secret_value(SecretId="nclav/api-token", VersionStage="AWSPREVIOUS")
    assert previous["SecretString"] == "first"
    assert secrets.get("api-token") == "second"


def test_a_secret_made_by_another_tool_is_read_and_updated(sm: Any) -> None:
    sm.create_secret(Name="team/webhook.github", SecretString="from terraform")
    secrets = SecretsManagerSecretStore("team/", client=sm)
    assert secrets.get("webhook.github") == "from terraform"
    secrets.put("webhook.github", "rotated")
    assert sm.get_secret_value(SecretId="team/webhook.github")["SecretString"] == "rotated"


def test_a_secret_scheduled_for_deletion_reads_as_missing(sm: Any) -> None:
    secrets = SecretsManagerSecretStore(client=sm)
    secrets.put("api-token", "t")
    sm.delete_secret(SecretId="nclav/api-token", RecoveryWindowInDays=7)
    assert secrets.get("api-token") is None


def test_put_restores_a_secret_scheduled_for_deletion() -> None:
    """Secrets Manager refuses a new version of such a secret (moto does not: Stubber)."""
    client = boto3.client("secretsmanager", region_name="us-east-1")
    secrets = SecretsManagerSecretStore(client=client)
    refused = "You can't perform this operation on the secret because it was marked for deletion."
    ids = {"SecretId": "nclav/api-token"}
    with Stubber(client) as stub:
        stub.add_client_error("put_secret_value", "InvalidRequestException", refused, 400)
        stub.add_response(
            "describe_secret",
            {"ARN": ARN, "Name": "nclav/api-token", "DeletedDate": datetime.now(UTC)},
            ids,
        )
        stub.add_response("restore_secret", {"ARN": ARN, "Name": "nclav/api-token"}, ids)
        stub.add_response("put_secret_value", {"ARN": ARN}, {**ids, "SecretString": "new"})
        secrets.put("api-token", "new")
        stub.assert_no_pending_responses()


def test_put_after_another_process_created_the_secret_adds_a_version() -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    secrets = SecretsManagerSecretStore(client=client)
    with Stubber(client) as stub:
        stub.add_client_error("put_secret_value", "ResourceNotFoundException", "gone", 400)
        stub.add_client_error("create_secret", "ResourceExistsException", "exists", 400)
        stub.add_response(
            "put_secret_value",
            {"ARN": ARN},
            {"SecretId": "nclav/api-token", "SecretString": "mine"},
        )
        secrets.put("api-token", "mine")
        stub.assert_no_pending_responses()


def test_an_empty_value_is_refused(sm: Any) -> None:
    with pytest.raises(SpecError, match="cannot be empty"):
        SecretsManagerSecretStore(client=sm).put("api-token", "")


def test_a_binary_secret_is_not_read_as_text(sm: Any) -> None:
    sm.create_secret(Name="nclav/blob", SecretBinary=b"\x00\x01")
    with pytest.raises(AwsServiceError, match="binary"):
        SecretsManagerSecretStore(client=sm).get("blob")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ThrottlingException", 400, TemporaryError),
        ("InternalServiceError", 500, TemporaryError),
        ("AccessDeniedException", 400, AwsServiceError),
        ("DecryptionFailure", 400, AwsServiceError),
    ],
)
def test_sdk_errors_are_translated(code: str, status: int, expected: type[Exception]) -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    secrets = SecretsManagerSecretStore(client=client)
    with Stubber(client) as stub:
        stub.add_client_error("get_secret_value", code, "nope", http_status_code=status)
        with pytest.raises(expected) as caught:
            secrets.get("api-token")
    assert isinstance(caught.value.__cause__, ClientError)
    assert "nclav/api-token" in str(caught.value)
    assert not isinstance(caught.value, NotFoundError)
