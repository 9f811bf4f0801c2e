"""functions_aws._errors: every SDK error the storage and queue adapters can meet is mapped."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from functions_aws._errors import (
    CONFLICT,
    NOT_FOUND,
    THROTTLING,
    TRANSIENT,
    AwsServiceError,
    aws_errors,
    translate,
)
from nclav.errors import ConflictError, NotFoundError, TemporaryError


def client_error(code: str, status: int = 400) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": "detail"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "Operation")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        (NOT_FOUND, NotFoundError),
        (CONFLICT, ConflictError),
        (THROTTLING, TemporaryError),
        (TRANSIENT, TemporaryError),
    ],
)
def test_every_listed_code_is_mapped(codes: frozenset[str], expected: type[Exception]) -> None:
    for code in codes:
        error = translate(client_error(code), "s3:GetObject k")
        assert type(error) is expected, code
        assert str(error).startswith(f"s3:GetObject k: {code}")


def test_status_decides_for_an_unknown_code() -> None:
    assert isinstance(translate(client_error("Weird", 503), "x"), TemporaryError)
    assert isinstance(translate(client_error("Weird", 429), "x"), TemporaryError)
    other = translate(client_error("AccessDenied", 403), "x")
    assert type(other) is AwsServiceError
    assert (other.code, other.status) == ("AccessDenied", 403)


def test_throttling_asks_for_a_longer_wait_than_a_transient_error() -> None:
    throttled = translate(client_error("SlowDown", 503), "x")
    failed = translate(client_error("InternalError", 500), "x")
    assert isinstance(throttled, TemporaryError) and isinstance(failed, TemporaryError)
    assert throttled.retry_after_s > failed.retry_after_s


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (EndpointConnectionError(endpoint_url="https://s3"), TemporaryError),
        (ConnectTimeoutError(endpoint_url="https://s3"), TemporaryError),
        (ReadTimeoutError(endpoint_url="https://s3"), TemporaryError),
        (NoCredentialsError(), AwsServiceError),
    ],
)
def test_transport_and_client_side_errors(exc: Exception, expected: type[Exception]) -> None:
    with pytest.raises(expected) as caught, aws_errors("sqs:SendMessage"):
        raise exc
    assert caught.value.__cause__ is exc


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), aws_errors("x"):
        raise KeyError("not an SDK error")
