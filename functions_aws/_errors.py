"""SDK clients and errors of the storage and queue adapters: clients made on first use, and
errors translated to nclav's errors in one place.

The adapters (SQS queue, S3 blobs, Secrets Manager secrets) wrap every AWS call in
``aws_errors(what)``, so no botocore exception escapes them::

    ClientError / BotoCoreError
    ├── a missing thing (NoSuchKey, 404, ResourceNotFoundException, ...) -> NotFoundError
    ├── a lost condition (PreconditionFailed, ...)                       -> ConflictError
    ├── throttling, 5xx, timeouts, dropped connections                   -> TemporaryError
    └── anything else (AccessDenied, validation, no credentials, ...)    -> AwsServiceError

The codes below are AWS's; what is left is core's ``classify`` (by HTTP status), the rule
every cloud's translators share. ``AwsServiceError`` is core's ``ServiceError``.

botocore has already retried throttling and 5xx with its own backoff by the time an error
gets here, so a ``TemporaryError`` means "later, through the queue", not "again now".
Adapters that expect a code (a missing secret is ``None``) catch the translated error.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from nclav.errors import (
    ConflictError,
    ErrorKind,
    NclavError,
    NotFoundError,
    ServiceError,
    TemporaryError,
    classify,
)
from nclav.runtime.parts import Lazy

if TYPE_CHECKING:
    from collections.abc import Iterator

NOT_FOUND = frozenset(
    {
        "404",
        "NotFound",
        "NoSuchKey",
        "NoSuchBucket",
        "NoSuchVersion",
        "ResourceNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
    }
)
CONFLICT = frozenset(
    {
        "PreconditionFailed",
        "ConditionalRequestConflict",  # S3: a concurrent conditional write to the same key
        "OperationAborted",
        "ResourceExistsException",
        "QueueAlreadyExists",
        "QueueNameExists",
    }
)
THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "AWS.SimpleQueueService.RequestThrottled",
        "SlowDown",
        "ProvisionedThroughputExceededException",  # DynamoDB
    }
)
TRANSIENT = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServiceError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "KMSThrottlingException",
        "TransactionConflictException",  # DynamoDB: another transaction holds an item
        "TransactionInProgressException",
    }
)
TEMPORARY = THROTTLING | TRANSIENT
# Every connect, read and proxy failure (timeouts, resets, DNS) derives from one of these.
NETWORK = (ConnectionError, HTTPClientError)
THROTTLED_RETRY_S = 10.0
TRANSIENT_RETRY_S = 5.0
KNOWN: dict[str, ErrorKind] = {
    **dict.fromkeys(NOT_FOUND, "not_found"),
    **dict.fromkeys(CONFLICT, "conflict"),
    **dict.fromkeys(THROTTLING | TRANSIENT, "temporary"),
    # 409s that create_bucket tells apart by their code (ours already, or someone else's)
    "BucketAlreadyOwnedByYou": "permanent",
    "BucketAlreadyExists": "permanent",
}


class AwsServiceError(ServiceError):
    """An AWS error that is neither missing, conflicting nor transient (access, validation)."""


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    meta: Any = exc.response.get("ResponseMetadata", {})
    return int(meta.get("HTTPStatusCode") or 0)


def translate(exc: Exception, what: str) -> NclavError:
    """The nclav error for an SDK error raised while doing ``what``."""
    if isinstance(exc, ClientError):
        code, status = error_code(exc), http_status(exc)
        detail = str(exc.response.get("Error", {}).get("Message") or "")
        text = f"{what}: {code}: {detail}" if detail else f"{what}: {code}"
        kind = classify(status, code, KNOWN)
        if kind == "not_found":
            return NotFoundError(text)
        if kind == "conflict":
            return ConflictError(text)
        if kind == "temporary" and (code in THROTTLING or status == 429):
            return TemporaryError(f"{text} (throttled)", retry_after_s=THROTTLED_RETRY_S)
        if kind == "temporary":
            return TemporaryError(text, retry_after_s=TRANSIENT_RETRY_S)
        return AwsServiceError(text, code=code, status=status)
    if isinstance(exc, NETWORK):  # timeouts, resets, DNS
        return TemporaryError(f"{what}: {exc}", retry_after_s=TRANSIENT_RETRY_S)
    return AwsServiceError(f"{what}: {type(exc).__name__}: {exc}")


def lazy_client(service: str, **config: Any) -> Any:
    """A boto3 client for ``service`` made on its first use (``botocore.config.Config`` of
    ``config``), so importing or building an adapter reaches no network or credentials."""

    def make() -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(service, config=Config(**config) if config else None)

    return Lazy(make)


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Translate SDK errors raised inside the block, chaining the original as ``__cause__``."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, what) from exc


__all__ = [
    "NETWORK",
    "TEMPORARY",
    "AwsServiceError",
    "aws_errors",
    "error_code",
    "http_status",
    "lazy_client",
    "translate",
]
