"""The Cloud Tasks work queue and its delivery translation, beyond the contract suite.

Against the emulator: what a task carries (URL, headers, OIDC token, deadline, schedule
time). The emulator ignores task-name deduplication, so ``Deduplicating`` adds exactly
Cloud Tasks' documented rule on top of the real client ("a task with the same name as a task
created or deleted in the last ~hour cannot be created: ALREADY_EXISTS"), and the idempotence
of enqueues and redeliveries is tested against it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from functions_gcp.delivery import answer
from functions_gcp.tasks_queue import (
    GENERATION,
    ORIGIN,
    CloudTasksWorkQueue,
    Received,
    task_id,
)
from nclav.errors import TemporaryError
from nclav.runtime.delivery import Ack, GaveUp, Retry

pytestmark = pytest.mark.slow
URL = "http://127.0.0.1:9/worker"  # nothing listens: the tasks stay in the queue, retrying
STEP = {"run_id": "r1", "step_id": "provision_enclave:a", "action": "provision_enclave"}


class Deduplicating:
    """The real (emulator) client plus Cloud Tasks' name rule the emulator leaves out."""

    def __init__(self, client: Any, fail_first: Exception | None = None) -> None:
        self.client = client
        self.names: set[str] = set()
        self.calls = 0
        self.fail_first = fail_first

    def create_task(self, *, parent: str, task: dict[str, Any], retry: Any = None) -> Any:
        """As a generated client does: the RPC wrapped in the ``retry`` it was given."""
        return (retry or (lambda f: f))(self._create)(parent, task)

    def _create(self, parent: str, task: dict[str, Any]) -> Any:
        self.calls += 1
        if task["name"] in self.names:
            raise gexc.AlreadyExists(f"Requested entity already exists: {task['name']}")
        self.names.add(task["name"])
        created = self.client.create_task(parent=parent, task=task)
        if self.fail_first is not None:  # the task was created; the answer is lost
            error, self.fail_first = self.fail_first, None
            raise error
        return created

    def list_tasks(self, *, parent: str) -> Any:
        return self.client.list_tasks(parent=parent)


def tasks(client: Any, queue: str) -> list[Any]:
    return list(client.list_tasks(parent=queue))


def test_a_task_posts_the_message_with_its_generation_origin_token_and_deadline(
    cloud_tasks: tuple[Any, str],
) -> None:
    client, name = cloud_tasks
    queue = CloudTasksWorkQueue(
        name,
        URL,
        client,
        service_account="nclav-tasks@p.iam.gserviceaccount.com",
        dispatch_deadline_s=1800,
    )
    queue.send(STEP, delay_s=3600)
    (task,) = tasks(client, name)
    request = task.http_request
    assert request.url == URL and request.http_method.name == "POST"
    assert json.loads(request.body) == STEP
    assert request.headers[GENERATION] == "0" and len(request.headers[ORIGIN]) == 32
    assert request.oidc_token.service_account_email == "nclav-tasks@p.iam.gserviceaccount.com"
    assert request.oidc_token.audience == "http://127.0.0.1:9"  # the service, not the path
    assert task.dispatch_deadline.total_seconds() == 1800
    ahead = task.schedule_time.timestamp() - datetime.now(UTC).timestamp()
    assert 3500 < ahead <= 3600
    body = request.body.decode()
    assert task.name == f"{name}/tasks/{task_id(body, 0, request.headers[ORIGIN])}"
    assert queue.pending() == 1


def test_each_fresh_send_is_its_own_task(cloud_tasks: tuple[Any, str]) -> None:
    """The sweeper re-sends a step whose task Cloud Tasks deleted: that send must not be
    refused as a name seen in the last hour."""
    client, name = cloud_tasks
    queue = CloudTasksWorkQueue(name, URL, Deduplicating(client))
    queue.send(STEP)
    queue.send(STEP)
    assert len({t.name for t in tasks(client, name)}) == 2


def test_an_enqueue_retried_after_a_lost_answer_is_already_enqueued(
    cloud_tasks: tuple[Any, str],
) -> None:
    client, name = cloud_tasks
    lost = Deduplicating(client, fail_first=gexc.ServiceUnavailable("connection reset"))
    queue = CloudTasksWorkQueue(name, URL, lost)
    assert queue.enqueue(json.dumps(STEP), 0, 2, "origin-1") is False  # the retry's answer
    assert lost.calls == 2
    assert len(tasks(client, name)) == 1


