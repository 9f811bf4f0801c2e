"""The HTTP API as a Lambda function: function URL (payload 2.0) and API Gateway HTTP API events.

The event becomes an ``ApiRequest`` for core's route table and the ``ApiResponse`` the
function's result; a body travels base64-encoded, both ways, unless it is UTF-8 text. Routing,
authentication, body limits and error mapping are the router's, the same for every runtime.
The request id is API Gateway's / Lambda's ``requestContext.requestId``, so the response's
``X-Request-Id``, the error body and the JSON log lines (correlation id) all carry it.

Python Lambda cannot stream a response (only the Node.js runtime streams natively), so a
request asking for server-sent events (``Accept: text/event-stream``) is answered with the
polling form of the same URL (offsets and ``X-Nclav-Next-Offset``), marked
``X-Nclav-Streaming: unsupported``; clients then poll. Never a 406: every client still works.

An API Gateway stage other than ``$default`` prefixes ``rawPath`` with ``/<stage>``; it is
removed. Lambda caps a synchronous payload at 6 MB each way, below the router's own limits
for bundles and Terraform states.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths

from functions_aws import bootstrap

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aws_lambda_powertools.utilities.typing import LambdaContext

    from nclav.api.http import ApiRequest, ApiResponse
    from nclav.api.router import Router

logger = Logger(service="nclav-api")

_TEXT_TYPES = ("application/json", "text/")


class BadEventError(ValueError):
    """The event is not an HTTP request of a function URL or an HTTP API."""


@logger.inject_lambda_context(correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    bootstrap.route_logs(logger)
    request_id = str((event.get("requestContext") or {}).get("requestId") or "")
    try:
        router = bootstrap.runtime().router
    except Exception:  # configuration: the log has it, the caller gets no details
        logger.exception("the runtime could not be built")
        return _error(500, "internal", "internal error", request_id)
    return respond(router, event)


def respond(router: Router, event: Mapping[str, Any]) -> dict[str, Any]:
    """The function's result for one HTTP event, answered by ``router``."""
    try:
        request = to_request(event)
    except BadEventError as exc:
        request_id = str((event.get("requestContext") or {}).get("requestId") or "")
        return _error(400, "bad_request", str(exc), request_id)
    streamed = _no_event_stream(request)
    result = to_result(router.dispatch(streamed))
    if streamed is not request:
        result["headers"]["X-Nclav-Streaming"] = "unsupported"
    return result


def _no_event_stream(request: ApiRequest) -> ApiRequest:
    """``request`` without ``text/event-stream`` in its Accept header (see the module doc)."""
    from dataclasses import replace

    from nclav.api.http import Headers

    accept = request.headers.get("accept", "")
    if "text/event-stream" not in accept.lower():
        return request
    kept = [p.strip() for p in accept.split(",") if "text/event-stream" not in p.lower()]
    kept = [p for p in kept if p]
    headers = {k: v for k, v in request.headers.items() if k != "accept"}
    headers["accept"] = ",".join(kept) or "*/*"
    return replace(request, headers=Headers(headers))


def to_request(event: Mapping[str, Any]) -> ApiRequest:
    from nclav.api.http import ApiRequest

    context = event.get("requestContext") or {}
    method = (context.get("http") or {}).get("method")
    raw_path = event.get("rawPath")
    if not isinstance(method, str) or not isinstance(raw_path, str):
        raise BadEventError("not an HTTP event (payload format 2.0)")
    path = _strip_stage(raw_path, context.get("stage"))
    query = event.get("rawQueryString") or ""
    headers = dict(event.get("headers") or {})
    if event.get("cookies"):
        headers["cookie"] = "; ".join(event["cookies"])
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadEventError("the body is not valid base64") from None
    else:
        data = body.encode("utf-8")
    return ApiRequest.build(
        method.upper(),
        f"{path}?{query}" if query else path,
        headers=headers,
        body=data,
        request_id=context.get("requestId") or None,
    )


def to_result(response: ApiResponse) -> dict[str, Any]:
    from nclav.api.http import StreamingResponse, error_response

    if isinstance(response, StreamingResponse):  # cannot happen: see _no_event_stream
        close = getattr(response.stream, "close", None)
        if callable(close):
            close()
        message = "this runtime cannot stream; poll without Accept: text/event-stream"
        response = error_response(406, "not_acceptable", message, "")
    result: dict[str, Any] = {"statusCode": response.status, "headers": dict(response.headers)}
    content_type = response.headers.get("Content-Type", "")
    if not response.body:
        return {**result, "body": "", "isBase64Encoded": False}
    if content_type.startswith(_TEXT_TYPES):
        try:
            return {**result, "body": response.body.decode("utf-8"), "isBase64Encoded": False}
        except UnicodeDecodeError:
            pass
    return {
        **result,
        "body": base64.b64encode(response.body).decode("ascii"),
        "isBase64Encoded": True,
    }


def _strip_stage(path: str, stage: object) -> str:
    if isinstance(stage, str) and stage and stage != "$default":
        prefix = f"/{stage}"
        if path == prefix:
            return "/"
        if path.startswith(prefix + "/"):
            return path[len(prefix) :]
    return path


def _error(status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
    from nclav.api.http import REQUEST_ID_HEADER, error_response

    response = error_response(status, code, message, request_id)
    return to_result(response) | {"headers": {**response.headers, REQUEST_ID_HEADER: request_id}}


__all__ = ["BadEventError", "handler", "respond", "to_request", "to_result"]
