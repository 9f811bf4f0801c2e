"""Webhook notifications (``nclav.notify``) against a real local HTTP receiver and the real
in-process work queue: signature, retry through the queue after a 500, Slack's shape."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

from nclav import notify
from nclav.errors import SpecError
from nclav.local import ThreadWorkQueue
from nclav.local.file_secrets import FileSecretStore
from nclav.records import Run, RunStatus

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SECRET = "s3cret-for-tests"


class Receiver:
    """A webhook endpoint: records each POST; answers the queued statuses first, then 200."""

    def __init__(self) -> None:
        self.hits: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.got = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.got:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.hits.append(
                        {"body": body, "headers": dict(self.headers), "status": status}
                    )
                    receiver.got.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self.got:
            assert self.got.wait_for(lambda: len(self.hits) >= count, timeout), self.hits
            return list(self.hits)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def wired() -> Iterator[Any]:
    """Install a notifier over a real ThreadWorkQueue whose handler is notify's dispatch."""
    queues: list[ThreadWorkQueue] = []

    def make(urls: str, **overrides: Any) -> notify.Notifier:
        handled: list[dict[str, str]] = []

        def handle(message: dict[str, str]) -> None:
            handled.append(message)
            assert notify.handle_message(message), message

        queue = ThreadWorkQueue(handle, workers=2)
        queues.append(queue)
        settings = notify.notify_settings(urls, {"NCLAV_NOTIFY_SECRET": SECRET}, None)
        settings = notify.NotifySettings(
            settings.targets, settings.secret, **{"backoff_s": 0.05, **overrides}
        )
        notifier = notify.Notifier(settings, queue)
        notify.install(notifier)
        return notifier

    try:
        yield make
    finally:
        notify.install(None)
        for queue in queues:
            queue.close()


def test_a_signed_json_event_reaches_every_url(receiver: Receiver, wired: Any) -> None:
    other = Receiver()
    try:
        wired(f"{receiver.url}, {other.url}")
        notify.notify("drift.detected", {"enclave_id": "e", "partition_id": "p"})
        for r in (receiver, other):
            (hit,) = r.wait(1)
            body, headers = hit["body"], hit["headers"]
            assert notify.verify(SECRET, body, headers[notify.SIGNATURE_HEADER])
            assert not notify.verify("another secret", body, headers[notify.SIGNATURE_HEADER])
            doc = json.loads(body)
            assert doc["kind"] == "drift.detected" == headers["X-Nclav-Event"]
            assert doc["data"] == {"enclave_id": "e", "partition_id": "p"}
            assert doc["id"] == headers["X-Nclav-Delivery"]
    finally:
        other.close()


def test_a_500_is_retried_through_the_queue(receiver: Receiver, wired: Any) -> None:
    receiver.statuses = [500, 503]
    wired(receiver.url)
    notify.notify("run.failed", {"run_id": "r1"})
    hits = receiver.wait(3)
    assert [h["status"] for h in hits] == [500, 503, 200]
    # One event, delivered again: the same id and the same signed body each time.
    assert len({h["body"] for h in hits}) == 1
    assert all(
        notify.verify(SECRET, h["body"], h["headers"][notify.SIGNATURE_HEADER]) for h in hits
    )


def test_retries_stop_after_max_attempts_and_a_400_is_not_retried(
    receiver: Receiver, wired: Any
) -> None:
    receiver.statuses = [500, 500, 500, 500]
    notifier = wired(receiver.url, max_attempts=2)
    notify.notify("run.failed", {"run_id": "r1"})
    receiver.wait(2)
    receiver.statuses = [400]
    notify.notify("run.failed", {"run_id": "r2"})
    receiver.wait(3)
    assert notifier.queue.wait_idle(5)  # type: ignore[attr-defined]
    assert [h["status"] for h in receiver.hits] == [500, 500, 400]


def test_slack_format(receiver: Receiver, wired: Any) -> None:
    wired("slack+" + receiver.url)
    notify.notify("drift.resolved", {"enclave_id": "prod", "partition_id": "db"})
    (hit,) = receiver.wait(1)
    assert json.loads(hit["body"]) == {"text": "nclav: drift resolved - prod/db"}
    assert notify.verify(SECRET, hit["body"], hit["headers"][notify.SIGNATURE_HEADER])


def test_notify_returns_at_once_while_the_receiver_is_down(wired: Any) -> None:
    import socket
    import time

    # A receiver that takes the connection and never answers: a send made in the caller's
    # thread would hang there until its HTTP timeout.
    with socket.create_server(("127.0.0.1", 0), backlog=8) as silent:
        wired(f"http://127.0.0.1:{silent.getsockname()[1]}/hook", max_attempts=1)
        started = time.monotonic()
        notify.notify("run.succeeded", {"run_id": "r"})
        returned = time.monotonic() - started
    assert returned < 1, returned  # the HTTP timeout is seconds


def test_run_changed_maps_statuses(receiver: Receiver, wired: Any) -> None:
    wired(receiver.url)
    run = Run(
        id="r9",
        created_at="2026-01-01T00:00:00Z",
        status=RunStatus.FAILED,
        enclave_ids=("a",),
        errors=("x: boom",),
    )
    notify.run_changed(run)
    notify.run_changed(run.model_copy(update={"status": RunStatus.RUNNING}))  # nobody waits
    notify.run_changed(run.model_copy(update={"status": RunStatus.SUCCEEDED}))
    hits = receiver.wait(2)
    kinds = sorted(json.loads(h["body"])["kind"] for h in hits)
    assert kinds == ["run.failed", "run.succeeded"]
    failed = next(json.loads(h["body"]) for h in hits if b"run.failed" in h["body"])
    assert failed["data"]["errors"] == ["x: boom"] and failed["data"]["run_id"] == "r9"


def test_run_awaiting_approval_is_notified(receiver: Receiver, wired: Any) -> None:
    wired(receiver.url)
    notify.run_changed(
        Run(id="r1", created_at="2026-01-01T00:00:00Z", status=RunStatus("awaiting_approval"))
    )
    (hit,) = receiver.wait(1)
    assert json.loads(hit["body"])["kind"] == "run.awaiting_approval"


def test_unknown_kind_and_bad_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown notification kind 'run.done'"):
        notify.notify("run.done", {})
    with pytest.raises(SpecError, match="not a webhook URL: 'ftp://x/y'"):
        notify.parse_targets("https://ok.example/h, ftp://x/y")
    assert notify.parse_targets(" ,") == ()


def test_the_secret_is_generated_once_and_stored(tmp_path: Path) -> None:
    def store() -> FileSecretStore:
        return FileSecretStore(tmp_path / "secrets")

    first = notify.notify_settings("https://a.example/h", {}, store)
    again = notify.notify_settings("https://a.example/h", {}, store)
    assert len(first.secret) == 64 and first.secret == again.secret
    assert (tmp_path / "secrets" / notify.SECRET_NAME).stat().st_mode & 0o777 == 0o600
    assert SECRET not in repr(first) and "a.example" not in repr(first)
    env = notify.notify_settings("https://a.example/h", {"NCLAV_NOTIFY_SECRET": SECRET}, store)
    assert env.secret == SECRET
    assert notify.notify_settings(None, {}, store).targets == ()


def test_other_messages_are_not_notifications() -> None:
    assert not notify.handle_message({"run_id": "r", "step_id": "s"})
