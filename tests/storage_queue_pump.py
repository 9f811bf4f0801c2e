"""``StorageQueuePump``: a test-only consumer of a ``StorageWorkQueue``, doing the Functions
host's job with threads (as ``SqsPump`` does the worker Lambda's), so the WorkQueue contract
suite runs unchanged against Azurite.

It is ``SqsPump`` with the host's poison handling: Storage queues have no redrive policy, so
after ``max_deliveries`` failed deliveries the message is reported to ``dead_letter``, copied
to the poison queue and deleted, as the host does at ``maxDequeueCount``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqs_pump import SqsPump

if TYPE_CHECKING:
    from functions_azure.queue import Received, StorageWorkQueue
    from nclav.local.thread_queue import Handler

logger = logging.getLogger(__name__)


class StorageQueuePump(SqsPump):
    def __init__(
        self, queue: StorageWorkQueue, poison: StorageWorkQueue, handler: Handler, **options: Any
    ) -> None:
        self.poison = poison
        super().__init__(queue, handler, **options)  # type: ignore[arg-type]

    def _failed(self, received: Received, error: Exception) -> None:  # type: ignore[override]
        if received.receive_count < self._max_deliveries:
            super()._failed(received, error)  # type: ignore[arg-type]
            return
        try:
            self._dead_letter(received.message, error)
        except Exception:
            logger.exception("dead-letter callback failed for %s", received.body)
        self.poison.send_body(received.body)
        self.queue.delete(received.receipt)


__all__ = ["StorageQueuePump"]
