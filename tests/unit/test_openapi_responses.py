"""The OpenAPI document's responses: every route of nclav's table documents what it answers,
and the views' real output matches the published schemas (checked with jsonschema, against the
document itself, not against the pydantic models behind it).

The live check of the same claims is tests/e2e/test_openapi_schemathesis.py."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from jsonschema import Draft202012Validator

from nclav.api import Router, json_response
from nclav.api.openapi import openapi
from nclav.api.responses import (
    NCLAV_API,
    PATH_PARAMETERS,
    QUERY_PARAMETERS,
    RAW_REQUESTS,
    RESPONSES,
    Reply,
)
from nclav.api.server import start_server, stop_server
from nclav.config import load_directory
from nclav.engine.driver import Orphan
from nclav.local.runtime import LocalOptions, LocalRuntime
from nclav.model import Cloud
from nclav.plan import Action, Step
from nclav.records import AuditEvent, EventKind, IacOperation, IacRun, Run, StepRecord
from nclav.state import EnclaveState, LastError, PartitionState, ResourceMeta, Status
from nclav.views import enclave_graph_json, enclave_json, status_json, system_graph_json

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nclav.api.router import Route

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = "2026-12-05T10:00:00.000000Z"


@pytest.fixture(name="routes", scope="module")
def routes_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Route, ...]]:
    """The route table ``nclav serve`` serves (no server is started)."""
    home = tmp_path_factory.mktemp("home")
    runtime = LocalRuntime(LocalOptions(home=home, ephemeral=True), token="a" * 64)
    try:
        yield runtime.router.routes
    finally:
        runtime.stop()


@pytest.fixture(name="doc", scope="module")
def doc_fixture(routes: tuple[Route, ...]) -> dict[str, Any]:
    router = Router()
    for route in routes:
        router.add_route(route)
    return openapi(router, "nclav", "0", NCLAV_API)


def validate(doc: dict[str, Any], method: str, path: str, status: int, instance: Any) -> None:
    """``instance`` against the schema the document gives for that response."""
    response = doc["paths"][path][method.lower()]["responses"][str(status)]
    ((media, content),) = response["content"].items()
    assert media == "application/json"
    # The document is the root, so its "#/components/schemas/..." references resolve.
    schema = {**content["schema"], "components": doc["components"]}
    Draft202012Validator.check_schema(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in Draft202012Validator(schema).iter_errors(instance)
    ]
    assert not errors, (method, path, status, errors)


# -- the table covers the routes ------------------------------------------------------------


def test_every_route_documents_its_success_response(routes: tuple[Route, ...]) -> None:
    """A route added without an entry in nclav.api.responses fails here."""
    missing = [f"{r.method} {r.pattern}" for r in routes if (r.method, r.pattern) not in RESPONSES]
    assert not missing, f"add these routes to nclav.api.responses.RESPONSES: {missing}"
    for route in routes:
        replies: tuple[Reply, ...] = tuple(RESPONSES[(route.method, route.pattern)])
        statuses = [reply.status for reply in replies]
        assert len(statuses) == len(set(statuses)), (route.pattern, statuses)
        assert any(200 <= s < 300 for s in statuses), (route.method, route.pattern)
        # The route's own status (what its summary promises) is among the documented ones.
        assert route.status in statuses, (route.method, route.pattern, route.status)


def test_the_table_names_only_routes_that_exist(routes: tuple[Route, ...]) -> None:
    served = {(r.method, r.pattern) for r in routes}
    assert {name for r in routes for name in r.query} == set(QUERY_PARAMETERS)
    assert {name for r in routes for name in r.params} == set(PATH_PARAMETERS)
    assert set(RESPONSES) - served == set()
    assert set(RAW_REQUESTS) - served == set()
    # A raw body is for routes that read their own body; a request_model route has its schema.
    assert all(r.request_model is None for r in routes if (r.method, r.pattern) in RAW_REQUESTS)


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    json.loads(json.dumps(doc, allow_nan=False))
    # schemathesis checks the document against the OpenAPI 3.1 schema (raises when invalid).
    loaded = schemathesis.openapi.from_dict(doc)
    loaded.validate()
    assert list(loaded.iter_schema_warnings()) == []


def test_document_publishes_media_types_bodies_and_headers(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    runs = paths["/runs"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert runs == {"$ref": "#/components/schemas/RunList"}
    state = paths["/terraform/state/{enc}/{part}"]["get"]["responses"]
    assert "content" not in state["204"]  # 204: no body
    assert state["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/TerraformState")
    lock = paths["/terraform/state/{enc}/{part}/lock"]["post"]
    assert lock["responses"]["423"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/LockInfo"
    )
    assert lock["requestBody"]["content"]["application/json"]["schema"] == {"type": "object"}
    assert paths["/terraform/state/{enc}/{part}/lock"]["delete"]["requestBody"]["required"] is False
    log = paths["/enclaves/{id}/partitions/{part}/iac/runs/{run_id}/log"]["get"]["responses"]
    assert log["200"]["content"] == {"text/plain; charset=utf-8": {"schema": {"type": "string"}}}
    assert log["200"]["headers"]["X-Nclav-Run-Status"]["required"] is True
    limit = [p for p in paths["/runs"]["get"]["parameters"] if p["name"] == "limit"]
    assert limit == [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0}}]
    (enclave_id,) = paths["/enclaves/{id}"]["get"]["parameters"]
    assert enclave_id["schema"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
    bundles = paths["/bundles"]["post"]
    assert set(bundles["responses"]) == {"200", "201", "default"}
    assert bundles["requestBody"]["content"]["application/gzip"]["schema"]["format"] == "binary"
    reconcile = paths["/reconcile"]["post"]["responses"]
    assert {"200", "202"} <= set(reconcile)
    for ops in paths.values():
        for op in ops.values():
            error = op["responses"]["default"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/Error"}
    # Records are published as the models themselves: a field added to Run reaches the doc.
    assert set(doc["components"]["schemas"]["Run"]["properties"]) == set(Run.model_fields)
    every_ref = {
        ref.rsplit("/", 1)[1] for ref in _refs(doc) if ref.startswith("#/components/schemas/")
    }
    assert every_ref <= set(doc["components"]["schemas"])


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


# -- real output against the published schemas ------------------------------------------------


def _applied() -> list[EnclaveState]:
    """product-a's configs as applied state, with handles, outputs and errors filled in."""
    desired = load_directory(EXAMPLES / "product-a" / "enclaves")
    states = []
    for loaded in desired.enclaves:
        partitions = {
            p.config.id: PartitionState(
                desired=p.config,
                meta=ResourceMeta(status=Status.ACTIVE, created_at=NOW, updated_at=NOW),
                partition_handle={"kind": "local", "nested": {"n": [1, 2.5, None, True]}},
                resolved_outputs={"hostname": "api.local"},
                inputs_hash="0" * 64,
            )
            for p in loaded.partitions
        }
        failed = ResourceMeta(
            status=Status.ERROR, last_error=LastError(message="boom", occurred_at=NOW)
        )
        partitions["broken"] = PartitionState(meta=failed)
        states.append(
            EnclaveState(
                enclave_id=loaded.config.id,
                desired=loaded.config,
                resolved_cloud=Cloud.LOCAL,
                meta=failed if loaded.config.id == "web-dev" else ResourceMeta(updated_at=NOW),
                enclave_handle={"kind": "local", "dir": "/tmp/x"},
                context_vars={"nclav_enclave": loaded.config.id},
                partitions=partitions,
                export_handles={"api-http": {"hostname": "h", "port": 8443}},
                import_handles={"api": {"hostname": "h"}},
            )
        )
    return states


