"""The two timing rules every part of a runtime shares: how long to back off, and a heartbeat.

``backoff`` is the one exponential backoff with jitter (the engine's step retries, queue
redeliveries, a store's own short retries of a contended write): jitter keeps the retries of
many messages that failed together from arriving together again.

``heartbeat`` runs a beat every few seconds while a block runs, on one daemon thread (the
engine's step lease, the partition mutex, a queue message's visibility): a beat that raises
is logged and the next one still comes; a beat that returns ``False`` ends the heartbeat
(the thing it kept alive is lost, e.g. the lease was taken over).
"""

from __future__ import annotations

import logging
import random
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)


def backoff(
    attempt: int,
    base_s: float,
    cap_s: float | None = None,
    *,
    jitter: float = 0.2,
    rand: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait before try ``attempt + 1``: ``base_s * 2**(attempt - 1)`` at most
    ``cap_s``, times a random factor in ``[1 - jitter, 1 + jitter]`` (``attempt`` >= 1)."""
    delay = base_s * 2 ** min(max(attempt - 1, 0), 62)
    if cap_s is not None:
        delay = min(delay, cap_s)
    return max(float(delay * rand(1 - jitter, 1 + jitter)), 0.0)


@contextmanager
def heartbeat(
    every_s: float, beat: Callable[[], object], *, name: str = "heartbeat"
) -> Iterator[None]:
    """Call ``beat`` every ``every_s`` seconds while the block runs; stop when it returns
    ``False`` or the block ends (the block never waits for a beat in progress to matter)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                if beat() is False:
                    return
            except Exception:  # a missed beat is retried at the next; the block goes on
                logger.warning("%s: a beat failed", name, exc_info=True)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


__all__ = ["backoff", "heartbeat"]
