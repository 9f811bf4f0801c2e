"""``TasksPump``: a test-only consumer of a ``CloudTasksWorkQueue``, like ``ThreadWorkQueue``.

In GCP, Cloud Tasks POSTs each task to the worker; here the Cloud Tasks emulator POSTs it to
this pump's loopback HTTP server, which does what the worker entry point does with its own
handler instead of the engine: a ``Received`` from the request's ``X-CloudTasks-*`` headers,
the handler called, and the outcome answered by ``functions_gcp.delivery.answer`` (200 done;
a failure redelivered as the message's next generation, scheduled after the retry backoff;
after ``max_deliveries`` deliveries the message is reported to ``dead_letter`` and acked,
as the worker records the step failed). So the WorkQueue contract suite runs against the
emulator with the adapter's real task names, headers and schedule times.

The emulator dispatches one task at a time per queue (Cloud Tasks dispatches up to the
queue's ``max_concurrent_dispatches``), ignores task-name deduplication and retries a failed
task at once: those are tested against the documented behaviour in tests/gcp instead.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from functions_gcp.delivery import answer
from functions_gcp.tasks_queue import CloudTasksWorkQueue, Received
from nclav.runtime.delivery import Ack, DeliveryPolicy, GaveUp, Retry, describe, retry_delay

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.local.thread_queue import DeadLetter, Handler

logger = logging.getLogger(__name__)

POLL_S = 0.05


def _log_dead_letter(message: dict[str, str], error: BaseException) -> None:
    logger.error("message dead-lettered: %s", message, exc_info=error)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close waits for the requests in hand


class TasksPump:
    def __init__(
        self,
        client: Any,
        queue_name: str,
        handler: Handler,
        workers: int = 4,
        *,
        retry_delay_s: float = 1.0,
        max_retry_delay_s: float = 60.0,
        max_deliveries: int = 5,
        dead_letter: DeadLetter = _log_dead_letter,
        name: str = "nclav-worker",
    ) -> None:
        self._handler = handler
        self._policy = DeliveryPolicy(max_deliveries, retry_delay_s, max_retry_delay_s)
        self._dead_letter = dead_letter
        self._in_flight = 0
        self._lock = threading.Lock()
        pump = self

        class Worker(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, reply = pump._serve(dict(self.headers.items()), body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = _Server(("127.0.0.1", 0), Worker)
        url = f"http://127.0.0.1:{self._server.server_address[1]}/worker"
        self.queue = CloudTasksWorkQueue(queue_name, url, client)
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name=f"{name}-0", daemon=True)
        ]
        for thread in self._threads:
            thread.start()

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None:
        self.queue.send(message, delay_s)

    def pending(self) -> int:
        with self._lock:
            in_flight = self._in_flight
        return in_flight + self.queue.pending()

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        quiet = 0
        while quiet < 2:  # twice: the emulator takes a task off its list just before the POST
            quiet = quiet + 1 if self.pending() == 0 else 0
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(POLL_S * 4)
        return True

    def close(self, *, drain: bool = False, timeout: float | None = 30.0) -> None:
        """Stop taking requests once those in hand are answered; the rest stay queued."""
        if drain:
            self.wait_idle(timeout)
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout)

    def _serve(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        with self._lock:
            self._in_flight += 1
        try:
            received = Received.from_headers(headers, body)
            outcome = self._handle(received)
            found = answer(self.queue, received, outcome)
            return found.status, found.json()
        finally:
            with self._lock:
                self._in_flight -= 1

    def _handle(self, received: Received) -> Ack | Retry | GaveUp:
        message = json.loads(received.body)
        try:
            self._handler(message)
        except Exception as exc:  # the worker entrypoint: any failure means "again later"
            if received.attempt >= self._policy.max_receives:
                try:
                    self._dead_letter(json.loads(received.body), exc)
                except Exception:
                    logger.exception("dead-letter callback failed for %s", received.body)
                return GaveUp(describe(exc))
            return Retry(retry_delay(exc, received.attempt, self._policy), describe(exc))
        return Ack()


__all__ = ["TasksPump"]
