"""The functions-framework targets of functions_gcp/main.py, called as the framework calls them.

Each target is loaded with ``functions_framework.create_app(target, main.py)`` and called
through its test client. The HTTP answers that need no deployment come first; then, with the
stand-ins (Firestore emulator, fake-gcs-server, the Cloud Tasks emulator, the Secret Manager
fake), a run whose tasks are handed to the targets by hand as Cloud Tasks would POST them:
the worker and the IaC worker answer per core's delivery policy, and terraform is held to the
IaC worker's dispatch deadline.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import functions_framework
import pytest

from functions_gcp import bootstrap
from nclav.bundle import pack_directory

if TYPE_CHECKING:
    from collections.abc import Iterator

MAIN = str(Path(__file__).resolve().parents[2] / "functions_gcp" / "main.py")
SMALL = 'resource "terraform_data" "thing" { input = "x" }\n'


def client(target: str) -> Any:
    return functions_framework.create_app(target, MAIN).test_client()


@pytest.fixture(autouse=True)
def fresh_runtime() -> Iterator[None]:
    bootstrap.install(None)
    yield
    bootstrap.install(None)


def test_health_answers_without_a_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NCLAV_PROJECT", raising=False)
    found = client("api").get("/health")
    assert found.status_code == 200 and found.get_json() == {"status": "ok"}


def test_a_runtime_that_cannot_be_built_is_a_500_with_the_trace_as_request_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NCLAV_PROJECT", raising=False)
    trace = "105445aa7843bc8bf206b12000100000"
    found = client("api").get("/runs", headers={"X-Cloud-Trace-Context": f"{trace}/1;o=1"})
    assert found.status_code == 500
    assert found.get_json()["error"]["request_id"] == trace
    assert found.headers["X-Request-Id"] == trace


def test_a_body_over_cloud_runs_limit_is_a_413_naming_the_upload_route() -> None:
    found = client("api").post("/bundles", data=b"x" * (32 * 1024 * 1024 + 1))
    assert found.status_code == 413
    assert "POST /bundles/uploads" in found.get_json()["error"]["message"]


@pytest.mark.parametrize("target", ["worker", "iac_worker"])
def test_a_request_cloud_tasks_did_not_make_is_a_400(target: str) -> None:
    found = client(target).post("/", data=b'{"kind": "retry_run"}')
    assert found.status_code == 400
    assert "X-CloudTasks-TaskName" in found.get_json()["error"]["message"]


# -- with the stand-ins -------------------------------------------------------------------------


@pytest.fixture
def deployment(
    firestore: str,
    gcs: str,
    tasks_emulator: str,
    cloud_tasks: tuple[Any, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[tuple[Any, str, str]]:
    """The environment of a deployment on the stand-ins; its queues' tasks wait for the test."""
    from gcp_api_fake import serve_fake

    tasks, steps = cloud_tasks
    iac = steps + "-iac"
    tasks.create_queue(parent=steps.rsplit("/queues/", 1)[0], queue={"name": iac})
    with serve_fake() as fake:
        env = {
            "NCLAV_PROJECT": "nclav-test",
            "NCLAV_BUCKET": gcs,
            "NCLAV_STEPS_QUEUE": steps,
            "NCLAV_IAC_QUEUE": iac,
            # Nothing listens there: the tasks stay queued and the test delivers them.
            "NCLAV_WORKER_URL": "http://127.0.0.1:9/worker",
            "NCLAV_IAC_WORKER_URL": "http://127.0.0.1:9/iac",
            "NCLAV_SECRETS_EMULATOR_URL": fake.endpoint("secretmanager"),
            "CLOUD_TASKS_EMULATOR_HOST": tasks_emulator,
            "NCLAV_CLOUD": "local",
            "NCLAV_WORKSPACES": str(tmp_path / "ws"),
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        try:
            yield tasks, steps, iac
        finally:
            tasks.delete_queue(name=iac)


def deliver_all(tasks: Any, steps: str, iac: str, done: set[str]) -> list[tuple[str, Any]]:
    """Every task not yet delivered, POSTed to its target as Cloud Tasks would (first try)."""
    answers = []
    for queue, target in ((steps, "worker"), (iac, "iac_worker")):
        for task in list(tasks.list_tasks(parent=queue)):
            if task.name in done:
                continue  # the emulator cannot delete a task: it keeps retrying port 9
            done.add(task.name)
            headers = dict(task.http_request.headers)
            headers |= {"X-CloudTasks-TaskName": task.name.rsplit("/", 1)[1]}
            headers |= {"X-CloudTasks-TaskRetryCount": "0", "X-CloudTasks-QueueName": queue}
            found = client(target).post("/", data=task.http_request.body, headers=headers)
            answers.append((target, found))
    return answers


def test_terraform_is_held_to_the_iac_workers_dispatch_deadline(
    deployment: tuple[Any, str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NCLAV_IAC_DEADLINE_S", "100")  # less than the 120 s terraform needs
    tasks, steps, iac = deployment
    token = bootstrap.runtime().api_token()  # generated on first use, as on a first deploy
    tree = tmp_path / "tree" / "alpha"
    (tree / "p").mkdir(parents=True)
    (tree / "config.yml").write_text("id: alpha\nname: alpha\ncloud: local\nregion: local-1\n")
    (tree / "p" / "config.yml").write_text("id: p\nname: p\nbackend: terraform\n")
    (tree / "p" / "main.tf").write_text(SMALL)
    auth = {"Authorization": f"Bearer {token}"}
    api = client("api")
    _, data, _ = pack_directory(tree.parent)
    digest = api.post("/bundles", data=data, headers=auth).get_json()["digest"]
    run = api.post("/reconcile", json={"bundle": digest}, headers=auth).get_json()

    done: set[str] = set()
    answers = []
    for _ in range(10):
        found = api.get(f"/runs/{run['id']}", headers=auth).get_json()
        if found["status"] in ("succeeded", "failed"):
            break
        answers += deliver_all(tasks, steps, iac, done)
    assert found["status"] == "failed", found
    assert {t for t, _ in answers} == {"worker", "iac_worker"}
    assert all(a.status_code == 200 for _, a in answers), [a.get_json() for _, a in answers]
    step = {s["step_id"]: s for s in found["steps"]}["provision_partition:alpha/p"]
    assert "this Cloud Tasks dispatch has" in step["error"]
    assert "NCLAV_IAC_MIN_REMAINING_S" in step["error"]
    assert "nclav serve --cloud gcp" in step["error"]
    iac_answer = next(a for t, a in answers if t == "iac_worker")
    assert iac_answer.get_json()["outcome"] == "ack"  # the engine recorded the failure


def test_a_streaming_response_is_streamed_piece_by_piece() -> None:
    """Server-sent events: Cloud Run sends a chunked body as it is produced."""
    from functions_gcp.main import to_result
    from nclav.api.http import StreamingResponse

    closed: list[bool] = []

    def pieces() -> Iterator[bytes]:
        try:
            yield b"data: 1\n\n"
            yield b"data: 2\n\n"
        finally:
            closed.append(True)

    headers = {"Content-Type": "text/event-stream"}
    response = to_result(StreamingResponse(200, headers=headers, stream=pieces()))
    assert response.is_streamed and response.headers["Content-Type"] == "text/event-stream"
    assert next(iter(response.response)) == b"data: 1\n\n"  # the first event, before the rest
    response.close()  # the client went away: the producer is closed
    assert closed == [True]


def test_the_drivers_time_left_is_the_earliest_deadline_in_the_instance() -> None:
    """Cloud Run sends one instance many tasks at once; a driver must not start a call that
    the request with the least time left could not see through."""
    import time

    from functions_gcp import main

    assert main._earliest_time_left() is None  # noqa: SLF001
    now = time.monotonic()
    with main._in_flight(now + 600):  # noqa: SLF001
        inner: list[float | None] = []

        def second_request() -> None:
            with main._in_flight(now + 30):  # noqa: SLF001
                inner.append(main._earliest_time_left())  # noqa: SLF001

        import threading

        thread = threading.Thread(target=second_request)
        thread.start()
        thread.join()
        left = main._earliest_time_left()  # noqa: SLF001
    assert inner[0] is not None and 25 < inner[0] <= 30
    assert left is not None and 595 < left <= 600  # the 30 s request has ended
    assert main._earliest_time_left() is None  # noqa: SLF001


def test_logs_on_cloud_run_are_json_lines_with_a_severity(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    monkeypatch.setenv("K_SERVICE", "nclav-worker")
    monkeypatch.setattr(bootstrap, "_logs_routed", False)
    try:
        bootstrap.route_logs()
        logging.getLogger("nclav.test").warning("step handed back", extra={"attempt": 2})
    finally:
        root.handlers, root.level = saved
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["severity"] == "WARNING" and line["message"] == "step handed back"
    assert line["attempt"] == 2


def test_a_wait_is_cut_to_the_api_services_request_timeout(
    deployment: tuple[Any, str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NCLAV_API_TIMEOUT_S", "8")  # ?wait= gets 8 s less core's 5 s margin
    token = bootstrap.runtime().api_token()
    tree = tmp_path / "tree" / "alpha"
    tree.mkdir(parents=True)
    (tree / "config.yml").write_text("id: alpha\nname: alpha\ncloud: local\nregion: local-1\n")
    auth = {"Authorization": f"Bearer {token}"}
    api = client("api")
    _, data, _ = pack_directory(tree.parent)
    digest = api.post("/bundles", data=data, headers=auth).get_json()["digest"]
    started = time.monotonic()
    # Nobody delivers the run's tasks: the wait runs to its cap, not to the 600 s asked.
    found = api.post("/reconcile?wait=600", json={"bundle": digest}, headers=auth)
    assert found.status_code == 202, found.get_json()
    assert float(found.headers["X-Nclav-Wait-Capped"]) <= 3
    assert time.monotonic() - started < 30


def test_a_malformed_api_timeout_is_a_500_not_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NCLAV_API_TIMEOUT_S", "an hour")
    api = client("api")
    found = api.get("/runs")
    assert found.status_code == 500 and found.get_json()["error"]["code"] == "internal"
    assert "NCLAV_API_TIMEOUT_S: expected a number of seconds" in caplog.text
    assert api.get("/health").status_code == 200  # liveness is not configuration
