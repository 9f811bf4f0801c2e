"""The plumbing every HTTP trigger shares, whatever the cloud's event looks like.

``answer`` turns one event into one result with the cloud's two translations (event ->
``ApiRequest``, ``ApiResponse`` -> result): an event that is not an HTTP request answers 400;
``/health`` answers 200 without building the runtime (liveness must not depend on the
configuration or the state store; ``/ready`` checks those); a runtime that cannot be built
answers 500 with the request id (the log has the cause, the caller gets no details); every
other request goes to the router.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from nclav.api.http import ApiRequest, ApiResponse
    from nclav.api.router import Router

logger = logging.getLogger(__name__)

_Event = TypeVar("_Event")
_Result = TypeVar("_Result")

HEALTH_PATH = "/health"


class BadEventError(ValueError):
    """The trigger's event is not an HTTP request this runtime understands."""


def error_result(status: int, code: str, message: str, request_id: str) -> ApiResponse:
    """The API's JSON error shape, with the request id in the body and the header."""
    from nclav.api.http import REQUEST_ID_HEADER, error_response

    response = error_response(status, code, message, request_id)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


def answer(
    event: _Event,
    *,
    request_id: str,
    to_request: Callable[[_Event], ApiRequest],
    to_result: Callable[[ApiResponse], _Result],
    router: Callable[[], Router],
) -> _Result:
    """The result for one HTTP event: 400, ``/health``, 500 or the router's answer."""
    try:
        request = to_request(event)
    except BadEventError as exc:
        return to_result(error_result(400, "bad_request", str(exc), request_id))
    if request.path == HEALTH_PATH and request.method in ("GET", "HEAD"):
        from nclav.api.http import REQUEST_ID_HEADER, json_response

        ok = json_response(200, {"status": "ok"}, {REQUEST_ID_HEADER: request.request_id})
        return to_result(ok)
    try:
        built = router()
    except Exception:  # configuration: the log has it, the caller gets no details
        logger.exception("the runtime could not be built")
        return to_result(error_result(500, "internal", "internal error", request.request_id))
    return to_result(built.dispatch(request))


__all__ = ["HEALTH_PATH", "BadEventError", "answer", "error_result"]
