"""Bad input to a real ``nclav serve``: 400/404/405/411/413/422 with the one JSON error shape,
never a 500 or a traceback. No terraform is needed here."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from serve_harness import shared_server_fixture  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from serve_harness import Response, Server

RECONCILES = ("/reconcile", "/reconcile/dry-run")


def assert_error(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, response
    assert response.headers["Content-Type"] == "application/json", response
    assert set(response.json) == {"error"}
    error = response.json["error"]
    assert error["code"] == code and error["message"], error
    assert re.fullmatch(r"[0-9a-f]{32}", error["request_id"])
    assert "Traceback" not in response.text and 'File "' not in response.text
    return error  # type: ignore[no-any-return]


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture(scope="module")
def checked(shared_server: Server) -> Iterator[Server]:
    """The module's server; at the end, its log must show no unhandled error."""
    yield shared_server
    log = shared_server.stderr()
    assert "unhandled error" not in log and "Traceback" not in log


@pytest.mark.parametrize("path", RECONCILES)
@pytest.mark.parametrize(
    "body",
    [b"{", b'{"enclaves_dir": ', b"\xff\xfe", b"{'single': 1}", b"{" * 50_000, b"", b"  "],
)
def test_bad_json_is_400(checked: Server, path: str, body: bytes) -> None:
    error = assert_error(checked.request("POST", path, body), 400, "bad_request")
    assert "JSON" in error["message"]


@pytest.mark.parametrize("path", RECONCILES)
def test_unknown_fields_and_wrong_types_are_422_with_details(checked: Server, path: str) -> None:
    body = {"enclaves_dir": "/x", "nope": 1, "also": {"a": []}}
    error = assert_error(checked.request("POST", path, body), 422, "validation_error")
    assert {(d["field"], d["message"]) for d in error["details"]} == {
        ("nope", "unknown field"),
        ("also", "unknown field"),
    }
    wrong_types: list[tuple[dict[str, Any], str]] = [
        ({"enclaves_dir": 5}, "enclaves_dir"),
        ({"enclaves_dir": "/x", "resources_only": "yes"}, "resources_only"),
        ({"bundle": ["a"]}, "bundle"),
    ]
    for bad, field in wrong_types:
        error = assert_error(checked.request("POST", path, bad), 422, "validation_error")
        assert [d["field"] for d in error["details"]] == [field]
    for not_an_object in (b"[]", b"5", b"null", b'"x"'):
        assert_error(checked.request("POST", path, not_an_object), 422, "validation_error")
    both = {"enclaves_dir": "/x", "bundle": "0" * 64}
    assert_error(checked.request("POST", path, both), 422, "validation_error")
    assert_error(checked.request("POST", path, {}), 422, "validation_error")


def test_oversized_bodies_are_413(checked: Server) -> None:
    # Over a route's limit (1 MiB for a reconcile) but small enough to be read and discarded.
    body = b'{"enclaves_dir": "' + b"a" * (1024 * 1024) + b'"}'
    refused = checked.headers_only("POST", "/reconcile", len(body))
    error = assert_error(refused, 413, "payload_too_large")
    assert str(len(body)) in error["message"]
    # Over the server's hard cap, even where a route allows more (Terraform state).
    refused = checked.headers_only("POST", "/terraform/state/e/p", 300 * 1024 * 1024)
    assert_error(refused, 413, "payload_too_large")
    assert refused.headers["Connection"] == "close"
    # Within the limit of the state route but over the default: accepted.
    assert (
        checked.request("POST", "/terraform/state/e/p", b"{" + b" " * 2_000_000 + b"}").status
        == 200
    )


def test_chunked_uploads_are_411(checked: Server) -> None:
    response = checked.request(
        "POST", "/reconcile", b"{}", headers={"Transfer-Encoding": "chunked"}
    )
    assert_error(response, 411, "length_required")


