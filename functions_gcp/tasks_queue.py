"""``CloudTasksWorkQueue``: the work queue on a Cloud Tasks queue with an HTTP target.

Producer side (the ``WorkQueue`` port): ``send`` creates one task whose HTTP request POSTs the
message (JSON) to the worker's URL; Cloud Tasks delivers it at least once, retrying a failed
(non-2xx, timed out or dropped) request with the queue's retry config. Consumer side: the
worker entry point reads a request with ``Received.from_headers`` (``functions_gcp.delivery``).

**Task names.** Every task is named ``sha256(origin, generation, body)``: ``body`` holds the run
and the step (and the action), ``generation`` counts the deliveries of the message made before
this task (0 for a fresh send), and ``origin`` is a random id given to each fresh send and
carried by every redelivery task made from it (the ``X-Nclav-Origin`` and
``X-Nclav-Generation`` headers). Cloud Tasks refuses a name it saw in about the last hour
(``ALREADY_EXISTS``), so an enqueue is idempotent: a ``CreateTask`` retried after a lost answer,
or the redelivery task of a task Cloud Tasks delivered twice, is "already enqueued", never a
second task. A fresh send gets a fresh origin on purpose: the sweeper re-sends a step whose
task Cloud Tasks gave up on (deleted after ``max_attempts``), and a name derived from the run
and step alone would be refused for an hour.

**Delays** are the task's ``schedule_time`` (up to 30 days ahead); no cap to work around.

**Identity.** With ``service_account`` set, each task carries an OIDC token for that service
account with the worker service's URL (scheme and host) as audience: Cloud Run's invoker
check lets only that identity in. ``dispatch_deadline_s`` is how long Cloud Tasks waits for
the worker's answer (15 s to 30 min; the terraform queue needs the 30 min).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from functions_gcp._errors import gcp_errors

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

GENERATION = "X-Nclav-Generation"  # deliveries of the message before this task
ORIGIN = "X-Nclav-Origin"  # the fresh send this task descends from
TASK_NAME = "X-CloudTasks-TaskName"
RETRY_COUNT = "X-CloudTasks-TaskRetryCount"  # failed attempts of this task (5xx included)
QUEUE_NAME = "X-CloudTasks-QueueName"
MAX_DEADLINE_S = 1800.0  # Cloud Tasks' longest dispatch deadline for an HTTP target
MIN_DEADLINE_S = 15.0
CREATE_DEADLINE_S = 30.0  # CreateTask retried (same name: idempotent) for at most this long


def service_url(url: str) -> str:
    """The service a URL names (scheme and host, no path): the audience Cloud Run checks an
    OIDC token's ``aud`` against, whichever path the task is POSTed to."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def task_id(body: str, generation: int, origin: str) -> str:
    """The task's id inside its queue: a hash, so names spread over Cloud Tasks' key space
    (sequential names slow a queue down) and the same enqueue always gets the same name."""
    digest = hashlib.sha256(f"{origin}\0{generation}\0{body}".encode()).hexdigest()
    return f"t-{digest}"


@dataclass(frozen=True, slots=True)
class Received:
    """One delivery of a task to the worker: its body, and which delivery of the message it
    is (``attempt``: the generation's deliveries plus this task's own retries, 1 = first)."""

    body: str
    task_name: str
    retry_count: int = 0
    generation: int = 0
    origin: str = ""

    @property
    def attempt(self) -> int:
        return self.generation + self.retry_count + 1

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], body: bytes) -> Received:
        """A Cloud Tasks HTTP request. The attempt comes from ``X-CloudTasks-TaskRetryCount``
        (it counts every failed attempt, 5xx included); ``X-CloudTasks-TaskExecutionCount``
        leaves out the 5xx answers, so it would undercount and is never used."""
        found = {k.lower(): v for k, v in headers.items()}
        name = found.get(TASK_NAME.lower(), "")
        if not name:
            raise ValueError(f"not a Cloud Tasks request: no {TASK_NAME} header")
        return cls(
            body=body.decode("utf-8", "replace"),
            task_name=name,
            retry_count=_count(found, RETRY_COUNT),
            generation=_count(found, GENERATION),
            origin=found.get(ORIGIN.lower(), ""),
        )


def _count(headers: Mapping[str, str], name: str) -> int:
    raw = headers.get(name.lower(), "0").strip() or "0"
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"header {name}: expected a whole number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"header {name}: expected a number >= 0, got {raw!r}")
    return value


