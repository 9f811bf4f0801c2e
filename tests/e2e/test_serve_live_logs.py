"""Live IaC logs and run events through a real ``nclav serve`` with real terraform: offset
polling, server-sent events (parsed from http.client), an exact Last-Event-ID resume, the
stream limit's 503, the run events stream, and a webhook when the run ends."""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from serve_harness import (
    Server,
    require_terraform,
    server_factory_fixture,  # noqa: F401 (fixture)
    wait_until,
)

from nclav import notify

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

require_terraform()

LINES = 30
SLOW_TF = """
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "for i in $(seq 1 30); do echo line $i; sleep 0.1; done"
  }
}
"""


def tree(root: Path, main_tf: str = SLOW_TF) -> Path:
    (root / "live" / "p").mkdir(parents=True)
    (root / "live" / "config.yml").write_text("id: live\nname: live\ncloud: local\nregion: r\n")
    (root / "live" / "p" / "config.yml").write_text("id: p\nname: p\n")
    (root / "live" / "p" / "main.tf").write_text(main_tf)
    return root


def start_and_find_iac_run(server: Server, root: Path) -> tuple[str, str]:
    """Start a reconcile; (run id, log URL of the partition's IaC run) once it is running."""
    run = server.start_reconcile(root)
    iac = wait_until(lambda: server.iac_runs("live", "p"), 90, "no IaC run started")
    return run["id"], f"/enclaves/live/partitions/p/iac/runs/{iac[0]['id']}/log"


