"""The local threaded server on a loopback port, called with plain HTTP."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from nclav.api import ApiRequest, ApiResponse, RequestBody, Router, TokenAuth, json_response
from nclav.api.server import ApiServer, serve_http, start_server, stop_server

if TYPE_CHECKING:
    from collections.abc import Iterator

TOKEN = "b" * 64
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HARD_CAP = 256 * 1024


class Item(RequestBody):
    name: str


class Harness:
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.host, self.port = server.server_address[:2]
        self.release = threading.Event()
        self.blocked = threading.Event()

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(str(self.host), int(self.port), timeout=10)

    def call(
        self,
        method: str,
        target: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, Any]:
        conn = self.connect()
        try:
            conn.request(method, target, body=body, headers=AUTH if headers is None else headers)
            response = conn.getresponse()
            raw = response.read()
            doc = (
                json.loads(raw)
                if raw and response.getheader("Content-Type") == "application/json"
                else raw
            )
            return response.status, response.headers, doc
        finally:
            conn.close()

    def raw(self, data: bytes) -> bytes:
        """Send bytes on a fresh socket and read until the server closes it."""
        with socket.create_connection((str(self.host), int(self.port)), timeout=10) as sock:
            sock.sendall(data)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def make_router(harness_box: dict[str, Harness]) -> Router:
    router = Router(TokenAuth(TOKEN))

    def echo(request: ApiRequest, params: dict[str, str], body: Any) -> ApiResponse:
        doc = {
            "params": params,
            "query": dict(request.query),
            "body": body.model_dump() if body is not None else None,
            "raw_length": len(request.body),
        }
        return json_response(200, doc)

    def block(request: ApiRequest, params: dict[str, str], body: Any) -> ApiResponse:
        harness = harness_box["h"]
        harness.blocked.set()
        released = harness.release.wait(10)
        return json_response(200, {"released": released})

    def boom(request: ApiRequest, params: dict[str, str], body: Any) -> ApiResponse:
        raise KeyError("internal-path /var/lib/secret")

    def empty(request: ApiRequest, params: dict[str, str], body: Any) -> ApiResponse:
        return ApiResponse(204)

    router.add("GET", "/health", echo, auth="none")
    router.add("GET", "/enclaves/{id}/partitions/{part}", echo)
    router.add("POST", "/items", echo, request_model=Item, max_body=1024)
    router.add(
        "POST", "/terraform/state/{enc}/{part}", echo, auth="bearer_or_basic", max_body=HARD_CAP
    )
    router.add("GET", "/block", block)
    router.add("GET", "/boom", boom)
    router.add("DELETE", "/empty", empty)
    return router


@pytest.fixture
def harness() -> Iterator[Harness]:
    box: dict[str, Harness] = {}
    server, thread = start_server(make_router(box), "127.0.0.1", 0, max_body=HARD_CAP)
    box["h"] = harness = Harness(server)
    try:
        yield harness
    finally:
        harness.release.set()
        stop_server(server, thread)


def assert_error(status: int, headers: http.client.HTTPMessage, doc: Any, code: str) -> None:
    assert headers["Content-Type"] == "application/json"
    assert set(doc) == {"error"}
    error = doc["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert re.fullmatch(r"[0-9a-f]{32}", error["request_id"])
    assert headers["X-Request-Id"] == error["request_id"]


def test_port_zero_binds_a_free_port(harness: Harness) -> None:
    assert harness.host == "127.0.0.1" and harness.port > 0
    assert harness.server.url == f"http://127.0.0.1:{harness.port}"


def test_success_with_decoded_params_and_a_request_id(harness: Harness) -> None:
    status, headers, doc = harness.call("GET", "/enclaves/a%20b/partitions/db?x=1&x=2")
    assert status == 200
    assert doc["params"] == {"id": "a b", "part": "db"}
    assert doc["query"] == {"x": ["1", "2"]}
    assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-Id"])
    assert headers["Server"] == "nclav"


def test_urllib_client_works_too(harness: Harness) -> None:
    url = f"{harness.server.url}/health"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{harness.server.url}/block", timeout=10)
    assert caught.value.code == 401
    assert json.loads(caught.value.read())["error"]["code"] == "unauthorized"


def test_error_shapes_over_the_wire(harness: Harness) -> None:
    cases = [
        (("GET", "/nope", None, {}), 404, "not_found"),
        (("PUT", "/health", None, {}), 405, "method_not_allowed"),
        (("GET", "/block", None, {}), 401, "unauthorized"),
        (("GET", "/block", None, {"Authorization": "Bearer wrong"}), 401, "unauthorized"),
        (("POST", "/items", "x" * 2000, None), 413, "payload_too_large"),
        (("POST", "/items", '{"name": ', None), 400, "bad_request"),
        (("POST", "/items", '{"name": 1, "extra": true}', None), 422, "validation_error"),
        (("GET", "/boom", None, None), 500, "internal"),
    ]
    for (method, target, body, headers), want_status, code in cases:
        status, response_headers, doc = harness.call(method, target, body, headers)
        assert status == want_status, (method, target)
        assert_error(status, response_headers, doc, code)
    assert harness.call("PUT", "/health")[1]["Allow"] == "GET"


def test_a_500_never_carries_a_traceback(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        status, headers, doc = harness.call("GET", "/boom")
    assert status == 500
    assert doc["error"] == {
        "code": "internal",
        "message": "internal error",
        "request_id": headers["X-Request-Id"],
    }
    records = [r for r in caplog.records if r.exc_info]
    assert len(records) == 1 and headers["X-Request-Id"] in records[0].getMessage()


def test_basic_auth_with_the_token_as_password(harness: Harness) -> None:
    creds = base64.b64encode(f"nclav:{TOKEN}".encode()).decode()
    status, _, doc = harness.call(
        "POST", "/terraform/state/e/p?ID=1", b"{}", {"Authorization": f"Basic {creds}"}
    )
    assert status == 200 and doc["params"] == {"enc": "e", "part": "p"}
    status, headers, _ = harness.call(
        "POST", "/terraform/state/e/p", b"{}", {"Authorization": "Basic eDp5"}
    )
    assert status == 401 and "Basic" in headers["WWW-Authenticate"]


def test_a_large_body_within_the_route_limit(harness: Harness) -> None:
    body = b"s" * (200 * 1024)
    status, _, doc = harness.call("POST", "/terraform/state/e/p", body)
    assert status == 200 and doc["raw_length"] == len(body)


def test_a_body_over_the_hard_cap_is_refused_unread(harness: Harness) -> None:
    # Only the headers are sent: the server must answer without waiting for the body.
    conn = harness.connect()
    conn.putrequest("POST", "/terraform/state/e/p")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Length", str(100 * 1024 * 1024))
    conn.endheaders()
    response = conn.getresponse()
    doc = json.loads(response.read())
    assert response.status == 413 and doc["error"]["code"] == "payload_too_large"
    assert response.getheader("Connection") == "close"
    conn.close()


def test_an_unauthenticated_upload_is_refused_before_its_body(harness: Harness) -> None:
    reply = harness.raw(
        b"POST /terraform/state/e/p HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 401 ")
    assert b"100 Continue" not in reply


def test_expect_continue_is_answered_once_the_checks_pass(harness: Harness) -> None:
    with socket.create_connection((str(harness.host), int(harness.port)), timeout=10) as sock:
        sock.sendall(
            b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(b'{"name":"n"} ')
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200 ")


def test_a_small_refused_body_keeps_the_connection_usable(harness: Harness) -> None:
    conn = harness.connect()
    conn.request("POST", "/items", body="x" * 2000, headers=AUTH)
    first = conn.getresponse()
    first.read()
    assert first.status == 413
    conn.request("GET", "/health")
    second = conn.getresponse()
    assert second.status == 200 and second.read()
    conn.close()


def test_keep_alive_serves_several_requests_on_one_connection(harness: Harness) -> None:
    conn = harness.connect()
    ids = set()
    for _ in range(3):
        conn.request("POST", "/items", body='{"name": "k"}', headers=AUTH)
        response = conn.getresponse()
        assert response.status == 200
        response.read()
        ids.add(response.getheader("X-Request-Id"))
    assert len(ids) == 3
    conn.close()


def test_chunked_uploads_are_411(harness: Harness) -> None:
    reply = harness.raw(
        b"POST /items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n0\r\n\r\n"
    )
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 411 ")
    assert json.loads(body)["error"]["code"] == "length_required"


@pytest.mark.parametrize("length", [b"abc", b"-1", b"5, 5", b"1e3"])
def test_a_bad_content_length_is_400(harness: Harness, length: bytes) -> None:
    reply = harness.raw(
        b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n"
    )
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body)["error"]["code"] == "bad_request"


def test_unparsable_requests_get_the_json_error_shape(harness: Harness) -> None:
    for data, status in [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", b"501"),
    ]:
        head, _, body = harness.raw(data).partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == status
        error = json.loads(body)["error"]
        assert re.fullmatch(r"[0-9a-f]{32}", error["request_id"])
        assert f"x-request-id: {error['request_id']}".encode() in head.lower()


def test_204_has_no_body(harness: Harness) -> None:
    status, headers, body = harness.call("DELETE", "/empty")
    assert status == 204 and body == b""
    assert headers["Content-Length"] is None


def test_requests_are_served_in_parallel(harness: Harness) -> None:
    results: dict[str, Any] = {}

    def slow() -> None:
        results["slow"] = harness.call("GET", "/block")

    thread = threading.Thread(target=slow)
    thread.start()
    assert harness.blocked.wait(10)
    status, _, _ = harness.call("GET", "/health")  # completes while /block is still waiting
    assert status == 200
    assert "slow" not in results
    harness.release.set()
    thread.join(10)
    assert results["slow"][0] == 200 and results["slow"][2] == {"released": True}


def wait_for_access_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    deadline = time.monotonic() + 10
    while True:
        lines = [r.getMessage() for r in caplog.records if r.name == "nclav.api.access"]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def test_access_log_goes_through_logging_without_secrets(
    harness: Harness, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.DEBUG):
        status, headers, _ = harness.call(
            "POST", "/items?q=hidden-query", '{"name": "body-secret"}'
        )
        harness.call("GET", "/block", headers={"Authorization": "Bearer wrong-token-value"})
        # The access line is written after the response, so the client can get there first.
        access = wait_for_access_lines(caplog, 2)
    assert status == 200
    assert any(headers["X-Request-Id"] in line and '"POST /items" 200' in line for line in access)
    assert any(" 401 " in line for line in access)
    everything = caplog.text + capsys.readouterr().err
    for secret in (TOKEN, "wrong-token-value", "body-secret", "hidden-query"):
        assert secret not in everything


def test_stop_server_closes_the_port() -> None:
    server, thread = start_server(Router(TokenAuth(TOKEN)), "127.0.0.1", 0)
    port = server.server_address[1]
    stop_server(server, thread)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_serve_http_runs_until_stopped() -> None:
    router = Router(TokenAuth(TOKEN))
    router.add("GET", "/health", lambda r, p, b: json_response(200, {}), auth="none")
    stop = threading.Event()
    bound: list[ApiServer] = []
    thread = threading.Thread(
        target=serve_http,
        args=(router, "127.0.0.1", 0),
        kwargs={"stop": stop, "ready": bound.append},
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not bound and time.monotonic() < deadline:
        time.sleep(0.01)
    url = bound[0].url
    with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
        assert response.status == 200
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=2)
