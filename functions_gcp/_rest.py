"""Google REST calls for the Secret Manager store and the GCP driver: one request helper.

Both speak the documented REST APIs through google-auth's ``AuthorizedSession`` (a
``requests.Session`` that adds and refreshes the bearer token): cheap to import, no gRPC, no
client library per API, and every endpoint can be pointed at a local fake (``endpoints``:
API name -> base URL standing for ``https://<api>.googleapis.com/``).

Errors leave as nclav's: what Google calls transient (429, 5xx, ``UNAVAILABLE``,
``ABORTED``...) or a dropped connection is a ``TemporaryError``; anything else is a
``GcpApiError`` (a ``PermanentError``: another attempt gets the same answer) carrying the HTTP
status, the status name and the first reason, with the text ``"{what}: {STATUS}: {message}"``.
A caller that expects an error status as an answer (404 on a read, 409 on a create) names it in
``expect`` and gets a ``Reply`` instead.

Long-running operations are looked at, never slept on: ``settle`` polls an unfinished one
once and otherwise raises ``WaitingError`` (the step goes back to the queue and is delivered
again later; its calls are idempotent, so the next attempt finds what this one started).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nclav.errors import ConfigurationError, PermanentError, TemporaryError, WaitingError, classify

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
CLOUD_BILLING = "https://www.googleapis.com/auth/cloud-billing"
TIMEOUT_S = 30.0
THROTTLED_RETRY_S = 30.0
TRANSIENT_RETRY_S = 10.0
OPERATION_RETRY_S = 15.0  # an unfinished operation: look again after this long
# Status names (REST ``error.status``; gRPC codes in operation errors) that a retry may fix.
TRANSIENT = frozenset(
    {"ABORTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "RESOURCE_EXHAUSTED", "CANCELLED"}
)
# The older envelope (Compute, DNS) says "slow down" with a 403 and one of these reasons.
RATE_LIMITED = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
_GRPC_NAMES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


class GcpApiError(PermanentError):
    """A Google API answer that another attempt would not change (access, validation...)."""

    def __init__(self, message: str, *, status: int, code: str, reason: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.reason = status, code, reason


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def error_of(status: int, body: Any, what: str) -> GcpApiError | TemporaryError:
    """The nclav error of an error answer (Google's envelope, or Compute's older one)."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = str(error.get("status") or "")
    errors = error.get("errors") if isinstance(error.get("errors"), list) else []
    reason = str(errors[0].get("reason", "")) if errors and isinstance(errors[0], dict) else ""
    message = str(error.get("message") or f"HTTP {status}")
    text = f"{what}: {code or reason or status}: {message}"
    throttled = status == 429 or code == "RESOURCE_EXHAUSTED" or reason in RATE_LIMITED
    if code in TRANSIENT or throttled or classify(status, code or reason) == "temporary":
        return TemporaryError(
            text + (" (throttled)" if throttled else ""),
            retry_after_s=THROTTLED_RETRY_S if throttled else TRANSIENT_RETRY_S,
        )
    return GcpApiError(text, status=status, code=code, reason=reason)


class Rest:
    """Requests to Google APIs through one (authorized) session."""

    def __init__(
        self,
        session: Any | None = None,
        endpoints: Mapping[str, str] | None = None,
        *,
        scopes: tuple[str, ...] = (CLOUD_PLATFORM,),
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self._session = session
        self.endpoints = dict(endpoints or {})
        self.scopes = scopes
        self.timeout_s = timeout_s

    @property
    def session(self) -> Any:
        # Made on first use, so importing a module (or a cold start) reaches no credentials.
        if self._session is None:
            import google.auth
            from google.auth.exceptions import DefaultCredentialsError
            from google.auth.transport.requests import AuthorizedSession

            try:
                credentials, _ = google.auth.default(scopes=list(self.scopes))
            except DefaultCredentialsError as exc:
                raise ConfigurationError(f"no Google credentials: {exc}") from exc
            self._session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
        return self._session

    def url(self, api: str, path: str) -> str:
        base = self.endpoints.get(api) or f"https://{api}.googleapis.com/"
        return base.rstrip("/") + "/" + path.lstrip("/")

    def call(
        self,
        http: str,
        api: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        expect: Collection[int] = (),
    ) -> Reply:
        """One request; 2xx and the ``expect`` statuses come back as a ``Reply``."""
        import requests

        try:
            response = self.session.request(
                http, self.url(api, path), params=params, json=body, timeout=self.timeout_s
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TemporaryError(f"{what}: {type(exc).__name__}: {exc}") from exc
        try:
            data = response.json() if response.content else {}
        except ValueError:
            data = {"error": {"message": response.text[:200]}}
        if 200 <= response.status_code < 300 or response.status_code in expect:
            return Reply(response.status_code, data if isinstance(data, dict) else {})
        raise error_of(response.status_code, data, what)

    def json(self, http: str, api: str, path: str, what: str, **kw: Any) -> dict[str, Any]:
        return self.call(http, api, path, what, **kw).body


def operation_error(op: Mapping[str, Any], what: str) -> GcpApiError | TemporaryError | None:
    """The error a finished operation ended with (``google.rpc.Status``, or Compute's
    ``error.errors[]``), as an nclav error; None when it succeeded."""
    error = op.get("error")
    if not error:
        return None
    if "errors" in error:  # Compute
        first = (error.get("errors") or [{}])[0]
        status = int(op.get("httpErrorStatusCode") or 400)
        body = {
            "error": {
                "message": first.get("message", ""),
                "errors": [{"reason": first.get("code", "")}],
            }
        }
        return error_of(status, body, what)
    code = _GRPC_NAMES.get(int(error.get("code") or 2), "UNKNOWN")
    text = f"{what}: {code}: {error.get('message', '')}"
    if code in TRANSIENT:
        return TemporaryError(text, retry_after_s=TRANSIENT_RETRY_S)
    return GcpApiError(text, status=0, code=code)


def settle(rest: Rest, api: str, op: dict[str, Any], what: str, poll_path: str) -> dict[str, Any]:
    """A long-running operation's result: at once if it is done, else after one more look.

    Not done then: ``WaitingError`` (the step comes back later and its idempotent calls find
    the operation's work). Failed: its error. Google operations: ``done`` and ``response``;
    Compute operations: ``status == "DONE"``, returned whole.
    """
    for attempt in range(2):
        compute = "status" in op  # Google operations omit ``done`` while it is false
        if op.get("status") == "DONE" if compute else op.get("done") is True:
            error = operation_error(op, what)
            if error is not None:
                raise error
            return op if compute else dict(op.get("response") or {})
        if attempt == 0:
            op = rest.json("GET", api, poll_path, f"{what} (operation {op.get('name')})")
    raise WaitingError(
        f"{what}: operation {op.get('name')} is still running; looking again in "
        f"{OPERATION_RETRY_S:.0f} s",
        retry_after_s=OPERATION_RETRY_S,
    )


__all__ = [
    "CLOUD_BILLING",
    "CLOUD_PLATFORM",
    "RATE_LIMITED",
    "GcpApiError",
    "Reply",
    "Rest",
    "error_of",
    "operation_error",
    "settle",
]
