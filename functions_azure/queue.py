"""``StorageWorkQueue``: the work queue on an Azure Storage queue.

Producer side (the ``WorkQueue`` port): ``send`` puts core's JSON step message, base64
encoded, which is what the Functions host's queue trigger decodes by default
(``messageEncoding: base64`` in host.json). A delay is the message's initial visibility
timeout, in whole seconds rounded up (never early), up to Azure's 7 days; a longer delay
(a ``WaitingError`` of days) is cut to 7 days: the step comes back early, finds it still has
to wait, and is put back without using up an attempt, which is what waiting means in core.
Messages never expire (``time_to_live=-1``): a delayed step must not vanish.

Consumer side (the Functions host in Azure; the tests' pump): ``receive``, ``delete``,
``delay``. The attempt number is the message's ``dequeue_count``, counted by the service on
every receive. Storage queues have no dead-letter queue: the Functions host moves a message
to ``<queue>-poison`` after ``maxDequeueCount`` deliveries, and core's delivery policy gives
up (and records the step failed) before that. Given that queue's client (``poison``), the
adapter counts what landed there (``dead_letter_count``, core's ``DeadLetters``): the status
page shows it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from functions_azure._errors import azure_errors
from nclav.errors import ConflictError, NotFoundError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient

MAX_DELAY_S = 7 * 24 * 3600  # Storage queue visibility timeout cap
MAX_BATCH = 32  # Get Messages cap
POISON_SUFFIX = "-poison"  # the Functions host's name for a queue's poison queue
RECEIPT_SEPARATOR = "\n"  # between the message id and its pop receipt in ``Received.receipt``
POLL_S = 0.05  # Storage queues have no long polling: ``receive`` polls this often


@dataclass(frozen=True, slots=True)
class Received:
    """One delivery of a message: the body, the handle to act on it, and its attempt number."""

    body: str
    receipt: str  # message id and pop receipt: what Delete and Update Message need
    receive_count: int  # the service's dequeue_count
    message_id: str = ""

    @property
    def message(self) -> dict[str, str]:
        """The step message in the body (core's decoding); ``PermanentError`` if malformed."""
        from nclav.runtime.delivery import Delivery, decode

        return decode(Delivery(self.body, self.receive_count, self.message_id))


def whole_seconds(seconds: float, cap: int = MAX_DELAY_S) -> int:
    return min(max(math.ceil(seconds), 0), cap)


def queue_client(service: QueueServiceClient, name: str) -> QueueClient:
    """A client of queue ``name`` that writes and reads base64 bodies, as the host does."""
    from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

    return service.get_queue_client(
        name,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )


class StorageWorkQueue:
    def __init__(self, client: QueueClient, *, poison: QueueClient | None = None) -> None:
        self.client = client
        self.poison = poison  # the host's <queue>-poison, counted by ``dead_letter_count``

    @classmethod
    def from_connection_string(cls, connection: str, name: str) -> StorageWorkQueue:
        """The queue ``name`` of the account in ``connection`` (Azurite in tests)."""
        from azure.storage.queue import QueueServiceClient

        return cls(queue_client(QueueServiceClient.from_connection_string(connection), name))

    @property
    def name(self) -> str:
        return str(self.client.queue_name)

    # -- producer: the WorkQueue port --------------------------------------------------------

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None:
        self.send_body(json.dumps(dict(message), sort_keys=True), delay_s)

    def send_body(self, body: str, delay_s: float = 0) -> QueueMessage:
        """Send ``body`` as it is; the service's record of it (id, when it becomes visible)."""
        with azure_errors(f"queue send {self.name}"):
            return self.client.send_message(
                body, visibility_timeout=whole_seconds(delay_s) or None, time_to_live=-1
            )

    def close(self) -> None:
        """Nothing to stop: consuming is the Functions host's (or a pump's) business."""

    # -- consumer ----------------------------------------------------------------------------

    def receive(
        self, max_messages: int = MAX_BATCH, wait_s: float = 0, *, visibility_s: float = 30
    ) -> list[Received]:
        """Up to ``max_messages``, polling up to ``wait_s`` seconds for the first."""
        deadline = time.monotonic() + wait_s
        while True:
            with azure_errors(f"queue receive {self.name}"):
                got = self.client.receive_messages(
                    messages_per_page=min(max(max_messages, 1), MAX_BATCH),
                    visibility_timeout=max(whole_seconds(visibility_s), 1),
                    max_messages=min(max(max_messages, 1), MAX_BATCH),
                )
                received = [
                    Received(
                        body=str(m.content),
                        receipt=f"{m.id}{RECEIPT_SEPARATOR}{m.pop_receipt}",
                        receive_count=int(m.dequeue_count or 1),
                        message_id=str(m.id),
                    )
                    for m in got
                ]
            if received or time.monotonic() >= deadline:
                return received
            time.sleep(POLL_S)

    def delete(self, receipt: str) -> None:
        """Acknowledge: the message is done (already gone is fine)."""
        message_id, pop_receipt = receipt.split(RECEIPT_SEPARATOR, 1)
        try:
            with azure_errors(f"queue delete {self.name}"):
                self.client.delete_message(message_id, pop_receipt)
        except NotFoundError:
            pass

    def delay(self, receipt: str, seconds: float) -> None:
        """Let a received message come back after ``seconds`` (0: now), up to 7 days.

        The next receive adds one to ``dequeue_count``: this is the backoff of a failed
        attempt. A receipt another consumer has since replaced is a ``ConflictError``.
        """
        message_id, pop_receipt = receipt.split(RECEIPT_SEPARATOR, 1)
        try:
            with azure_errors(f"queue update {self.name}"):
                self.client.update_message(
                    message_id, pop_receipt, visibility_timeout=whole_seconds(seconds)
                )
        except (ConflictError, NotFoundError) as exc:  # PopReceiptMismatch, MessageNotFound
            raise ConflictError(f"message {message_id} was received again meanwhile") from exc

    def defer(self, received: Received) -> bool:
        """Never early: a delay is the message's visibility (see the module docstring)."""
        return False

    def pending(self) -> int:
        """Messages waiting, delayed or in flight (the service's approximate count)."""
        return _count(self.client)

    def dead_letter_count(self) -> int | None:
        """Messages the host moved to the poison queue; None without one to count."""
        return None if self.poison is None else _count(self.poison)


def _count(client: QueueClient) -> int:
    with azure_errors(f"queue properties {client.queue_name}"):
        return int(client.get_queue_properties().approximate_message_count or 0)


def create_queues(service: QueueServiceClient, name: str) -> tuple[QueueClient, QueueClient]:
    """Create (or keep) queue ``name`` and its poison queue; returns their clients."""
    made = []
    for queue_name in (name, name + POISON_SUFFIX):
        client = queue_client(service, queue_name)
        try:
            with azure_errors(f"create queue {queue_name}"):
                client.create_queue()
        except ConflictError:
            pass  # QueueAlreadyExists
        made.append(client)
    return made[0], made[1]


if TYPE_CHECKING:
    from nclav.ports import WorkQueue

    def _implements(adapter: StorageWorkQueue) -> WorkQueue:  # mypy proves the port is implemented
        return adapter


__all__ = [
    "MAX_DELAY_S",
    "POISON_SUFFIX",
    "Received",
    "StorageWorkQueue",
    "create_queues",
    "queue_client",
]
