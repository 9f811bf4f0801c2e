"""The GCP entry points, for functions-framework (``--source functions_gcp/main.py``).

Four HTTP targets, each its own Cloud Run service (``--target``):

* ``api``: the HTTP API; every path goes to core's route table (``nclav.runtime.handlers``:
  a bad request 400, ``/health`` without building the runtime, a runtime that cannot be
  built 500 with the request id). Server-sent events stream (Cloud Run streams a chunked
  response). A body over Cloud Run's 32 MiB request limit is answered 413 here as Cloud Run
  does in front of it; ``POST /bundles/uploads`` (signed GCS uploads) takes bigger bundles.
* ``worker``: the steps queue's HTTP target (Cloud Tasks POSTs each task here); the
  ``X-CloudTasks-*`` headers and core's delivery policy make the answer
  (``functions_gcp.delivery``).
* ``iac_worker``: the same for the terraform queue, on a service whose image has terraform
  (functions_gcp/Dockerfile). Terraform runs within the task's dispatch deadline
  (``NCLAV_IAC_DEADLINE_S``, 1800 s): core's sandbox time limit, counted from the request's
  arrival. The engine renews the step's lease while terraform runs (core's heartbeat).
* ``schedule``: Cloud Scheduler's HTTP target (every minute): the sweep, the git source's
  poll and the drift checks that are due.

No Flask import here: functions-framework calls a target with its ``flask.Request`` and takes
a ``werkzeug`` response back (imported when the first request comes, the framework has it).
"""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from functions_gcp import bootstrap

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nclav.api.http import ApiRequest, ApiResponse
    from nclav.api.router import Router

MAX_REQUEST_BYTES = 32 * 1024 * 1024  # Cloud Run's request limit (HTTP/1)
API_TIMEOUT_S = 3600.0  # the API service's request timeout (infra/gcp sets Cloud Run's to it)
TRACE_HEADER = "X-Cloud-Trace-Context"  # TRACE_ID/SPAN_ID;o=1


def api(request: Any) -> Any:
    """The HTTP API (target ``api``)."""
    from nclav.runtime.handlers import answer, error_result

    bootstrap.route_logs()
    request_id = _request_id(request)
    if (request.content_length or 0) > MAX_REQUEST_BYTES:
        text = f"the request body is over {MAX_REQUEST_BYTES} bytes; upload bundles with "
        text += "POST /bundles/uploads"
        return to_result(error_result(413, "payload_too_large", text, request_id))
    started = time.monotonic()
    try:
        timeout_s = _api_timeout_s()
    except ValueError as exc:  # the deployment's mistake: 500 as any configuration error
        error = exc

        def unbuildable() -> Router:
            raise error

        return answer(
            request,
            request_id=request_id,
            to_request=lambda raw: to_request(raw, request_id),
            to_result=to_result,
            router=unbuildable,  # /health still answers: liveness is not configuration
        )
    return answer(
        request,
        request_id=request_id,
        to_request=lambda raw: to_request(raw, request_id),
        to_result=to_result,
        router=lambda: bootstrap.runtime().router,
        time_left_s=lambda: timeout_s - (time.monotonic() - started),
    )


def _api_timeout_s() -> float:
    """The API service's request timeout (``NCLAV_API_TIMEOUT_S``, Cloud Run's up to 3600 s):
    a ``?wait=`` is cut to it, so Cloud Run never cuts a waiting request off with a 504. Read
    from the environment, not the settings: ``/health`` builds nothing."""
    raw = os.environ.get("NCLAV_API_TIMEOUT_S", "").strip()
    if not raw:
        return API_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(f"NCLAV_API_TIMEOUT_S: expected a number of seconds > 0, got {raw!r}")
    return value


def worker(request: Any) -> Any:
    """A step task from the steps queue (target ``worker``)."""
    return _task(request, iac=False)


def iac_worker(request: Any) -> Any:
    """A terraform step task from the IaC queue (target ``iac_worker``)."""
    return _task(request, iac=True)


