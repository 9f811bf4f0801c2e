"""The EventBridge sweeper on DynamoDB and SQS (moto): it re-sends only stuck steps.

Measured before the fix: 200 ready steps made the steps queue 200 -> 400 -> 600 -> 800 over
three sweeps while the sweeper answered ``{"resent": 0}``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aws_harness import FakeContext, load_event

from functions_aws import schedule
from nclav.plan import Action, Plan, Step
from nclav.records import RunStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_harness import Deployment

WIDE = 200


def wide_plan(count: int = WIDE) -> Plan:
    steps = [
        Step(f"s{n:04d}", Action.PROVISION_ENCLAVE, f"e{n:04d}", None, ()) for n in range(count)
    ]
    return Plan(changes=(), steps=tuple(steps))


def sweep() -> int:
    answer = schedule.handler(load_event("eventbridge_scheduled"), FakeContext("nclav-schedule"))
    return int(answer["resent"])


def test_ready_steps_with_fresh_messages_are_not_sent_again(deployment: Deployment) -> None:
    run = deployment.runtime.engine.start_plan(wide_plan(), None)
    assert run.status == RunStatus.RUNNING
    assert deployment.pending(deployment.steps.url) == WIDE
    for _ in range(3):
        assert sweep() == 0
        assert deployment.pending(deployment.steps.url) == WIDE


def test_lost_messages_are_sent_again_once_a_lease(
    make_deployment: Callable[..., Deployment],
) -> None:
    lease, count = 4.0, 40  # a short lease, and few enough steps to re-send well within it
    d = make_deployment(NCLAV_LEASE_S=str(lease))
    d.runtime.engine.start_plan(wide_plan(count), None)
    d.sqs.purge_queue(QueueUrl=d.steps.url)  # the messages are lost
    assert d.pending(d.steps.url) == 0
    time.sleep(lease)
    assert sweep() == count
    assert d.pending(d.steps.url) == count
    assert sweep() == 0  # sent again a moment ago: not stuck yet
    assert d.pending(d.steps.url) == count
    time.sleep(lease)  # still unclaimed a lease later: once more, each of them
    assert sweep() == count
    assert d.pending(d.steps.url) == 2 * count
