"""Azure's local stand-ins, started once per test session (bound to 127.0.0.1 only).

``azurite``: Azurite (npm, pinned in tests/standins/azure/package-lock.json, installed by
``make standins``) serving Blob and Queue storage in memory. ``azure_storage`` gives each
test the connection string of the well-known development account, and ``unique_name`` gives
containers and queues names no other test uses, so tests need no reset between them.

``cosmos_server``: @vercel/cosmosdb-server (same install, patched: see
tests/standins/azure/README.md) over plain HTTP; ``cosmos`` gives each test a client and a
database of its own.

When node or the npm packages are missing the tests that need them skip and say why; under
CI (``CI=true``) that is a failure instead, so a broken install cannot pass unnoticed.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from azure.cosmos import DatabaseProxy

STANDINS = Path(__file__).parent / "standins" / "azure"
BIN = STANDINS / "node_modules" / ".bin"
# Azurite's published development account (docs: "Use the Azurite emulator"); not a secret.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_FLAGS = (
    "--skipApiVersionCheck",  # the SDK's api-version is newer than Azurite 3.35 knows
    "--disableTelemetry",
    "--loose",
    "--inMemoryPersistence",
    "--silent",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_node_tool(name: str) -> Path:
    """The installed stand-in ``name``; skip (fail under CI) with the reason when missing."""
    why = None
    if shutil.which("node") is None:
        why = "node is not installed"
    elif not (BIN / name).exists():
        why = f"{name} is not installed: run `make standins` (npm ci in {STANDINS})"
    if why is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)
    return BIN / name


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{what} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's Blob and Queue services; yields the development account's connection string."""
    with start_azurite(tmp_path_factory.mktemp("azurite")) as connection:
        yield connection


@contextmanager
def start_azurite(workdir: Path) -> Iterator[str]:
    """Azurite in ``workdir`` until the block ends (the fixture's, and scripts/bench_azure.py's)."""
    binary = require_node_tool("azurite")
    blob, queue, table = _free_port(), _free_port(), _free_port()
    log = workdir / "azurite.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(binary),
                *AZURITE_FLAGS,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(blob),
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                str(queue),
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                str(table),
            ],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(blob, proc, log, "azurite")
        _wait_for_port(queue, proc, log, "azurite")
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{blob}/{DEV_ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{queue}/{DEV_ACCOUNT};"
        )
    finally:
        _stop(proc)


@pytest.fixture
def azure_storage(azurite: str) -> str:
    """The connection string of Azurite's account (tests use their own unique names)."""
    return azurite


# Any base64 text is a key to the Cosmos stand-in; this one is not Azure's emulator key.
COSMOS_KEY = base64.b64encode(b"nclav-tests-cosmos-key").decode()


@pytest.fixture(scope="session")
def cosmos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Cosmos DB stand-in; yields its endpoint URL."""
    with start_cosmos_server(tmp_path_factory.mktemp("cosmos")) as url:
        yield url


@contextmanager
def start_cosmos_server(workdir: Path) -> Iterator[str]:
    """cosmosdb-server in ``workdir`` until the block ends."""
    binary = require_node_tool("cosmosdb-server")
    port = _free_port()
    log = workdir / "cosmos.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "--host", "127.0.0.1", "-p", str(port), "--no-ssl"],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, proc, log, "cosmosdb-server")
        yield f"http://127.0.0.1:{port}/"
    finally:
        _stop(proc)


@pytest.fixture
def cosmos(cosmos_server: str) -> Iterator[DatabaseProxy]:
    """A database of this test's own on the Cosmos stand-in, deleted afterwards.

    ``enable_endpoint_discovery=False``: the server advertises https:// locations, which the
    client would otherwise switch to and fail on (plain HTTP here).
    """
    from azure.cosmos import CosmosClient

    client = CosmosClient(cosmos_server, credential=COSMOS_KEY, enable_endpoint_discovery=False)
    database = client.create_database(unique_name("db"))
    try:
        yield database
    finally:
        client.delete_database(database.id)


def unique_name(stem: str) -> str:
    """A container or queue name no other test uses (lowercase, 3-63 characters)."""
    return f"{stem}-{uuid.uuid4().hex[:12]}"


__all__ = [
    "azure_storage",
    "azurite",
    "cosmos",
    "cosmos_server",
    "require_node_tool",
    "start_azurite",
    "start_cosmos_server",
    "unique_name",
]
