"""nclav's own exception tree.

Every error the core raises is an ``NclavError``; SDK and library exceptions are translated at
the edge that called them and chained as ``__cause__``::

    NclavError
    ├── SpecError            user input is wrong (YAML, graph, request body); carries Issues
    ├── NotFoundError        an enclave, partition, run or blob that does not exist
    ├── ConflictError        a conditional write lost (generation, lease, lock)
    ├── ConfigurationError   the runtime's settings cannot make a runtime (env, flags)
    ├── ServiceError         a cloud service refused a call (status, code): access,
    │                        validation; the SDK translators' base, see ``classify``
    └── ReconcileError       carrying out a step failed
        ├── TemporaryError   worth retrying later (retry_after_s)
        │   └── WaitingError not ready yet (a quota, a slow outside process): waits
        │                    without using up an attempt
        └── PermanentError   retrying will not help; record and move on

A ``SpecError`` holds every problem found in one pass, so a user fixes them all at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in user input: where it is and what was expected."""

    path: str
    line: int | None
    field: str
    message: str

    def render(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "field": self.field, "message": self.message}


class NclavError(Exception):
    """Root of every error nclav raises on purpose."""


class SpecError(NclavError):
    """User input is invalid. ``issues`` lists every problem found."""

    def __init__(self, issues: list[Issue] | tuple[Issue, ...]) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues)
        if not self.issues:
            raise ValueError("SpecError needs at least one issue")
        super().__init__(self._summary())

    def _summary(self) -> str:
        if len(self.issues) == 1:
            return self.issues[0].render()
        lines = "\n".join(i.render() for i in self.issues)
        return f"{len(self.issues)} errors:\n{lines}"


class NotFoundError(NclavError):
    """The thing asked for does not exist."""


class ConflictError(NclavError):
    """A conditional write lost: someone else changed the record first."""


class ConfigurationError(NclavError):
    """The runtime's configuration (environment, flags) cannot make a runtime."""


class ServiceError(NclavError):
    """A cloud service answered a call with an error retrying will not fix.

    The SDK translators of every cloud raise it (or a subclass) for what ``classify`` calls
    permanent, carrying the HTTP ``status`` and the service's error ``code``.
    """

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


ErrorKind = Literal["temporary", "permanent", "conflict", "not_found"]

# Error codes whose meaning does not depend on the HTTP status a service sent them with
# (matched case-insensitively, without separators, so THROTTLED, Throttling, throttled match).
_TEMPORARY_WORDS = (
    "throttl",
    "toomanyrequests",
    "slowdown",
    "requestlimitexceeded",
    "throughputexceeded",
    "unavailable",
    "internalerror",
    "internalfailure",
    "internalservererror",
    "timeout",
    "resourceexhausted",
)


def classify(
    status: int, code: str = "", known: Mapping[str, ErrorKind] | None = None
) -> ErrorKind:
    """What a service error means to nclav, from its HTTP status and its error code.

    ``known`` maps a service's own codes to a kind and wins; then codes that say throttling
    or unavailability anywhere are temporary; then the status: 429, 408 and 5xx temporary,
    404 not found, 409 and 412 conflict, anything else permanent (access, validation).
    """
    if known and code in known:
        return known[code]
    folded = code.lower().replace("_", "").replace(".", "")
    if any(word in folded for word in _TEMPORARY_WORDS):
        return "temporary"
    if status in (408, 429) or status >= 500:
        return "temporary"
    if status == 404:
        return "not_found"
    if status in (409, 412):
        return "conflict"
    return "permanent"


class ReconcileError(NclavError):
    """Carrying out a step failed."""


class TemporaryError(ReconcileError):
    """A failure worth retrying after ``retry_after_s`` seconds."""

    def __init__(self, message: str, *, retry_after_s: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WaitingError(TemporaryError):
    """Not ready yet, through no fault of the step: retry after ``retry_after_s``, however often.

    Used where waiting is the expected path (e.g. an account-closure quota that frees up over
    days), so the step waits in the queue instead of failing after its attempts run out.
    """


class PermanentError(ReconcileError):
    """A failure that another attempt will not fix."""


__all__ = [
    "ConfigurationError",
    "ConflictError",
    "ErrorKind",
    "Issue",
    "NclavError",
    "NotFoundError",
    "PermanentError",
    "ReconcileError",
    "ServiceError",
    "SpecError",
    "TemporaryError",
    "WaitingError",
    "classify",
]
