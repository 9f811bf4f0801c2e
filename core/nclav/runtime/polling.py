"""Answering a request for a live stream on a runtime that cannot stream.

Some HTTP triggers return one whole response per invocation (AWS Lambda's Python runtime,
Azure Functions' ``HttpResponse``). A request asking for server-sent events
(``Accept: text/event-stream``) is then answered with the polling form of the same URL
(offsets and ``X-Nclav-Next-Offset``), marked ``X-Nclav-Streaming: unsupported`` so the client
polls instead: never a 406, every client still works. ``without_event_stream`` is the request
rewrite; the runtime adds the header to its result when ``asks_for_stream`` said so.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nclav.api.http import ApiRequest

STREAMING_HEADER = "X-Nclav-Streaming"
UNSUPPORTED = "unsupported"
EVENT_STREAM = "text/event-stream"


def asks_for_stream(accept: str) -> bool:
    return EVENT_STREAM in accept.lower()


def without_event_stream(request: ApiRequest) -> ApiRequest:
    """``request`` without ``text/event-stream`` in its Accept header."""
    from nclav.api.http import Headers

    accept = request.headers.get("accept", "")
    if not asks_for_stream(accept):
        return request
    kept = [p.strip() for p in accept.split(",") if not asks_for_stream(p)]
    headers = {k: v for k, v in request.headers.items() if k != "accept"}
    headers["accept"] = ",".join(p for p in kept if p) or "*/*"
    return replace(request, headers=Headers(headers))


__all__ = ["STREAMING_HEADER", "UNSUPPORTED", "asks_for_stream", "without_event_stream"]
