"""The delivery policy: what every runtime does with one delivery of a step message.

A cloud parses its queue record into a ``Delivery`` (body, attempt number, message id), calls
``deliver`` and applies the ``Outcome`` with its queue's mechanism (SQS: ChangeMessageVisibility
and a batch item failure for ``Retry``; the local queue: a re-push after the delay).

``deliver`` decodes the body and calls ``Engine.handle``, which claims the step, carries it out
and records the outcome (the step's own errors are the engine's: it retries a
``TemporaryError`` with its attempts, fails the rest). What reaches this policy is an error
*around* the step: the state store or the blob store failing. ``decide`` is the pure rule:

* temporary (``TemporaryError``, a lost ``ConflictError``, a connection error, a
  ``ServiceError`` that ``classify`` calls temporary): redeliver after an exponential backoff
  with jitter (never sooner than ``TemporaryError.retry_after_s``), until ``max_receives``
  deliveries, then give up;
* anything else (``PermanentError``, access denied, validation, a bug): give up at once.

Giving up records the step failed with the error (``Engine.give_up``: its dependents are
blocked, the run can end) and acknowledges the message. When even that fails, the message is
redelivered (towards the queue's dead-letter queue, whose limit must be above
``max_receives``); the sweeper re-sends a ready step that was dead-lettered.
A body nclav did not write is acknowledged: no delivery can fix it, and there is no step to
record the failure on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nclav.errors import ConflictError, PermanentError, ServiceError, TemporaryError, classify
from nclav.runtime.timing import backoff

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.engine import Engine

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a queue message: its body, which delivery it is (1 = first), its id."""

    body: str
    attempt: int = 1
    message_id: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    """Done (handled, or nothing to do): delete the message."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Deliver the message again after ``delay_s`` seconds."""

    delay_s: float
    error: str = ""


@dataclass(frozen=True, slots=True)
class GaveUp:
    """Not retried: acknowledge. ``recorded``: the step was recorded failed with ``error``."""

    error: str
    recorded: bool = False


Outcome = Ack | Retry | GaveUp


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """``max_receives`` deliveries at most; redelivery backoff from ``backoff_s``, at most
    ``max_delay_s``. Keep ``max_receives`` below the queue's own dead-letter limit."""

    max_receives: int = 5
    backoff_s: float = 5.0
    max_delay_s: float = 900.0

    def pending_s(self) -> float:
        """The longest a step message can stay in the queue between its deliveries, summed
        over all of them (jitter included): until then a ready, unclaimed step is not stuck,
        its message may just be waiting for its next delivery (``Engine.sweep``)."""
        delays = (
            backoff(n, self.backoff_s, self.max_delay_s, jitter=0.0)
            for n in range(1, self.max_receives)
        )
        return sum(min(d * 1.2, self.max_delay_s) for d in delays)


def is_temporary(error: BaseException) -> bool:
    """Whether another delivery may succeed where this one failed."""
    if isinstance(error, TemporaryError | ConflictError | ConnectionError | TimeoutError):
        return True
    if isinstance(error, ServiceError):
        return classify(error.status, error.code) == "temporary"
    return False


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def retry_delay(error: BaseException, attempt: int, policy: DeliveryPolicy) -> float:
    """Seconds before delivery ``attempt + 1``: exponential with jitter, never sooner than a
    ``TemporaryError`` asked for, at most ``policy.max_delay_s``."""
    delay = backoff(attempt, policy.backoff_s, policy.max_delay_s)
    if isinstance(error, TemporaryError):
        delay = max(delay, error.retry_after_s)
    return min(delay, policy.max_delay_s)


def decide(error: BaseException, attempt: int, policy: DeliveryPolicy) -> Retry | GaveUp:
    """The pure rule: retry a temporary error within the delivery budget, else give up."""
    text = describe(error)
    if not is_temporary(error):
        return GaveUp(f"{text} (permanent: not retried)")
    if attempt >= policy.max_receives:
        return GaveUp(f"{text} (gave up after {attempt} deliveries)")
    return Retry(retry_delay(error, attempt, policy), text)


def decode(delivery: Delivery) -> dict[str, str]:
    """The step message in a body; ``PermanentError`` for a body nclav did not write."""
    try:
        message = json.loads(delivery.body)
    except ValueError:
        message = None
    if (
        not isinstance(message, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in message.items())
        or not message.get("run_id")
        or not message.get("step_id")
    ):
        raise PermanentError(f"message {delivery.message_id or '?'}: not a step message")
    return message


def encode(message: Mapping[str, str]) -> str:
    return json.dumps(dict(message), sort_keys=True)


def deliver(engine: Engine, delivery: Delivery, policy: DeliveryPolicy) -> Outcome:
    """Handle one delivery with ``engine``; the outcome says what the queue should do."""
    try:
        message = decode(delivery)
    except PermanentError as exc:
        logger.error("dropped a malformed message", extra={"message_id": delivery.message_id})
        return GaveUp(str(exc))
    ids = {"run_id": message["run_id"], "step_id": message["step_id"]}
    try:
        engine.handle(message)
        return Ack()
    except Exception as exc:  # the worker entrypoint: every failure gets a decision
        decision = decide(exc, delivery.attempt, policy)
    if isinstance(decision, Retry):
        logger.warning(
            "step handed back for redelivery",
            extra={**ids, "attempt": delivery.attempt, "delay_s": decision.delay_s},
        )
        return decision
    try:
        recorded = engine.give_up(message, decision.error)
    except Exception as exc:  # not even that: redelivered, towards the dead-letter queue
        logger.exception("could not record the step failed", extra=ids)
        return Retry(retry_delay(exc, delivery.attempt, policy), describe(exc))
    logger.error("step given up", extra={**ids, "attempt": delivery.attempt, "recorded": recorded})
    return GaveUp(decision.error, recorded)


__all__ = [
    "Ack",
    "Delivery",
    "DeliveryPolicy",
    "GaveUp",
    "Outcome",
    "Retry",
    "decide",
    "decode",
    "deliver",
    "describe",
    "encode",
    "is_temporary",
    "retry_delay",
]
