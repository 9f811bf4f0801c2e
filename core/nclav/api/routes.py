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

from nclav.api.http import (
    ApiRequest,
    ApiResponse,
    BadRequest,
    NotFound,
    ServiceUnavailable,
    json_response,
    printable,
    query_id,
    query_int,
    query_number,
    query_text,
)
from nclav.api.openapi import openapi
from nclav.api.router import ID_PATTERN, PARAM_RULES, RequestBody, Router
from nclav.api.uploads import add_upload_routes
from nclav.engine.driver import OrphanScanner
from nclav.iac.logs import read_log
from nclav.iac.state_backend import LockHeldError
from nclav.service import bundle_blob
from nclav.views import enclave_graph_json, enclave_json, status_json, system_graph_json

if TYPE_CHECKING:
    from nclav.api.http import Authenticator
    from nclav.iac.state_backend import TerraformStateBackend
    from nclav.ports import BlobStore
    from nclav.records import Run
    from nclav.service import Service

_log = logging.getLogger(__name__)

MAX_BUNDLE = 64 * 1024 * 1024
MAX_STATE = 256 * 1024 * 1024
MAX_WAIT_S = 3600.0
MAX_OFFSET = 2**53  # any byte offset of a log
_DIGEST = re.compile(r"[0-9a-f]{64}")


class ReconcileBody(RequestBody):
    bundle: str | None = None
    enclaves_dir: str | None = None
    resources_only: bool = False


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
) -> Router:
    router = Router(auth, param_rules=PARAM_RULES)
    store = service.store

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

    def dry_run(_r: ApiRequest, _p: dict[str, str], body: ReconcileBody) -> ApiResponse:
        digest = service.bundle_for(body.bundle, body.enclaves_dir)
        return json_response(200, service.dry_run(digest))

    def reconcile(request: ApiRequest, _p: dict[str, str], body: ReconcileBody) -> ApiResponse:
        digest = service.bundle_for(body.bundle, body.enclaves_dir)
        trigger = request.headers.get("X-Nclav-Trigger", "api")[:32]
        run = service.reconcile(digest, trigger, _wait(request))
        return _run_response(run, headers=_wait_headers(request))

    router.add(
        "POST", "/reconcile/dry-run", dry_run, summary="Plan only", request_model=ReconcileBody
    )
    router.add(
        "POST",
        "/reconcile",
        reconcile,
        summary="Plan and apply (202, or ?wait=s)",
        request_model=ReconcileBody,
        status=202,
        query=("wait",),
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

    router.add("GET", "/runs", list_runs, summary="Runs, newest first", query=("limit",))
    router.add("GET", "/runs/{run_id}", get_run, summary="One run with its steps")

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
        doc = status_json(store.list_enclaves(), service.default_cloud, service.drivers)
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
        run = service.destroy_enclaves([params["id"]], _wait(request))
        return _run_response(run, headers=_wait_headers(request))

    def destroy_partition(request: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        run = service.destroy_partition(params["id"], params["part"], _wait(request))
        return _run_response(run, headers=_wait_headers(request))

    router.add(
        "DELETE",
        "/enclaves/{id}",
        destroy_enclave,
        summary="Destroy an enclave",
        status=202,
        query=("wait",),
    )
    router.add(
        "DELETE",
        "/enclaves/{id}/partitions/{part}",
        destroy_partition,
        summary="Destroy one partition",
        status=202,
        query=("wait",),
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
        # Chunks addressed by byte offset: only those from ``offset`` on are read.
        data = read_log(blobs, run, query_int(request, "offset", default=0, maximum=MAX_OFFSET))
        headers = {
            "Content-Type": "text/plain; charset=utf-8",
            "X-Nclav-Run-Status": run.status.value,
        }
        return ApiResponse(200, data, headers)

    base = "/enclaves/{id}/partitions/{part}/iac/runs"
    router.add("GET", base, iac_runs, summary="IaC runs of a partition, newest first")
    router.add("GET", base + "/latest", iac_latest, summary="The newest IaC run")
    router.add("GET", base + "/{run_id}", iac_run, summary="One IaC run")
    router.add(
        "GET", base + "/{run_id}/log", iac_log, summary="An IaC run's log (text)", query=("offset",)
    )

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
    return router


__all__ = ["ReconcileBody", "build_router"]
