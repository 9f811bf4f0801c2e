"""nclav's endpoints: one route table that every runtime serves.

Handlers parse nothing themselves (the router did), call the service or a store, and shape
JSON. Reconciles answer 202 with the run id, or wait for the end when ``?wait=seconds`` asks.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

from pydantic import Field

from nclav.api.drift_routes import add_drift_routes
from nclav.api.http import (
    ApiRequest,
    ApiResponse,
    BadRequest,
    NotFound,
    ServiceUnavailable,
    json_response,
    printable,
    query_bool,
    query_id,
    query_int,
    query_number,
    query_text,
)
from nclav.api.openapi import openapi
from nclav.api.router import ID_PATTERN, PARAM_RULES, RequestBody, Router, _parse_body
from nclav.api.streams import (
    DEFAULT_LIMIT_S,
    LogPage,
    RunEventsPage,
    StreamTiming,
    log_response,
    run_events_response,
)
from nclav.api.uploads import add_upload_routes
from nclav.drift.views import every_partition
from nclav.engine.driver import OrphanScanner
from nclav.gitsource.api import add_source_routes
from nclav.iac.logs import read_live
from nclav.iac.state_backend import LockHeldError
from nclav.records import IacStatus
from nclav.runtime.dead_letters import dead_letter_count
from nclav.service import bundle_blob
from nclav.ui.routes import register_dashboard
from nclav.views import enclave_graph_json, enclave_json, status_json, system_graph_json

if TYPE_CHECKING:
    from nclav.api.http import Authenticator
    from nclav.gitsource.source import GitSource
    from nclav.iac.state_backend import TerraformStateBackend
    from nclav.ports import BlobStore
    from nclav.records import Run
    from nclav.service import Service

_log = logging.getLogger(__name__)

MAX_BUNDLE = 64 * 1024 * 1024
MAX_STATE = 256 * 1024 * 1024
MAX_WAIT_S = 3600.0
MAX_OFFSET = 2**53  # any byte offset of a log
LOG_PAGE = 1024 * 1024  # bytes of log in one polling answer, unless ?limit= says otherwise
MAX_LOG_PAGE = 4 * 1024 * 1024  # below Lambda's 6 MB response cap
_DIGEST = re.compile(r"[0-9a-f]{64}")


class GuardBody(RequestBody):
    """The delete guard's per-request settings (``POST /reconcile`` and the destroys).

    ``max_deletes`` only lowers the server's limit; ``allow_delete`` lifts the guard (the
    limit and the delete-everything rule) for this run.
    """

    max_deletes: int | None = Field(default=None, ge=0)
    allow_delete: bool = False


class DestroyBody(GuardBody):
    resources_only: bool = False


class ReconcileBody(DestroyBody):
    bundle: str | None = None
    enclaves_dir: str | None = None


_GUARD_QUERY = ("max_deletes", "allow_delete")


# ``?wait=`` never outlives the runtime's time limit (``ApiRequest.time_left_s``: 60 s on the
# AWS API function): it is cut to the time left less this margin, and the answer says so.
WAIT_MARGIN_S = 5.0
WAIT_CAPPED_HEADER = "X-Nclav-Wait-Capped"


def _wait(request: ApiRequest) -> float:
    asked = query_number(request, "wait", default=0.0, maximum=MAX_WAIT_S)
    if request.time_left_s is None:
        return asked
    return max(min(asked, request.time_left_s - WAIT_MARGIN_S), 0.0)


def _wait_headers(request: ApiRequest) -> dict[str, str]:
    """``X-Nclav-Wait-Capped: <seconds waited at most>`` when ``?wait=`` was cut."""
    asked = query_number(request, "wait", default=0.0, maximum=MAX_WAIT_S)
    waited = _wait(request)
    return {WAIT_CAPPED_HEADER: f"{waited:g}"} if waited < asked else {}


def _limit(request: ApiRequest, default: int, maximum: int) -> int:
    return query_int(request, "limit", default=default, maximum=maximum)


def _query_bool(request: ApiRequest, name: str) -> bool | None:
    """``?name=`` as a boolean through the one query parser, or None when absent."""
    if request.query_value(name) is None:
        return None
    return query_bool(request, name)


def _query_count(request: ApiRequest, name: str) -> int | None:
    """``?name=`` as a non-negative count through the one query parser, or None when absent."""
    if request.query_value(name) in (None, ""):
        return None
    return query_int(request, name, default=0, maximum=1_000_000)


def _with_query(request: ApiRequest, body: DestroyBody) -> DestroyBody:
    """The body's guard settings, with the same names in the query string also honoured
    (``DELETE /enclaves/x?resources_only=true``); a flag set either way is set."""
    limits = [n for n in (body.max_deletes, _query_count(request, "max_deletes")) if n is not None]
    return body.model_copy(
        update={
            "max_deletes": min(limits) if limits else None,
            "allow_delete": body.allow_delete or bool(_query_bool(request, "allow_delete")),
            "resources_only": body.resources_only or bool(_query_bool(request, "resources_only")),
        }
    )


def _destroy_body(request: ApiRequest) -> DestroyBody:
    """A destroy's optional JSON body (an empty one is all defaults), then its query."""
    body = DestroyBody()
    if request.body.strip():
        parsed = _parse_body(DestroyBody, request.body)
        assert isinstance(parsed, DestroyBody)
        body = parsed
    return _with_query(request, body)


