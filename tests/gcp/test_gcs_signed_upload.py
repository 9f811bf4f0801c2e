"""Signed GCS uploads (the two-step bundle upload's URL), checked two ways.

fake-gcs-server takes the signed PUT (it does not check signatures), so the upload path is
tested end to end against it; the signature itself is checked here as GCS checks it: the V4
canonical request rebuilt from the URL and the headers the client must send, verified with
the signing key's public half. A PUT with another length would change a signed header and
fail that verification.
"""

from __future__ import annotations

import hashlib
import urllib.request
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.oauth2 import service_account

from functions_gcp.gcs_blobs import GcsBlobStore
from nclav.errors import ConfigurationError
from stand_ins import FIRESTORE_PROJECT

pytestmark = pytest.mark.slow
EMAIL = "nclav-api@nclav-test.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def signing_client(key: rsa.RSAPrivateKey) -> Any:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "client_email": EMAIL,
        "private_key": pem,
        "private_key_id": "k1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    credentials = service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
    return storage.Client(project=FIRESTORE_PROJECT, credentials=credentials)


def verify_v4(url: str, headers: dict[str, str], key: rsa.RSAPrivateKey) -> None:
    """GCS's check of a V4 signed URL (cloud.google.com/storage/docs/authentication/signatures)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = bytes.fromhex(query.pop("X-Goog-Signature"))
    sent = {"host": parts.netloc, **{k.lower(): v.strip() for k, v in headers.items()}}
    signed = query["X-Goog-SignedHeaders"].split(";")
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
    )
    canonical = "\n".join(
        [
            "PUT",
            parts.path,
            canonical_query,
            "".join(f"{name}:{sent[name]}\n" for name in signed),
            ";".join(signed),
            "UNSIGNED-PAYLOAD",
        ]
    )
    scope = query["X-Goog-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        [
            query["X-Goog-Algorithm"],
            query["X-Goog-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key.public_key().verify(signature, to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())


def test_a_signed_put_binds_the_length_and_uploads_to_the_bucket(
    gcs: str, key: rsa.RSAPrivateKey
) -> None:
    data = b"bundle bytes" * 100
    digest = hashlib.sha256(data).hexdigest()
    signer = GcsBlobStore(gcs, "blobs/", client=signing_client(key))
    url, headers = signer.upload_url(f"uploads/{digest}.tar.gz", len(data), digest, 900)

    assert headers == {"x-goog-content-length-range": f"{len(data)},{len(data)}"}
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert query["X-Goog-Expires"] == "900"
    assert query["X-Goog-Credential"].startswith(f"{EMAIL}/")
    assert query["X-Goog-SignedHeaders"] == "host;x-goog-content-length-range"
    assert urlsplit(url).path == f"/{gcs}/blobs/uploads/{digest}.tar.gz"
    verify_v4(url, headers, key)
    with pytest.raises(InvalidSignature):  # another length is another signed header
        verify_v4(url, {"x-goog-content-length-range": "1,1"}, key)

    request = urllib.request.Request(url, data=data, method="PUT", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    reader = GcsBlobStore(
        gcs,
        "blobs/",
        client=storage.Client(project=FIRESTORE_PROJECT, credentials=AnonymousCredentials()),
    )
    assert reader.get(f"uploads/{digest}.tar.gz") == data


def test_credentials_that_cannot_sign_are_named(gcs: str) -> None:
    anonymous = storage.Client(project=FIRESTORE_PROJECT, credentials=AnonymousCredentials())
    store = GcsBlobStore(gcs, "blobs/", client=anonymous)
    with pytest.raises(ConfigurationError, match="AnonymousCredentials"):
        store.upload_url("uploads/x.tar.gz", 10, "0" * 64, 900)


def test_credentials_without_a_key_sign_through_iam_with_their_token(
    gcs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cloud Run's identity has no private key: the library is asked to sign with the
    account's email and access token (IAM signBlob), which is what is checked here."""

    class MetadataIdentity:  # the attributes google.auth.compute_engine.Credentials has
        service_account_email = EMAIL
        token = "ya29.token"
        valid = True

        def refresh(self, request: Any) -> None:
            raise AssertionError("a valid token is not refreshed")

    client = storage.Client(project=FIRESTORE_PROJECT, credentials=AnonymousCredentials())
    client._credentials = MetadataIdentity()  # noqa: SLF001
    asked: dict[str, Any] = {}

    def generate_signed_url(self: Any, **kwargs: Any) -> str:
        asked.update(kwargs)
        return "https://storage.googleapis.com/signed"

    monkeypatch.setattr(storage.Blob, "generate_signed_url", generate_signed_url)
    url, _ = GcsBlobStore(gcs, client=client).upload_url("uploads/x.tar.gz", 10, "0" * 64, 60)
    assert url == "https://storage.googleapis.com/signed"
    assert (asked["service_account_email"], asked["access_token"]) == (EMAIL, "ya29.token")
    assert asked["version"] == "v4" and asked["method"] == "PUT"
