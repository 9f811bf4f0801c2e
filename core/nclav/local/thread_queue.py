"""``ThreadWorkQueue``: the local runtime's queue, a heap of messages and a pool of threads.

It behaves like the cloud queues the engine also runs on: delivery is at least once, a message
can be delayed, and nothing is persisted (after a restart the engine's sweeper finds the work
again in the state store). Its consumer is either

* ``consume``: core's delivery policy, as every cloud's worker runs it
  (``nclav.runtime.delivery.deliver``): each delivery is a ``Delivery`` and the ``Outcome``
  says ack, retry after a delay, or gave up; the local runtime uses this, so a step is given
  up (recorded failed) exactly as on a cloud; or
* ``handler``: a plain function, as the WorkQueue contract suite drives every queue: one that
  raises gets the message again after a backoff (``TemporaryError.retry_after_s`` when it
  gives one), and after ``max_deliveries`` failures the message goes to ``dead_letter``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nclav.runtime.delivery import (
    Ack,
    Delivery,
    DeliveryPolicy,
    GaveUp,
    Outcome,
    Retry,
    describe,
    encode,
    retry_delay,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger(__name__)

Message = dict[str, str]
Handler = Callable[[Message], None]
DeadLetter = Callable[[Message, BaseException], None]
Consumer = Callable[[Delivery], Outcome]


@dataclass(order=True)
class _Entry:
    due: float
    order: int
    message: Message = field(compare=False)
    deliveries: int = field(compare=False, default=0)
    message_id: str = field(compare=False, default="")


def _log_dead_letter(message: Message, error: BaseException) -> None:
    logger.error("message dead-lettered: %s", message, exc_info=error)


class ThreadWorkQueue:
    def __init__(
        self,
        handler: Handler | None = None,
        workers: int = 4,
        *,
        consume: Consumer | None = None,
        retry_delay_s: float = 1.0,
        max_retry_delay_s: float = 60.0,
        max_deliveries: int = 5,
        dead_letter: DeadLetter = _log_dead_letter,
        name: str = "nclav-worker",
    ) -> None:
        if workers < 1 or max_deliveries < 1:
            raise ValueError("workers and max_deliveries must be at least 1")
        if (handler is None) == (consume is None):
            raise ValueError("give exactly one of handler and consume")
        self._handler = handler
        self._consume = consume
        self._policy = DeliveryPolicy(max_deliveries, retry_delay_s, max_retry_delay_s)
        self._dead_letter = dead_letter
        self._heap: list[_Entry] = []
        self._order = itertools.count()
        self._in_flight = 0
        self._stopping = False
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None:
        with self._cond:
            if self._stopping:
                # The state store still has the step; the sweeper re-enqueues it on restart.
                logger.warning("queue closed, message dropped: %s", dict(message))
                return
            order = next(self._order)
            due = time.monotonic() + max(delay_s, 0)
            self._push(_Entry(due, order, dict(message), message_id=f"local-{order}"))

    def _push(self, entry: _Entry) -> None:
        entry.order = next(self._order)
        heapq.heappush(self._heap, entry)
        self._cond.notify()

    def pending(self) -> int:
        """Messages waiting (delayed ones included) or being handled."""
        with self._cond:
            return len(self._heap) + self._in_flight

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no message is waiting or being handled; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._heap and not self._in_flight, timeout)

    def close(self, *, drain: bool = False, timeout: float | None = 30.0) -> None:
        """Stop the workers once the messages being handled are done.

        With ``drain``, first wait (up to ``timeout``) for every message, delayed ones and
        those sent by handlers meanwhile, to be handled. Messages left are dropped.
        """
        if drain:
            self.wait_idle(timeout)
        with self._cond:
            self._stopping = True
            dropped = len(self._heap)
            self._heap.clear()
            self._cond.notify_all()
        if dropped:
            logger.info("queue closed with %d undelivered message(s)", dropped)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                left = None if deadline is None else max(deadline - time.monotonic(), 0)
                thread.join(left)

    def _next(self) -> _Entry | None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                if self._heap and self._heap[0].due <= now:
                    self._in_flight += 1
                    return heapq.heappop(self._heap)
                self._cond.wait(self._heap[0].due - now if self._heap else None)
            return None

    def _work(self) -> None:
        while (entry := self._next()) is not None:
            entry.deliveries += 1
            try:
                outcome = self._deliver(entry)
            except Exception as exc:  # a consumer that raises: again later, like a handler
                logger.exception("consumer failed for %s", entry.message)
                outcome = Retry(retry_delay(exc, entry.deliveries, self._policy), describe(exc))
            try:
                if isinstance(outcome, Retry):
                    with self._cond:
                        if not self._stopping:
                            entry.due = time.monotonic() + outcome.delay_s
                            self._push(entry)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

    def _deliver(self, entry: _Entry) -> Outcome:
        if self._consume is not None:
            body = encode(entry.message)
            return self._consume(Delivery(body, entry.deliveries, entry.message_id))
        assert self._handler is not None  # noqa: S101 - __init__ requires one of the two
        try:
            self._handler(dict(entry.message))
        except Exception as exc:  # the worker entrypoint: any failure means "again later"
            return self._failed(entry, exc)
        return Ack()

    def _failed(self, entry: _Entry, error: Exception) -> Outcome:
        if entry.deliveries >= self._policy.max_receives:
            try:
                self._dead_letter(entry.message, error)
            except Exception:  # a failing callback must not take the worker down with it
                logger.exception("dead-letter callback failed for %s", entry.message)
            return GaveUp(describe(error))
        delay = retry_delay(error, entry.deliveries, self._policy)
        logger.warning("handler failed (delivery %d), retrying in %.1fs", entry.deliveries, delay)
        return Retry(delay, describe(error))


__all__ = ["Consumer", "DeadLetter", "Handler", "Message", "ThreadWorkQueue"]
