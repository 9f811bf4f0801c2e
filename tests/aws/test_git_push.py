"""Git-push reconcile (issue 15) through the AWS handlers over moto.

A real git server (``git http-backend``), a signed GitHub push delivery to the API handler
(function URL event, no bearer token), the worker handler taking the control message from
moto's SQS and starting the run, then the schedule handler's poll catching a push whose
delivery was lost. The webhook secret is generated into Secrets Manager on first use.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from aws_harness import FakeContext, Pump, Result, http_event, load_event

from functions_aws import api, schedule
from gitserver import GitServer, Repo, github_headers, github_push

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from aws_harness import Deployment

ZERO = "0" * 40


def enclave(eid: str, name: str) -> dict[str, str]:
    return {f"enclaves/{eid}/config.yml": f"id: {eid}\nname: {name}\ncloud: local\nregion: r1\n"}


@pytest.fixture(name="git_server")
def git_server_fixture(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "git") as server:
        server.create("acme/infra")
        yield server


def webhook(body: bytes, headers: dict[str, str]) -> Result:
    event = http_event("POST", "/webhooks/github", body=body, headers=headers)
    return Result.of(api.handler(event, FakeContext("nclav-api")))


def test_a_push_through_the_aws_handlers_and_the_scheduled_poll(
    make_deployment: Callable[..., Deployment], git_server: GitServer, tmp_path: Path
) -> None:
    url = git_server.url("acme/infra")
    repo = Repo(tmp_path / "work", url)
    first = repo.commit("App v1", enclave("app", "App v1"))
    repo.push()
    stack = make_deployment(NCLAV_GIT_URL=url, NCLAV_GIT_POLL_S="60")
    pump = Pump(stack)

    source = stack.api.ok("GET", "/source")
    assert source["url"] == url and source["applied"] is None
    secret = stack.secretsmanager.get_secret_value(SecretId="nclav/git-webhook-secret")
    key = secret["SecretString"]
    assert "nclav/git-webhook-secret" in source["webhook"]["secret"]

    body = github_push(url, "refs/heads/main", ZERO, first)
    delivery = str(uuid.uuid4())
    refused = webhook(body, github_headers("wrong", body, delivery))
    assert refused.status == 401
    answer = webhook(body, github_headers(key, body, delivery))
    assert answer.status == 202, answer
    assert webhook(body, github_headers(key, body, delivery)).json["status"] == "duplicate"

    pump.drain()  # the worker takes the sync message, starts the run, then its steps
    runs: list[dict[str, Any]] = stack.api.ok("GET", "/runs")
    assert len(runs) == 1 and runs[0]["status"] == "succeeded", runs
    assert runs[0]["origin"]["commit"] == first and runs[0]["origin"]["delivery"] == delivery
    assert stack.api.ok("GET", "/enclaves/app")["desired"]["name"] == "App v1"

    # A push whose delivery is lost: the schedule handler's poll reconciles the new head.
    second = repo.commit("App v2", enclave("app", "App v2"))
    repo.push()
    schedule.handler(load_event("eventbridge_scheduled"), FakeContext("nclav-schedule"))
    pump.drain()
    runs = stack.api.ok("GET", "/runs")
    assert [r["origin"]["commit"] for r in runs] == [second, first]
    assert runs[0]["status"] == "succeeded" and runs[0]["trigger"] == "git-poll"
    assert stack.api.ok("GET", "/enclaves/app")["desired"]["name"] == "App v2"
    # The next scheduled run within NCLAV_GIT_POLL_S does not poll (nor reconcile) again.
    schedule.handler(load_event("eventbridge_scheduled"), FakeContext("nclav-schedule"))
    pump.drain()
    assert len(stack.api.ok("GET", "/runs")) == 2
