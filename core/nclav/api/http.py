"""Framework-free request and response records, shared by every runtime.

A runtime (the local threaded server now; the Lambda, Cloud Functions and Azure Functions
entrypoints later) translates its own request object into an ``ApiRequest``, hands it to
``Router.dispatch`` and translates the returned ``ApiResponse`` back. Nothing here knows about
sockets or a cloud SDK.

Every error body has one shape, whoever produced it::

    {"error": {"code": "not_found", "message": "...", "request_id": "...", "details": [...]}}

``details`` is present only when there is something to list (the issues behind a 422).

Exceptions that carry an HTTP status (after powertools' ``ServiceError``)::

    NclavError
    └── HttpError(status, code, message, details)
        ├── BadRequest 400         ├── Conflict 409          ├── UnprocessableEntity 422
        ├── Unauthorized 401       ├── LengthRequired 411    ├── Locked 423
        ├── Forbidden 403          ├── PayloadTooLarge 413   └── ServiceUnavailable 503
        ├── NotFound 404
        └── MethodNotAllowed 405 (sets the Allow header)
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import ClassVar, Literal, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel

from nclav.errors import NclavError

JSON_CONTENT_TYPE = "application/json"
REQUEST_ID_HEADER = "X-Request-Id"

# "none" is for /health and /ready only; "bearer_or_basic" is for Terraform's HTTP state
# backend, which can only send Basic credentials.
AuthMode = Literal["bearer", "bearer_or_basic", "none"]

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Header values travel verbatim onto the wire: CR or LF would let a value split the response.
_BAD_HEADER_VALUE = re.compile(r"[\r\n\x00]")
# Never echoed by repr(): a request logged or shown in a test failure must not leak the token.
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def new_request_id() -> str:
    return uuid.uuid4().hex


class Headers(Mapping[str, str]):
    """Request headers, looked up case-insensitively; names are kept lower-cased.

    A repeated header is joined with ", " (RFC 9110 section 5.3), so a doubled Authorization or
    Content-Length header never passes for a single valid one.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        merged: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        self._items = merged

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        shown = {k: ("<redacted>" if k in _SECRET_HEADERS else v) for k, v in self._items.items()}
        return f"Headers({shown!r})"


def split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """Split a request target into its still percent-encoded path and its parsed query.

    The path stays encoded so the router can split it on "/" before decoding each segment
    (an encoded "%2F" must not become a separator).
    """
    path, _, query = target.partition("#")[0].partition("?")
    if "://" in path:  # absolute-form, e.g. through a proxy
        try:
            parts = urlsplit(target)
        except ValueError:  # e.g. a broken IPv6 host: leave it whole, it will match nothing
            pass
        else:
            path, query = parts.path, parts.query
    return path or "/", parse_qs(query, keep_blank_values=True)


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One HTTP request, as every runtime hands it to the router.

    ``path`` is percent-encoded as it arrived (see ``split_target``); ``query`` maps each name
    to all its values; ``headers`` is coerced to case-insensitive ``Headers``.
    """

    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=Headers)
    body: bytes = field(default=b"", repr=False)
    request_id: str = field(default_factory=new_request_id)
    # Seconds the runtime lets this request run (an AWS Lambda invocation's remaining time);
    # None: no limit. ``?wait=`` is capped by it (nclav.api.routes).
    time_left_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            object.__setattr__(self, "headers", Headers(self.headers))

    @classmethod
    def build(
        cls,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        request_id: str | None = None,
    ) -> ApiRequest:
        """A request from a method and a raw target such as ``/events?limit=5``."""
        path, query = split_target(target)
        return cls(method, path, query, Headers(headers), body, request_id or new_request_id())

    def query_value(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None when it is absent."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """What a handler returns; each runtime writes it out and adds Content-Length itself."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"HTTP status out of range: {self.status}")
        for name, value in self.headers.items():
            if not _HEADER_NAME.fullmatch(name) or _BAD_HEADER_VALUE.search(value):
                raise ValueError(f"invalid response header {name!r}")
            if not value.isascii():
                # A header goes out as Latin-1; a file name in one must not break the answer.
                self.headers[name] = value.encode("ascii", "backslashreplace").decode("ascii")


