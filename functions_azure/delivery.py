"""One Storage queue delivery of a step message: core's delivery policy with the Functions
host's mechanism.

The trigger's ``QueueMessage`` becomes a ``Delivery`` (body, ``dequeue_count`` as the attempt,
message id) for core's ``deliver`` (``nclav.runtime.delivery``). The outcome, applied here:

* ``Ack`` and ``GaveUp``: return. The host deletes the message (a give-up was recorded on the
  step by core first).
* ``Retry``: the message's visibility timeout is set to core's backoff (Update Message with the
  trigger's pop receipt), and the function returns. The host's delete then finds the pop
  receipt changed, which it takes as "someone else took the message over" and leaves it (the
  WebJobs queue processor ignores ``PopReceiptMismatch`` on delete), so the message comes
  back after the backoff with ``dequeue_count`` one higher. Returning rather than raising keeps
  the backoff core's (exponential, jittered, at least a ``TemporaryError``'s
  ``retry_after_s``): a raise would make the host put it back after host.json's fixed
  ``visibilityTimeout``. When the update itself fails (the host renewed the message meanwhile,
  so our pop receipt is stale, or the queue did not answer), ``RedeliveryError`` is raised and
  the host does exactly that.

The host moves a message to ``<queue>-poison`` once a raise meets ``maxDequeueCount``; core
gives up before (``functions_azure.host.check_policy``). While a function runs, the host keeps
its message invisible by itself (it renews the visibility timeout), so no heartbeat on the
message is needed here, unlike SQS; the step's lease is the engine's own heartbeat.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from functions_azure.queue import RECEIPT_SEPARATOR

if TYPE_CHECKING:
    import azure.functions as func

    from functions_azure.bootstrap import AzureRuntime
    from functions_azure.queue import StorageWorkQueue
    from nclav.runtime.delivery import Delivery, Outcome

logger = logging.getLogger(__name__)


class RedeliveryError(RuntimeError):
    """Raised to hand a message back to the host: it returns after host.json's
    ``visibilityTimeout``, or goes to ``<queue>-poison`` at ``maxDequeueCount``."""


def to_delivery(message: func.QueueMessage) -> Delivery:
    from nclav.runtime.delivery import Delivery

    body = message.get_body().decode("utf-8", "replace")
    return Delivery(body, int(message.dequeue_count or 1), str(message.id or ""))


def deliver(runtime: AzureRuntime, queue: StorageWorkQueue, message: func.QueueMessage) -> Outcome:
    """Handle one queue trigger invocation; raises to hand the message back to the host."""
    from nclav.runtime.delivery import Retry
    from nclav.runtime.delivery import deliver as deliver_step

    outcome = deliver_step(runtime.engine, to_delivery(message), runtime.policy)
    if not isinstance(outcome, Retry):
        return outcome
    receipt = f"{message.id}{RECEIPT_SEPARATOR}{message.pop_receipt}"
    try:
        queue.delay(receipt, outcome.delay_s)
    except Exception as exc:  # the host puts it back after host.json's visibilityTimeout
        logger.warning("could not set the redelivery backoff: %s", exc)
        raise RedeliveryError(outcome.error) from exc
    return outcome


__all__ = ["RedeliveryError", "deliver", "to_delivery"]