def test_a_task_delivered_twice_schedules_one_redelivery(cloud_tasks: tuple[Any, str]) -> None:
    client, name = cloud_tasks
    queue = CloudTasksWorkQueue(name, URL, Deduplicating(client))
    headers = {"X-CloudTasks-TaskName": "t-1", "X-CloudTasks-TaskRetryCount": "1"}
    headers |= {GENERATION: "2", ORIGIN: "o-1"}
    received = Received.from_headers(headers, json.dumps(STEP).encode())
    assert received.attempt == 4  # two earlier generations' deliveries, one retry, this one
    for _ in range(2):  # Cloud Tasks delivers at least once: the same task, twice
        found = answer(queue, received, Retry(7.0, "TemporaryError: throttled"))
        assert (found.status, found.outcome) == (200, "redelivery")
    (task,) = tasks(client, name)
    assert task.http_request.headers[GENERATION] == "4"  # the next delivery is the 5th
    assert task.http_request.headers[ORIGIN] == "o-1"
    assert 5 < task.schedule_time.timestamp() - datetime.now(UTC).timestamp() <= 7


def test_a_redelivery_that_cannot_be_scheduled_is_a_503(cloud_tasks: tuple[Any, str]) -> None:
    client, name = cloud_tasks
    gone = CloudTasksWorkQueue(name.replace("/q-", "/missing-"), URL, client)
    received = Received.from_headers({"X-CloudTasks-TaskName": "t-1"}, b"{}")
    found = answer(gone, received, Retry(1.0, "TemporaryError: x"))
    assert found.status == 503 and "redelivery not scheduled" in found.detail


def test_acks_and_give_ups_are_200_and_schedule_nothing(cloud_tasks: tuple[Any, str]) -> None:
    client, name = cloud_tasks
    queue = CloudTasksWorkQueue(name, URL, client)
    received = Received.from_headers({"X-CloudTasks-TaskName": "t-1"}, b"{}")
    assert answer(queue, received, Ack()).status == 200
    gave_up = answer(queue, received, GaveUp("PermanentError: no", recorded=True))
    assert (gave_up.status, gave_up.outcome, gave_up.detail) == (
        200,
        "gave_up",
        "PermanentError: no",
    )
    assert tasks(client, name) == []


def test_the_attempt_counts_retries_and_never_the_execution_count() -> None:
    headers = {
        "x-cloudtasks-taskname": "t-9",
        "x-cloudtasks-taskretrycount": "3",  # 3 failed attempts, 5xx answers included
        "x-cloudtasks-taskexecutioncount": "1",  # only the non-5xx answers
    }
    received = Received.from_headers(headers, b"{}")
    assert (received.attempt, received.generation, received.origin) == (4, 0, "")


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, "not a Cloud Tasks request"),
        ({"X-CloudTasks-TaskName": "t", "X-CloudTasks-TaskRetryCount": "x"}, "whole number"),
        ({"X-CloudTasks-TaskName": "t", GENERATION: "-1"}, ">= 0"),
    ],
)
def test_a_request_cloud_tasks_did_not_make_is_refused_by_name(
    headers: dict[str, str], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        Received.from_headers(headers, b"{}")


def test_bad_queue_names_and_deadlines_are_refused() -> None:
    with pytest.raises(ValueError, match="projects/<p>/locations/<l>/queues/<q>"):
        CloudTasksWorkQueue("steps", URL)
    with pytest.raises(ValueError, match="15 s to 1800 s"):
        CloudTasksWorkQueue("projects/p/locations/l/queues/q", URL, dispatch_deadline_s=3600)


def test_a_queue_error_is_nclavs() -> None:
    class Throttled:
        def create_task(self, **kw: Any) -> None:
            raise gexc.TooManyRequests("quota")

    queue = CloudTasksWorkQueue("projects/p/locations/l/queues/q", URL, Throttled())
    with pytest.raises(TemporaryError, match="cloudtasks.CreateTask"):
        queue.send(STEP)
