"""schemathesis against a real ``nclav serve``: the OpenAPI document is what the server does.

One server (module scope) has ``examples/product-a`` applied with real terraform, so reads
find enclaves, partitions, runs, IaC runs, logs and Terraform state. schemathesis loads the
schema from ``GET /openapi.json`` (with the token: the document is a protected route) and
sends generated requests, valid and invalid, to every operation. Every response must pass:

- ``not_a_server_error``: no 5xx, whatever the input;
- ``status_code_conformance``: the status is one the operation documents;
- ``content_type_conformance`` and ``response_schema_conformance``: the body has the
  documented media type and matches the documented schema (nclav.api.responses);
- ``response_headers_conformance``: documented headers (``X-Nclav-Run-Status``) are there;
- ``ignored_auth``: for an operation that documents security, a request that succeeded with
  the token is sent again without it and with a wrong one, and must be refused.

``test_every_protected_operation_refuses_no_token`` walks the document as well, so the auth
claim is checked on every operation, not only those whose fuzzed requests happened to succeed.

Path parameters are drawn half of the time from the applied ids (``product-a-dev``, ``api``,
the runs' and IaC runs' ids, the bundle's digest), so success responses are reached, not only
404s; ``test_success_responses_conform`` also calls every operation once with values chosen to
succeed, so every documented success body is checked on every run. ``?wait=`` is 0 or 5 (any
other value is still sent by the invalid-input generation), so no request holds for an hour.

Left out of the fuzzing, and why:

- ``DELETE /enclaves/{id}`` and ``DELETE /enclaves/{id}/partitions/{part}``: with an applied
  id they destroy what every other operation reads. ``test_destroy_conforms`` runs them last:
  fuzzed with unknown ids, then one real destroy of a partition and of an enclave.
- ``POST /reconcile`` and ``POST /reconcile/dry-run`` take ``enclaves_dir`` from a small
  dictionary (the applied tree, a missing directory) instead of arbitrary strings: an arbitrary
  existing directory holding no enclave (``.``) is a tree that deletes everything (the
  delete guard of issue 8 refuses it, but this suite is not where that is tested), and ``/``
  would pack the whole file system.
- The Terraform state routes never see an applied key: ``enc`` is always fuzzed, so a fuzzed
  ``POST .../lock`` cannot hold an applied partition's lock and block the destroy at the end.
  ``test_success_responses_conform`` reads an applied state and runs the lock protocol on a
  scratch key instead.

Bounded: ``MAX_EXAMPLES`` per operation and phase, a fixed seed and deterministic generation,
so a failure is reproduced by running the test again (about 15-25 s in all, with the apply).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serve_harness import Server, copy_example, require_terraform

from nclav.bundle import pack_directory

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import requests

pytestmark = [pytest.mark.slow, pytest.mark.terraform, pytest.mark.timeout(600)]

require_terraform()

# Per operation and phase; raise it for a deeper run (NCLAV_SCHEMATHESIS_EXAMPLES=500).
MAX_EXAMPLES = int(os.environ.get("NCLAV_SCHEMATHESIS_EXAMPLES", "25"))
SEED = 20261205
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    ignored_auth,
]
DESTROY = r"^/enclaves/\{id\}(/partitions/\{part\})?$"


class Live:
    """The server and the ids of what was applied to it."""

    def __init__(self, server: Server, tree: Path, run: dict[str, Any]) -> None:
        self.server = server
        self.tree = tree
        self.run = run
        self.iac_runs = [
            r["id"]
            for enclave, parts in (("product-a-dev", ("api", "db")), ("web-dev", ("frontend",)))
            for part in parts
            for r in server.iac_runs(enclave, part)
        ]


@pytest.fixture(name="live", scope="module")
def live_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("schemathesis")
    server = Server(root / "home")
    server.start()
    try:
        tree = copy_example("product-a", root)
        run = server.reconcile(tree)
        assert run["status"] == "succeeded", run
        yield Live(server, tree, run)
    finally:
        server.stop(timeout=30)


def _config(live: Live, *, applied_ids: bool) -> schemathesis.Config:
    server = live.server
    dictionaries: dict[str, Any] = {
        "trees": {"values": [str(live.tree), str(live.tree / "missing")]},
        "waits": {"values": ["0", "5"]},
    }
    parameters: dict[str, Any] = {
        "body.enclaves_dir": {"dictionary": "trees", "probability": 1.0},
        "query.wait": {"dictionary": "waits", "probability": 1.0},
    }
    if applied_ids:
        dictionaries |= {
            "enclaves": {"values": ["product-a-dev", "web-dev"]},
            "partitions": {"values": ["api", "db", "frontend"]},
            "runs": {"values": [live.run["id"], *live.iac_runs]},
            "digests": {"values": [live.run["bundle"]]},
        }
        parameters |= {
            "path.id": {"dictionary": "enclaves", "probability": 0.5},
            "path.part": {"dictionary": "partitions", "probability": 0.5},
            "path.run_id": {"dictionary": "runs", "probability": 0.5},
            "path.digest": {"dictionary": "digests", "probability": 0.5},
        }
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # Generating a case is cheap; on a loaded 2-core machine Hypothesis may still
            # think it slow. Request time is not bounded by Hypothesis here (no deadline).
            "suppress-health-check": ["too_slow"],
            "base-url": server.url,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "mode": "all"},
            "auth": {
                "openapi": {
                    "bearerAuth": {"bearer": server.token},
                    "basicAuth": {"username": "nclav", "password": server.token},
                }
            },
            "dictionaries": dictionaries,
            "parameters": parameters,
            "request-timeout": 60,
        }
    )


def _load(live: Live, *, applied_ids: bool) -> Any:
    """The schema as the server serves it. Loaded from the fetched document rather than by
    URL, because schemathesis leaves out the operation a schema was loaded from, and
    ``GET /openapi.json`` is an operation of this API like any other."""
    doc = live.server.ok("GET", "/openapi.json")
    return schemathesis.openapi.from_dict(doc, config=_config(live, applied_ids=applied_ids))


@pytest.fixture(name="api_schema", scope="module")
def api_schema_fixture(live: Live) -> Any:
    return _load(live, applied_ids=True)


# Filters belong on the lazy schema: it replaces the fixture's own when the tests run.
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=DESTROY, method="DELETE")
# A bundle is a tar.gz: sent as the generated bytes, like application/octet-stream.
schemathesis.serializer.alias("application/gzip", "application/octet-stream")


@schema.parametrize()
def test_operation_conforms(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)


def _call(live: Live, operation: Any, expect: int, **parts: Any) -> requests.Response:
    """One case with chosen values, validated by the same checks as the fuzzed ones."""
    auth = {"Authorization": f"Bearer {live.server.token}"}
    case = operation.Case(headers={**auth, **parts.pop("headers", {})}, **parts)
    response: requests.Response = case.call_and_validate(checks=CHECKS)
    assert response.status_code == expect, (operation.label, parts, response.text[:500])
    return response


# Operations whose success needs a peer this suite's server lacks (a git server): their
# answers are checked against the same document by the test that drives them (in
# tests/e2e/test_git_source.py, the one named "...answer_what_the_openapi_document_says").
CHECKED_ELSEWHERE = {
    # Signed uploads exist where the blob store signs URLs (S3): the local server takes bundles
    # directly (404 here); tests/aws/test_infra_bundle_upload.py checks their answers.
    ("POST", "/bundles/uploads"),
    ("POST", "/bundles/uploads/{digest}/complete"),
    ("GET", "/source"),
    ("PUT", "/source"),
    ("POST", "/source/sync"),
    ("POST", "/source/webhook-secret"),
    ("POST", "/webhooks/github"),
    ("POST", "/webhooks/gitlab"),
    ("POST", "/webhooks/git"),
}


def test_success_responses_conform(live: Live) -> None:
    """Every operation (but the destroys) once with applied ids, so each documented success
    body is checked against the live server whatever the fuzzing happened to reach."""
    api = _load(live, applied_ids=False)
    server = live.server
    run_id = live.run["id"]
    ids = {"id": "product-a-dev", "part": "api"}
    iac = server.iac_runs("product-a-dev", "api")[0]["id"]
    iac_base = "/enclaves/{id}/partitions/{part}/iac/runs"
    state = "/terraform/state/{enc}/{part}"
    scratch = {"enc": "conformance", "part": "probe"}
    lock = {"ID": "7d0e5c3a-schemathesis", "Operation": "OperationTypeApply", "Who": "suite"}
    bundle = pack_directory(live.tree)[1]

    calls: list[tuple[str, str, int, dict[str, Any]]] = [
        ("GET", "/health", 200, {}),
        ("GET", "/ready", 200, {}),
        ("GET", "/openapi.json", 200, {}),
        ("POST", "/bundles", 200, {"body": bundle, "media_type": "application/gzip"}),
        ("GET", "/bundles/{digest}", 200, {"path_parameters": {"digest": live.run["bundle"]}}),
        ("POST", "/reconcile/dry-run", 200, {"body": {"enclaves_dir": str(live.tree)}}),
        (
            "POST",
            "/reconcile",
            200,
            {"body": {"enclaves_dir": str(live.tree)}, "query": {"wait": "60"}},
        ),
        ("GET", "/runs", 200, {"query": {"limit": "5"}}),
        ("GET", "/runs/{run_id}", 200, {"path_parameters": {"run_id": run_id}}),
        ("GET", "/runs/{run_id}/events", 200, {"path_parameters": {"run_id": run_id}}),
        ("GET", "/enclaves", 200, {}),
        ("GET", "/enclaves/{id}", 200, {"path_parameters": {"id": "product-a-dev"}}),
        ("GET", "/enclaves/{id}/graph", 200, {"path_parameters": {"id": "web-dev"}}),
        ("GET", "/graph", 200, {}),
        ("GET", "/status", 200, {}),
        ("GET", "/events", 200, {"query": {"enclave_id": "product-a-dev", "limit": "50"}}),
        ("GET", "/orphans", 200, {}),
        ("GET", iac_base, 200, {"path_parameters": ids}),
        ("GET", iac_base + "/latest", 200, {"path_parameters": ids}),
        ("GET", iac_base + "/{run_id}", 200, {"path_parameters": {**ids, "run_id": iac}}),
        ("GET", iac_base + "/{run_id}/log", 200, {"path_parameters": {**ids, "run_id": iac}}),
        ("GET", state, 200, {"path_parameters": {"enc": "product-a-dev", "part": "db"}}),
        ("GET", state, 204, {"path_parameters": scratch}),
        ("POST", state + "/lock", 200, {"path_parameters": scratch, "body": lock}),
        ("POST", state + "/lock", 423, {"path_parameters": scratch, "body": {**lock, "ID": "x"}}),
        ("POST", state, 409, {"path_parameters": scratch, "body": {"version": 4}}),
        (
            "POST",
            state,
            200,
            {"path_parameters": scratch, "body": {"version": 4}, "query": {"ID": lock["ID"]}},
        ),
        ("DELETE", state + "/lock", 409, {"path_parameters": scratch, "body": {**lock, "ID": "x"}}),
        ("DELETE", state + "/lock", 200, {"path_parameters": scratch, "body": lock}),
        ("DELETE", state, 200, {"path_parameters": scratch}),
        # the web dashboard (nclav.ui)
        ("GET", "/ui", 200, {}),
        ("GET", "/ui/static/{asset}", 200, {"path_parameters": {"asset": "app.js"}}),
        ("POST", "/ui/login", 200, {"body": {"token": server.token}}),
        ("POST", "/ui/logout", 200, {}),
        ("GET", "/ui/session", 200, {}),
        ("GET", "/ui/api/overview", 200, {}),
    ]
    # Drift: the api partition's state edited (an output no longer matching its resource), so
    # a check finds drift and the acknowledgement has something to accept.
    edited = json.loads(server.request("GET", "/terraform/state/product-a-dev/api").body)
    edited["serial"] += 1
    edited["outputs"]["port"]["value"] = "1"
    assert server.request("POST", "/terraform/state/product-a-dev/api", edited).status == 200
    drift = "/enclaves/{id}/partitions/{part}/drift"
    calls += [
        ("POST", drift + "/check", 200, {"path_parameters": ids, "query": {"wait": "120"}}),
        ("POST", drift + "/ack", 200, {"path_parameters": ids}),
        ("GET", drift, 200, {"path_parameters": ids}),
        ("GET", "/drift", 200, {"query": {"enclave": "product-a-dev"}}),
    ]
    covered = set()
    for method, path, expect, parts in calls:
        _call(live, api[path][method], expect, **parts)
        covered.add((method, path))

    # The delete guard's answers: a tree without web-dev, reconciled with max_deletes=0, waits
    # for approval. One such run is cancelled, the next approved (web-dev is destroyed), then
    # the whole tree is applied again so the tests after this one find it as before.
    trimmed = live.tree.parent / "trimmed"
    shutil.copytree(live.tree, trimmed, dirs_exist_ok=True)
    shutil.rmtree(trimmed / "web")  # the web-dev enclave
    held = {"body": {"enclaves_dir": str(trimmed), "max_deletes": 0}}
    for action in ("cancel", "approve"):
        waiting = _call(live, api["/reconcile"]["POST"], 202, **held).json()
        assert server.run(waiting["id"])["status"] == "awaiting_approval"
        answer = 202 if action == "approve" else 200
        query = {"query": {"wait": "0"}} if action == "approve" else {}
        parts = {"path_parameters": {"run_id": waiting["id"]}, **query}
        _call(live, api[f"/runs/{{run_id}}/{action}"]["POST"], answer, **parts)
        covered.add(("POST", f"/runs/{{run_id}}/{action}"))
        if action == "cancel":  # a retry of the cancelled run: the delete guard holds it too
            retry = api["/runs/{run_id}/retry"]["POST"]
            retried = _call(live, retry, 202, **{**parts, "query": {"wait": "0"}}).json()
            assert retried["retry_of"] == waiting["id"], retried
            assert server.run(retried["id"])["status"] == "awaiting_approval"
            covered.add(("POST", "/runs/{run_id}/retry"))
    assert server.wait_run(waiting["id"], 120)["status"] == "succeeded"
    assert server.reconcile(live.tree)["status"] == "succeeded"
    documented = {(m.upper(), p) for p, ops in api.raw_schema["paths"].items() for m in ops}
    destroys = {("DELETE", "/enclaves/{id}"), ("DELETE", "/enclaves/{id}/partitions/{part}")}
    missing = documented - destroys - covered - CHECKED_ELSEWHERE
    assert not missing, f"add a call with a success answer for each of {sorted(missing)}"


def test_every_protected_operation_refuses_no_token(live: Live) -> None:
    """The auth claim on every operation: documented security means 401 without the token,
    none means no token is needed (the fuzzing's ignored_auth check only probes operations
    whose request succeeded)."""
    server = live.server
    doc = server.ok("GET", "/openapi.json")
    protected = 0
    for pattern, operations in doc["paths"].items():
        path = pattern.format(
            id="product-a-dev",
            part="api",
            enc="e",
            run_id=live.run["id"],
            digest="0" * 64,
            asset="app.js",
        )
        for method, operation in operations.items():
            response = server.request(method.upper(), path, auth=False)
            if (method, pattern) == ("post", "/ui/login"):  # the token travels in its body
                assert response.status == 400, response
                continue
            if pattern.startswith("/webhooks/"):  # no token: a delivery proves its signature
                assert not operation["security"], (method, pattern)
                assert response.status == 401, (method, pattern, response)  # unsigned
                continue
            if operation["security"]:
                assert response.status == 401, (method, pattern, response)
                assert response.json["error"]["code"] == "unauthorized"
                assert "Bearer" in response.headers["WWW-Authenticate"]
                protected += 1
            else:
                assert response.status == 200, (method, pattern, response)
    assert protected >= len(CHECKS)  # more than a handful: the document lists them all


@pytest.fixture(name="destroy_schema", scope="module")
def destroy_schema_fixture(live: Live) -> Any:
    return _load(live, applied_ids=False)


destroys = schemathesis.pytest.from_fixture("destroy_schema").include(
    path_regex=DESTROY, method="DELETE"
)


@destroys.parametrize()
def test_destroy_fuzzed_conforms(case: schemathesis.Case) -> None:
    """After every other operation: the destroys fuzzed with ids nothing was applied under."""
    case.call_and_validate(checks=CHECKS)


def test_destroy_conforms(live: Live) -> None:
    """Last: a real destroy of a partition, then of an enclave, validated like the rest."""
    api = _load(live, applied_ids=False)
    part = {"id": "web-dev", "part": "frontend"}
    wait = {"wait": "120"}
    run = _call(
        live,
        api["/enclaves/{id}/partitions/{part}"]["DELETE"],
        200,
        path_parameters=part,
        query=wait,
    )
    assert run.json()["status"] == "succeeded", run.json()
    run = _call(
        live, api["/enclaves/{id}"]["DELETE"], 200, path_parameters={"id": "web-dev"}, query=wait
    )
    assert run.json()["status"] == "succeeded", run.json()
    assert live.server.request("GET", "/enclaves/web-dev").status == 404
