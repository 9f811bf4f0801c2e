"""The Azure function app (Python v2 programming model): every trigger of the Azure runtime.

* ``http_api``: every path (route ``{*path}``, host.json ``routePrefix: ""``) to core's router
  through ``nclav.runtime.handlers.answer``. The front end cuts a response at 230 s, so
  ``?wait=`` is held to what is left of that (less core's margin); the host refuses bodies
  above 100 MB, and so does this function (413) before reading one into a request.
  ``HttpResponse`` is one whole body, so a request for server-sent events gets the polling
  form (core's ``answer(streams=False)``). Authentication is nclav's bearer token, not function keys
  (``AuthLevel.ANONYMOUS``).
* ``steps_worker`` and ``iac_worker``: queue triggers on ``%NCLAV_STEPS_QUEUE%`` and
  ``%NCLAV_IAC_QUEUE%`` (the app settings that name them to ``Settings`` too), connection
  ``NCLAV_STORAGE`` (``NCLAV_STORAGE__accountName`` for the managed identity). Each message
  goes through ``functions_azure.delivery``; terraform is held to the execution's time left
  (``functions_iac``).
* ``sweeper``: a timer every minute: core's ``scheduled_tick`` (``Engine.sweep``, the git
  source's schedule, drift checks).

One package, two deployments (README.md, "The terraform worker"): the Flex Consumption app
runs the API, the steps worker and the sweeper (``AzureWebJobs.iac_worker.Disabled``); the
Container Apps app runs the image with terraform and only ``iac_worker``. Importing this module
builds no runtime (``bootstrap``); the Functions host imports it from the app root, where the
deployment copies it with host.json (functions_azure/Dockerfile).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import azure.functions as func

from functions_azure import bootstrap
from functions_azure.functions_iac import Execution

if TYPE_CHECKING:
    from collections.abc import Callable

    from nclav.api.http import ApiRequest, ApiResponse
    from nclav.api.router import Router
    from nclav.runtime.schedule import Tick

HTTP_CUT_S = 230.0  # the front end's (Azure Load Balancer's) response time limit
MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the host's request size limit
STEPS_QUEUE = "%NCLAV_STEPS_QUEUE%"
IAC_QUEUE = "%NCLAV_IAC_QUEUE%"
STORAGE_CONNECTION = "NCLAV_STORAGE"
SWEEP_SCHEDULE = "0 */1 * * * *"  # NCRONTAB, with seconds: every minute

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


# -- HTTP ----------------------------------------------------------------------------------------


@app.function_name("http_api")
@app.route(route="{*path}", methods=[m.value for m in func.HttpMethod])
def http_api(req: func.HttpRequest) -> func.HttpResponse:
    return respond(req, lambda: bootstrap.runtime().router)


def respond(
    req: func.HttpRequest, router: Callable[[], Router], started: Execution | None = None
) -> func.HttpResponse:
    """The function's answer to ``req``, by ``router`` (core's ``answer``)."""
    from nclav.api.http import new_request_id
    from nclav.runtime.handlers import answer, error_result

    execution = started or Execution(HTTP_CUT_S)
    request_id = new_request_id()  # the host's invocation id is not given to a v2 function
    if len(req.get_body() or b"") > MAX_REQUEST_BYTES:
        too_big = error_result(413, "payload_too_large", "the body is over 100 MB", request_id)
        return to_response(too_big)
    return answer(
        req,
        request_id=request_id,
        to_request=lambda raw: to_api_request(raw, request_id),
        to_result=to_response,
        router=router,
        streams=False,  # one whole HttpResponse: the polling form (see the module doc)
        time_left_s=execution.time_left_s,
    )


def to_api_request(req: func.HttpRequest, request_id: str | None = None) -> ApiRequest:
    from nclav.api.http import ApiRequest
    from nclav.runtime.handlers import BadEventError

    if not req.method or not req.url:
        raise BadEventError("not an HTTP request: no method or URL")
    url = urlsplit(req.url)
    target = f"{url.path or '/'}?{url.query}" if url.query else url.path or "/"
    return ApiRequest.build(
        req.method.upper(),
        target,
        headers=dict(req.headers),
        body=req.get_body() or b"",
        request_id=request_id,
    )


def to_response(response: ApiResponse) -> func.HttpResponse:
    from nclav.api.http import StreamingResponse, error_response

    if isinstance(response, StreamingResponse):  # cannot happen: answer(streams=False)
        close = getattr(response.stream, "close", None)
        if callable(close):
            close()
        message = "this runtime cannot stream; poll without Accept: text/event-stream"
        response = error_response(406, "not_acceptable", message, "")
    content_type = response.headers.get("Content-Type") or "application/octet-stream"
    return func.HttpResponse(
        response.body,
        status_code=response.status,
        headers=dict(response.headers),
        mimetype=content_type.split(";", 1)[0].strip(),
    )


# -- queues --------------------------------------------------------------------------------------


@app.function_name("steps_worker")
@app.queue_trigger(arg_name="msg", queue_name=STEPS_QUEUE, connection=STORAGE_CONNECTION)
def steps_worker(msg: func.QueueMessage) -> None:
    from functions_azure.delivery import deliver
    from functions_azure.host import check_policy

    execution = Execution.start()
    runtime = bootstrap.runtime()
    check_policy(runtime.settings)
    runtime.set_time_left(execution.time_left_s)
    deliver(runtime, runtime.queues.steps, msg)


@app.function_name("iac_worker")
@app.queue_trigger(arg_name="msg", queue_name=IAC_QUEUE, connection=STORAGE_CONNECTION)
def iac_worker(msg: func.QueueMessage) -> None:
    """Terraform steps and drift checks; held to the execution's time left."""
    from contextlib import nullcontext

    from functions_azure.delivery import deliver
    from functions_azure.host import check_policy

    execution = Execution.start()
    runtime = bootstrap.runtime()
    check_policy(runtime.settings)
    runtime.set_time_left(execution.time_left_s)

    def remaining_s() -> float:
        return execution.time_left_s() or 0.0

    limited = (
        nullcontext() if execution.timeout_s is None else runtime.iac.time_limited(remaining_s)
    )
    with limited:
        deliver(runtime, runtime.queues.iac, msg)


# -- the timer -----------------------------------------------------------------------------------


@app.function_name("sweeper")
@app.timer_trigger(arg_name="timer", schedule=SWEEP_SCHEDULE, use_monitor=False)
def sweeper(timer: func.TimerRequest) -> None:
    sweep()


def sweep() -> Tick:
    """One tick of the schedule: stuck steps sent again, the git source's poll, due drift
    checks (core's ``scheduled_tick``)."""
    from nclav.runtime.schedule import scheduled_tick

    return scheduled_tick(bootstrap.runtime().composition)


__all__ = ["app", "http_api", "iac_worker", "respond", "steps_worker", "sweep", "sweeper"]