def test_views_match_the_published_schemas(doc: dict[str, Any]) -> None:
    states = _applied()
    assert any(s.desired and s.desired.imports for s in states)  # edges are exercised
    assert any(s.desired and s.desired.exports for s in states)
    validate(doc, "GET", "/enclaves", 200, [enclave_json(s) for s in states])
    validate(doc, "GET", "/enclaves/{id}", 200, enclave_json(EnclaveState(enclave_id="bare")))
    for state in states:
        validate(doc, "GET", "/enclaves/{id}/graph", 200, enclave_graph_json(state, "x"))
    validate(doc, "GET", "/graph", 200, system_graph_json(states))
    status = status_json(states, Cloud.LOCAL, [Cloud.LOCAL])
    assert status["errors"] and any("partition_id" in e for e in status["errors"])
    validate(doc, "GET", "/status", 200, status)
    validate(doc, "GET", "/status", 200, status_json([], Cloud.LOCAL, []))


def test_records_match_the_published_schemas(doc: dict[str, Any]) -> None:
    run = Run(created_at=NOW, bundle="a" * 64, enclave_ids=("e",), errors=("x",))
    step = StepRecord.of(run.id, Step("s", Action.PROVISION_ENCLAVE, "e", None, ()))
    steps = [step.model_dump(mode="json")]
    validate(doc, "GET", "/runs", 200, [run.model_dump(mode="json")])
    validate(doc, "GET", "/runs/{run_id}", 200, {**run.model_dump(mode="json"), "steps": steps})
    accepted = {**run.model_dump(mode="json"), "run_id": run.id, "dry_run": False}
    validate(doc, "POST", "/reconcile", 202, accepted)
    validate(doc, "DELETE", "/enclaves/{id}", 200, {**accepted, "steps": steps})
    events = [
        AuditEvent(
            kind=EventKind.RECONCILE_COMPLETED, at=NOW, run_id=run.id, fields={"changes": 3}
        ),
        AuditEvent(
            kind=EventKind.IMPORT_WIRED,
            at=NOW,
            enclave_id="e",
            partition_id="p",
            fields={"alias": "a", "export_name": "x", "dry_run": False, "message": None},
        ),
    ]
    validate(doc, "GET", "/events", 200, [e.to_json() for e in events])
    orphan = Orphan(
        cloud=Cloud.LOCAL,
        resource_id="/home/ws/e/p",
        resource_type="terraform-state",
        enclave_id="e",
        reason="no applied partition",
    )
    unavailable = [{"cloud": "aws", "error": "cannot list orphans"}]
    orphans = {"orphans": [orphan.to_json()], "unavailable": unavailable}
    validate(doc, "GET", "/orphans", 200, orphans)
    iac = IacRun(enclave_id="e", partition_id="p", operation=IacOperation.PROVISION, started_at=NOW)
    validate(
        doc, "GET", "/enclaves/{id}/partitions/{part}/iac/runs", 200, [iac.model_dump(mode="json")]
    )


def test_a_view_that_grows_a_field_fails_its_schema(doc: dict[str, Any]) -> None:
    """The views are shaped by hand, so their schemas are closed: drift is caught."""
    grown = {**status_json([], Cloud.LOCAL, []), "new_field": 1}
    with pytest.raises(AssertionError, match="new_field"):
        validate(doc, "GET", "/status", 200, grown)


# -- the HTTP server answers every method through the router ----------------------------------


@pytest.mark.parametrize("method", ["TRACE", "QUERY", "PUT", "PATCH", "OPTIONS"])
def test_a_method_no_route_takes_is_405_with_allow(method: str) -> None:
    """Before, TRACE and QUERY were answered 501 by http.server: a 5xx for a client's choice
    of method (found by schemathesis)."""
    router = Router()
    router.add("GET", "/health", lambda r, p, b: json_response(200, {}), auth="none")
    server, thread = start_server(router)
    try:
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
        conn.request(method, "/health")
        response = conn.getresponse()
        body = json.loads(response.read())
        conn.close()
    finally:
        stop_server(server, thread)
    assert response.status == 405, body
    assert response.headers["Allow"] == "GET"
    assert body["error"]["code"] == "method_not_allowed"
