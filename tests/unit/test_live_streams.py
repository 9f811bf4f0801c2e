"""Live logs without a server: event framing, heartbeats, the time limit's retry hint, UTF-8
at offsets, the in-flight buffer of a shipper in this process, and Lambda's polling answer."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from functions_aws.api import respond
from nclav.api.http import ApiRequest, ApiResponse, StreamingResponse
from nclav.api.router import Router
from nclav.api.streams import StreamTiming, log_response, log_stream
from nclav.cli.follow import sse_events
from nclav.iac.logs import LogShipper, live_shipper, read_live
from nclav.local import DirectoryBlobStore
from nclav.records import IacOperation, IacRun

if TYPE_CHECKING:
    from pathlib import Path


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def parse(chunks: list[bytes]) -> list[tuple[str, str | None, Any]]:
    lines = b"".join(chunks).splitlines(keepends=True)
    return [(e.event, e.id, e.json()) for e in sse_events(lines)]


def test_heartbeats_and_the_time_limit_end_a_quiet_stream_with_a_retry_hint() -> None:
    t = FakeTime()
    timing = StreamTiming(heartbeat_s=15, poll_s=1, limit_s=50, clock=t.clock, sleep=t.sleep)
    out = list(log_stream(lambda _o: b"", lambda: (False, "running"), 0, timing))
    assert out[0].startswith(b"retry: ")
    assert out.count(b": heartbeat\n\n") == 3  # at 15, 30 and 45 s
    assert out[-1].startswith(b"retry: 1000\n: stream time limit reached")
    assert t.now >= 50


def test_log_events_carry_the_byte_offset_after_them_and_end() -> None:
    log = "é line 1\nline 2\n".encode()
    state = {"n": 0}

    def read(offset: int) -> bytes:
        state["n"] += 1
        # The first read stops inside the two-byte "é": it must wait for the rest.
        return log[offset:1] if state["n"] == 1 else log[offset:]

    def status() -> tuple[bool, str]:
        return state["n"] >= 2, "succeeded" if state["n"] >= 2 else "running"

    t = FakeTime()
    timing = StreamTiming(poll_s=0.1, clock=t.clock, sleep=t.sleep)
    events = parse(list(log_stream(read, status, 0, timing)))
    assert events[0] == ("log", str(len(log)), {"offset": 0, "text": log.decode()})
    assert events[-1] == ("end", str(len(log)), {"next_offset": len(log), "status": "succeeded"})


def test_a_stream_request_on_a_runtime_that_cannot_stream_gets_the_polling_page() -> None:
    request = ApiRequest.build("GET", "/x", headers={"Accept": "text/event-stream"})

    def answer(streaming: bool) -> ApiResponse:
        return log_response(
            request,
            lambda o: b"abcdef"[o:],
            lambda: (True, "failed"),
            offset=2,
            limit=10,
            streaming=streaming,
            maximum=100,
        )

    assert isinstance(answer(True), StreamingResponse)
    page = answer(False)
    assert not isinstance(page, StreamingResponse)
    assert page.body == b"cdef" and page.headers["X-Nclav-Next-Offset"] == "6"
    assert page.headers["X-Nclav-Complete"] == "true"


def test_lambda_answers_an_event_stream_request_with_polling() -> None:
    seen: list[str] = []
    router = Router(None)

    def handler(request: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        seen.append(request.headers.get("accept", ""))
        return log_response(
            request,
            lambda o: b"hello\n"[o:],
            lambda: (False, "running"),
            offset=0,
            limit=100,
            streaming=True,  # even a router that would stream: the handler never asks it to
            maximum=100,
        )

    router.add("GET", "/log", handler, auth="none")
    event = {
        "rawPath": "/log",
        "requestContext": {"http": {"method": "GET"}, "requestId": "r1"},
        "headers": {"accept": "text/event-stream, application/json;q=0.5"},
    }
    result = respond(router, event)
    assert result["statusCode"] == 200
    assert result["headers"]["X-Nclav-Streaming"] == "unsupported"
    assert seen == ["application/json;q=0.5"]
    doc = json.loads(
        result["body"] if not result["isBase64Encoded"] else base64.b64decode(result["body"])
    )
    assert doc["text"] == "hello\n" and doc["complete"] is False and doc["next_offset"] == 6
    plain = respond(router, {**event, "headers": {"accept": "text/event-stream"}})
    assert plain["body"] == "hello\n" and plain["headers"]["X-Nclav-Next-Offset"] == "6"


def test_read_live_shows_unshipped_lines_and_agrees_with_the_chunks(tmp_path: Path) -> None:
    blobs = DirectoryBlobStore(tmp_path)
    prefix = "iac-logs/e/p/r1"
    run = IacRun(
        id="r1",
        enclave_id="e",
        partition_id="p",
        operation=IacOperation.PROVISION,
        started_at="2026-01-01T00:00:00Z",
        log_chunks=prefix,
    )
    shipper = LogShipper(blobs, prefix, timer=False)
    try:
        assert live_shipper(prefix) is shipper
        shipper.write("one")
        shipper.flush()
        shipper.write("two")  # buffered, not shipped
        assert read_live(blobs, run, 0) == b"one\ntwo\n"
        assert read_live(blobs, run, 2) == b"e\ntwo\n"
        assert read_live(blobs, run, 6) == b"o\n"
        seen = read_live(blobs, run, 0)
    finally:
        shipper.close()
    assert live_shipper(prefix) is None
    # After shipping, the stored log has the very bytes a live reader saw.
    assert read_live(blobs, run, 0) == seen


def _router(tmp_path: Path, streaming: bool) -> Router:
    from nclav.api.auth import TokenAuth
    from nclav.api.routes import build_router
    from nclav.iac.state_backend import TerraformStateBackend
    from nclav.local import InMemoryStateStore
    from nclav.model import Cloud
    from nclav.ports import ManualClock
    from nclav.service import Bundles, Service

    store, blobs = InMemoryStateStore(), DirectoryBlobStore(tmp_path / "blobs")
    tf = TerraformStateBackend(store, blobs, ManualClock())
    service = Service(store, Bundles(blobs, Cloud.LOCAL), None, {}, Cloud.LOCAL)  # type: ignore[arg-type]
    return build_router(service, tf, blobs, TokenAuth("a" * 64), streaming=streaming)


def test_openapi_documents_the_live_routes(tmp_path: Path) -> None:
    from nclav.api.router import openapi

    doc = openapi(_router(tmp_path, True), "nclav", "0")
    log = doc["paths"]["/enclaves/{id}/partitions/{part}/iac/runs/{run_id}/log"]["get"]
    assert {p["name"] for p in log["parameters"] if p["in"] == "query"} == {"offset", "limit"}
    assert "text/event-stream" in log["summary"] and "X-Nclav-Next-Offset" in log["summary"]
    schema = log["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/LogPage"}
    assert set(doc["components"]["schemas"]["LogPage"]["properties"]) == {
        "offset",
        "next_offset",
        "complete",
        "status",
        "text",
    }
    events = doc["paths"]["/runs/{run_id}/events"]["get"]
    assert events["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RunEventsPage"
    }


def test_events_of_an_unknown_run_are_a_404_not_a_stream(tmp_path: Path) -> None:
    for streaming in (True, False):
        request = ApiRequest.build(
            "GET",
            "/runs/nope/events",
            headers={"Authorization": "Bearer " + "a" * 64, "Accept": "text/event-stream"},
        )
        response = _router(tmp_path, streaming).dispatch(request)
        assert response.status == 404 and not isinstance(response, StreamingResponse)
        assert json.loads(response.body)["error"]["code"] == "not_found"
    bad = ApiRequest.build(
        "GET",
        "/runs/x/events",
        headers={"Authorization": "Bearer " + "a" * 64, "Last-Event-ID": "abc"},
    )
    # Last-Event-ID only matters to a stream; a page request ignores it.
    assert _router(tmp_path, True).dispatch(bad).status == 404


def test_the_cli_follows_across_stream_time_limits_without_gap_or_duplicate(
    tmp_path: Path, caplog: Any
) -> None:
    """A real server whose streams end every 0.4 s: ``follow_log`` reconnects with
    Last-Event-ID each time and writes the whole log exactly once."""
    import logging
    import threading
    import time

    from nclav.api.auth import TokenAuth
    from nclav.api.routes import build_router
    from nclav.api.server import start_server, stop_server
    from nclav.cli.client import Client
    from nclav.cli.follow import follow_log
    from nclav.iac.logs import read_log
    from nclav.iac.state_backend import TerraformStateBackend
    from nclav.local import InMemoryStateStore
    from nclav.model import Cloud
    from nclav.ports import ManualClock
    from nclav.records import IacStatus
    from nclav.service import Bundles, Service

    token = "b" * 64
    store, blobs = InMemoryStateStore(), DirectoryBlobStore(tmp_path / "blobs")
    prefix = "iac-logs/e/p/" + "1" * 8
    run = IacRun(
        id="6f1c1b7e-0000-4000-8000-000000000001",
        enclave_id="e",
        partition_id="p",
        operation=IacOperation.PROVISION,
        started_at="2026-01-01T00:00:00Z",
        log_chunks=prefix,
    )
    store.put_iac_run(run)
    tf = TerraformStateBackend(store, blobs, ManualClock())
    service = Service(store, Bundles(blobs, Cloud.LOCAL), None, {}, Cloud.LOCAL)  # type: ignore[arg-type]
    router = build_router(service, tf, blobs, TokenAuth(token), stream_limit_s=0.4)
    server, thread = start_server(router)

    def terraform() -> None:
        shipper = LogShipper(blobs, prefix)
        for i in range(40):
            shipper.write(f"line {i}")
            time.sleep(0.04)
        size = shipper.close()
        store.put_iac_run(run.model_copy(update={"status": IacStatus.SUCCEEDED, "log_size": size}))

    writer = threading.Thread(target=terraform)
    out = bytearray()
    path = f"/enclaves/e/partitions/p/iac/runs/{run.id}/log"
    try:
        with caplog.at_level(logging.INFO, logger="nclav.api.access"):
            writer.start()
            api = Client(server.url, lambda: (token, "test"))
            status = follow_log(api, path, 0, out.extend)
        writer.join()
    finally:
        stop_server(server, thread)
    assert status == "succeeded"
    assert bytes(out) == read_log(blobs, store.get_iac_run(run.id), 0)  # type: ignore[arg-type]
    assert bytes(out) == "".join(f"line {i}\n" for i in range(40)).encode()
    streams = [r for r in caplog.records if path in r.getMessage()]
    assert len(streams) >= 3  # the 1.6 s run outlived several 0.4 s streams


def test_stopping_the_server_ends_open_streams(tmp_path: Path) -> None:
    import http.client
    import time

    from nclav.api.auth import TokenAuth
    from nclav.api.routes import build_router
    from nclav.api.server import start_server, stop_server
    from nclav.iac.state_backend import TerraformStateBackend
    from nclav.local import InMemoryStateStore
    from nclav.model import Cloud
    from nclav.ports import ManualClock
    from nclav.service import Bundles, Service

    token = "c" * 64
    store, blobs = InMemoryStateStore(), DirectoryBlobStore(tmp_path / "blobs")
    run = IacRun(
        id="6f1c1b7e-0000-4000-8000-000000000002",
        enclave_id="e",
        partition_id="p",
        operation=IacOperation.PROVISION,
        started_at="2026-01-01T00:00:00Z",
        log_chunks="iac-logs/e/p/x",
    )
    store.put_iac_run(run)  # running, and it never ends
    tf = TerraformStateBackend(store, blobs, ManualClock())
    service = Service(store, Bundles(blobs, Cloud.LOCAL), None, {}, Cloud.LOCAL)  # type: ignore[arg-type]
    server, thread = start_server(build_router(service, tf, blobs, TokenAuth(token)))
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request(
        "GET",
        f"/enclaves/e/partitions/p/iac/runs/{run.id}/log",
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
    )
    response = conn.getresponse()
    assert response.status == 200 and response.readline() == b"retry: 1000\n"
    started = time.monotonic()
    stop_server(server, thread)
    assert response.read() == b"\n"  # the rest of the retry event, then the end
    assert time.monotonic() - started < 3
    conn.close()
