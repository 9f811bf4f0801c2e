"""One driver per runtime, all with the same methods: what the scenario suite runs on.

A scenario speaks the HTTP API (the same routes on every runtime), and reaches below it only
through the driver: ``wait`` carries a run to its end the way that runtime does (the local
runtime's worker threads and sweeper; on AWS, Lambda's SQS event source mappings and the
EventBridge sweeper, stood in by a pump), ``deliver`` puts a step message on the runtime's
queue, and ``engine`` is the runtime's own engine (its state store and blob store), whose
methods a fault injection may wrap. A new cloud joins with one more class here and its id in
``RUNTIMES``; the scenarios stay as they are.

Both runtimes use a short lease (``LEASE_S``), so a dead worker's step is taken over within
seconds, and a sweep runs whenever a run waits (on AWS) or every half second (local).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aws_harness import Deployment, FakeContext, Pump, function_url_server, load_event

from nclav.bundle import pack_directory
from nclav.gitsource.settings import GitSettings
from nclav.local.runtime import LocalOptions, LocalRuntime

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

    import pytest

    from nclav.engine import Engine
    from nclav.ports import SecretStore

RUNTIMES = ["local", "aws", "gcp", "azure"]
LEASE_S = 2.0
FINAL = ("succeeded", "failed")


class WorkerDied(BaseException):  # noqa: N818 - it is an event, not an error to handle
    """Raised inside a step to stand for its worker dying (kill -9, Lambda crash).

    A ``BaseException``: the engine records ``Exception``s as step failures, while this one
    leaves the step running under its lease with no outcome, as a dead process does.
    """


@dataclass
class Reply:
    status: int
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.body[:400]!r}>"


class Runtime:
    """What every runtime driver offers; the API helpers are built on ``request``."""

    name: str
    # How many deliveries of a step message the runtime makes before it gives up.
    max_deliveries: int

    # -- to implement ----------------------------------------------------------------------

    def _send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str], *, token: bool
    ) -> Reply:
        """One HTTP request to the runtime's API as sent; ``token``: with the bearer token."""
        raise NotImplementedError

    def wait(self, run: Mapping[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        """Carry the runtime on until ``run`` is final; return it."""
        raise NotImplementedError

    @property
    def engine(self) -> Engine:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def request(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        *,
        content_type: str | None = None,
    ) -> Reply:
        """An API request with the bearer token; a dict or list body is sent as JSON."""
        headers: dict[str, str] = {}
        data: bytes | None = None
        if isinstance(body, dict | list):
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        elif body is not None:
            data = body
            headers["Content-Type"] = content_type or "application/octet-stream"
        return self._send(method, path, data, headers, token=True)

    def webhook(self, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """A git host's delivery to ``path``: ``headers`` as the host sends them, no token."""
        return self._send("POST", path, body, dict(headers), token=False)

    @property
    def secrets(self) -> SecretStore:
        """The runtime's secret store (the git token, a cloud's webhook secret)."""
        raise NotImplementedError

    def webhook_secret(self) -> str:
        """The git webhook secret where an operator reads it (``GET /source`` says where)."""
        from nclav.gitsource.source import WEBHOOK_SECRET

        found = self.secrets.get(WEBHOOK_SECRET)
        assert found, "no webhook secret in the runtime's secret store"
        return found.strip()

    @contextlib.contextmanager
    def another_sandbox(self) -> Iterator[None]:
        """Requests inside go to another sandbox of the runtime's functions (a cold start:
        nothing in memory shared with the first, which stays warm and serves again after).
        The local server is one process: the same one."""
        yield

    # -- shared ----------------------------------------------------------------------------

    def ok(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        reply = self.request(method, path, body)
        assert reply.status == expect, (self.name, method, path, reply)
        return reply.json if reply.body else None

    def upload(self, tree: Path) -> str:
        _, data, _ = pack_directory(tree)
        reply = self.request("POST", "/bundles", data, content_type="application/gzip")
        assert reply.status in (200, 201), reply
        return str(reply.json["digest"])

    def submit(self, tree: Path, **options: Any) -> dict[str, Any]:
        """Upload ``tree`` and start reconciling it: the run (202, or 200 when already final
        or when nothing changes: then no run is recorded). ``options`` go in the body
        (``allow_delete``, ``max_deletes``)."""
        reply = self.request("POST", "/reconcile", {"bundle": self.upload(tree), **options})
        assert reply.status in (200, 202), reply
        return reply.json  # type: ignore[no-any-return]

    def apply(self, tree: Path, timeout: float = 120.0, **options: Any) -> dict[str, Any]:
        """The final run, or the "no changes" answer (``run`` None) when there is none."""
        started = self.submit(tree, **options)
        if started.get("run_id") is None:
            return started
        return self.wait(started, timeout)

    def destroy(self, target: str, timeout: float = 120.0) -> dict[str, Any]:
        return self.wait(self.ok("DELETE", target, expect=202), timeout)

    def run(self, run_id: str) -> dict[str, Any]:
        return self.ok("GET", f"/runs/{run_id}")  # type: ignore[no-any-return]

    def enclaves(self) -> dict[str, dict[str, Any]]:
        return {e["enclave_id"]: e for e in self.ok("GET", "/enclaves")}

    def iac_runs(self, enclave: str, partition: str) -> list[dict[str, Any]]:
        return self.ok("GET", f"/enclaves/{enclave}/partitions/{partition}/iac/runs")  # type: ignore[no-any-return]

    def deliver(self, run_id: str, step_id: str) -> None:
        """One more message for a step on the runtime's queue (a duplicate delivery): the
        message the engine itself sends for it, on the queue it sends it to."""
        step = self.engine.store.get_step(run_id, step_id)
        assert step is not None, (run_id, step_id)
        self.engine._send(step)  # noqa: SLF001 - exactly the engine's message

    def sweep(self) -> int:
        return self.engine.sweep()

    def send_control(self, message: Mapping[str, Any]) -> None:
        """A control message (``{"kind": ...}``) put on the runtime's queue the way an
        operator does (README, "Queue messages"), not through the API."""
        raise NotImplementedError

    def until(self, ready: Callable[[], Any], timeout: float = 120.0) -> Any:
        """Carry the runtime on until ``ready()`` answers something true; return it."""
        deadline = time.monotonic() + timeout
        while True:
            self.settle()
            found = ready()
            if found:
                return found
            assert time.monotonic() < deadline, "the runtime never got there"
            time.sleep(0.1)

    def settle(self) -> None:
        """Let the runtime's workers take what is on its queues (local: they do by themselves)."""


class LocalScenarioRuntime(Runtime):
    """``nclav serve --cloud local`` in this process: SQLite, the thread queue, real HTTP."""

    name = "local"
    max_deliveries = 5  # ThreadWorkQueue's default

    def __init__(self, home: Path) -> None:
        options = LocalOptions(
            home=home,
            port=0,
            workers=2,
            lease_s=LEASE_S,
            sweep_every_s=0.5,
            backoff_s=0.2,
            git=GitSettings.from_env(os.environ),  # as `nclav serve` reads NCLAV_GIT_*
        )
        self.runtime = LocalRuntime(options, token=secrets.token_hex(32))
        url = urlsplit(self.runtime.start())
        self.host, self.port = str(url.hostname), int(url.port or 80)

    def _send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str], *, token: bool
    ) -> Reply:
        if token:
            headers = {**headers, "Authorization": f"Bearer {self.runtime.token}"}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return Reply(response.status, response.read())
        finally:
            conn.close()

    def wait(self, run: Mapping[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.run(str(run["id"]))
            if found["status"] in FINAL:
                return found
            assert time.monotonic() < deadline, f"run still {found['status']}: {found}"
            time.sleep(0.1)

    def send_control(self, message: Mapping[str, Any]) -> None:
        # The local runtime's queue is in the server process: `nclav` and the API are how an
        # operator reaches it; the message itself is the same on every runtime.
        self.engine.queue.send(dict(message))

    @property
    def secrets(self) -> SecretStore:
        from nclav.local.file_secrets import FileSecretStore

        return FileSecretStore(self.runtime.options.home / "secrets")

    def webhook_secret(self) -> str:
        # Beside the API token, as `nclav source` says: not in the secret store.
        return (self.runtime.options.home / "webhook-secret").read_text().strip()

    @property
    def engine(self) -> Engine:
        return self.runtime.engine

    def close(self) -> None:
        self.runtime.stop()


class CrashTolerantPump(Pump):
    """Lambda's event source mapping when the function instance dies mid-batch: nothing of
    the batch is deleted, so SQS delivers it again after the visibility timeout."""

    def invoke(self, queue: Any, messages: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            return super().invoke(queue, messages)
        except WorkerDied:
            return {"batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in messages]}


class AwsScenarioRuntime(Runtime):
    """The AWS handlers over moto: function URL events, SQS records, EventBridge sweeps."""

    name = "aws"
    max_deliveries = 3  # NCLAV_MAX_RECEIVES below

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        self._url = function_url_server()
        url = self._url.__enter__()
        self.deployment = Deployment(
            monkeypatch,
            tmp_path,
            NCLAV_API_URL=url,
            NCLAV_LEASE_S=str(LEASE_S),
            NCLAV_MAX_RECEIVES=str(self.max_deliveries),
            queue_visibility_s="2",
        )
        self.pump = CrashTolerantPump(self.deployment)

    def _send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str], *, token: bool
    ) -> Reply:
        api = self.deployment.api
        if token:
            result = api.request(method, path, data, headers=headers)
        else:
            result = api.request(method, path, data, headers=headers, token=None)
        return Reply(result.status, result.body)

    @property
    def secrets(self) -> SecretStore:
        return self.deployment.runtime.secrets

    def wait(self, run: Mapping[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.pump.drain(max(deadline - time.monotonic(), 1.0))
            found = self.run(str(run["id"]))
            if found["status"] in FINAL:
                return found
            assert time.monotonic() < deadline, f"run still {found['status']}: {found}"
            time.sleep(0.2)
            self.sweep()  # the EventBridge schedule, run whenever the queues are empty

    def send_control(self, message: Mapping[str, Any]) -> None:
        # `aws sqs send-message` as the README shows it: a drift check goes to the terraform
        # queue (its workers run terraform), every other kind to the steps queue.
        queue = self.deployment.iac if message["kind"] == "drift_check" else self.deployment.steps
        self.deployment.send_raw(queue, json.dumps(dict(message)))

    def settle(self) -> None:
        self.pump.drain()

    @contextlib.contextmanager
    def another_sandbox(self) -> Iterator[None]:
        from functions_aws import bootstrap

        warm = bootstrap.install(None)  # the next invocation builds a fresh runtime
        try:
            yield
        finally:
            bootstrap.install(warm)

    def sweep(self) -> int:
        from functions_aws import schedule

        answer = schedule.handler(load_event("eventbridge_scheduled"), FakeContext())
        return int(answer["resent"])

    @property
    def engine(self) -> Engine:
        return self.deployment.runtime.engine

    def close(self) -> None:
        self._url.__exit__(None, None, None)


@contextlib.contextmanager
def open_runtime(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **stand_ins: Any
) -> Iterator[Runtime]:
    runtime: Runtime
    if kind == "azure":  # its stand-ins' fixtures: storage, cosmos, cosmos_endpoint
        from runtime_azure import AzureScenarioRuntime

        runtime = AzureScenarioRuntime(monkeypatch, tmp_path, **stand_ins)
    elif kind == "local":
        runtime = LocalScenarioRuntime(tmp_path / "home")
    elif kind == "aws":
        runtime = AwsScenarioRuntime(monkeypatch, tmp_path)
    elif kind == "gcp":  # its stand-ins first: runtime_gcp.prepare
        from runtime_gcp import GcpScenarioRuntime

        runtime = GcpScenarioRuntime(monkeypatch, tmp_path)
    else:
        raise ValueError(f"no scenario runtime {kind!r}")
    try:
        yield runtime
    finally:
        runtime.close()


__all__ = [
    "LEASE_S",
    "RUNTIMES",
    "AwsScenarioRuntime",
    "LocalScenarioRuntime",
    "Reply",
    "Runtime",
    "WorkerDied",
    "open_runtime",
]
