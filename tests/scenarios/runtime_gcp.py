"""The scenario suite's GCP runtime: the functions-framework targets over the GCP stand-ins.

What infra/gcp deploys, on loopback: the Firestore emulator (state), fake-gcs-server (blobs),
gcloud-tasks-emulator (two queues), and the ``worker`` and ``iac_worker`` targets of
``functions_gcp/main.py`` each served by functions-framework's app on a real HTTP server, to
which the emulator POSTs every task with its ``X-CloudTasks-*`` headers, as Cloud Tasks does.
The API is the ``api`` target (its app's test client), the sweep the ``schedule`` target.

The emulator dispatches a queue's tasks one at a time and retries a failed one at once;
``settle`` waits until both queues hold no task and no request is in a worker. A worker that
dies (``WorkerDied``) drops its connection, which the emulator takes as a failed attempt and
retries, as Cloud Tasks does. Secret Manager has no emulator: the runtime's secret store is
the real adapter against the strict discovery-document fake (tests/gcp_api_fake.py), where
the API generates its token on first use as it does on a first deployment.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtimes import FINAL, LEASE_S, Reply, Runtime

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    import pytest

    from nclav.engine import Engine
    from nclav.ports import SecretStore

MAIN = Path(__file__).resolve().parents[2] / "functions_gcp" / "main.py"
LOCATION = "projects/nclav-test/locations/us-central1"
QUIET_CHECKS = 3  # idle this many times in a row: the emulator pops a task just before its POST


class _Counted:
    """A WSGI app counting the requests it is in (a dying worker's included, until it dies)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.busy = 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        with self.lock:
            self.busy += 1
        try:
            # The body is made here (not streamed later), so `busy` covers the whole request.
            return list(self.app(environ, start_response))
        finally:
            with self.lock:
                self.busy -= 1


class _Served:
    """One functions-framework target on a loopback HTTP server."""

    def __init__(self, target: str) -> None:
        import functions_framework
        from werkzeug.serving import make_server

        self.app = _Counted(functions_framework.create_app(target, str(MAIN)))
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


class GcpScenarioRuntime(Runtime):
    name = "gcp"
    max_deliveries = 3  # NCLAV_MAX_RECEIVES below

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        import functions_framework

        from functions_gcp import bootstrap
        from functions_gcp.secrets import SecretManagerSecretStore
        from functions_gcp.tasks_queue import tasks_client
        from gcp_api_fake import anonymous_session, serve_fake

        self.tasks = tasks_client(os.environ["CLOUD_TASKS_EMULATOR_HOST"])
        suffix = uuid.uuid4().hex[:8]
        self.queues = [f"{LOCATION}/queues/steps-{suffix}", f"{LOCATION}/queues/iac-{suffix}"]
        for queue in self.queues:
            self.tasks.create_queue(parent=LOCATION, queue={"name": queue})
        self.workers = [_Served("worker"), _Served("iac_worker")]
        env = {
            "NCLAV_PROJECT": "nclav-test",
            "NCLAV_STEPS_QUEUE": self.queues[0],
            "NCLAV_IAC_QUEUE": self.queues[1],
            "NCLAV_WORKER_URL": self.workers[0].url,
            "NCLAV_IAC_WORKER_URL": self.workers[1].url,
            "NCLAV_WORKSPACES": str(tmp_path / "workspaces"),
            "NCLAV_CLOUD": "local",
            "NCLAV_LEASE_S": str(LEASE_S),
            "NCLAV_MAX_RECEIVES": str(self.max_deliveries),
            "NCLAV_REDELIVERY_BACKOFF_S": "0",
            "NCLAV_BACKOFF_S": "0",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        self._fake = serve_fake()
        fake = self._fake.__enter__()
        monkeypatch.setenv("NCLAV_SECRETS_EMULATOR_URL", fake.endpoint("secretmanager"))
        bootstrap.install(None)  # the entry points build theirs from this environment
        self.token = bootstrap.runtime().api_token()  # generated and written: none existed
        store = SecretManagerSecretStore(
            "nclav-test", session=anonymous_session(), endpoint=fake.endpoint("secretmanager")
        )
        assert store.get("api-token") == self.token
        self.api = functions_framework.create_app("api", str(MAIN)).test_client()
        self.scheduler = functions_framework.create_app("schedule", str(MAIN)).test_client()

    # -- the driver ----------------------------------------------------------------------------

    def _send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str], *, token: bool
    ) -> Reply:
        if token:
            headers = {**headers, "Authorization": f"Bearer {self.token}"}
        found = self.api.open(path, method=method, data=data, headers=headers)
        return Reply(found.status_code, found.get_data())

    @property
    def secrets(self) -> SecretStore:
        from functions_gcp import bootstrap

        return bootstrap.runtime().secrets

    def wait(self, run: Mapping[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.settle(max(deadline - time.monotonic(), 1.0))
            found = self.run(str(run["id"]))
            if found["status"] in FINAL:
                return found
            assert time.monotonic() < deadline, f"run still {found['status']}: {found}"
            time.sleep(0.2)
            self.sweep()  # Cloud Scheduler's call, made whenever the queues are empty

    def settle(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < QUIET_CHECKS:
            quiet = quiet + 1 if self._idle() else 0
            assert time.monotonic() < deadline, "the queues did not drain"
            time.sleep(0.1)

    def _idle(self) -> bool:
        if any(w.app.busy for w in self.workers):
            return False
        return not any(self._tasks(q) for q in self.queues)

    def _tasks(self, queue: str) -> Iterable[Any]:
        return list(self.tasks.list_tasks(parent=queue))

    def send_control(self, message: Mapping[str, Any]) -> None:
        # `gcloud tasks create-http-task` as the README shows it: a drift check to the
        # terraform queue and its worker, every other kind to the steps queue.
        iac = message["kind"] == "drift_check"
        task = {
            "http_request": {
                "http_method": "POST",
                "url": self.workers[1 if iac else 0].url,
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps(dict(message)).encode(),
            }
        }
        self.tasks.create_task(parent=self.queues[1 if iac else 0], task=task)

    @contextlib.contextmanager
    def another_sandbox(self) -> Iterator[None]:
        from functions_gcp import bootstrap

        warm = bootstrap.install(None)  # the next request builds a fresh runtime
        try:
            yield
        finally:
            bootstrap.install(warm)

    def sweep(self) -> int:
        found = self.scheduler.post("/", headers={"User-Agent": "Google-Cloud-Scheduler"})
        assert found.status_code == 200, found.get_data()
        return int(found.get_json()["resent"])

    @property
    def engine(self) -> Engine:
        from functions_gcp import bootstrap

        return bootstrap.runtime().engine

    def close(self) -> None:
        from functions_gcp import bootstrap

        for served in self.workers:
            served.close()
        for queue in self.queues:
            self.tasks.delete_queue(name=queue)
        bootstrap.install(None)
        self._fake.__exit__(None, None, None)  # fails on a request the API would refuse


def prepare(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-ins the GCP runtime needs, and the environment pointing at them."""
    request.getfixturevalue("firestore")  # an empty emulator database; FIRESTORE_EMULATOR_HOST
    monkeypatch.setenv("NCLAV_BUCKET", request.getfixturevalue("gcs"))  # STORAGE_EMULATOR_HOST
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", request.getfixturevalue("tasks_emulator"))


__all__ = ["GcpScenarioRuntime", "prepare"]
