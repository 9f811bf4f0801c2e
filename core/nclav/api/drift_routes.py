"""The drift endpoints (``nclav.drift``), registered by ``build_router`` with one call.

* ``GET /drift`` (``?enclave=``): every partition's drift status and the counts;
* ``GET /enclaves/{id}/partitions/{part}/drift``: one partition's, with the plan text;
* ``POST .../drift/check``: check now. The check goes to the queue workers like a scheduled
  one (it runs terraform, so on AWS it runs in the IaC worker): 202 with where to look, or
  with ``?wait=`` seconds the outcome (200) when it comes in time;
* ``POST .../drift/ack``: accept the drift found (its fingerprint): the partition reads
  ``in_sync`` with ``acknowledged`` until a check finds different drift.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from nclav.api.http import (
    ApiRequest,
    ApiResponse,
    Conflict,
    NotFound,
    json_response,
    query_id,
    query_number,
)
from nclav.api.router import ID_PATTERN
from nclav.drift.options import DriftOptions
from nclav.drift.schedule import check_message
from nclav.drift.views import drift_counts, drift_json, every_partition
from nclav.records import DriftRecord, DriftStatus, new_id
from nclav.state import Status

if TYPE_CHECKING:
    from nclav.api.router import Router
    from nclav.service import Service

MAX_WAIT_S = 3600.0
_POLL_S = 0.2
BASE = "/enclaves/{id}/partitions/{part}/drift"


def add_drift_routes(router: Router, service: Service) -> None:
    store = service.store
    engine = service.engine

    def applied_or_404(enclave_id: str, partition_id: str) -> Status:
        found = store.get_enclave(enclave_id)
        part = found[0].partitions.get(partition_id) if found else None
        if part is None:
            raise NotFound(f"partition {enclave_id}/{partition_id} has not been applied")
        return part.meta.status

    def list_drift(request: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        records = every_partition(store, query_id(request, "enclave", ID_PATTERN))
        return json_response(
            200,
            {"partitions": [drift_json(r) for r in records], "counts": drift_counts(records)},
        )

    def one(_r: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        eid, pid = params["id"], params["part"]
        applied_or_404(eid, pid)
        record = store.get_drift(eid, pid) or DriftRecord(enclave_id=eid, partition_id=pid)
        return json_response(200, drift_json(record, plan_text=True))

    def check(request: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        eid, pid = params["id"], params["part"]
        wait_s = query_number(request, "wait", default=0.0, maximum=MAX_WAIT_S)
        status = applied_or_404(eid, pid)
        if status != Status.ACTIVE:
            raise Conflict(
                f"partition {eid}/{pid} is {status.value}: drift is checked on active partitions"
            )
        before = store.get_drift(eid, pid) or DriftRecord(enclave_id=eid, partition_id=pid)
        until = engine.clock.now() + DriftOptions.from_env().timeout_s
        store.put_drift(before.model_copy(update={"in_flight_until": until}))
        check_id = new_id()
        engine.queue.send(check_message(eid, pid, check_id, until))
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            time.sleep(min(_POLL_S, max(deadline - time.monotonic(), 0)))
            current = store.get_drift(eid, pid)
            # This request's own check: a scheduled one that began before it may end first.
            if current is not None and current.check_id == check_id:
                return json_response(200, drift_json(current, plan_text=True))
        return json_response(
            202,
            {
                "enclave_id": eid,
                "partition_id": pid,
                "status": "queued",
                "drift": f"/enclaves/{eid}/partitions/{pid}/drift",
                "iac_runs": f"/enclaves/{eid}/partitions/{pid}/iac/runs",
            },
        )

    def ack(_r: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        eid, pid = params["id"], params["part"]
        applied_or_404(eid, pid)
        record = store.get_drift(eid, pid)
        if record is None or record.fingerprint is None:
            raise Conflict(f"partition {eid}/{pid} has no drift to acknowledge")
        if record.status == DriftStatus.CHECK_FAILED:
            raise Conflict(
                f"the last drift check of {eid}/{pid} failed: check again before acknowledging"
            )
        acked = record.model_copy(
            update={"acknowledged": record.fingerprint, "status": DriftStatus.IN_SYNC}
        )
        store.put_drift(acked)
        return json_response(200, drift_json(acked, plan_text=True))

    router.add(
        "GET", "/drift", list_drift, summary="Every partition's drift status", query=("enclave",)
    )
    router.add("GET", BASE, one, summary="A partition's drift, with the plan text")
    router.add(
        "POST",
        BASE + "/check",
        check,
        summary="Check drift now (202, or ?wait=s)",
        status=202,
        query=("wait",),
    )
    router.add("POST", BASE + "/ack", ack, summary="Acknowledge the drift found")


__all__ = ["BASE", "add_drift_routes"]
