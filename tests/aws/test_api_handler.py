"""``functions_aws.api.handler`` with recorded function URL (payload 2.0) and HTTP API events."""

from __future__ import annotations

import base64
import io
import json
import os
from typing import TYPE_CHECKING, Any

import pytest
from aws_harness import Deployment, FakeContext, Result, enclaves_tree, load_event

from functions_aws import api, bootstrap
from nclav.api.http import ApiResponse
from nclav.bundle import pack_directory

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """What the API function's logger writes (its stream is bound when it is created)."""
    handler = api.logger.registered_handler
    buffer = io.StringIO()
    old = handler.setStream(buffer)  # type: ignore[attr-defined]
    try:
        yield buffer
    finally:
        handler.setStream(old)  # type: ignore[attr-defined]


def json_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    """The JSON log lines the handler wrote."""
    out = []
    for line in buffer.getvalue().splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


def call(event: dict[str, object]) -> Result:
    return Result.of(api.handler(event, FakeContext("nclav-api")))


def authorized(name: str, token: str) -> dict[str, object]:
    event = load_event(name)
    event["headers"]["authorization"] = f"Bearer {token}"  # type: ignore[index]
    return event


def packed_tree(tmp_path: Path) -> bytes:
    return pack_directory(enclaves_tree(tmp_path / "tree", "alpha"))[1]


def test_health_from_a_function_url_event(deployment: Deployment) -> None:
    result = call(load_event("function_url_get"))
    assert result.status == 200 and result.json == {"status": "ok"}
    assert result.headers["Content-Type"] == "application/json"
    assert result.headers["X-Request-Id"] == "2f0e7b7c-8a44-4f55-9d59-0b4d7b2b6a11"
    raw = api.handler(load_event("function_url_get"), FakeContext())
    assert raw["isBase64Encoded"] is False and json.loads(raw["body"]) == {"status": "ok"}


def test_a_protected_route_needs_the_token(deployment: Deployment) -> None:
    event = load_event("function_url_get")
    event["rawPath"] = "/enclaves"
    missing = call(event)
    assert missing.status == 401
    assert missing.json["error"]["code"] == "unauthorized"
    assert missing.json["error"]["request_id"] == "2f0e7b7c-8a44-4f55-9d59-0b4d7b2b6a11"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    event["headers"]["authorization"] = "Bearer " + "0" * 64
    assert call(event).status == 401
    event["headers"]["authorization"] = f"Bearer {deployment.token}"
    assert call(event).status == 200 and call(event).json == []


def test_post_bundles_with_a_base64_body_through_an_http_api_stage(
    deployment: Deployment, tmp_path: Path
) -> None:
    data = packed_tree(tmp_path)
    event = authorized("http_api_post_bundles", deployment.token)
    event["body"] = base64.b64encode(data).decode()
    first = call(event)
    assert first.status == 201, first
    assert first.json["created"] is True and first.json["bytes"] == len(data)
    assert first.headers["X-Request-Id"] == "JKJaXmPLvHcESHA="
    again = call(event)
    assert again.status == 200 and again.json["created"] is False
    digest = first.json["digest"]
    assert deployment.api.ok("GET", f"/bundles/{digest}") == {"digest": digest}

    plan = authorized("function_url_post_json", deployment.token)
    plan["body"] = json.dumps({"bundle": digest})
    dry = call(plan)
    assert dry.status == 200 and dry.json["dry_run"] is True
    assert [c["kind"] for c in dry.json["changes"]] == ["EnclaveCreated"]


def test_function_url_binary_post(deployment: Deployment, tmp_path: Path) -> None:
    event = authorized("function_url_post_binary", deployment.token)
    event["body"] = base64.b64encode(packed_tree(tmp_path)).decode()
    assert call(event).status == 201


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/nowhere", None, 404, "not_found"),
        ("PUT", "/enclaves", None, 405, "method_not_allowed"),
        ("POST", "/reconcile", "{not json", 400, "bad_request"),
        ("POST", "/reconcile", '{"bundel": "x"}', 422, "validation_error"),
        ("GET", "/enclaves/missing", None, 404, "not_found"),
        ("POST", "/reconcile", '{"bundle": "' + "0" * 64 + '"}', 404, "not_found"),
    ],
)
def test_errors_have_one_shape(
    deployment: Deployment, method: str, path: str, body: str | None, status: int, code: str
) -> None:
    event = authorized("function_url_post_json", deployment.token)
    event["rawPath"] = path
    event["requestContext"]["http"]["method"] = method  # type: ignore[index]
    event["body"] = body
    result = call(event)
    assert result.status == status, result
    error = result.json["error"]
    assert error["code"] == code and error["request_id"] == "8c1d3f0a-51a6-4b7e-a0c2-6f3e2d1c0b9a"
    if status == 405:
        assert "GET" in result.headers["Allow"]


