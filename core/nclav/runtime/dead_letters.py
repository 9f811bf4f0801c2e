"""Dead-lettered messages: counted where the runtime's queue can count them.

A message lands in a dead-letter queue (SQS DLQ, Azure ``<queue>-poison``) when every delivery
failed before its step could even record an outcome. A queue adapter that can count them
implements ``DeadLetters``; ``nclav status`` and ``GET /status`` show the count, so a stuck
message is seen rather than found. The local runtime has no dead-letter queue (its delivery
policy records the give-up on the step instead): its count is None, "not applicable".
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from nclav.errors import NclavError

logger = logging.getLogger(__name__)


@runtime_checkable
class DeadLetters(Protocol):
    """An optional capability of a work queue adapter."""

    def dead_letter_count(self) -> int | None:
        """Messages waiting in the dead-letter queue(s) (approximate); None when unknown."""
        ...


def dead_letter_count(queue: object) -> int | None:
    """``queue``'s dead-letter count, or None when it has no dead-letter queue to count or
    cannot count it now (the status page must not fail because a queue did not answer)."""
    if not isinstance(queue, DeadLetters):
        return None
    try:
        return queue.dead_letter_count()
    except NclavError as exc:  # denied, throttled, gone: the status answers without it
        logger.warning("dead-lettered messages not counted: %s", exc)
        return None


__all__ = ["DeadLetters", "dead_letter_count"]
