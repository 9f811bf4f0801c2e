"""``RoutedQueue``: one ``WorkQueue`` for the engine over several queues, by the step's action.

The engine puts the step's action in every message it sends (``{"run_id", "step_id",
"action"}``), so routing costs no read: a runtime sends the steps that run terraform
(``Action.runs_terraform``) to a queue whose workers have terraform and a long time limit,
every other step to a small, fast one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.ports import WorkQueue


class RoutedQueue:
    def __init__(self, default: WorkQueue, by_action: Mapping[str, WorkQueue]) -> None:
        self.default = default
        self.by_action = dict(by_action)

    @classmethod
    def terraform_apart(cls, default: WorkQueue, terraform: WorkQueue) -> RoutedQueue:
        """Steps that run terraform to ``terraform``, the rest to ``default``."""
        from nclav.plan import Action

        return cls(default, {a.value: terraform for a in Action if a.runs_terraform})

    def queue_for(self, message: Mapping[str, str]) -> WorkQueue:
        return self.by_action.get(message.get("action", ""), self.default)

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None:
        self.queue_for(message).send(message, delay_s)

    def close(self) -> None:
        for queue in {id(q): q for q in (self.default, *self.by_action.values())}.values():
            queue.close()


__all__ = ["RoutedQueue"]
