"""The one place where AWS errors become nclav's TemporaryError / PermanentError.

The engine retries a TemporaryError after ``retry_after_s`` and records a PermanentError on
the enclave or partition without retrying, so the split decides whether a run waits or fails.
Codes the driver expects (EntityAlreadyExists, NoSuchEntity, ...) are caught where they mean
something before they ever reach here.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)

from nclav.errors import NclavError, PermanentError, ReconcileError, TemporaryError

if TYPE_CHECKING:
    from collections.abc import Iterator

THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "PriorRequestNotComplete",
        "SlowDown",
    }
)
# Worth another attempt: the service or a concurrent change is in the way, not the request.
TRANSIENT = frozenset(
    {
        "ConcurrentModificationException",
        "ConcurrentModification",
        "FinalizingOrganizationException",
        "ServiceException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "ServiceFailure",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
        "IDPCommunicationError",
        # Cached credentials that outlived their session: the next attempt assumes again.
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        # A resource still held by something that is going away (ENIs of a deleted endpoint).
        "DependencyViolation",
        "ResourceInUse",
    }
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_reason(exc: ClientError) -> str:
    """Organizations puts the detail of ConstraintViolationException in ``Reason``."""
    return str(exc.response.get("Reason") or exc.response.get("Error", {}).get("Reason", ""))


def _status(exc: ClientError) -> int:
    meta: Any = exc.response.get("ResponseMetadata", {})
    return int(meta.get("HTTPStatusCode") or 0)


def translate(exc: Exception, what: str) -> ReconcileError:
    """The nclav error for an SDK error raised while doing ``what``."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        reason = error_reason(exc)
        text = f"{what}: {code}: {message}".rstrip(": ") + (f" ({reason})" if reason else "")
        if code in THROTTLING:
            return TemporaryError(f"{text} (throttled)", retry_after_s=30.0)
        if code in TRANSIENT or _status(exc) >= 500:
            return TemporaryError(text, retry_after_s=15.0)
        # AccessDenied, validation, malformed input, quotas: another attempt gets the same.
        return PermanentError(text)
    if isinstance(exc, ConnectionError | EndpointConnectionError | ReadTimeoutError):
        return TemporaryError(f"{what}: {exc}", retry_after_s=15.0)
    if isinstance(exc, ParamValidationError):
        return PermanentError(f"{what}: {exc}")
    return PermanentError(f"{what}: {type(exc).__name__}: {exc}")


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Translate SDK errors raised inside the block, chaining the original as ``__cause__``."""
    try:
        yield
    except NclavError:
        raise
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, what) from exc


__all__ = ["THROTTLING", "TRANSIENT", "aws_errors", "error_code", "error_reason", "translate"]
