"""The route table every runtime shares, and the one place errors become HTTP statuses.

``Router.dispatch`` takes an ``ApiRequest`` through a fixed order, so every runtime behaves the
same way:

1. match the path (404 for an unknown path, 405 with ``Allow`` for another method); this runs
   before authentication, as in the original server, and reveals nothing the OpenAPI
   document does not already publish;
2. authenticate, for every route not marked ``auth="none"``, before anything looks at the body;
3. refuse a body over the route's ``max_body`` (413) before parsing it;
4. parse and validate a JSON body for routes with a ``request_model`` (400 for bad JSON, 422 with
   one detail per offending field);
5. call the handler, and map what it raises: ``HttpError`` -> its status, ``SpecError`` -> 422,
   ``NotFoundError`` -> 404, ``ConflictError`` -> 409, ``TemporaryError`` -> 503 with
   Retry-After, anything else -> 500 whose traceback goes to the log only.

Paths match segment by segment. A literal segment beats a parameter, so
``/runs/latest`` wins over ``/runs/{run_id}``. Parameters are percent-decoded, and a parameter
is never empty, ``.``, ``..`` or contains a ``/``, so handlers can use one as a key safely.
With ``param_rules`` (the nclav table passes ``PARAM_RULES``), parameters naming an
enclave or a partition must also follow the YAML's id
rule in full (``nclav.model.Id``: no trailing newline, no spaces): 422 naming the parameter
otherwise, before any handler or store sees the value.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict, TypeVar, Unpack
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, ValidationError

from nclav.api.http import (
    REQUEST_ID_HEADER,
    ApiRequest,
    ApiResponse,
    Authenticator,
    AuthMode,
    BadRequest,
    HttpError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UnprocessableEntity,
    error_response,
)
from nclav.api.openapi import openapi  # re-exported: the document belongs to the table
from nclav.errors import ConflictError, Issue, NotFoundError, SpecError, TemporaryError
from nclav.model import Id

_log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1024 * 1024

# The body is typed Any so a handler can annotate its own model (``body: ReconcileBody``);
# a Callable taking ``BaseModel | None`` would reject such a handler under mypy.
Handler = Callable[[ApiRequest, dict[str, str], Any], ApiResponse]
_H = TypeVar("_H", bound=Handler)

_METHOD = re.compile(r"[A-Z]+")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Values a path parameter may never take: they would escape a key or path built from it.
_UNSAFE_PARAMS = frozenset({"", ".", ".."})


def _id_pattern() -> re.Pattern[str]:
    """The YAML's id rule, taken from ``nclav.model.Id`` so the two can never disagree.

    Used with ``fullmatch`` only: with ``re.match``, a ``$`` also matches before a final
    newline, so ``"advnl\\n"`` would pass."""
    for meta in getattr(Id, "__metadata__", ()):
        pattern = getattr(meta, "pattern", None)
        if isinstance(pattern, str):
            return re.compile(pattern.removeprefix("^").removesuffix("$"))
    raise RuntimeError("nclav.model.Id carries no pattern")


ID_PATTERN = _id_pattern()
# Path parameters that name an enclave or a partition, and what each is called in errors.
PARAM_RULES: dict[str, str] = {"id": "enclave", "enc": "enclave", "part": "partition"}


class RequestBody(BaseModel):
    """Base for request bodies: unknown fields and loose types are errors, not guesses.

    ``strict`` applies JSON-mode strictness: "5" is not an int and "true" is not a bool, while
    enums, UUIDs and datetimes are still read from their JSON strings.
    """

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


class RouteOptions(TypedDict, total=False):
    summary: str
    auth: AuthMode
    request_model: type[BaseModel] | None
    response_model: type[BaseModel] | None
    response_example: object
    status: int
    query: tuple[str, ...]
    max_body: int


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint. ``status``, ``query`` and the response fields only feed the OpenAPI
    document; ``max_body`` caps the request body in bytes (the server has its own hard cap)."""

    method: str
    pattern: str
    handler: Handler = field(repr=False)
    summary: str = ""
    auth: AuthMode = "bearer"
    request_model: type[BaseModel] | None = None
    response_model: type[BaseModel] | None = None
    response_example: object = None
    status: int = 200
    query: tuple[str, ...] = ()
    max_body: int = DEFAULT_MAX_BODY
    # Compiled pattern: (is_param, literal text or parameter name) per segment.
    segments: tuple[tuple[bool, str], ...] = field(init=False, repr=False, compare=False)
    # ``shape``, computed once: ``add_route`` compares it with every route of its length.
    _shape: tuple[str | None, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _METHOD.fullmatch(self.method):
            raise ValueError(f"route method must be upper-case letters: {self.method!r}")
        if self.auth not in ("bearer", "bearer_or_basic", "none"):
            raise ValueError(f"unknown auth mode {self.auth!r}")
        if self.max_body < 0:
            raise ValueError("max_body must not be negative")
        model = self.request_model
        if model is not None and model.model_config.get("extra") != "forbid":
            # Without it pydantic drops unknown fields silently and a typo goes unnoticed.
            raise ValueError(f"{model.__name__} must set extra='forbid' (subclass RequestBody)")
        object.__setattr__(self, "segments", _compile(self.pattern))
        shape = tuple(None if is_param else text for is_param, text in self.segments)
        object.__setattr__(self, "_shape", shape)

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(text for is_param, text in self.segments if is_param)

    @property
    def shape(self) -> tuple[str | None, ...]:
        """The pattern with parameter names erased: two routes with one shape are one path."""
        return self._shape

    def bind(self, segments: Sequence[str | None]) -> dict[str, str] | None:
        """The parameters if the decoded request segments match this route, else None."""
        params: dict[str, str] = {}
        for (is_param, text), value in zip(self.segments, segments, strict=True):
            if value is None:  # a segment that was not valid UTF-8 matches nothing
                return None
            if is_param:
                if value in _UNSAFE_PARAMS or "/" in value:
                    return None
                params[text] = value
            elif value != text:
                return None
        return params


def _compile(pattern: str) -> tuple[tuple[bool, str], ...]:
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern must start with '/': {pattern!r}")
    compiled: list[tuple[bool, str]] = []
    for segment in _split(pattern):
        param = _PARAM.fullmatch(segment)
        if param:
            if any(is_param and text == param[1] for is_param, text in compiled):
                raise ValueError(f"parameter {param[1]!r} repeated in {pattern!r}")
            compiled.append((True, param[1]))
        elif not segment or "{" in segment or "}" in segment:
            raise ValueError(f"bad segment {segment!r} in route pattern {pattern!r}")
        else:
            compiled.append((False, segment))
    return tuple(compiled)


def _split(path: str) -> list[str]:
    return [] if path == "/" else path[1:].split("/")


def _decode(segment: str) -> str | None:
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError:
        return None


class Router:
    """The route table. ``auth`` checks every protected route; without one those routes
    fail closed with a 500, so a wiring mistake never serves them unauthenticated."""

    def __init__(
        self, auth: Authenticator | None = None, *, param_rules: Mapping[str, str] | None = None
    ) -> None:
        self.auth = auth
        # Path parameter name -> what it names ("enclave"): such a value must be a valid id.
        self.param_rules = dict(param_rules or {})
        self._routes: list[Route] = []
        self._by_length: dict[int, list[Route]] = {}

    @property
    def routes(self) -> tuple[Route, ...]:
        return tuple(self._routes)

    def add(
        self, method: str, pattern: str, handler: Handler, **options: Unpack[RouteOptions]
    ) -> Route:
        return self.add_route(Route(method, pattern, handler, **options))

    def route(
        self, method: str, pattern: str, **options: Unpack[RouteOptions]
    ) -> Callable[[_H], _H]:
        """Decorator form of ``add``; the handler is returned unchanged."""

        def register(handler: _H) -> _H:
            self.add(method, pattern, handler, **options)
            return handler

        return register

    def add_route(self, route: Route) -> Route:
        for other in self._by_length.get(len(route.segments), ()):
            if other.shape != route.shape:
                continue
            if other.method == route.method:
                raise ValueError(f"{route.method} {route.pattern} duplicates {other.pattern}")
            if other.params != route.params:
                # One path must have one spelling, or the OpenAPI document lists it twice.
                raise ValueError(f"{route.pattern} names its parameters unlike {other.pattern}")
        self._routes.append(route)
        self._by_length.setdefault(len(route.segments), []).append(route)
        return route

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for ``method`` and the still-encoded ``path``, with decoded parameters.

        Raises ``NotFound`` or ``MethodNotAllowed``."""
        raw = _split(path) if path.startswith("/") else None
        segments = [_decode(s) for s in raw] if raw is not None else []
        candidates: list[tuple[Route, dict[str, str]]] = []
        for route in self._by_length.get(len(segments), ()) if raw is not None else ():
            params = route.bind(segments)
            if params is not None:
                candidates.append((route, params))
        if not candidates:
            raise NotFound("no route matches this path")
        same_method = [c for c in candidates if c[0].method == method]
        if not same_method:
            raise MethodNotAllowed(
                f"{method} is not allowed here", allow={r.method for r, _ in candidates}
            )
        # The most specific route wins: compare segment by segment, a literal before a parameter.
        return min(same_method, key=lambda c: [is_param for is_param, _ in c[0].segments])

    def preflight(self, request: ApiRequest, content_length: int) -> ApiResponse | None:
        """Steps 1-3 of ``dispatch`` before the body has been read, so a server can refuse
        an unknown route, bad credentials or an oversized body without reading it.

        Returns the error response, or None when the body should be read and dispatched."""
        try:
            self._resolve(request, content_length)
        except Exception as exc:
            return self._finish(self._error(exc, request), request)
        return None

    def dispatch(self, request: ApiRequest) -> ApiResponse:
        """Answer one request; never raises for anything the handler did."""
        try:
            route, params = self._resolve(request, len(request.body))
            body = _parse_body(route.request_model, request.body) if route.request_model else None
            response = route.handler(request, params, body)
            if not isinstance(response, ApiResponse):
                raise TypeError(f"handler for {route.pattern} returned {type(response).__name__}")
        except Exception as exc:
            response = self._error(exc, request)
        return self._finish(response, request)

    def _resolve(self, request: ApiRequest, content_length: int) -> tuple[Route, dict[str, str]]:
        route, params = self.match(request.method, request.path)
        for name, value in params.items():
            kind = self.param_rules.get(name)
            if kind is not None and not ID_PATTERN.fullmatch(value):
                message = (
                    f"not a valid {kind} id: {value!r}; an id is 1-63 letters, digits, '.', "
                    "'_' or '-', starting with a letter or digit"
                )
                raise UnprocessableEntity(message, [Issue("path", None, name, message).to_json()])
        if route.auth != "none":
            if self.auth is None:
                raise RuntimeError(f"no authenticator configured for {route.pattern}")
            self.auth.authenticate(request, route.auth)
        if content_length > route.max_body:
            raise PayloadTooLarge(
                f"request body is {content_length} bytes; "
                f"this endpoint accepts at most {route.max_body}"
            )
        return route, params

    def _error(self, exc: Exception, request: ApiRequest) -> ApiResponse:
        try:
            return self._error_response(exc, request)
        except Exception:  # an error that cannot be rendered must still be answered
            _log.exception(
                "cannot render the error of %s (request_id=%s)", request.method, request.request_id
            )
            return error_response(500, "internal", "internal error", request.request_id)

    def _error_response(self, exc: Exception, request: ApiRequest) -> ApiResponse:
        rid = request.request_id
        if isinstance(exc, HttpError):
            return exc.to_response(rid)
        if isinstance(exc, SpecError):
            issues = exc.issues
            message = issues[0].render() if len(issues) == 1 else f"{len(issues)} problems found"
            details = [issue.to_json() for issue in issues]
            return error_response(422, "validation_error", message, rid, details)
        if isinstance(exc, NotFoundError):
            return error_response(404, "not_found", str(exc), rid)
        if isinstance(exc, ConflictError):
            return error_response(409, "conflict", str(exc), rid)
        if isinstance(exc, TemporaryError):  # a store throttled or unreachable: ask again
            _log.warning("temporary error in %s %s: %s", request.method, request.path, exc)
            retry = str(max(math.ceil(exc.retry_after_s), 1))
            message = "temporarily unavailable, retry later"
            return error_response(503, "unavailable", message, rid, headers={"Retry-After": retry})
        # The traceback may name internals and data; it belongs in the log, never the body.
        _log.exception(
            "unhandled error in %s %s (request_id=%s)", request.method, request.path, rid
        )
        return error_response(500, "internal", "internal error", rid)

    @staticmethod
    def _finish(response: ApiResponse, request: ApiRequest) -> ApiResponse:
        if REQUEST_ID_HEADER in response.headers:
            return response
        headers = {**response.headers, REQUEST_ID_HEADER: request.request_id}
        return replace(response, headers=headers)  # keeps a StreamingResponse's stream


def _parse_body(model: type[BaseModel], body: bytes) -> BaseModel:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        invalid_json = [e for e in errors if e["type"] == "json_invalid"]
        if invalid_json:
            if not body.strip():
                raise BadRequest("a JSON request body is required") from None
            # pydantic's message carries the parser position: "... at line 1 column 12".
            reason = str(invalid_json[0].get("ctx", {}).get("error", invalid_json[0]["msg"]))
            raise BadRequest(f"request body is not valid JSON: {reason}") from None
        details = [
            Issue("body", None, _field_path(e["loc"]), _message(e["type"], e["msg"])).to_json()
            for e in errors
        ]
        raise UnprocessableEntity("the request body is invalid", details) from None


def _field_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's ``("a", "b", 0)`` as ``a.b[0]``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text = f"{text}.{part}" if text else part
    return text


_MESSAGES = {"missing": "required field is missing", "extra_forbidden": "unknown field"}


def _message(kind: str, msg: str) -> str:
    return _MESSAGES.get(kind, msg)


__all__ = [
    "DEFAULT_MAX_BODY",
    "ID_PATTERN",
    "PARAM_RULES",
    "Handler",
    "RequestBody",
    "Route",
    "RouteOptions",
    "Router",
    "openapi",
]