def test_unknown_ids_are_404(checked: Server) -> None:
    run_id = str(uuid.uuid4())
    iac = "/enclaves/nope/partitions/p/iac/runs"
    for method, path in [
        ("GET", "/enclaves/nope"),
        ("GET", "/enclaves/nope/graph"),
        ("DELETE", "/enclaves/nope"),
        ("DELETE", "/enclaves/nope?wait=1"),
        ("DELETE", "/enclaves/nope/partitions/p"),
        ("GET", f"/runs/{run_id}"),
        ("GET", "/runs/not-a-run"),
        ("GET", f"{iac}/latest"),
        ("GET", f"{iac}/{run_id}"),
        ("GET", f"{iac}/{run_id}/log"),
        ("GET", "/no/such/route"),
        ("GET", "/enclaves/a%2Fb"),  # an encoded slash is no separator, and no id either
    ]:
        assert_error(checked.request(method, path), 404, "not_found")
    assert checked.ok("GET", iac) == []
    for path in RECONCILES:
        missing = checked.request("POST", path, {"bundle": "0" * 64})
        assert_error(missing, 404, "not_found")


def test_bad_query_values_and_methods(checked: Server) -> None:
    for path in ("/events?limit=x", "/events?limit=-1", "/runs?limit=1.5"):
        assert_error(checked.request("GET", path), 400, "bad_request")
    for wait in ("abc", "-1", "99999", "nan"):
        response = checked.request("DELETE", f"/enclaves/nope?wait={wait}")
        assert response.status in (400, 404), response
        assert_error(response, response.status, response.json["error"]["code"])
    bad_id = checked.request("GET", "/enclaves/e/partitions/p/iac/runs/not-a-uuid")
    assert_error(bad_id, 400, "bad_request")
    response = checked.request("PUT", "/enclaves")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "GET"
    assert_error(checked.request("GET", "/terraform/state/-e/p"), 422, "validation_error")
    assert_error(checked.request("POST", "/bundles", b"not a tarball"), 422, "validation_error")


def test_an_invalid_tree_is_422_naming_file_line_and_field(checked: Server, tmp_path: Path) -> None:
    unknown_key = write(
        tmp_path / "unknown-key",
        {
            "x/config.yml": "id: x\nname: X\nregion: r\n",
            "x/p/config.yml": "id: p\nname: P\nbogus: 1\n",
            "x/p/main.tf": "",
        },
    )
    dangling = write(
        tmp_path / "dangling",
        {
            "x/config.yml": (
                "id: x\nname: X\nregion: r\nimports:\n"
                "  - from: nosuch\n    export_name: e\n    alias: a\n"
            ),
        },
    )
    broken_yaml = write(tmp_path / "yaml", {"y/config.yml": "id: y\nname: [unclosed\nregion: r\n"})
    cases = [
        (unknown_key, "x/p/config.yml", 3, "bogus", "unknown key 'bogus'"),
        (dangling, "x/config.yml", 5, "imports[0].from", "unknown enclave 'nosuch'"),
        (broken_yaml, "y/config.yml", 3, "", "invalid YAML"),
    ]
    for tree, file, line, field, message in cases:
        for path in RECONCILES:
            response = checked.request("POST", path, {"enclaves_dir": str(tree)})
            error = assert_error(response, 422, "validation_error")
            (detail,) = error["details"]
            assert detail["path"].endswith(file), detail
            assert (detail["line"], detail["field"]) == (line, field), detail
            assert message in detail["message"], detail
            assert f":{line}: " in error["message"]
    for missing in (tmp_path / "does-not-exist", tmp_path / "unknown-key" / "x" / "config.yml"):
        response = checked.request("POST", "/reconcile", {"enclaves_dir": str(missing)})
        error = assert_error(response, 422, "validation_error")
        assert error["details"][0]["path"] == str(missing)
    # None of it started a run.
    assert checked.ok("GET", "/runs") == []