def schedule(request: Any) -> Any:
    """Cloud Scheduler's call (target ``schedule``): sweep, git poll, drift checks."""
    from nclav.runtime.schedule import scheduled_tick

    bootstrap.route_logs()
    tick = scheduled_tick(bootstrap.runtime().composition)
    return _json(200, {"resent": tick.resent, "drift_checks": tick.drift_checks})


def _task(request: Any, *, iac: bool) -> Any:
    from functions_gcp.delivery import deliver
    from functions_gcp.tasks_queue import Received

    started = time.monotonic()
    bootstrap.route_logs()
    try:
        received = Received.from_headers(dict(request.headers.items()), request.get_data())
    except ValueError as exc:  # not Cloud Tasks: no retry can fix it
        return _json(400, {"error": {"code": "bad_request", "message": str(exc)}})
    runtime = bootstrap.runtime()
    s = runtime.settings
    deadline = started + (s.iac_deadline_s if iac else s.worker_deadline_s)

    def time_left_s() -> float:
        return deadline - time.monotonic()

    queue = runtime.queues.iac if iac else runtime.queues.steps
    with _in_flight(deadline):
        # The drivers' limit is the process's: the earliest deadline of the requests in it.
        runtime.set_time_left(_earliest_time_left)
        if iac:  # terraform's limit is this request's (core's, per thread)
            with runtime.iac.time_limited(time_left_s):
                found = deliver(runtime.engine, queue, received, runtime.policy)
        else:
            found = deliver(runtime.engine, queue, received, runtime.policy)
    return _json(found.status, found.json())


_deadlines: dict[int, float] = {}  # in-flight task requests: id -> monotonic deadline
_deadlines_lock = threading.Lock()


@contextmanager
def _in_flight(deadline: float) -> Iterator[None]:
    key = threading.get_ident()
    with _deadlines_lock:
        _deadlines[key] = deadline
    try:
        yield
    finally:
        with _deadlines_lock:
            _deadlines.pop(key, None)


def _earliest_time_left() -> float | None:
    """Seconds until the earliest dispatch deadline of the task requests in this instance
    (Cloud Run sends one instance many at once); None when none is in flight."""
    with _deadlines_lock:
        earliest = min(_deadlines.values(), default=None)
    return None if earliest is None else earliest - time.monotonic()


def _request_id(request: Any) -> str:
    from nclav.api.http import new_request_id

    trace = str(request.headers.get(TRACE_HEADER) or "").split("/", 1)[0].strip()
    return trace if trace.isalnum() and len(trace) <= 64 else new_request_id()


def to_request(request: Any, request_id: str) -> ApiRequest:
    """A functions-framework (Flask) request as core's ``ApiRequest``."""
    from nclav.api.http import ApiRequest
    from nclav.runtime.handlers import BadEventError

    method = getattr(request, "method", None)
    if not isinstance(method, str):
        raise BadEventError("not an HTTP request")
    query = request.query_string.decode("latin-1")
    path = request.path or "/"
    return ApiRequest.build(
        method.upper(),
        f"{path}?{query}" if query else path,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=request.get_data(cache=False),
        request_id=request_id,
    )


def to_result(response: ApiResponse) -> Any:
    """Core's ``ApiResponse`` as a werkzeug response; a ``StreamingResponse`` streams."""
    from werkzeug.wrappers import Response

    from nclav.api.http import StreamingResponse

    if isinstance(response, StreamingResponse):
        return Response(
            response.stream,
            status=response.status,
            headers=response.headers,
            direct_passthrough=True,
        )
    return Response(response.body, status=response.status, headers=response.headers)


def _json(status: int, body: Any) -> Any:
    from werkzeug.wrappers import Response

    return Response(json.dumps(body), status=status, content_type="application/json")


__all__ = ["api", "iac_worker", "schedule", "to_request", "to_result", "worker"]
