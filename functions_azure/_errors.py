"""SDK errors of the Azure adapters, translated to nclav's errors in one place.

The adapters wrap every Azure call in ``azure_errors(what)``, so no ``azure.core`` exception
escapes them::

    AzureError
    ├── HttpResponseError 404 (BlobNotFound, QueueNotFound, ...)      -> NotFoundError
    ├── HttpResponseError 409 / 412 (a lost etag condition, exists)   -> ConflictError
    ├── 408, 429, 5xx, ServerBusy, OperationTimedOut                  -> TemporaryError
    ├── ServiceRequestError / ServiceResponseError (network, timeout) -> TemporaryError
    └── anything else (403 AuthorizationFailure, 400 InvalidInput)    -> AzureServiceError

Which status means what is core's ``classify``, the rule every cloud's translators share;
``KNOWN`` only lists the Azure codes whose status would say otherwise. azure-core's retry
policy has already retried throttling and 5xx by the time an error gets here, so a
``TemporaryError`` means "later, through the queue", not "again now".
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from nclav.errors import (
    ConflictError,
    ErrorKind,
    NclavError,
    NotFoundError,
    ServiceError,
    TemporaryError,
    classify,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

THROTTLED_RETRY_S = 10.0
TRANSIENT_RETRY_S = 5.0
KNOWN: dict[str, ErrorKind] = {
    # 409s that are not a lost race: the caller asked for the wrong kind of thing
    "InvalidBlobType": "permanent",
    "BlobTypeMismatch": "permanent",  # (not raised by the adapters: they check the type first)
    # "exists": Azure answers a repeated Create Queue with 204 and this code
    "QueueAlreadyExists": "conflict",
    "PopReceiptMismatch": "conflict",  # 400: the message was received again since
    "ContainerAlreadyExists": "conflict",
    "ContainerBeingDeleted": "temporary",
    "QueueBeingDeleted": "temporary",
}
THROTTLING = frozenset({"ServerBusy", "TooManyRequests"})


class AzureServiceError(ServiceError):
    """An Azure error that is neither missing, conflicting nor transient (access, validation)."""


def error_code(exc: HttpResponseError) -> str:
    """The service's error code: Storage sets ``error_code`` on the exception (from the
    ``x-ms-error-code`` header); other services give an OData ``error``."""
    code = getattr(exc, "error_code", None) or (exc.error.code if exc.error else None)
    return str(getattr(code, "value", code) or "")  # Storage's codes are a str enum


def translate(exc: AzureError, what: str) -> NclavError:
    """The nclav error for an SDK error raised while doing ``what``."""
    if isinstance(exc, HttpResponseError):
        status = int(exc.status_code or 0)
        code = error_code(exc)
        text = f"{what}: {status} {code}".rstrip()
        kind = classify(status, code, KNOWN)
        if kind == "not_found":
            return NotFoundError(text)
        if kind == "conflict":
            return ConflictError(text)
        if kind == "temporary" and (code in THROTTLING or status in (429, 503)):
            return TemporaryError(f"{text} (throttled)", retry_after_s=THROTTLED_RETRY_S)
        if kind == "temporary":
            return TemporaryError(text, retry_after_s=TRANSIENT_RETRY_S)
        return AzureServiceError(text, status=status, code=code)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):  # network, timeouts
        return TemporaryError(f"{what}: {type(exc).__name__}", retry_after_s=TRANSIENT_RETRY_S)
    return AzureServiceError(f"{what}: {type(exc).__name__}: {exc.message}")


@contextmanager
def azure_errors(what: str) -> Iterator[None]:
    """Translate SDK errors raised inside the block, chaining the original as ``__cause__``."""
    try:
        yield
    except AzureError as exc:
        raise translate(exc, what) from exc


__all__ = ["AzureServiceError", "azure_errors", "error_code", "translate"]
