"""``functions_azure._errors``: every azure-core error leaves the adapters as a core error."""

from __future__ import annotations

import pytest
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from functions_azure._errors import AzureServiceError, azure_errors, translate
from nclav.errors import ConflictError, NotFoundError, TemporaryError


def http_error(status: int, code: str) -> HttpResponseError:
    exc = HttpResponseError(message=f"{status} {code}")
    exc.status_code = status
    exc.error_code = code  # type: ignore[attr-defined]  # as Storage's deserializer sets it
    return exc


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (404, "BlobNotFound", NotFoundError),
        (404, "MessageNotFound", NotFoundError),
        (412, "ConditionNotMet", ConflictError),
        (409, "BlobAlreadyExists", ConflictError),
        (204, "QueueAlreadyExists", ConflictError),
        (400, "PopReceiptMismatch", ConflictError),
        (409, "InvalidBlobType", AzureServiceError),
        (503, "ServerBusy", TemporaryError),
        (500, "InternalError", TemporaryError),
        (403, "AuthorizationPermissionMismatch", AzureServiceError),
        (400, "InvalidQueryParameterValue", AzureServiceError),
    ],
)
def test_status_and_code_choose_the_error(status: int, code: str, kind: type) -> None:
    error = translate(http_error(status, code), "op")
    assert type(error) is kind
    assert str(error).startswith(f"op: {status} {code}")


def test_throttling_waits_longer_than_a_transient_failure() -> None:
    throttled = translate(http_error(503, "ServerBusy"), "op")
    failed = translate(http_error(500, "InternalError"), "op")
    assert isinstance(throttled, TemporaryError) and isinstance(failed, TemporaryError)
    assert throttled.retry_after_s > failed.retry_after_s
    assert "throttled" in str(throttled)


def test_network_failures_are_temporary() -> None:
    for exc in (ServiceRequestError("connect"), ServiceResponseError("reset")):
        assert isinstance(translate(exc, "op"), TemporaryError)


def test_anything_else_is_a_service_error_with_its_status() -> None:
    auth = translate(ClientAuthenticationError(message="no"), "op")
    assert isinstance(auth, AzureServiceError)
    error = translate(http_error(403, "AuthorizationFailure"), "op")
    assert isinstance(error, AzureServiceError)
    assert (error.status, error.code) == (403, "AuthorizationFailure")
    assert isinstance(translate(AzureError("odd"), "op"), AzureServiceError)


def test_the_block_chains_the_sdk_error() -> None:
    original = http_error(404, "QueueNotFound")
    with pytest.raises(NotFoundError) as caught, azure_errors("queue send q"):
        raise original
    assert caught.value.__cause__ is original
    assert str(caught.value) == "queue send q: 404 QueueNotFound"
