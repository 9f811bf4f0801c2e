"""What a runtime's schedule does on each tick (every minute on a cloud's scheduler).

``Engine.sweep`` sends again the steps whose lease expired (their worker died or was stopped)
and the ready steps whose message is stuck, and starts the runs that may start: it is what
recovers a step whose message was lost or dead-lettered, so no run waits forever. The git
source's schedule (``GitSource.tick``) reports commit statuses and polls for missed pushes,
and the drift checks that are due (``nclav.drift.schedule``) are sent to the queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nclav.runtime.compose import Composition

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tick:
    resent: int  # stuck steps sent again
    drift_checks: int  # drift checks sent


def scheduled_tick(composition: Composition) -> Tick:
    """One tick of the schedule over ``composition``'s engine and git source."""
    from nclav.drift import DriftOptions, DriftScheduler

    engine = composition.engine
    resent = engine.sweep()
    if resent:
        logger.info("stuck steps sent again", extra={"resent": resent})
    if composition.git is not None:
        composition.git.tick()
    drift = DriftScheduler(engine.store, engine.queue, DriftOptions.from_env(), engine.bundles)
    checks = len(drift.tick(engine.clock.now()))
    if checks:
        logger.info("drift checks sent", extra={"checks": checks})
    return Tick(resent, checks)


__all__ = ["Tick", "scheduled_tick"]