@dataclass(frozen=True, slots=True)
class StreamingResponse(ApiResponse):
    """A response whose body is produced while it is sent (server-sent events).

    ``stream`` yields the body's pieces; the server writes and flushes each one as it comes
    and closes the iterator when the client goes away. ``body`` stays empty. A runtime that
    cannot stream (AWS Lambda's Python runtime) never gets one: its router is built with
    ``streaming=False`` and the routes answer their polling form instead.
    """

    stream: Iterator[bytes] = field(default_factory=lambda: iter(()), repr=False)


def printable(text: str) -> str:
    """``text`` made encodable as UTF-8: the undecodable bytes of a file name (which Python
    holds as lone surrogates) become ``\\xff`` escapes, so an error can still name the file."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name produces: escape it as it is
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _printable_json(doc: object) -> object:
    if isinstance(doc, str):
        return printable(doc)
    if isinstance(doc, Mapping):
        return {printable(str(k)): _printable_json(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [_printable_json(v) for v in doc]
    return doc


def dump_json(doc: object) -> bytes:
    """Canonical JSON bytes: sorted keys, compact, UTF-8, and no NaN (which is not JSON).

    Strings that cannot be UTF-8 (a non-UTF-8 file name in an error) are escaped, never an
    exception: an error response must always be writable."""
    if isinstance(doc, BaseModel):
        doc = doc.model_dump(mode="json")
    text = json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return dump_json(_printable_json(doc))


def json_response(
    status: int, doc: object, headers: Mapping[str, str] | None = None
) -> ApiResponse:
    """A JSON response; ``doc`` is any JSON-able value or a pydantic model."""
    return ApiResponse(
        status, dump_json(doc), {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})}
    )


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    details: Sequence[Mapping[str, object]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ApiResponse:
    """The one error shape: ``{"error": {"code", "message", "request_id"[, "details"]}}``."""
    error: dict[str, object] = {"code": code, "message": message, "request_id": request_id}
    if details:
        error["details"] = [dict(d) for d in details]
    return json_response(status, {"error": error}, headers)


def status_code_name(status: int) -> str:
    """A snake_case error code for any status, e.g. 414 -> ``uri_too_long``."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "error"
    return re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")


