"""The plumbing every HTTP trigger shares, whatever the cloud's event looks like.

``answer`` turns one event into one result with the cloud's two translations (event ->
``ApiRequest``, ``ApiResponse`` -> result): an event that is not an HTTP request answers 400;
``/health`` answers 200 without building the runtime (liveness must not depend on the
configuration or the state store; ``/ready`` checks those); a runtime that cannot be built
answers 500 with the request id (the log has the cause, the caller gets no details); every
other request goes to the router.

A runtime that cannot stream a response (Python on Lambda) passes ``streams=False``: a request
asking for server-sent events (``Accept: text/event-stream``) gets the polling form of the
same URL (offsets and ``X-Nclav-Next-Offset``), marked ``X-Nclav-Streaming: unsupported``, so
clients poll. Never a 406: every client still works. ``time_left_s`` caps a ``?wait=`` by
what the invocation has left.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from nclav.api.http import ApiRequest, ApiResponse
    from nclav.api.router import Router

logger = logging.getLogger(__name__)

_Event = TypeVar("_Event")
_Result = TypeVar("_Result")

HEALTH_PATH = "/health"
EVENT_STREAM = "text/event-stream"
STREAMING_HEADER = "X-Nclav-Streaming"


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
    streams: bool = True,
    time_left_s: Callable[[], float | None] | None = None,
) -> _Result:
    """The result for one HTTP event: 400, ``/health``, 500 or the router's answer."""
    try:
        request = to_request(event)
    except BadEventError as exc:
        return to_result(error_result(400, "bad_request", str(exc), request_id))
    if time_left_s is not None:
        request = replace(request, time_left_s=time_left_s())
    if not streams and EVENT_STREAM in request.headers.get("accept", "").lower():
        response = _answer(without_event_stream(request), router)
        response.headers[STREAMING_HEADER] = "unsupported"
        return to_result(response)
    return to_result(_answer(request, router))


def _answer(request: ApiRequest, router: Callable[[], Router]) -> ApiResponse:
    if request.path == HEALTH_PATH and request.method in ("GET", "HEAD"):
        from nclav.api.http import REQUEST_ID_HEADER, json_response

        return json_response(200, {"status": "ok"}, {REQUEST_ID_HEADER: request.request_id})
    try:
        built = router()
    except Exception:  # configuration: the log has it, the caller gets no details
        logger.exception("the runtime could not be built")
        return error_result(500, "internal", "internal error", request.request_id)
    return built.dispatch(request)


def without_event_stream(request: ApiRequest) -> ApiRequest:
    """``request`` without ``text/event-stream`` in its Accept header."""
    from nclav.api.http import Headers

    kept = [p.strip() for p in request.headers.get("accept", "").split(",")]
    kept = [p for p in kept if p and EVENT_STREAM not in p.lower()]
    headers = {k: v for k, v in request.headers.items() if k != "accept"}
    return replace(request, headers=Headers({**headers, "accept": ",".join(kept) or "*/*"}))


__all__ = [
    "EVENT_STREAM",
    "HEALTH_PATH",
    "STREAMING_HEADER",
    "BadEventError",
    "answer",
    "error_result",
    "without_event_stream",
]
