"""Signed bundle uploads on Blob Storage (``AzureBlobStore.upload_url``).

Azurite checks account-key SAS: the signature, the expiry, the blob it names and its
permission, so the shared-key path runs for real below, through the function app's two-step
upload too. The user delegation path (the one Azure deployments use: no account key) needs
Entra ID, which Azurite serves only over TLS with its own OAuth set-up: its tests check what
nclav decides (the key's fields and life, a create-only blob SAS, HTTPS only, one key fetch
for many URLs), not the service's verdict on the signature.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import tarfile
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.storage.blob import ContainerClient, UserDelegationKey

from azure_stand_ins import unique_name
from functions_azure import blob_store
from functions_azure.blob_store import AzureBlobStore, create_container

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from azure.cosmos import DatabaseProxy

pytestmark = pytest.mark.slow


def put(url: str, headers: dict[str, str], data: bytes) -> int:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        conn.request("PUT", f"{parts.path}?{parts.query}", body=data, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.fixture
def blobs(azure_storage: str) -> AzureBlobStore:
    store = AzureBlobStore.from_connection_string(azure_storage, unique_name("sas"), "p/")
    create_container(store.container)
    return store


def test_an_account_key_sas_uploads_once_to_its_blob(blobs: AzureBlobStore) -> None:
    data = b"bundle bytes"
    digest = hashlib.sha256(data).hexdigest()
    url, headers = blobs.upload_url(f"uploads/{digest}.tar.gz", len(data), digest, 60)
    assert headers["x-ms-blob-type"] == "BlockBlob"
    assert parse_qs(urlsplit(url).query)["sp"] == ["c"]
    assert put(url, headers, data) == 201
    assert blobs.get(f"uploads/{digest}.tar.gz") == data


def test_azurite_refuses_a_tampered_or_redirected_sas(blobs: AzureBlobStore) -> None:
    url, headers = blobs.upload_url("uploads/a.tar.gz", 3, "0" * 64, 60)
    tampered = url.replace("sp=c", "sp=cw")
    assert put(tampered, headers, b"abc") == 403
    other_blob = url.replace("uploads/a.tar.gz", "uploads/b.tar.gz")
    assert put(other_blob, headers, b"abc") == 403
    assert not blobs.exists("uploads/a.tar.gz")
    assert not blobs.exists("uploads/b.tar.gz")


def test_an_expired_sas_is_refused(blobs: AzureBlobStore) -> None:
    url, headers = blobs.upload_url("uploads/late.tar.gz", 3, "0" * 64, 1)
    time.sleep(2.1)
    assert put(url, headers, b"abc") == 403
    assert not blobs.exists("uploads/late.tar.gz")


# -- the two steps through the function app ------------------------------------------------------


@pytest.fixture
def deployment(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    azure_storage: str,
    cosmos: DatabaseProxy,
    cosmos_server: str,
) -> Iterator[Any]:
    from azure_harness import AzureDeployment

    from functions_azure import bootstrap

    d = AzureDeployment(monkeypatch, tmp_path, azure_storage, cosmos, cosmos_server)
    try:
        yield d
    finally:
        bootstrap.install(None)


def test_the_two_step_upload_through_the_function_app(deployment: Any) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        data = b"id: alpha\nname: alpha\ncloud: local\nregion: local-1\n"
        info = tarfile.TarInfo("alpha/config.yml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    bundle = out.getvalue()
    digest = hashlib.sha256(bundle).hexdigest()
    ask = json.dumps({"sha256": digest, "size": len(bundle)}).encode()
    started = deployment.request(
        "POST", "/bundles/uploads", ask, {"content-type": "application/json"}
    )
    assert started.status in (200, 201), started
    doc = json.loads(started.body)
    assert put(doc["url"], doc["headers"], bundle) == 201
    done = deployment.request("POST", doc["complete"], b"", {"content-type": "application/json"})
    assert done.status in (200, 201), done
    assert json.loads(done.body)["digest"]


# -- the user delegation path --------------------------------------------------------------------


class FakeTokenCredential:
    """Stands for DefaultAzureCredential: a client with it has no account key."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise AssertionError("no request may reach the network in this test")


def test_a_user_delegation_sas_is_create_only_https_and_reuses_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fetched: list[tuple[datetime, datetime]] = []

    def get_user_delegation_key(self: Any, start: datetime, expiry: datetime, **kw: Any) -> Any:
        fetched.append((start, expiry))
        key = UserDelegationKey()
        key.signed_oid, key.signed_tid = "oid-1", "tid-1"
        key.signed_start = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_expiry = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_service, key.signed_version = "b", "2025-11-05"
        key.value = "a2V5LXZhbHVlLWZvci10ZXN0cy1vbmx5"
        return key

    monkeypatch.setattr(
        "azure.storage.blob.BlobServiceClient.get_user_delegation_key", get_user_delegation_key
    )
    container = ContainerClient(
        "https://acct.blob.core.windows.net", "nclav-blobs", credential=FakeTokenCredential()
    )
    store = AzureBlobStore(container, "p/")
    url, headers = store.upload_url("uploads/x.tar.gz", 10, "0" * 64, 900)
    query = parse_qs(urlsplit(url).query)
    assert urlsplit(url).path == "/nclav-blobs/p/uploads/x.tar.gz"
    assert (query["sp"], query["sr"], query["spr"]) == (["c"], ["b"], ["https"])
    assert (query["skoid"], query["sktid"]) == (["oid-1"], ["tid-1"])
    assert "sig" in query
    se = datetime.strptime(query["se"][0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    key_expiry = fetched[0][1]
    assert se < key_expiry  # the URL dies before the key that signs it
    assert headers["Content-Length"] == "10"
    store.upload_url("uploads/y.tar.gz", 10, "1" * 64, 900)
    assert len(fetched) == 1  # one Get User Delegation Key for many URLs
    # A URL that would outlive the kept key gets a new key.
    monkeypatch.setattr(blob_store, "DELEGATION_KEY_S", 0)
    store._delegation = (store._delegation[0], datetime.now(UTC))  # type: ignore[index]  # noqa: SLF001
    store.upload_url("uploads/z.tar.gz", 10, "2" * 64, 900)
    assert len(fetched) == 2
