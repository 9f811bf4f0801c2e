"""Real local servers that speak a cloud's protocol, started and stopped by the test run.

``moto_server``: moto in server mode, a real HTTP endpoint for DynamoDB, SQS, S3, Secrets
Manager, Organizations, STS, EC2, IAM, Route 53 and the tagging API. One process per test
session; the ``aws`` fixture resets its state before each test and points boto3 at it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
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


__all__ = ["AWS_REGION", "aws", "free_port", "moto_server"]

# Azure's stand-ins (Azurite, the Cosmos DB server) live in their own module;
# importing registers its fixtures.
from azure_stand_ins import azure_storage, azurite, cosmos, cosmos_server  # noqa: E402, F401
