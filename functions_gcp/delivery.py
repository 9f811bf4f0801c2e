"""One Cloud Tasks delivery of a step message: core's delivery policy in HTTP statuses.

The request becomes a ``Delivery`` for core's ``deliver`` (``nclav.runtime.delivery``): the
body, the attempt (``Received.attempt``: the deliveries made by earlier generations of the
message plus ``X-CloudTasks-TaskRetryCount``, never ``TaskExecutionCount``) and the task name.
The outcome is answered as a status:

* ``Ack`` and ``GaveUp``: **200**; Cloud Tasks deletes the task.
* ``Retry``: the delay the policy chose is honoured by creating the message's next
  generation as a new task scheduled ``delay_s`` ahead (named from the origin and this
  delivery's attempt, so a task delivered twice schedules one redelivery), then **200**.
  Cloud Tasks' own retry cannot honour it: its backoff is the queue's, the same for every
  task, and a ``TemporaryError`` may ask for longer (``retry_after_s``).
* The redelivery cannot be created, or the worker dies: **503** / no answer; Cloud Tasks
  retries the same task with the queue's retry config, and ``X-CloudTasks-TaskRetryCount``
  counts that attempt.

So a message's deliveries are counted across generations and Cloud Tasks' retries alike, and
the policy gives up (records the step failed) at ``NCLAV_MAX_RECEIVES``. The queue's retry
config only has to outlast that within one generation: ``max_attempts`` above
``NCLAV_MAX_RECEIVES`` (infra/gcp: README, "Queue retry config"). Cloud Tasks has no
dead-letter queue: a task out of attempts is deleted, and the sweeper re-sends its ready step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from functions_gcp.tasks_queue import CloudTasksWorkQueue, Received
    from nclav.engine import Engine
    from nclav.runtime.delivery import DeliveryPolicy, Outcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """The worker's HTTP answer to Cloud Tasks: 2xx done, anything else "try again"."""

    status: int
    outcome: str
    detail: str = ""

    def json(self) -> dict[str, str]:
        found = {"outcome": self.outcome}
        if self.detail:
            found["detail"] = self.detail
        return found


def answer(queue: CloudTasksWorkQueue, received: Received, outcome: Outcome) -> Answer:
    """The HTTP answer for ``outcome``; a ``Retry`` is scheduled here as the next task."""
    from nclav.runtime.delivery import Ack, GaveUp

    if isinstance(outcome, Ack):
        return Answer(200, "ack")
    if isinstance(outcome, GaveUp):
        return Answer(200, "gave_up", outcome.error)
    origin = received.origin or received.task_name
    try:
        created = queue.enqueue(received.body, outcome.delay_s, received.attempt, origin)
    except Exception as exc:  # Cloud Tasks retries this task instead (queue retry config)
        logger.exception("could not schedule the redelivery", extra={"task": received.task_name})
        return Answer(503, "retry", f"redelivery not scheduled: {exc}")
    if not created:
        logger.info("redelivery already scheduled", extra={"task": received.task_name})
    return Answer(200, "redelivery", f"in {outcome.delay_s:.1f} s: {outcome.error}")


def deliver(
    engine: Engine, queue: CloudTasksWorkQueue, received: Received, policy: DeliveryPolicy
) -> Answer:
    """Handle one task with ``engine`` and answer for it (core's policy, see above)."""
    from nclav.runtime.delivery import Delivery
    from nclav.runtime.delivery import deliver as deliver_step

    delivery = Delivery(received.body, received.attempt, received.task_name)
    return answer(queue, received, deliver_step(engine, delivery, policy))


__all__ = ["Answer", "answer", "deliver"]
