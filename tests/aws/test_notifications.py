"""Notifications on AWS: the functions read ``NCLAV_NOTIFY_URL`` like the local server, and a
finished run's webhook is queued on the steps queue and posted by the step worker (issue 11).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
from aws_harness import Deployment, Pump

from nclav import notify

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

SECRET = "n" * 64


class Received(BaseHTTPRequestHandler):
    hits: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server interface
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Received.hits.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Received.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Received)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()
        notify.install(None)  # this process's notifier goes with the deployment


def test_a_finished_run_is_notified_through_the_step_worker(
    make_deployment: Callable[..., Deployment], receiver: str, tmp_path: Path
) -> None:
    d = make_deployment(NCLAV_NOTIFY_URL=receiver, NCLAV_NOTIFY_SECRET=SECRET)
    tree = tmp_path / "tree"
    (tree / "hub").mkdir(parents=True)
    (tree / "hub" / "config.yml").write_text("id: hub\nname: Hub\ncloud: local\nregion: r1\n")
    run = Pump(d).run(d.api.start_reconcile(tree))
    assert run["status"] == "succeeded", run
    Pump(d).drain(30)  # the notification is a queue message like a step's
    (headers, body), *_ = Received.hits
    event = json.loads(body)
    assert event["kind"] == "run.succeeded", event
    assert event["data"]["run_id"] == run["id"] and event["data"]["enclave_ids"] == ["hub"]
    assert notify.verify(SECRET, body, headers[notify.SIGNATURE_HEADER])
