"""``SqsPump``: a test-only consumer of an ``SqsWorkQueue``, shaped like ``ThreadWorkQueue``.

In AWS the worker Lambda consumes the queue; in tests this pump does the same job with
threads, so the WorkQueue contract suite runs unchanged against SQS (moto server): each
worker thread receives one message, skips it forward if it is early (``defer``), calls the
handler, deletes the message on success and on failure sets its visibility to the retry
backoff. After ``max_deliveries`` failed deliveries it reports the message to ``dead_letter``
and makes it visible at once, so SQS's redrive policy moves it to the DLQ on the next
receive (the queue must have been made with ``max_receive_count == max_deliveries``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from nclav.runtime.delivery import DeliveryPolicy, retry_delay

if TYPE_CHECKING:
    from collections.abc import Mapping

    from functions_aws.sqs_queue import Received, SqsWorkQueue
    from nclav.local.thread_queue import DeadLetter, Handler

logger = logging.getLogger(__name__)

POLL_S = 0.05


def _log_dead_letter(message: dict[str, str], error: BaseException) -> None:
    logger.error("message dead-lettered: %s", message, exc_info=error)


class SqsPump:
    def __init__(
        self,
        queue: SqsWorkQueue,
        handler: Handler,
        workers: int = 4,
        *,
        retry_delay_s: float = 1.0,
        max_retry_delay_s: float = 60.0,
        max_deliveries: int = 5,
        dead_letter: DeadLetter = _log_dead_letter,
        name: str = "nclav-worker",
        wait_s: float = 1,
    ) -> None:
        self.queue = queue
        self._handler = handler
        self._policy = DeliveryPolicy(max_deliveries, retry_delay_s, max_retry_delay_s)
        self._max_deliveries = max_deliveries
        self._dead_letter = dead_letter
        self._wait_s = wait_s
        self._in_flight = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
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
        while self.pending():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)
        return True

    def close(self, *, drain: bool = False, timeout: float | None = 30.0) -> None:
        """Stop receiving once the messages in hand are done; the rest stay in SQS."""
        if drain:
            self.wait_idle(timeout)
        self._stopping.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                left = None if deadline is None else max(deadline - time.monotonic(), 0)
                thread.join(left)

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                batch = self.queue.receive(1, wait_s=self._wait_s)
            except Exception:  # a worker loop: a failed receive must not end the thread
                logger.exception("receiving from SQS failed")
                time.sleep(POLL_S)
                continue
            for received in batch:
                # Until it is deleted the message also counts in SQS (not visible), so
                # pending() sees no gap between the two counts.
                with self._lock:
                    self._in_flight += 1
                try:
                    self._process(received)
                except Exception:
                    logger.exception("acknowledging %s failed", received.message_id)
                finally:
                    with self._lock:
                        self._in_flight -= 1

    def _process(self, received: Received) -> None:
        if self.queue.defer(received):
            self.queue.delete(received.receipt)
            return
        try:
            self._handler(received.message)
        except Exception as exc:  # the worker entrypoint: any failure means "again later"
            self._failed(received, exc)
        else:
            self.queue.delete(received.receipt)

    def _failed(self, received: Received, error: Exception) -> None:
        if received.receive_count >= self._max_deliveries:
            try:
                self._dead_letter(received.message, error)
            except Exception:
                logger.exception("dead-letter callback failed for %s", received.body)
            self.queue.delay(received.receipt, 0)  # the next receive moves it to the DLQ
            return
        delay = retry_delay(error, received.receive_count, self._policy)
        self.queue.delay(received.receipt, delay)


__all__ = ["SqsPump"]
