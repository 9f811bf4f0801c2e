"""The framework-free router: matching, auth order, body limits, JSON bodies, error mapping."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from pydantic import BaseModel

from nclav.api import (
    ApiRequest,
    ApiResponse,
    Conflict,
    Headers,
    Locked,
    RequestBody,
    Router,
    TokenAuth,
    error_response,
    json_response,
    openapi,
)
from nclav.errors import ConflictError, Issue, NotFoundError, SpecError

TOKEN = "a" * 64
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Nested(RequestBody):
    x: int


class Item(RequestBody):
    name: str
    count: int = 0
    tags: list[str] = []
    nested: Nested | None = None


class ItemOut(BaseModel):
    name: str
    count: int


def echo(request: ApiRequest, params: dict[str, str], body: Any) -> ApiResponse:
    return json_response(200, {"params": params, "body": body.model_dump() if body else None})


def fail_with(exc: Exception) -> Any:
    def handler(request: ApiRequest, params: dict[str, str], body: Any) -> ApiResponse:
        raise exc

    return handler


@pytest.fixture
def router() -> Router:
    r = Router(TokenAuth(TOKEN))
    r.add("GET", "/health", echo, auth="none", summary="liveness")
    r.add("GET", "/enclaves/{id}", echo)
    r.add("DELETE", "/enclaves/{id}", echo)
    r.add("GET", "/enclaves/{id}/partitions/{part}", echo)
    r.add("GET", "/runs/latest", lambda req, p, b: json_response(200, {"which": "latest"}))
    r.add("GET", "/runs/{run_id}", lambda req, p, b: json_response(200, {"which": p["run_id"]}))
    r.add("POST", "/items", echo, request_model=Item, response_model=ItemOut, max_body=1024)
    r.add("POST", "/state/{key}", echo, auth="bearer_or_basic", query=("ID",))
    r.add("GET", "/boom", fail_with(RuntimeError("secret detail in /srv/db")))
    issues = [Issue("a.yaml", 3, "id", "required"), Issue("b.yaml", None, "", "bad")]
    r.add("GET", "/spec", fail_with(SpecError(issues)))
    r.add("GET", "/missing", fail_with(NotFoundError("enclave 'x' not found")))
    r.add("GET", "/conflict", fail_with(ConflictError("generation changed")))
    r.add("GET", "/locked", fail_with(Locked("held by run 7", headers={"Retry-After": "3"})))
    r.add("GET", "/http-conflict", fail_with(Conflict("lock id mismatch")))
    r.add("GET", "/none", lambda req, p, b: None)  # type: ignore[arg-type,return-value]
    return r


def call(
    router: Router,
    method: str,
    target: str,
    body: bytes | str = b"",
    headers: dict[str, str] | None = None,
) -> tuple[ApiResponse, Any]:
    raw = body.encode() if isinstance(body, str) else body
    request = ApiRequest.build(
        method, target, headers=AUTH if headers is None else headers, body=raw
    )
    response = router.dispatch(request)
    assert response.headers["X-Request-Id"] == request.request_id
    doc: Any = json.loads(response.body) if response.body else None
    if response.status >= 400:
        assert set(doc) == {"error"}
        assert doc["error"]["request_id"] == request.request_id
        assert {"code", "message", "request_id"} <= set(doc["error"])
    return response, doc


# --- matching ---------------------------------------------------------------------------


def test_unknown_path_is_404_even_without_credentials(router: Router) -> None:
    response, doc = call(router, "GET", "/nope", headers={})
    assert response.status == 404
    assert doc["error"]["code"] == "not_found"
    assert response.headers["Content-Type"] == "application/json"


def test_known_path_with_another_method_is_405_with_allow(router: Router) -> None:
    response, doc = call(router, "PUT", "/enclaves/x")
    assert response.status == 405
    assert response.headers["Allow"] == "DELETE, GET"
    assert doc["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("target", "params"),
    [
        ("/enclaves/prod", {"id": "prod"}),
        ("/enclaves/a%20b", {"id": "a b"}),
        ("/enclaves/caf%C3%A9", {"id": "café"}),
        ("/enclaves/x/partitions/db%2Dmain", {"id": "x", "part": "db-main"}),
    ],
)
def test_path_params_are_decoded(router: Router, target: str, params: dict[str, str]) -> None:
    response, doc = call(router, "GET", target)
    assert response.status == 200
    assert doc["params"] == params


@pytest.mark.parametrize(
    "target",
    [
        "/enclaves/a%2Fb",  # an encoded slash never lands inside a parameter
        "/enclaves/%FF",  # not UTF-8
        "/enclaves/",  # empty parameter
        "/enclaves//partitions/p",
        "/enclaves/..",
        "/enclaves/%2E%2E",
        "/enclaves/x/",  # trailing slash: exact match only
        "/health/",
        "enclaves/x",
    ],
)
def test_paths_that_match_nothing(router: Router, target: str) -> None:
    assert call(router, "GET", target)[0].status == 404


def test_query_string_does_not_affect_matching(router: Router) -> None:
    response, doc = call(router, "GET", "/enclaves/x?limit=5&limit=6&flag")
    assert response.status == 200
    assert doc["params"] == {"id": "x"}


def test_a_literal_segment_wins_over_a_parameter(router: Router) -> None:
    assert call(router, "GET", "/runs/latest")[1] == {"which": "latest"}
    assert call(router, "GET", "/runs/r-1")[1] == {"which": "r-1"}


def test_a_parameter_route_with_the_method_wins_over_a_literal_without() -> None:
    r = Router(TokenAuth(TOKEN))
    r.add("GET", "/runs/latest", echo)
    r.add("DELETE", "/runs/{run_id}", echo)
    response, doc = call(r, "DELETE", "/runs/latest")
    assert response.status == 200
    assert doc["params"] == {"run_id": "latest"}
    assert call(r, "POST", "/runs/latest")[0].headers["Allow"] == "DELETE, GET"


def test_root_route() -> None:
    r = Router(TokenAuth(TOKEN))
    r.add("GET", "/", echo, auth="none")
    assert call(r, "GET", "/")[0].status == 200
    assert call(r, "GET", "/x")[0].status == 404


# --- auth ordering and body limits -------------------------------------------------------


def test_protected_route_without_credentials_is_401(router: Router) -> None:
    response, doc = call(router, "GET", "/enclaves/x", headers={})
    assert response.status == 401
    assert doc["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


def test_unprotected_route_needs_no_credentials(router: Router) -> None:
    assert call(router, "GET", "/health", headers={})[0].status == 200


def test_auth_is_checked_before_body_size_and_parsing(router: Router) -> None:
    assert call(router, "POST", "/items", "x" * 5000, headers={})[0].status == 401
    assert call(router, "POST", "/items", "{not json", headers={})[0].status == 401
    assert call(router, "GET", "/boom", headers={})[0].status == 401


def test_oversized_body_is_413_before_parsing(router: Router) -> None:
    response, doc = call(router, "POST", "/items", "x" * 1025)
    assert response.status == 413
    assert doc["error"]["code"] == "payload_too_large"
    assert "1024" in doc["error"]["message"]
    assert call(router, "POST", "/items", json.dumps({"name": "n" * 1000}))[0].status == 200


def test_router_without_authenticator_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    r = Router()
    r.add("GET", "/health", echo, auth="none")
    r.add("GET", "/secret", echo)
    assert call(r, "GET", "/health", headers={})[0].status == 200
    with caplog.at_level(logging.ERROR):
        response, doc = call(r, "GET", "/secret", headers=AUTH)
    assert response.status == 500
    assert doc["error"]["code"] == "internal"


def test_preflight_checks_route_auth_and_size_without_a_body(router: Router) -> None:
    def pre(target: str, length: int, headers: dict[str, str]) -> int | None:
        request = ApiRequest.build("POST", target, headers=headers)
        response = router.preflight(request, length)
        if response is not None:
            assert response.headers["X-Request-Id"] == request.request_id
        return None if response is None else response.status

    assert pre("/items", 100, AUTH) is None
    assert pre("/items", 2000, AUTH) == 413
    assert pre("/items", 2000, {}) == 401
    assert pre("/nope", 10, {}) == 404
    assert pre("/health", 10, {}) == 405


# --- JSON bodies --------------------------------------------------------------------------


def test_valid_body_reaches_the_handler_as_a_model(router: Router) -> None:
    body = {"name": "a", "count": 2, "tags": ["x"], "nested": {"x": 1}}
    response, doc = call(router, "POST", "/items", json.dumps(body))
    assert response.status == 200
    assert doc["body"] == body


@pytest.mark.parametrize(
    ("body", "position"),
    [
        ("{", "line 1 column 1"),
        ('{"name": "a",}', "line 1 column 14"),
        ('{\n  "name": "a"\n  "count": 1}', "line 3"),
        (b'{"name": "\xff"}', "line 1"),
    ],
)
def test_bad_json_is_400_with_the_parser_position(
    router: Router, body: str | bytes, position: str
) -> None:
    response, doc = call(router, "POST", "/items", body)
    assert response.status == 400
    assert doc["error"]["code"] == "bad_request"
    assert doc["error"]["message"].startswith("request body is not valid JSON")
    assert position in doc["error"]["message"]


def test_missing_body_is_400(router: Router) -> None:
    response, doc = call(router, "POST", "/items")
    assert response.status == 400
    assert "required" in doc["error"]["message"]


def test_schema_errors_are_422_naming_each_field(router: Router) -> None:
    body = {"count": "3", "tags": ["ok", 2], "nested": {"x": "1"}, "colour": "crimson-value"}
    response, doc = call(router, "POST", "/items", json.dumps(body))
    assert response.status == 422
    error = doc["error"]
    assert error["code"] == "validation_error"
    by_field = {d["field"]: d["message"] for d in error["details"]}
    assert by_field == {
        "name": "required field is missing",
        "count": "Input should be a valid integer",
        "tags[1]": "Input should be a valid string",
        "nested.x": "Input should be a valid integer",
        "colour": "unknown field",
    }
    assert all(d["path"] == "body" and d["line"] is None for d in error["details"])
    assert "crimson-value" not in response.body.decode()  # input values are never echoed


def test_a_non_object_body_is_422_on_the_whole_body(router: Router) -> None:
    response, doc = call(router, "POST", "/items", "[1, 2]")
    assert response.status == 422
    assert [d["field"] for d in doc["error"]["details"]] == [""]


# --- exception mapping -------------------------------------------------------------------


def test_unexpected_exception_is_500_without_details(
    router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="nclav.api.router"):
        response, doc = call(router, "GET", "/boom")
    assert response.status == 500
    assert doc == {
        "error": {
            "code": "internal",
            "message": "internal error",
            "request_id": doc["error"]["request_id"],
        }
    }
    text = response.body.decode()
    assert "secret" not in text and "Traceback" not in text and "RuntimeError" not in text
    [record] = [r for r in caplog.records if r.name == "nclav.api.router"]
    assert doc["error"]["request_id"] in record.getMessage()
    assert record.exc_info is not None and "secret detail" in str(record.exc_info[1])


def test_spec_error_is_422_with_its_issues(router: Router) -> None:
    response, doc = call(router, "GET", "/spec")
    assert response.status == 422
    assert doc["error"]["code"] == "validation_error"
    assert doc["error"]["details"] == [
        {"path": "a.yaml", "line": 3, "field": "id", "message": "required"},
        {"path": "b.yaml", "line": None, "field": "", "message": "bad"},
    ]


@pytest.mark.parametrize(
    ("target", "status", "code", "message"),
    [
        ("/missing", 404, "not_found", "enclave 'x' not found"),
        ("/conflict", 409, "conflict", "generation changed"),
        ("/locked", 423, "locked", "held by run 7"),
        ("/http-conflict", 409, "conflict", "lock id mismatch"),
    ],
)
def test_domain_and_http_errors_map_to_their_status(
    router: Router, target: str, status: int, code: str, message: str
) -> None:
    response, doc = call(router, "GET", target)
    assert response.status == status
    assert doc["error"]["code"] == code
    assert doc["error"]["message"] == message
    assert "details" not in doc["error"]


def test_http_error_headers_reach_the_response(router: Router) -> None:
    assert call(router, "GET", "/locked")[0].headers["Retry-After"] == "3"


def test_a_handler_returning_the_wrong_type_is_a_500(router: Router) -> None:
    assert call(router, "GET", "/none")[0].status == 500


# --- records and helpers -------------------------------------------------------------------


def test_json_response_is_sorted_compact_utf8() -> None:
    response = json_response(201, {"b": 1, "a": ["é", None]})
    assert response.status == 201
    assert response.body == '{"a":["é",null],"b":1}'.encode()
    assert response.headers == {"Content-Type": "application/json"}
    assert json_response(200, ItemOut(name="n", count=1)).body == b'{"count":1,"name":"n"}'
    with pytest.raises(ValueError):
        json_response(200, {"x": float("nan")})


def test_error_response_shape() -> None:
    response = error_response(422, "validation_error", "bad", "rid", [{"field": "a"}])
    assert json.loads(response.body) == {
        "error": {
            "code": "validation_error",
            "message": "bad",
            "request_id": "rid",
            "details": [{"field": "a"}],
        }
    }


def test_response_headers_cannot_split_the_response() -> None:
    with pytest.raises(ValueError):
        ApiResponse(200, b"", {"Location": "/x\r\nSet-Cookie: a=b"})
    with pytest.raises(ValueError):
        ApiResponse(200, b"", {"Bad Name": "x"})


def test_headers_are_case_insensitive_and_redacted_in_repr() -> None:
    headers = Headers([("Authorization", "Bearer s3cret"), ("X-A", "1"), ("x-a", "2")])
    assert headers["authorization"] == headers["AUTHORIZATION"] == "Bearer s3cret"
    assert headers["X-a"] == "1, 2"
    assert "content-type" not in headers
    request = ApiRequest("GET", "/", {}, {"Authorization": "Bearer s3cret"}, b"body-secret")
    assert request.headers["AUTHORIZATION"] == "Bearer s3cret"
    assert "s3cret" not in repr(request) and "body-secret" not in repr(request)


def test_request_build_splits_the_target() -> None:
    request = ApiRequest.build("GET", "/events?enclave_id=&limit=5&limit=6")
    assert request.path == "/events"
    assert request.query == {"enclave_id": [""], "limit": ["5", "6"]}
    assert request.query_value("limit") == "5"
    assert request.query_value("absent") is None
    assert ApiRequest.build("GET", "http://h:1/a/b?x=1").path == "/a/b"
    assert ApiRequest.build("GET", "//a/b").path == "//a/b"
    assert len(request.request_id) == 32


# --- registration ----------------------------------------------------------------------------


def test_decorator_registers_and_returns_the_handler() -> None:
    r = Router(TokenAuth(TOKEN))

    @r.route("POST", "/items", request_model=Item, summary="create")
    def create(request: ApiRequest, params: dict[str, str], body: Item) -> ApiResponse:
        return json_response(201, {"name": body.name})

    assert create.__name__ == "create"
    assert r.routes[0].summary == "create"
    assert call(r, "POST", "/items", '{"name": "z"}')[1] == {"name": "z"}


@pytest.mark.parametrize(
    ("method", "pattern", "options", "message"),
    [
        ("GET", "/enclaves/{id}", {}, "duplicates"),
        ("GET", "/enclaves/{name}", {}, "duplicates"),
        ("PUT", "/enclaves/{name}", {}, "names its parameters"),
        ("get", "/x", {}, "upper-case"),
        ("GET", "x", {}, "must start"),
        ("GET", "/a//b", {}, "bad segment"),
        ("GET", "/a/{b}{c}", {}, "bad segment"),
        ("GET", "/a/{b}/{b}", {}, "repeated"),
        ("GET", "/a", {"auth": "cookie"}, "auth mode"),
        ("POST", "/a", {"request_model": ItemOut}, "extra='forbid'"),
    ],
)
def test_bad_routes_are_refused(
    router: Router, method: str, pattern: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        router.add(method, pattern, echo, **options)


# --- OpenAPI ------------------------------------------------------------------------------------


def test_openapi_lists_every_route_with_params_bodies_and_security(router: Router) -> None:
    doc = openapi(router, "nclav", "0.1.0")
    json.loads(json.dumps(doc, allow_nan=False))  # plain JSON all the way down
    assert doc["openapi"].startswith("3.1")
    assert doc["info"] == {"title": "nclav", "version": "0.1.0"}
    listed = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert listed == {(r.method, r.pattern) for r in router.routes}

    part = doc["paths"]["/enclaves/{id}/partitions/{part}"]["get"]
    assert [(p["name"], p["in"], p["required"]) for p in part["parameters"]] == [
        ("id", "path", True),
        ("part", "path", True),
    ]
    assert part["security"] == [{"bearerAuth": []}]
    assert doc["paths"]["/health"]["get"]["security"] == []
    state = doc["paths"]["/state/{key}"]["post"]
    assert state["security"] == [{"bearerAuth": []}, {"basicAuth": []}]
    assert {"name": "ID", "in": "query", "schema": {"type": "string"}} in state["parameters"]

    schemas = doc["components"]["schemas"]
    items = doc["paths"]["/items"]["post"]
    ref = items["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    item_schema = schemas[ref.rsplit("/", 1)[1]]
    assert set(item_schema["properties"]) == {"name", "count", "tags", "nested"}
    assert item_schema["additionalProperties"] is False
    assert "Nested" in schemas  # nested models are hoisted into components
    assert "$defs" not in json.dumps(doc)
    out = items["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert out.rsplit("/", 1)[1] in schemas
    error = items["responses"]["default"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/Error"}
    assert set(schemas["Error"]["properties"]["error"]["properties"]) == {
        "code",
        "message",
        "request_id",
        "details",
    }
    assert doc["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer"},
        "basicAuth": {"type": "http", "scheme": "basic"},
    }
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
