"""SDK errors of the GCP adapters, translated to nclav's errors in one place.

The adapters (Firestore store, GCS blobs, ...) wrap every Google call in ``gcp_errors(what)``,
so no ``google.api_core`` exception escapes them::

    GoogleAPICallError / RetryError / network errors
    ├── NOT_FOUND (404)                                      -> NotFoundError
    ├── ALREADY_EXISTS (409), a failed precondition (412)    -> ConflictError
    ├── ABORTED (409: transaction contention)                -> TemporaryError
    ├── RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED,
    │   INTERNAL, 5xx, timeouts, dropped connections         -> TemporaryError
    └── anything else (permission, invalid argument, ...)    -> GcpServiceError

Firestore answers a lost ``last_update_time`` / ``exists`` precondition with
``FAILED_PRECONDITION`` (gRPC 9, HTTP 400) and a lost ``create()`` with ``ALREADY_EXISTS``:
both are lost compare-and-swaps, so both are conflicts here. The rest is core's ``classify``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from google.api_core import exceptions as gexc

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
# google.api_core's gRPC status names (``exc.grpc_status_code.name``) and the REST reasons.
KNOWN: dict[str, ErrorKind] = {
    "NOT_FOUND": "not_found",
    "ALREADY_EXISTS": "conflict",
    "FAILED_PRECONDITION": "conflict",
    "conditionNotMet": "conflict",  # GCS: if_generation_match lost (412)
    "ABORTED": "temporary",  # Firestore: transaction contention, try again
    "RESOURCE_EXHAUSTED": "temporary",
    "UNAVAILABLE": "temporary",
    "DEADLINE_EXCEEDED": "temporary",
    "INTERNAL": "temporary",
    "CANCELLED": "temporary",
}
THROTTLING = frozenset({"RESOURCE_EXHAUSTED", "rateLimitExceeded"})


class GcpServiceError(ServiceError):
    """A Google API error that is neither missing, conflicting nor transient."""


def error_code(exc: gexc.GoogleAPICallError) -> str:
    """The gRPC status name when there is one, else the first REST ``reason``."""
    grpc_code = exc.grpc_status_code
    if grpc_code is not None:
        return str(grpc_code.name)
    return str(exc.reason or "")


def translate(exc: Exception, what: str) -> NclavError:
    """The nclav error for a Google SDK error raised while doing ``what``."""
    if isinstance(exc, gexc.GoogleAPICallError):
        code, status = error_code(exc), int(exc.code or 0)
        text = f"{what}: {code or status}: {exc.message}"
        kind = classify(status, code, KNOWN)
        if kind == "not_found":
            return NotFoundError(text)
        if kind == "conflict":
            return ConflictError(text)
        if kind == "temporary" and (code in THROTTLING or status == 429):
            return TemporaryError(f"{text} (throttled)", retry_after_s=THROTTLED_RETRY_S)
        if kind == "temporary":
            return TemporaryError(text, retry_after_s=TRANSIENT_RETRY_S)
        return GcpServiceError(text, code=code, status=status)
    if isinstance(exc, (gexc.RetryError, ConnectionError, TimeoutError)):
        return TemporaryError(f"{what}: {exc}", retry_after_s=TRANSIENT_RETRY_S)
    return GcpServiceError(f"{what}: {type(exc).__name__}: {exc}")


@contextmanager
def gcp_errors(what: str) -> Iterator[None]:
    """Translate SDK errors raised inside the block, chaining the original as ``__cause__``."""
    try:
        yield
    except (gexc.GoogleAPIError, ConnectionError, TimeoutError) as exc:
        raise translate(exc, what) from exc


__all__ = ["GcpServiceError", "error_code", "gcp_errors", "translate"]
