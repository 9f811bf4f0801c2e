"""The WorkQueue contract: delivery, delay, at-least-once redelivery, dead letters, close.

Each test runs against the local ``ThreadWorkQueue`` and against SQS (moto server) consumed
by the test pump (``tests/sqs_pump.py``), except where the two differ on purpose: a message
sent to a closed local queue is dropped, SQS keeps it for the next consumer.
SQS counts delays in whole seconds, so its runs take a few seconds longer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from nclav.errors import TemporaryError
from nclav.local.thread_queue import Message, ThreadWorkQueue
from sqs_pump import SqsPump

QueueFactory = Callable[..., ThreadWorkQueue | SqsPump]  # the `make_queue` fixture

WAIT = 15.0  # an upper bound only: a loaded 2-core machine delays moto and the workers


class Recorder:
    """A handler that records what it got and can be told to fail or block."""

    def __init__(self, fail_times: int = 0, error: Exception | None = None) -> None:
        self.received: list[tuple[float, Message]] = []
        self.fail_times = fail_times
        self.error = error or RuntimeError("handler failed")
        self.lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        with self.lock:
            self.received.append((time.monotonic(), message))
            failing = self.fail_times > 0
            self.fail_times -= 1
        if failing:
            raise self.error

    @property
    def messages(self) -> list[Message]:
        with self.lock:
            return [m for _, m in self.received]


def step(i: int) -> dict[str, str]:
    return {"run_id": "r", "step_id": f"s{i}"}


def test_every_message_is_delivered(make_queue: QueueFactory) -> None:
    handler = Recorder()
    queue = make_queue(handler, workers=4)
    for i in range(50):
        queue.send(step(i))
    assert queue.wait_idle(WAIT)
    assert sorted(m["step_id"] for m in handler.messages) == sorted(f"s{i}" for i in range(50))
    assert queue.pending() == 0


def test_workers_handle_messages_concurrently(
    make_queue: QueueFactory, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params.get("make_queue") == "cloud-tasks":
        pytest.skip("the Cloud Tasks emulator dispatches one task at a time per queue")
    barrier = threading.Barrier(3, timeout=WAIT)
    queue = make_queue(lambda message: barrier.wait(), workers=3)
    for i in range(3):
        queue.send(step(i))
    assert queue.wait_idle(WAIT)
    assert not barrier.broken


def test_a_delayed_message_waits(make_queue: QueueFactory) -> None:
    handler = Recorder()
    queue = make_queue(handler, workers=2)
    sent = time.monotonic()
    queue.send(step(1), delay_s=0.3)
    queue.send(step(2))
    time.sleep(0.1)
    assert handler.messages == [step(2)]
    assert queue.pending() == 1
    assert queue.wait_idle(WAIT)
    assert handler.messages == [step(2), step(1)]
    assert handler.received[1][0] - sent >= 0.3


def test_a_failed_message_is_delivered_again(make_queue: QueueFactory) -> None:
    handler = Recorder(fail_times=2)
    dead: list[Message] = []
    queue = make_queue(handler, dead_letter=lambda m, e: dead.append(m))
    queue.send(step(1))
    assert queue.wait_idle(WAIT)
    assert handler.messages == [step(1)] * 3
    assert dead == []


def test_retry_after_of_a_temporary_error_is_the_delay(make_queue: QueueFactory) -> None:
    handler = Recorder(fail_times=1, error=TemporaryError("later", retry_after_s=0.25))
    queue = make_queue(handler, retry_delay_s=0.0)
    queue.send(step(1))
    assert queue.wait_idle(WAIT)
    (first, _), (second, _) = handler.received
    assert second - first >= 0.25


def test_a_message_failing_every_delivery_is_dead_lettered(make_queue: QueueFactory) -> None:
    handler = Recorder(fail_times=100)
    dead: list[tuple[Message, BaseException]] = []
    queue = make_queue(handler, max_deliveries=3, dead_letter=lambda m, e: dead.append((m, e)))
    queue.send(step(1))
    assert queue.wait_idle(WAIT)
    assert len(handler.messages) == 3
    assert [(m, str(e)) for m, e in dead] == [(step(1), "handler failed")]


def test_a_handler_can_send_messages(make_queue: QueueFactory) -> None:
    got: list[str] = []

    def fan_out(message: Message) -> None:
        got.append(message["step_id"])
        if message["step_id"] == "root":
            for i in range(3):
                queue.send(step(i))

    queue = make_queue(fan_out, workers=2)
    queue.send({"run_id": "r", "step_id": "root"})
    assert queue.wait_idle(WAIT)
    assert sorted(got) == ["root", "s0", "s1", "s2"]


def test_a_handler_changing_its_message_does_not_change_the_redelivery(
    make_queue: QueueFactory,
) -> None:
    seen: list[Message] = []

    def mutate(message: Message) -> None:
        seen.append(dict(message))
        message["step_id"] = "changed"
        if len(seen) == 1:
            raise RuntimeError("again")

    queue = make_queue(mutate)
    queue.send(step(1))
    assert queue.wait_idle(WAIT)
    assert seen == [step(1), step(1)]


def test_close_stops_the_workers_after_the_message_in_hand(make_queue: QueueFactory) -> None:
    entered, release = threading.Event(), threading.Event()
    finished: list[Message] = []

    def slow(message: Message) -> None:
        entered.set()
        release.wait(WAIT)
        finished.append(message)

    queue = make_queue(slow, workers=1)
    queue.send(step(1))
    queue.send(step(2))
    assert entered.wait(WAIT)
    closer = threading.Thread(target=queue.close)
    closer.start()
    time.sleep(0.05)
    assert closer.is_alive()  # waiting for the message being handled
    release.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert finished == [step(1)]  # the queued one was dropped, not started
    assert not any(t.name.startswith("nclav-worker") and t.is_alive() for t in queue._threads)


@pytest.mark.parametrize("make_queue", ["thread"], indirect=True)
def test_send_after_close_is_dropped(make_queue: QueueFactory) -> None:
    handler = Recorder()
    queue = make_queue(handler)
    queue.close()
    queue.send(step(1))
    time.sleep(0.05)
    assert handler.messages == []
    assert queue.pending() == 0


def test_close_with_drain_delivers_what_is_queued(make_queue: QueueFactory) -> None:
    handler = Recorder()
    queue = make_queue(handler, workers=2)
    queue.send(step(1), delay_s=0.1)
    for i in range(2, 6):
        queue.send(step(i))
    queue.close(drain=True, timeout=WAIT)
    assert sorted(m["step_id"] for m in handler.messages) == [f"s{i}" for i in range(1, 6)]
