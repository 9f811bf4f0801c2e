"""The HTTP API as a Lambda function: function URL (payload 2.0) and API Gateway HTTP API events.

The event becomes an ``ApiRequest`` for core's route table and the ``ApiResponse`` the
function's result; a body travels base64-encoded, both ways, unless it is UTF-8 text. The rest
is core's (``nclav.runtime.handlers.answer``): a bad event answers 400, ``/health`` 200 without
building the runtime, a runtime that cannot be built 500; routing, authentication, body limits
and error mapping are the router's, the same for every runtime.
The request id is API Gateway's / Lambda's ``requestContext.requestId``, so the response's
``X-Request-Id``, the error body and the JSON log lines (correlation id) all carry it.

Python Lambda cannot stream a response (only the Node.js runtime streams natively), so a
request asking for server-sent events gets the polling form of the same URL (core's
``answer(streams=False)``); ``?wait=`` is capped by the invocation's time left.

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
from nclav.runtime.handlers import BadEventError, answer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from aws_lambda_powertools.utilities.typing import LambdaContext

    from nclav.api.http import ApiRequest, ApiResponse
    from nclav.api.router import Router

logger = Logger(service="nclav-api")

_TEXT_TYPES = ("application/json", "text/")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    bootstrap.route_logs(logger)

    def time_left_s() -> float:
        return float(context.get_remaining_time_in_millis()) / 1000

    return _answer(event, lambda: bootstrap.runtime().router, time_left_s)


def respond(router: Router, event: Mapping[str, Any]) -> dict[str, Any]:
    """The function's result for one HTTP event, answered by ``router``."""
    return _answer(event, lambda: router)


def _answer(
    event: Mapping[str, Any],
    router: Callable[[], Router],
    time_left_s: Callable[[], float] | None = None,
) -> dict[str, Any]:
    request_id = str((event.get("requestContext") or {}).get("requestId") or "")
    return answer(
        event,
        request_id=request_id,
        to_request=to_request,
        to_result=to_result,
        router=router,
        streams=False,  # Python Lambda cannot stream: the polling form (see the module doc)
        time_left_s=time_left_s,
    )


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

    if isinstance(response, StreamingResponse):  # cannot happen: answer(streams=False)
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


__all__ = ["BadEventError", "handler", "respond", "to_request", "to_result"]