class HttpError(NclavError):
    """An error a handler raises to answer with a given status; the router renders it."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Sequence[Mapping[str, object]] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details or [])
        self.headers = dict(headers or {})

    def to_response(self, request_id: str) -> ApiResponse:
        return error_response(
            self.status, self.code, self.message, request_id, self.details, self.headers
        )


class _StatusError(HttpError):
    """An ``HttpError`` whose status and code are fixed by its class."""

    STATUS: ClassVar[int] = 500
    CODE: ClassVar[str] = "internal"
    DEFAULT_MESSAGE: ClassVar[str] = "internal error"

    def __init__(
        self,
        message: str | None = None,
        details: Sequence[Mapping[str, object]] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            self.STATUS, self.CODE, message or self.DEFAULT_MESSAGE, details, headers=headers
        )


class BadRequest(_StatusError):
    STATUS, CODE, DEFAULT_MESSAGE = 400, "bad_request", "bad request"


class Unauthorized(_StatusError):
    STATUS, CODE, DEFAULT_MESSAGE = 401, "unauthorized", "missing or invalid credentials"


class Forbidden(_StatusError):
    STATUS, CODE, DEFAULT_MESSAGE = 403, "forbidden", "forbidden"


class NotFound(_StatusError):
    STATUS, CODE, DEFAULT_MESSAGE = 404, "not_found", "not found"


class MethodNotAllowed(_StatusError):
    STATUS, CODE, DEFAULT_MESSAGE = 405, "method_not_allowed", "method not allowed"

    def __init__(self, message: str | None = None, *, allow: Iterable[str] = ()) -> None:
        super().__init__(message, headers={"Allow": ", ".join(sorted(set(allow)))})


class Conflict(_StatusError):
    STATUS, CODE, DEFAULT_MESSAGE = 409, "conflict", "conflict"


class LengthRequired(_StatusError):
    STATUS, CODE, DEFAULT_MESSAGE = 411, "length_required", "Content-Length required"


class PayloadTooLarge(_StatusError):
    STATUS, CODE, DEFAULT_MESSAGE = 413, "payload_too_large", "request body too large"


class UnprocessableEntity(_StatusError):
    STATUS, CODE, DEFAULT_MESSAGE = 422, "validation_error", "invalid request"


class Locked(_StatusError):
    STATUS, CODE, DEFAULT_MESSAGE = 423, "locked", "locked"


class ServiceUnavailable(_StatusError):
    STATUS, CODE, DEFAULT_MESSAGE = 503, "unavailable", "service unavailable"


# -- query parameters: the one parser every route uses ------------------------------------

_UINT = re.compile(r"[0-9]{1,18}")  # ASCII digits only: "²".isdigit() is True, int() refuses it
_NUMBER = re.compile(r"[0-9]{1,18}(\.[0-9]{1,9})?")
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})
_C = TypeVar("_C", bound=str)


def _query_error(name: str, expected: str, raw: str) -> BadRequest:
    return BadRequest(
        f"query parameter {name}: expected {expected}, got {printable(repr(raw)[:80])}",
        [{"path": "query", "line": None, "field": name, "message": f"expected {expected}"}],
    )


def query_int(
    request: ApiRequest, name: str, *, default: int, minimum: int = 0, maximum: int
) -> int:
    """``?name=`` as an integer of ASCII digits within ``minimum..maximum`` (400 otherwise)."""
    raw = request.query_value(name)
    if raw is None or raw == "":
        return default
    expected = f"an integer from {minimum} to {maximum}"
    if not _UINT.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise _query_error(name, expected, raw)
    return int(raw)


def query_number(request: ApiRequest, name: str, *, default: float, maximum: float) -> float:
    """``?name=`` as a non-negative decimal number up to ``maximum`` (no exponent, NaN, inf)."""
    raw = request.query_value(name)
    if raw is None or raw == "":
        return default
    if not _NUMBER.fullmatch(raw) or float(raw) > maximum:
        raise _query_error(name, f"a number from 0 to {maximum:g}", raw)
    return float(raw)


def query_bool(request: ApiRequest, name: str, *, default: bool = False) -> bool:
    """``?name=true|false`` (also 1/0, yes/no); a bare ``?name`` is false, as it is empty."""
    raw = request.query_value(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise _query_error(name, "true or false", raw)


def query_choice(
    request: ApiRequest, name: str, choices: Sequence[_C], *, default: _C | None = None
) -> _C | None:
    """``?name=`` as one of ``choices`` (an enum's values), or ``default`` when absent."""
    raw = request.query_value(name)
    if raw is None or raw == "":
        return default
    for choice in choices:
        if raw == choice:
            return choice
    raise _query_error(name, "one of " + ", ".join(choices), raw)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def query_text(request: ApiRequest, name: str, *, max_length: int = 256) -> str | None:
    """``?name=`` as free text of at most ``max_length`` characters with no control
    characters (a lock ID, say), or None when absent."""
    raw = request.query_value(name)
    if raw is None:
        return None
    if len(raw) > max_length or _CONTROL.search(raw):
        raise _query_error(name, f"text of at most {max_length} printable characters", raw)
    return raw


def query_id(request: ApiRequest, name: str, check: re.Pattern[str]) -> str | None:
    """``?name=`` as an id matching ``check`` in full, or None when absent."""
    raw = request.query_value(name)
    if raw is None or raw == "":
        return None
    if not check.fullmatch(raw):
        raise _query_error(name, f"an id matching {check.pattern}", raw)
    return raw


class Authenticator(Protocol):
    """Checks a request's credentials for a route's auth mode; raises ``Unauthorized``."""

    def authenticate(self, request: ApiRequest, mode: AuthMode) -> None: ...


__all__ = [
    "JSON_CONTENT_TYPE",
    "REQUEST_ID_HEADER",
    "ApiRequest",
    "ApiResponse",
    "AuthMode",
    "Authenticator",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "Headers",
    "HttpError",
    "LengthRequired",
    "Locked",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "ServiceUnavailable",
    "StreamingResponse",
    "Unauthorized",
    "UnprocessableEntity",
    "dump_json",
    "error_response",
    "json_response",
    "new_request_id",
    "printable",
    "query_bool",
    "query_choice",
    "query_id",
    "query_int",
    "query_number",
    "query_text",
    "split_target",
    "status_code_name",
]