class CloudTasksWorkQueue:
    """Tasks in ``queue`` (``projects/<p>/locations/<l>/queues/<q>``) POSTed to ``url``."""

    def __init__(
        self,
        queue: str,
        url: str,
        client: Any = None,
        *,
        service_account: str = "",
        dispatch_deadline_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if queue.count("/") != 5 or not queue.startswith("projects/"):
            raise ValueError(
                f"Cloud Tasks queue {queue!r}: expected projects/<p>/locations/<l>/queues/<q>"
            )
        if dispatch_deadline_s is not None and not (
            MIN_DEADLINE_S <= dispatch_deadline_s <= MAX_DEADLINE_S
        ):
            raise ValueError(
                f"dispatch deadline {dispatch_deadline_s} s: Cloud Tasks takes "
                f"{MIN_DEADLINE_S:.0f} s to {MAX_DEADLINE_S:.0f} s"
            )
        self.queue, self.url = queue, url
        self.service_account = service_account
        self.dispatch_deadline_s = dispatch_deadline_s
        self._client = client
        self._clock = clock  # wall clock: schedule times are absolute

    @property
    def client(self) -> Any:
        # Created on first use, so importing an entry point reaches no network or credentials.
        if self._client is None:
            from google.cloud import tasks_v2

            self._client = tasks_v2.CloudTasksClient()
        return self._client

    # -- producer: the WorkQueue port ---------------------------------------------------------

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None:
        self.enqueue(json.dumps(dict(message), sort_keys=True), delay_s, 0, uuid.uuid4().hex)

    def enqueue(self, body: str, delay_s: float, generation: int, origin: str) -> bool:
        """Create the task for ``body``; False when a task of that name already exists (it was
        enqueued already: by a retried call, or by an earlier delivery of the same task)."""
        from google.api_core import exceptions as gexc
        from google.api_core.retry import Retry, if_exception_type

        name = f"{self.queue}/tasks/{task_id(body, generation, origin)}"
        request: dict[str, Any] = {
            "http_method": "POST",
            "url": self.url,
            "headers": {
                "Content-Type": "application/json",
                GENERATION: str(generation),
                ORIGIN: origin,
            },
            "body": body.encode("utf-8"),
        }
        if self.service_account:
            request["oidc_token"] = {
                "service_account_email": self.service_account,
                "audience": service_url(self.url),
            }
        task: dict[str, Any] = {"name": name, "http_request": request}
        if delay_s > 0:
            task["schedule_time"] = datetime.fromtimestamp(self._clock() + delay_s, UTC)
        if self.dispatch_deadline_s is not None:
            task["dispatch_deadline"] = timedelta(seconds=self.dispatch_deadline_s)
        # A named task makes CreateTask safe to retry: a retry after a lost answer finds
        # ALREADY_EXISTS, which is the success it missed.
        retry = Retry(
            predicate=if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded),
            initial=0.2,
            timeout=CREATE_DEADLINE_S,
        )
        with gcp_errors(f"cloudtasks.CreateTask {name}"):
            try:
                self.client.create_task(parent=self.queue, task=task, retry=retry)
            except gexc.AlreadyExists:
                return False
        return True

    def close(self) -> None:
        """Nothing to stop: Cloud Tasks pushes to the worker; consuming is not this object's."""

    # -- status -------------------------------------------------------------------------------

    def pending(self) -> int:
        """Tasks in the queue, scheduled or being dispatched (a ListTasks walk)."""
        with gcp_errors(f"cloudtasks.ListTasks {self.queue}"):
            return sum(1 for _ in self.client.list_tasks(parent=self.queue))


def tasks_client(emulator_host: str | None = None) -> Any:
    """A Cloud Tasks client: gRPC to Google, or plain gRPC to an emulator at ``host:port``."""
    from google.cloud import tasks_v2

    if not emulator_host:
        return tasks_v2.CloudTasksClient()
    import grpc  # type: ignore[import-untyped]
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    channel = grpc.insecure_channel(emulator_host)
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


if TYPE_CHECKING:
    from nclav.ports import WorkQueue

    def _implements(adapter: CloudTasksWorkQueue) -> WorkQueue:  # mypy proves the port
        return adapter


__all__ = [
    "GENERATION",
    "ORIGIN",
    "RETRY_COUNT",
    "TASK_NAME",
    "CloudTasksWorkQueue",
    "Received",
    "service_url",
    "task_id",
    "tasks_client",
]
