"""Core's delivery policy (``nclav.runtime.delivery``), alone and in the local runtime.

The same rule runs on every runtime: a temporary error around a step (the store throttled)
is redelivered with an exponential backoff with jitter until the delivery budget, then the
step is recorded failed; a permanent one (access denied, a bug, an unparseable body) gives up
at once, recording the step failed with the error.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from nclav.api.http import ApiRequest
from nclav.errors import ConflictError, PermanentError, ServiceError, TemporaryError
from nclav.local.runtime import LocalOptions, LocalRuntime
from nclav.local.thread_queue import ThreadWorkQueue
from nclav.records import RunStatus, StepStatus
from nclav.runtime.delivery import (
    Ack,
    Delivery,
    DeliveryPolicy,
    GaveUp,
    Retry,
    decide,
    decode,
    deliver,
    is_temporary,
)
from support import enclave_files, write_tree

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from nclav.records import StepRecord

POLICY = DeliveryPolicy(max_receives=5, backoff_s=5.0, max_delay_s=900.0)
THROTTLED = TemporaryError("dynamodb: ProvisionedThroughputExceededException", retry_after_s=2)
MESSAGE = {"run_id": "r", "step_id": "provision_enclave:a", "action": "provision_enclave"}


class FakeEngine:
    """``handle`` raises ``error`` (or not); ``give_up`` records what it was given."""

    def __init__(self, error: Exception | None = None, give_up_error: Exception | None = None):
        self.error = error
        self.give_up_error = give_up_error
        self.handled: list[Mapping[str, str]] = []
        self.given_up: list[tuple[Mapping[str, str], str]] = []

    def handle(self, message: Mapping[str, str]) -> None:
        self.handled.append(message)
        if self.error is not None:
            raise self.error

    def give_up(self, message: Mapping[str, str], error: str) -> bool:
        if self.give_up_error is not None:
            raise self.give_up_error
        self.given_up.append((message, error))
        return True


def run(engine: FakeEngine, attempt: int = 1, body: str | None = None) -> Any:
    delivery = Delivery(json.dumps(MESSAGE) if body is None else body, attempt, "m-1")
    return deliver(engine, delivery, POLICY)  # type: ignore[arg-type]


def test_a_handled_message_is_acknowledged() -> None:
    engine = FakeEngine()
    assert run(engine) == Ack()
    assert engine.handled == [MESSAGE]


def test_throttling_backs_off_exponentially_with_jitter_up_to_the_budget() -> None:
    # Before: every redelivery of a throttled store waited the error's 2 s, and the step was
    # given up ~8 s after the first try. Now the delays double (5, 10, 20, 40 s +-20 %).
    delays = []
    for attempt in range(1, POLICY.max_receives):
        outcome = run(FakeEngine(THROTTLED), attempt)
        assert isinstance(outcome, Retry), attempt
        delays.append(outcome.delay_s)
    for attempt, delay in enumerate(delays, 1):
        expected = 5.0 * 2 ** (attempt - 1)
        assert 0.8 * expected <= delay <= 1.2 * expected, (attempt, delays)
    assert sum(delays) > 60  # not ~8 s
    spread = {run(FakeEngine(THROTTLED), 3).delay_s for _ in range(20)}
    assert len(spread) > 1  # jitter: messages that failed together do not return together
    # The last delivery gives up and records the step failed with the error.
    engine = FakeEngine(THROTTLED)
    outcome = run(engine, POLICY.max_receives)
    assert outcome == GaveUp(engine.given_up[0][1], recorded=True)
    assert "ProvisionedThroughputExceeded" in outcome.error
    assert "gave up after 5 deliveries" in outcome.error


def test_the_delay_is_never_shorter_than_asked_nor_longer_than_the_cap() -> None:
    patient = TemporaryError("later", retry_after_s=400)
    assert run(FakeEngine(patient), 1).delay_s >= 400
    late = [decide(patient, 30, DeliveryPolicy(100, 5.0, 900.0)) for _ in range(50)]
    assert all(isinstance(d, Retry) and 0.8 * 900 <= d.delay_s <= 900 for d in late)
    assert len({d.delay_s for d in late}) > 1  # capped, and still spread apart


@pytest.mark.parametrize(
    "error",
    [
        ServiceError("dynamodb:GetItem: AccessDeniedException", status=400, code="AccessDenied"),
        ServiceError("s3:GetObject: AccessDenied", status=403, code="AccessDenied"),
        PermanentError("validation"),
        KeyError("a bug"),
    ],
    ids=["access-denied-400", "access-denied-403", "permanent", "bug"],
)
def test_a_permanent_error_gives_up_at_once_with_the_error(error: Exception) -> None:
    # Before: AccessDenied was redelivered after 5, 10, 20, 40, 80 s.
    engine = FakeEngine(error)
    outcome = run(engine, 1)
    assert isinstance(outcome, GaveUp) and outcome.recorded
    ((message, recorded),) = engine.given_up
    assert message == MESSAGE and type(error).__name__ in recorded
    assert "permanent: not retried" in recorded


@pytest.mark.parametrize(
    "error",
    [
        THROTTLED,
        ConflictError("lost a race"),
        ConnectionResetError("reset"),
        TimeoutError(),
        ServiceError("x", status=503, code="Weird"),
        ServiceError("x", status=400, code="ThrottlingException"),
    ],
)
def test_temporary_errors(error: Exception) -> None:
    assert is_temporary(error)


@pytest.mark.parametrize("body", ["not json", "[1]", '{"run_id": 1}', "null", '{"run_id": "r"}'])
def test_a_body_nclav_did_not_write_is_dropped(body: str) -> None:
    with pytest.raises(PermanentError):
        decode(Delivery(body))
    engine = FakeEngine()
    outcome = run(engine, 1, body)
    assert isinstance(outcome, GaveUp) and not outcome.recorded
    assert engine.handled == [] and engine.given_up == []


def test_a_give_up_that_fails_goes_back_to_the_queue() -> None:
    engine = FakeEngine(PermanentError("no"), give_up_error=THROTTLED)
    outcome = run(engine, 1)
    assert isinstance(outcome, Retry) and outcome.delay_s >= 2


# -- the local runtime: the same policy through ThreadWorkQueue --------------------------------


def test_the_thread_queue_applies_the_outcome() -> None:
    seen: list[Delivery] = []
    done = threading.Event()

    def consume(delivery: Delivery) -> Any:
        seen.append(delivery)
        if delivery.attempt < 3:
            return Retry(0.01)
        done.set()
        return Ack()

    queue = ThreadWorkQueue(consume=consume, workers=1)
    try:
        queue.send(MESSAGE)
        assert done.wait(5) and queue.wait_idle(5)
    finally:
        queue.close()
    assert [d.attempt for d in seen] == [1, 2, 3]
    assert {d.message_id for d in seen} == {seen[0].message_id}
    assert json.loads(seen[0].body) == MESSAGE


def test_the_local_runtime_gives_up_a_step_the_way_a_cloud_does(tmp_path: Path) -> None:
    # Before: the local queue only logged a dead letter; the step stayed unfinished and the
    # run never ended. Now the last delivery records it failed, as AWS's worker does.
    options = LocalOptions(
        home=tmp_path / "home", ephemeral=True, workers=2, max_receives=3, redelivery_backoff_s=0.01
    )
    runtime = LocalRuntime(options, token="t" * 64)
    store = runtime.store
    claim = store.claim_step
    failures = {"left": 3}

    def failing_claim(run_id: str, step_id: str, *args: Any) -> StepRecord | None:
        if step_id == "provision_enclave:beta" and failures["left"] > 0:
            failures["left"] -= 1
            raise TemporaryError("store throttled", retry_after_s=0)
        return claim(run_id, step_id, *args)

    store.claim_step = failing_claim  # type: ignore[method-assign]
    try:
        tree = tmp_path / "tree"
        for eid in ("alpha", "beta"):
            write_tree(tree, enclave_files(eid))
        body = json.dumps({"enclaves_dir": str(tree)}).encode()
        headers = {"authorization": f"Bearer {'t' * 64}", "content-type": "application/json"}
        response = runtime.router.dispatch(
            ApiRequest.build("POST", "/reconcile", headers=headers, body=body)
        )
        assert response.status in (200, 202), response
        run_id = json.loads(response.body)["id"]
        deadline = time.monotonic() + 20
        while (found := store.get_run(run_id)) is None or not found.status.final:
            assert time.monotonic() < deadline, "the run never ended"
            time.sleep(0.05)
        assert found.status == RunStatus.FAILED
        steps = {s.step_id: s for s in store.list_steps(run_id)}
        assert steps["provision_enclave:alpha"].status == StepStatus.SUCCEEDED
        beta = steps["provision_enclave:beta"]
        assert beta.status == StepStatus.FAILED
        assert beta.error is not None and "store throttled" in beta.error
        assert "gave up after 3 deliveries" in beta.error
    finally:
        runtime.stop()
