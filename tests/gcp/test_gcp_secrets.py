"""SecretManagerSecretStore beyond the SecretStore contract (tests/contract covers put/get):
the secret ids it uses, versions, secrets made by other tools, and errors, against the strict
Secret Manager v1 fake."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import pytest

from functions_gcp._rest import GcpApiError
from functions_gcp.secrets import SecretManagerSecretStore, secret_id
from gcp_api_fake import GcpApiFake, anonymous_session, serve_fake
from nclav.errors import ConfigurationError, SpecError, TemporaryError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def fake() -> Iterator[GcpApiFake]:
    with serve_fake() as running:
        yield running


def store(fake: GcpApiFake, prefix: str = "nclav-") -> SecretManagerSecretStore:
    return SecretManagerSecretStore(
        "plat", prefix, session=anonymous_session(), endpoint=fake.endpoint("secretmanager")
    )


def test_a_secret_is_the_prefixed_name_and_put_adds_versions(fake: GcpApiFake) -> None:
    secrets = store(fake)
    assert secrets.get("api-token") is None
    secrets.put("api-token", "first")
    secrets.put("api-token", "second")
    name = "projects/plat/secrets/nclav-api-token"
    assert fake.secrets[name]["labels"] == {"nclav-managed": "true"}
    assert fake.secrets[name]["replication"] == {"automatic": {}}
    assert [v["data"] for v in fake.versions[name]] == [b"first", b"second"]
    assert secrets.get("api-token") == "second"
    # one create, then versions only
    assert len(fake.called("secretmanager.projects.secrets.create")) == 1


def test_names_with_dots_or_underscores_are_escaped_reversibly() -> None:
    assert secret_id("nclav-", "api-token") == "nclav-api-token"
    assert secret_id("nclav-", "webhook.github") == "nclav-webhook_2Egithub"
    assert secret_id("nclav-", "a_b") == "nclav-a_5Fb"
    assert secret_id("nclav-", "a.b") != secret_id("nclav-", "a_b")


def test_a_secret_made_by_another_tool_is_read_and_updated(fake: GcpApiFake) -> None:
    name = "projects/plat/secrets/team-git-token"
    fake.secrets[name] = {"name": name, "replication": {"automatic": {}}}
    fake.versions[name] = [{"name": f"{name}/versions/1", "state": "ENABLED", "data": b"tf"}]
    secrets = store(fake, "team-")
    assert secrets.get("git-token") == "tf"
    secrets.put("git-token", "rotated")
    assert fake.versions[name][-1]["data"] == b"rotated"
    assert fake.called("secretmanager.projects.secrets.create") == []


def test_a_secret_without_versions_reads_as_missing(fake: GcpApiFake) -> None:
    name = "projects/plat/secrets/nclav-api-token"
    fake.secrets[name] = {"name": name, "replication": {"automatic": {}}}
    fake.versions[name] = []
    assert store(fake).get("api-token") is None


def test_a_lost_create_race_adds_the_version_to_the_winners_secret(fake: GcpApiFake) -> None:
    secrets = store(fake)
    # addVersion answers 404 (no secret yet); another writer creates it before our create
    fake.fail_next("secretmanager.projects.secrets.addVersion", 404, status="NOT_FOUND")
    name = "projects/plat/secrets/nclav-api-token"
    fake.secrets[name] = {"name": name, "replication": {"automatic": {}}}
    fake.versions[name] = []
    secrets.put("api-token", "mine")
    assert [v["data"] for v in fake.versions[name]] == [b"mine"]


def test_values_are_bytes_exact_utf8(fake: GcpApiFake) -> None:
    secrets = store(fake)
    secrets.put("api-token", "ünï\n")
    raw = fake.versions["projects/plat/secrets/nclav-api-token"][0]["data"]
    assert raw == "ünï\n".encode()
    call = fake.called("secretmanager.projects.secrets.addVersion")[0]
    assert base64.b64decode(call.body["payload"]["data"]) == raw


def test_empty_values_and_bad_prefixes_are_refused(fake: GcpApiFake) -> None:
    with pytest.raises(SpecError, match="cannot be empty"):
        store(fake).put("api-token", "")
    with pytest.raises(SpecError, match="letters, digits"):
        store(fake, "nclav/")
    assert fake.calls == []


def test_errors_are_translated(fake: GcpApiFake) -> None:
    secrets = store(fake)
    fake.fail_next("secretmanager.projects.secrets.versions.access", 503)
    with pytest.raises(TemporaryError, match="UNAVAILABLE"):
        secrets.get("api-token")
    fake.fail_next("secretmanager.projects.secrets.versions.access", 403, "no access")
    with pytest.raises(GcpApiError, match="PERMISSION_DENIED: no access") as caught:
        secrets.get("api-token")
    assert caught.value.status == 403
    secrets.put("api-token", "t")
    fake.versions["projects/plat/secrets/nclav-api-token"][-1]["state"] = "DISABLED"
    with pytest.raises(GcpApiError, match="FAILED_PRECONDITION"):
        secrets.get("api-token")


def test_an_unreachable_endpoint_is_temporary() -> None:
    secrets = SecretManagerSecretStore(
        "plat", session=anonymous_session(), endpoint="http://127.0.0.1:9/"
    )
    with pytest.raises(TemporaryError, match="ConnectionError"):
        secrets.get("api-token")


def test_missing_credentials_are_a_configuration_error(
    fake: GcpApiFake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    secrets = SecretManagerSecretStore("plat", endpoint=fake.endpoint("secretmanager"))
    with pytest.raises(ConfigurationError, match="no Google credentials"):
        secrets.get("api-token")