def test_a_query_string_reaches_the_router(deployment: Deployment) -> None:
    event = authorized("http_api_get_default_stage", deployment.token)
    result = call(event)
    assert result.status == 400 and "limit" in result.json["error"]["message"]
    event["rawQueryString"] = "limit=5"
    assert call(event).json == []


def test_a_body_that_is_not_base64_is_a_bad_request(deployment: Deployment) -> None:
    event = authorized("function_url_post_binary", deployment.token)
    event["body"] = "not base64!"
    result = call(event)
    assert result.status == 400 and "base64" in result.json["error"]["message"]


def test_an_event_that_is_not_http_is_a_bad_request(deployment: Deployment) -> None:
    result = call(load_event("eventbridge_scheduled"))
    assert result.status == 400 and result.json["error"]["code"] == "bad_request"


def test_a_runtime_that_cannot_start_answers_500_without_details(
    deployment: Deployment, logs: io.StringIO
) -> None:
    deployment.secretsmanager.delete_secret(
        SecretId="nclav/api-token", ForceDeleteWithoutRecovery=True
    )
    event = authorized("function_url_get", deployment.token)
    event["rawPath"] = "/runs"
    result = call(event)
    assert result.status == 500
    assert result.json == {
        "error": {
            "code": "internal",
            "message": "internal error",
            "request_id": "2f0e7b7c-8a44-4f55-9d59-0b4d7b2b6a11",
        }
    }
    assert result.headers["X-Request-Id"] == "2f0e7b7c-8a44-4f55-9d59-0b4d7b2b6a11"
    # The log has the reason, as JSON with the request's correlation id.
    lines = json_lines(logs)
    (logged,) = [line for line in lines if line.get("message") == "the runtime could not be built"]
    assert logged["correlation_id"] == "2f0e7b7c-8a44-4f55-9d59-0b4d7b2b6a11"
    assert logged["service"] == "nclav-api" and "api-token" in logged["exception"]


def test_health_answers_without_building_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    # No NCLAV_* environment at all: the runtime cannot be built, yet the function is alive.
    for name in [n for n in os.environ if n.startswith("NCLAV_")]:
        monkeypatch.delenv(name)
    result = call(load_event("function_url_get"))
    assert result.status == 200 and result.json == {"status": "ok"}
    assert result.headers["X-Request-Id"] == "2f0e7b7c-8a44-4f55-9d59-0b4d7b2b6a11"
    assert bootstrap.install(None) is None  # nothing was built: nothing replaced
    event = load_event("function_url_get")
    event["rawPath"] = "/runs"
    assert call(event).status == 500  # anything else needs the runtime


def test_core_log_lines_come_out_as_json_with_the_correlation_id(
    deployment: Deployment, logs: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = deployment.runtime.router

    def boom(*_: object) -> ApiResponse:
        raise RuntimeError("a bug")

    route = next(r for r in router.routes if r.pattern == "/status")
    object.__setattr__(route, "handler", boom)
    event = authorized("function_url_get", deployment.token)
    event["rawPath"] = "/status"
    result = call(event)
    assert result.status == 500 and "a bug" not in result.text
    lines = json_lines(logs)
    (logged,) = [line for line in lines if "unhandled error" in str(line.get("message"))]
    assert logged["name"] == "nclav.api.router"
    assert logged["correlation_id"] == "2f0e7b7c-8a44-4f55-9d59-0b4d7b2b6a11"


def test_binary_and_text_results() -> None:
    text = api.to_result(ApiResponse(200, "héllo".encode(), {"Content-Type": "text/plain"}))
    assert text["body"] == "héllo" and text["isBase64Encoded"] is False
    binary = api.to_result(ApiResponse(200, b"\x1f\x8b\xff", {"Content-Type": "application/gzip"}))
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == b"\x1f\x8b\xff"
    broken = api.to_result(ApiResponse(200, b"\xff", {"Content-Type": "text/plain"}))
    assert broken["isBase64Encoded"] is True
    empty = api.to_result(ApiResponse(204))
    assert empty == {"statusCode": 204, "headers": {}, "body": "", "isBase64Encoded": False}


def test_importing_a_handler_reaches_no_network_and_reads_no_credentials() -> None:
    import subprocess
    import sys

    code = (
        "import os, socket\n"
        "for k in list(os.environ):\n"
        "    if k.startswith(('AWS_', 'NCLAV_')): del os.environ[k]\n"
        "def refuse(*a, **k): raise AssertionError('network at import')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import functions_aws.api, functions_aws.worker, functions_aws.iac_worker\n"
        "import functions_aws.schedule, sys\n"
        "heavy = ('boto3', 'botocore.session', 'nclav.engine')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
