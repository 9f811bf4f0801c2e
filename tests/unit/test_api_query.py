"""The one query-parameter parser of every route, and error bodies that can always be written
(issue 8 point 9)."""

from __future__ import annotations

import json

import pytest

from nclav.api.http import (
    ApiRequest,
    ApiResponse,
    BadRequest,
    dump_json,
    error_response,
    printable,
    query_bool,
    query_choice,
    query_id,
    query_int,
    query_number,
    query_text,
)
from nclav.api.router import ID_PATTERN


def req(query: str) -> ApiRequest:
    return ApiRequest.build("GET", f"/x?{query}")


@pytest.mark.parametrize(
    "raw", ["%C2%B2", "%D9%A3", "-1", "1.5", "x", "%201", "1%20", "501", "9" * 30, "%EF%BC%91"]
)
def test_int_takes_ascii_digits_within_bounds_only(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        query_int(req(f"limit={raw}"), "limit", default=5, maximum=500)
    assert caught.value.message.startswith("query parameter limit: expected an integer")
    assert caught.value.details[0]["field"] == "limit"


def test_int_values_and_defaults() -> None:
    assert query_int(req("limit=007"), "limit", default=5, maximum=500) == 7
    assert query_int(req("limit=500"), "limit", default=5, maximum=500) == 500
    assert query_int(req(""), "limit", default=5, maximum=500) == 5
    assert query_int(req("limit="), "limit", default=5, maximum=500) == 5
    assert query_int(req("limit=2&limit=x"), "limit", default=5, maximum=500) == 2


@pytest.mark.parametrize("raw", ["1e3", "inf", "nan", "-0", "%C2%B2", "3601", ".5", "1."])
def test_number_refuses_what_float_would_take(raw: str) -> None:
    with pytest.raises(BadRequest, match="query parameter wait"):
        query_number(req(f"wait={raw}"), "wait", default=0.0, maximum=3600)


def test_number_bool_choice_id_text() -> None:
    assert query_number(req("wait=1.25"), "wait", default=0.0, maximum=3600) == 1.25
    assert query_bool(req("force=true"), "force") is True
    assert query_bool(req("force=0"), "force", default=True) is False
    with pytest.raises(BadRequest, match="true or false"):
        query_bool(req("force=maybe"), "force")
    assert query_choice(req("status=failed"), "status", ("running", "failed")) == "failed"
    with pytest.raises(BadRequest, match="one of running, failed"):
        query_choice(req("status=x"), "status", ("running", "failed"))
    assert query_id(req("enclave_id=web-dev"), "enclave_id", ID_PATTERN) == "web-dev"
    with pytest.raises(BadRequest):
        query_id(req("enclave_id=web%0A"), "enclave_id", ID_PATTERN)
    assert query_text(req("ID=0b7c-1"), "ID") == "0b7c-1"
    with pytest.raises(BadRequest):
        query_text(req("ID=a%0Db"), "ID")


def test_error_bodies_with_undecodable_file_names_are_written() -> None:
    name = b"ne/caf\xff.tf".decode("utf-8", "surrogateescape")  # as os.listdir gives it
    assert printable(name) == "ne/caf\\xff.tf"
    body = error_response(422, "validation_error", f"{name}: bad", "r", [{"path": name}]).body
    doc = json.loads(body)
    assert doc["error"]["message"] == "ne/caf\\xff.tf: bad"
    assert doc["error"]["details"] == [{"path": "ne/caf\\xff.tf"}]
    assert json.loads(dump_json({"a": "\ud800"})) == {"a": "\\ud800"}
    assert ApiResponse(200, b"", {"X-Name": "café"}).headers["X-Name"] == "caf\\xe9"