def run_json(run: Run) -> dict[str, Any]:
    return run.model_dump(mode="json")


def _run_response(
    run: Run,
    steps: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> ApiResponse:
    doc = run_json(run)
    doc["run_id"] = run.id
    doc["dry_run"] = False
    if steps is not None:
        doc["steps"] = steps
    return json_response(200 if run.status.final else 202, doc, headers)


def build_router(
    service: Service,
    tf_state: TerraformStateBackend,
    blobs: BlobStore,
    auth: Authenticator,
    *,
    version: str = "0",
    streaming: bool = True,
    stream_limit_s: float = DEFAULT_LIMIT_S,
    git: GitSource | None = None,
) -> Router:
    """``streaming=False`` for a runtime that cannot stream a response (AWS Lambda's Python
    runtime): the live routes then answer their polling form to an event-stream request.
    ``stream_limit_s`` ends a stream (with a ``retry:`` hint) before the platform would."""
    router = Router(auth, param_rules=PARAM_RULES)
    store = service.store
    timing = StreamTiming(limit_s=stream_limit_s)

    # -- health --------------------------------------------------------------------------

    def health(_r: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        return json_response(200, {"status": "ok"})

    def ready(_r: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        try:
            store.ping()
        except Exception as exc:
            raise ServiceUnavailable(f"state store not reachable: {type(exc).__name__}") from exc
        return json_response(200, {"status": "ready"})

    router.add("GET", "/health", health, summary="Liveness", auth="none")
    router.add("GET", "/ready", ready, summary="Readiness: the state store answers", auth="none")

    def openapi_doc(_r: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        return json_response(200, openapi(router, "nclav", version))

    router.add("GET", "/openapi.json", openapi_doc, summary="This API's OpenAPI document")

    # -- bundles and reconciles ------------------------------------------------------------

    def post_bundle(request: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        doc = service.bundles.put(request.body)
        return json_response(201 if doc["created"] else 200, doc)

    router.add(
        "POST",
        "/bundles",
        post_bundle,
        summary="Upload a packed enclaves tree (tar.gz)",
        max_body=MAX_BUNDLE,
        status=201,
    )

    def get_bundle(_r: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        digest = params["digest"]
        if not _DIGEST.fullmatch(digest) or not service.bundles.blobs.exists(bundle_blob(digest)):
            raise NotFound(f"bundle {digest!r} not found")
        return json_response(200, {"digest": digest})

    router.add("GET", "/bundles/{digest}", get_bundle, summary="200 when the server has a bundle")
    add_upload_routes(router, service, service.bundles.blobs)  # large bundles: signed uploads

    def dry_run(request: ApiRequest, _p: dict[str, str], body: ReconcileBody) -> ApiResponse:
        opts = _with_query(request, body)
        digest = service.bundle_for(body.bundle, body.enclaves_dir, allow_delete=opts.allow_delete)
        return json_response(200, service.dry_run(digest, resources_only=opts.resources_only))

    def reconcile(request: ApiRequest, _p: dict[str, str], body: ReconcileBody) -> ApiResponse:
        opts = _with_query(request, body)
        digest = service.bundle_for(body.bundle, body.enclaves_dir, allow_delete=opts.allow_delete)
        trigger = request.headers.get("X-Nclav-Trigger", "api")[:32]
        run = service.reconcile(
            digest,
            trigger,
            _wait(request),
            max_deletes=opts.max_deletes,
            allow_delete=opts.allow_delete,
            resources_only=opts.resources_only,
        )
        if run is None:  # nothing to do: no run is recorded (as the CLI does)
            doc = {"run": None, "run_id": None, "bundle": digest, "changes": 0}
            return json_response(200, {**doc, "dry_run": False, "message": "no changes"})
        return _run_response(run, headers=_wait_headers(request))

    router.add(
        "POST",
        "/reconcile/dry-run",
        dry_run,
        summary="Plan only",
        request_model=ReconcileBody,
        query=("resources_only", *_GUARD_QUERY),
    )
    router.add(
        "POST",
        "/reconcile",
        reconcile,
        summary="Plan and apply (202, or ?wait=s); 200 with run null when nothing changes",
        request_model=ReconcileBody,
        status=202,
        query=("wait", "resources_only", *_GUARD_QUERY),
    )

    def list_runs(request: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        runs = store.list_runs(limit=_limit(request, 50, 500))
        return json_response(200, [run_json(r) for r in runs])

    def get_run(_r: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        run = store.get_run(params["run_id"])
        if run is None:
            raise NotFound(f"run {params['run_id']!r} not found")
        steps = [s.model_dump(mode="json") for s in store.list_steps(run.id)]
        return json_response(200, {**run_json(run), "steps": steps})

    def approve_run(request: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        run = service.approve(params["run_id"], _wait(request))
        steps = [s.model_dump(mode="json") for s in store.list_steps(run.id)]
        return _run_response(run, steps)

    def cancel_run(_r: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        return _run_response(service.cancel(params["run_id"]))

    def retry_run(request: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        return _run_response(service.retry(params["run_id"], _wait(request)))

    router.add("GET", "/runs", list_runs, summary="Runs, newest first", query=("limit",))
    router.add("GET", "/runs/{run_id}", get_run, summary="One run with its steps")
    router.add(
        "POST",
        "/runs/{run_id}/approve",
        approve_run,
        summary="Approve a run awaiting approval: re-plan, begin if the plan is the one shown "
        "(409 with the new plan shown otherwise)",
        status=202,
        query=("wait",),
    )
    router.add(
        "POST",
        "/runs/{run_id}/cancel",
        cancel_run,
        summary="Cancel a queued or awaiting run (final status cancelled)",
    )
    router.add(
        "POST",
        "/runs/{run_id}/retry",
        retry_run,
        summary="Retry a failed or cancelled run: a new run (retry_of), re-planned when it "
        "begins; 409 when a newer run has changed the same enclaves",
        status=202,
        query=("wait",),
    )

    def run_events(request: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        after = query_int(request, "after", default=0, maximum=2**63 - 1)
        return run_events_response(
            request, store, params["run_id"], after=after, streaming=streaming, timing=timing
        )

    router.add(
        "GET",
        "/runs/{run_id}/events",
        run_events,
        summary="A run's audit events after seq `after` and its steps (JSON), or as server-sent "
        "events with Accept: text/event-stream (id = seq; Last-Event-ID resumes)",
        query=("after",),
        response_model=RunEventsPage,
    )

    # -- applied state -----------------------------------------------------------------------

    def enclave_or_404(enclave_id: str) -> Any:
        found = store.get_enclave(enclave_id)
        if found is None:
            raise NotFound(f"enclave {enclave_id!r} not found")
        return found[0]

    def list_enclaves(_r: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        return json_response(200, [enclave_json(s) for s in store.list_enclaves()])

    def get_enclave(_r: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        return json_response(200, enclave_json(enclave_or_404(params["id"])))

    def enclave_graph(_r: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        return json_response(200, enclave_graph_json(enclave_or_404(params["id"]), params["id"]))

    def graph(_r: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        return json_response(200, system_graph_json(store.list_enclaves()))

    def status(_r: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        doc = status_json(
            store.list_enclaves(),
            service.default_cloud,
            service.drivers,
            every_partition(store),
            dead_letter_count(service.engine.queue),
        )
        return json_response(200, doc)

    def events(request: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        enclave_id = query_id(request, "enclave_id", ID_PATTERN)
        found = store.list_events(enclave_id, _limit(request, 100, 10_000))
        return json_response(200, [e.to_json() for e in found])

    def orphans(_r: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        applied = store.list_enclaves()
        found: list[dict[str, Any]] = []
        unavailable: list[dict[str, str]] = []
        for cloud, driver in service.drivers.items():
            if not isinstance(driver, OrphanScanner):
                unavailable.append({"cloud": cloud.value, "error": "cannot list orphans"})
                continue
            try:
                found += [o.to_json() for o in driver.list_orphans(applied)]
            except Exception as exc:  # one cloud out of reach must not hide the others
                _log.warning("orphan scan of %s failed: %s", cloud.value, exc)
                error = printable(f"{type(exc).__name__}: {exc}")
                unavailable.append({"cloud": cloud.value, "error": error})
        return json_response(200, {"orphans": found, "unavailable": unavailable})

    router.add("GET", "/enclaves", list_enclaves, summary="Every enclave's applied state")
    router.add("GET", "/enclaves/{id}", get_enclave, summary="One enclave's applied state")
    router.add("GET", "/enclaves/{id}/graph", enclave_graph, summary="One enclave's graph")
    router.add("GET", "/graph", graph, summary="System-wide dependency graph")
    router.add("GET", "/status", status, summary="Enclave counts, default cloud, drivers")
    router.add("GET", "/events", events, summary="Audit log", query=("enclave_id", "limit"))
    router.add(
        "GET",
        "/orphans",
        orphans,
        summary="What nclav made that no partition owns, from every driver; and the drivers "
        "that could not be asked",
    )

    # -- imperative destroy -------------------------------------------------------------------

    def destroy_enclave(request: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        opts = _destroy_body(request)
        run = service.destroy_enclaves(
            [params["id"]],
            _wait(request),
            max_deletes=opts.max_deletes,
            allow_delete=opts.allow_delete,
            resources_only=opts.resources_only,
        )
        return _run_response(run, headers=_wait_headers(request))

    def destroy_partition(request: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        opts = _destroy_body(request)
        if opts.resources_only:
            raise BadRequest(
                "resources_only: applies to an enclave destroy (keep the enclave, tear down "
                "its partitions); a partition destroy has no enclave to keep"
            )
        run = service.destroy_partition(
            params["id"],
            params["part"],
            _wait(request),
            max_deletes=opts.max_deletes,
            allow_delete=opts.allow_delete,
        )
        return _run_response(run, headers=_wait_headers(request))

    router.add(
        "DELETE",
        "/enclaves/{id}",
        destroy_enclave,
        summary="Destroy an enclave (planned when the run begins; ?resources_only=true keeps "
        "the enclave and tears down its partitions)",
        status=202,
        query=("wait", "resources_only", *_GUARD_QUERY),
    )
    router.add(
        "DELETE",
        "/enclaves/{id}/partitions/{part}",
        destroy_partition,
        summary="Destroy one partition (planned when the run begins)",
        status=202,
        query=("wait", *_GUARD_QUERY),
    )

    # -- IaC runs ---------------------------------------------------------------------------

    def iac_runs(_r: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        runs = store.list_iac_runs(params["id"], params["part"])
        return json_response(200, [r.model_dump(mode="json") for r in runs])

    def iac_latest(_r: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        runs = store.list_iac_runs(params["id"], params["part"], limit=1)
        if not runs:
            raise NotFound("no IaC runs found for this partition")
        return json_response(200, runs[0].model_dump(mode="json"))

    def iac_run_or_404(params: dict[str, str]) -> Any:
        try:
            uuid.UUID(params["run_id"])
        except ValueError:
            raise BadRequest(f"invalid run ID: {params['run_id']}") from None
        run = store.get_iac_run(params["run_id"])
        if run is None or (run.enclave_id, run.partition_id) != (params["id"], params["part"]):
            raise NotFound(f"IaC run {params['run_id']!r} not found")
        return run

    def iac_run(_r: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        return json_response(200, iac_run_or_404(params).model_dump(mode="json"))

    def iac_log(request: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        run = iac_run_or_404(params)
        run_id = run.id

        def state() -> tuple[bool, str]:
            current = store.get_iac_run(run_id) or run
            return current.status != IacStatus.RUNNING, current.status.value

        def read(offset: int) -> bytes:
            # Chunks addressed by byte offset: only those from ``offset`` on are read; lines
            # not shipped yet come from the shipper when terraform runs in this process.
            # (Where the log lives is fixed when the run starts: the first record says it.)
            return read_live(blobs, run, offset)

        return log_response(
            request,
            read,
            state,
            offset=query_int(request, "offset", default=0, maximum=MAX_OFFSET),
            limit=query_int(request, "limit", default=LOG_PAGE, maximum=MAX_LOG_PAGE),
            streaming=streaming,
            timing=timing,
            maximum=MAX_OFFSET,
        )

    base = "/enclaves/{id}/partitions/{part}/iac/runs"
    router.add("GET", base, iac_runs, summary="IaC runs of a partition, newest first")
    router.add("GET", base + "/latest", iac_latest, summary="The newest IaC run")
    router.add("GET", base + "/{run_id}", iac_run, summary="One IaC run")
    router.add(
        "GET",
        base + "/{run_id}/log",
        iac_log,
        summary="An IaC run's log from a byte offset, while it runs too: text with "
        "X-Nclav-Next-Offset and X-Nclav-Complete headers, JSON with Accept: application/json, "
        "or server-sent events with Accept: text/event-stream (id = byte offset; "
        "Last-Event-ID resumes)",
        query=("offset", "limit"),
        response_model=LogPage,
    )

    add_drift_routes(router, service)

    # -- Terraform HTTP state backend ---------------------------------------------------------

    def lock_info(request: ApiRequest, *, required: bool) -> dict[str, Any] | None:
        if not request.body.strip():
            if required:
                raise BadRequest("lock info: expected Terraform's JSON lock info")
            return None
        try:
            info = json.loads(request.body)
        except ValueError:
            if required:
                raise BadRequest("lock info: expected JSON") from None
            return None
        if not isinstance(info, dict):
            if required:
                raise BadRequest("lock info: expected a JSON object")
            return None
        return info

    def holder_response(status_code: int, exc: LockHeldError) -> ApiResponse:
        return json_response(status_code, exc.holder.info)

    def tf_get(_r: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        data = tf_state.get_state(params["enc"], params["part"])
        if data is None:
            return ApiResponse(204)
        return ApiResponse(200, data, {"Content-Type": "application/json"})

    def tf_post(request: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        try:
            tf_state.post_state(
                params["enc"], params["part"], request.body, query_text(request, "ID")
            )
        except LockHeldError as exc:
            return holder_response(409, exc)
        return ApiResponse(200)

    def tf_delete(_r: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        tf_state.delete_state(params["enc"], params["part"])
        return ApiResponse(200)

    def tf_lock(request: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        info = lock_info(request, required=True)
        assert info is not None
        holder = tf_state.lock(params["enc"], params["part"], info)
        if holder is not None:
            return json_response(423, holder.info)
        return ApiResponse(200)

    def tf_unlock(request: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        try:
            # No body forces (terraform force-unlock); a body must be lock info, or a garbled
            # request would silently release somebody else's lock.
            forced = not request.body.strip()
            info = lock_info(request, required=not forced)
            tf_state.unlock(params["enc"], params["part"], info)
        except LockHeldError as exc:
            return holder_response(409, exc)
        return ApiResponse(200)

    state = "/terraform/state/{enc}/{part}"
    opts: dict[str, Any] = {"auth": "bearer_or_basic", "max_body": MAX_STATE}
    router.add("GET", state, tf_get, summary="Terraform state (204 when none)", **opts)
    router.add(
        "POST",
        state,
        tf_post,
        summary="Store a Terraform state version",
        query=("ID",),
        **opts,
    )
    router.add("DELETE", state, tf_delete, summary="Forget the current state", **opts)
    router.add("POST", state + "/lock", tf_lock, summary="Lock (423 with the holder)", **opts)
    router.add("DELETE", state + "/lock", tf_unlock, summary="Unlock; no body forces", **opts)
    add_source_routes(router, git)  # the git source: /source and the /webhooks/* (issue 15)
    register_dashboard(router, service)  # the web dashboard (nclav.ui), its session cookie
    return router


__all__ = ["DestroyBody", "GuardBody", "ReconcileBody", "build_router"]
