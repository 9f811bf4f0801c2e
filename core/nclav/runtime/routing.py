"""``RoutedQueue``: one ``WorkQueue`` for the engine over several queues, by the step's action.

The engine puts the step's action in every message it sends (``{"run_id", "step_id",
"action"}``), so routing costs no read: a runtime sends the steps that run terraform
(``Action.runs_terraform``) to a queue whose workers have terraform and a long time limit,
every other step to a small, fast one. ``StepQueues`` is that pair.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

from nclav.runtime.dead_letters import DeadLetters

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.ports import WorkQueue

_Q = TypeVar("_Q", bound="WorkQueue")


class RoutedQueue:
    def __init__(self, default: WorkQueue, by_action: Mapping[str, WorkQueue]) -> None:
        self.default = default
        self.by_action = dict(by_action)

    @classmethod
    def terraform_apart(cls, default: WorkQueue, terraform: WorkQueue) -> RoutedQueue:
        """Steps that run terraform to ``terraform``, the rest to ``default``."""
        from nclav.drift.schedule import DRIFT_KIND
        from nclav.plan import Action

        routes = {a.value: terraform for a in Action if a.runs_terraform}
        routes[DRIFT_KIND] = terraform  # a control message that runs terraform plan
        return cls(default, routes)

    def queue_for(self, message: Mapping[str, str]) -> WorkQueue:
        """By the step's ``action``, or a control message's ``kind``."""
        key = message.get("action") or message.get("kind") or ""
        return self.by_action.get(key, self.default)

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None:
        self.queue_for(message).send(message, delay_s)

    def close(self) -> None:
        for queue in {id(q): q for q in (self.default, *self.by_action.values())}.values():
            queue.close()


class StepQueues(RoutedQueue, Generic[_Q]):
    """The engine's one queue over a cloud's two: terraform steps (and drift checks) to
    ``iac``, every other step to ``steps``; what a cloud runtime with a terraform worker uses."""

    def __init__(self, steps: _Q, iac: _Q) -> None:
        routed = RoutedQueue.terraform_apart(steps, iac)
        super().__init__(routed.default, routed.by_action)
        self.steps, self.iac = steps, iac

    def dead_letter_count(self) -> int | None:
        """Both queues' dead-lettered messages (``DeadLetters``); None when neither counts."""
        queues: list[object] = [self.steps, self.iac]
        counts = [q.dead_letter_count() for q in queues if isinstance(q, DeadLetters)]
        known = [c for c in counts if c is not None]
        return sum(known) if known else None


__all__ = ["RoutedQueue", "StepQueues"]