def events(server: Server, path: str, headers: dict[str, str] | None = None) -> Iterator[Any]:
    """(event, id, data) of an event stream, read with http.client as they arrive."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    sent = {"Authorization": f"Bearer {server.token}", "Accept": "text/event-stream"}
    conn.request("GET", path, headers={**sent, **(headers or {})})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    try:
        event, ident, data = "message", None, []
        while True:
            raw = response.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\n")
            if not line:
                if data:
                    yield event, ident, json.loads("\n".join(data))
                event, data = "message", []
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(": ")
                if name == "event":
                    event = value
                elif name == "id":
                    ident = value
                elif name == "data":
                    data.append(value)
    finally:
        conn.close()


def test_offset_polling_reads_the_log_while_it_runs(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory()
    _, path = start_and_find_iac_run(server, tree(tmp_path / "t"))
    offset, pages, text, saw_partial = 0, 0, b"", False
    deadline = time.monotonic() + 120
    while True:
        response = server.get(f"{path}?offset={offset}&limit=300")
        assert response.status == 200, response
        assert int(response.headers["X-Nclav-Next-Offset"]) == offset + len(response.body)
        assert len(response.body) <= 300
        text += response.body
        offset += len(response.body)
        pages += 1
        complete = response.headers["X-Nclav-Complete"] == "true"
        if not complete and b"line 3\n" in text and b"line 30\n" not in text:
            saw_partial = True  # lines of a run still going
        if complete:
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert saw_partial, "never saw the log of the run while it ran"
    assert response.headers["X-Nclav-Run-Status"] == "succeeded"
    whole = server.get(path)
    assert whole.body == text  # nothing lost or repeated across pages
    for i in range(1, LINES + 1):
        assert f"line {i}\n".encode() in text
    # The JSON form: the same bytes from an offset.
    doc = server.get(f"{path}?offset=5", headers={"Accept": "application/json"}).json
    assert doc["text"].encode() == text[5:] and doc["complete"] is True
    assert doc["next_offset"] == len(text) and doc["offset"] == 5


def test_sse_streams_the_log_and_last_event_id_resumes_exactly(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory()
    run_id, path = start_and_find_iac_run(server, tree(tmp_path / "t"))
    # Read a few events, drop the connection, resume from the last id.
    first: list[tuple[int, str]] = []
    last_id = None
    for event, ident, data in events(server, path):
        assert event == "log"
        first.append((int(data["offset"]), data["text"]))
        last_id = ident
        assert int(ident) == data["offset"] + len(data["text"].encode())
        if "line 5\n" in "".join(t for _, t in first):
            break
    assert last_id is not None
    rest: list[tuple[int, str]] = []
    end = None
    for event, ident, data in events(server, path, {"Last-Event-ID": last_id}):
        if event == "end":
            end = (ident, data)
            break
        rest.append((int(data["offset"]), data["text"]))
    assert end is not None and end[1]["status"] == "succeeded"
    assert rest and rest[0][0] == int(last_id)  # no gap, no duplicate
    streamed = "".join(t for _, t in first + rest).encode()
    stored = server.get(path).body
    assert streamed == stored and int(end[0]) == len(stored)
    for i in range(1, LINES + 1):
        assert streamed.count(f": line {i}\n".encode()) == 1, i
    server.wait_run(run_id)


def test_run_events_stream_and_page(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    server = server_factory()
    run_id, _ = start_and_find_iac_run(server, tree(tmp_path / "t"))
    steps: dict[str, str] = {}
    audit: list[int] = []
    end = None
    for event, ident, data in events(server, f"/runs/{run_id}/events"):
        if event == "steps":
            assert not steps  # the snapshot comes first
            steps.update({s["step_id"]: s["status"] for s in data})
        elif event == "step":
            assert data["step_id"] in steps
            steps[data["step_id"]] = data["status"]
        elif event == "audit":
            audit.append(int(ident))
            assert data["seq"] == int(ident)
        elif event == "end":
            end = data
            break
    assert end is not None and end["status"] == "succeeded"
    assert steps and set(steps.values()) <= {"succeeded", "skipped"}
    assert audit == sorted(audit) and len(audit) >= 2
    # Resume after the first audit event: exactly the later ones.
    resumed = [
        int(i)
        for e, i, _ in events(server, f"/runs/{run_id}/events", {"Last-Event-ID": str(audit[0])})
        if e == "audit"
    ]
    assert resumed == audit[1:]
    page = server.get(f"/runs/{run_id}/events?after={audit[0]}").json
    assert [e["seq"] for e in page["events"]] == audit[1:]
    assert page["complete"] is True and page["next"] == audit[-1]
    assert server.get("/runs/00000000-0000-0000-0000-000000000000/events").status == 404


def test_streams_beyond_the_limit_get_503(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory(env={"NCLAV_MAX_STREAMS": "1"})
    run_id, path = start_and_find_iac_run(server, tree(tmp_path / "t"))
    holder = events(server, path)
    next(holder)  # one stream open and held
    try:
        busy = server.get(path, headers={"Accept": "text/event-stream"})
        assert busy.status == 503, busy
        assert busy.json["error"]["code"] == "too_many_streams"
        assert "poll instead" in busy.json["error"]["message"]
        assert busy.headers["Retry-After"] == "5"
        # Polling still works meanwhile.
        assert server.get(path).status == 200
    finally:
        holder.close()
    server.wait_run(run_id)
    # The slot came back.
    done = list(events(server, path))
    assert done[-1][0] == "end"


class _Hook:
    def __init__(self) -> None:
        self.bodies: list[tuple[bytes, dict[str, str]]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append((body, dict(self.headers)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/h"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_finished_run_notifies_the_webhook(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    hook = _Hook()
    try:
        secret = "e2e-secret"
        server = server_factory(env={"NCLAV_NOTIFY_URL": hook.url, "NCLAV_NOTIFY_SECRET": secret})
        quick = 'resource "terraform_data" "a" {\n  input = "x"\n}\n'
        run = server.reconcile(tree(tmp_path / "t", quick))
        assert run["status"] == "succeeded"
        wait_until(lambda: hook.bodies, 30, "no notification arrived")
        body, headers = hook.bodies[0]
        assert notify.verify(secret, body, headers["X-Nclav-Signature-256"])
        doc = json.loads(body)
        assert doc["kind"] == "run.succeeded" and doc["data"]["run_id"] == run["id"]
    finally:
        hook.server.shutdown()
        hook.server.server_close()
