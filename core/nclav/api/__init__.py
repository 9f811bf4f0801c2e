"""nclav's HTTP layer, free of any web framework and shared by every runtime.

* ``nclav.api.http``: ``ApiRequest``/``ApiResponse``, ``json_response``/``error_response`` and
  the ``HttpError`` statuses
* ``nclav.api.router``: ``Route``, ``Router`` (matching, auth, body limits, JSON bodies, error
  mapping); ``openapi`` (in ``nclav.api.openapi``) builds the OpenAPI 3.1 document from it
* ``nclav.api.auth``: ``TokenAuth`` and the token file
* ``nclav.api.server``: the local threaded server. It is not re-exported here: importing
  ``http.server`` costs tens of milliseconds that a cloud function's cold start should not pay.
"""

from __future__ import annotations

from nclav.api.auth import TokenAuth, TokenError, generate_token, load_or_create_token
from nclav.api.http import (
    ApiRequest,
    ApiResponse,
    Authenticator,
    AuthMode,
    BadRequest,
    Conflict,
    Forbidden,
    Headers,
    HttpError,
    LengthRequired,
    Locked,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UnprocessableEntity,
    error_response,
    json_response,
)
from nclav.api.router import DEFAULT_MAX_BODY, Handler, RequestBody, Route, Router, openapi

__all__ = [
    "DEFAULT_MAX_BODY",
    "ApiRequest",
    "ApiResponse",
    "AuthMode",
    "Authenticator",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "Handler",
    "Headers",
    "HttpError",
    "LengthRequired",
    "Locked",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RequestBody",
    "Route",
    "Router",
    "ServiceUnavailable",
    "TokenAuth",
    "TokenError",
    "Unauthorized",
    "UnprocessableEntity",
    "error_response",
    "generate_token",
    "json_response",
    "load_or_create_token",
    "openapi",
]
