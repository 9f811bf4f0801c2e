"""The loopback state backend: terraform's HTTP backend protocol with one-run, one-partition
credentials, over the real local stores."""

from __future__ import annotations

import base64
import http.client
import json
import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from nclav.iac.loopback import LOCK_TAG, LoopbackStateServer
from nclav.iac.state_backend import TerraformStateBackend
from nclav.local import DirectoryBlobStore, InMemoryStateStore
from nclav.ports import SystemClock

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from nclav.records import TfLock


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[LoopbackStateServer]:
    backend = TerraformStateBackend(
        InMemoryStateStore(), DirectoryBlobStore(tmp_path / "blobs"), SystemClock()
    )
    server = LoopbackStateServer(backend)
    yield server
    server.close()


def call(
    url: str, method: str, path: str, token: str | None, body: bytes = b""
) -> tuple[int, bytes]:
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=60)
    headers = {"Content-Length": str(len(body))}
    if token is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"nclav:{token}".encode()).decode()
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_only_the_runs_own_partition_while_the_run_lasts(loopback: LoopbackStateServer) -> None:
    with loopback.grant("e", "p", "run-1") as backend:
        url, token = loopback.address, backend.password
        assert backend.state_url == f"{url}/terraform/state/e/p"
        assert urlsplit(url).hostname == "127.0.0.1"
        assert call(url, "GET", "/terraform/state/e/p", token) == (204, b"")
        assert call(url, "POST", "/terraform/state/e/p", token, b'{"v": 1}')[0] == 200
        assert call(url, "GET", "/terraform/state/e/p", token) == (200, b'{"v": 1}')
        # Another partition, with this run's credential: 403. No or a wrong credential: 401.
        assert call(url, "GET", "/terraform/state/e/other", token)[0] == 403
        assert call(url, "POST", "/terraform/state/x/p", token, b"{}")[0] == 403
        assert call(url, "GET", "/terraform/state/e/p", None)[0] == 401
        assert call(url, "GET", "/terraform/state/e/p", token + "x")[0] == 401
        assert call(url, "GET", "/enclaves", token)[0] == 404  # nothing else is served
    # Revoked when the run ends.
    assert call(url, "GET", "/terraform/state/e/p", token)[0] == 401
    with loopback.grant("e", "p", "run-2") as again:
        assert again.password != token
        assert loopback.address == url  # one server per process, reused


def test_locks_are_tagged_with_the_run_and_conflicts_answer_with_the_holder(
    loopback: LoopbackStateServer,
) -> None:
    store = loopback.backend._store  # noqa: SLF001
    with loopback.grant("e", "p", "run-1") as backend:
        url, token, path = loopback.address, backend.password, "/terraform/state/e/p"
        info = json.dumps({"ID": "L1", "Who": "terraform"}).encode()
        assert call(url, "POST", path + "/lock", token, info)[0] == 200
        held = store.get_lock("e/p")
        assert held is not None and held.info[LOCK_TAG] == "run-1"
        status, body = call(url, "LOCK", path, token, json.dumps({"ID": "L2"}).encode())
        assert status == 423 and json.loads(body)["ID"] == "L1"
        assert call(url, "POST", path + "?ID=L2", token, b"{}")[0] == 409
        assert call(url, "POST", path + "?ID=L1", token, b"{}")[0] == 200
        # A partition's credential cannot force an unlock (no lock info).
        assert call(url, "DELETE", path + "/lock", token)[0] == 400
        assert (
            call(url, "DELETE", path + "/lock", token, json.dumps({"ID": "L2"}).encode())[0] == 409
        )
        assert call(url, "UNLOCK", path, token, info)[0] == 200
        assert store.get_lock("e/p") is None
        assert call(url, "POST", path + "/lock", token, b"not json")[0] == 400


@pytest.mark.slow
def test_a_50_mb_state_saves_and_loads(loopback: LoopbackStateServer) -> None:
    state = json.dumps({"version": 4, "pad": base64.b64encode(os.urandom(37_500_000)).decode()})
    data = state.encode()
    assert len(data) > 50_000_000
    with loopback.grant("e", "big", "run-1") as backend:
        url, token = loopback.address, backend.password
        assert call(url, "POST", "/terraform/state/e/big", token, data)[0] == 200
        status, body = call(url, "GET", "/terraform/state/e/big", token)
    assert status == 200 and body == data


def test_refused_requests_close_the_connection_and_big_bodies_are_not_read(
    loopback: LoopbackStateServer,
) -> None:
    with loopback.grant("e", "p", "run-1") as backend:
        where = urlsplit(loopback.address)
        conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=10)
        # Announced as larger than any state: refused before the body is sent.
        conn.putrequest("POST", "/terraform/state/e/p")
        auth = base64.b64encode(f"nclav:{backend.password}".encode()).decode()
        conn.putheader("Authorization", f"Basic {auth}")
        conn.putheader("Content-Length", str(300 * 1024 * 1024))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert response.getheader("Connection") == "close"
        conn.close()


class _CountingStore(InMemoryStateStore):
    """The in-memory store, counting the state-pointer and lock reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = {"get_tf_state": 0, "get_lock": 0}

    def get_tf_state(self, key: str) -> str | None:
        self.reads["get_tf_state"] += 1
        return super().get_tf_state(key)

    def get_lock(self, key: str) -> TfLock | None:
        self.reads["get_lock"] += 1
        return super().get_lock(key)


def test_under_its_own_lock_a_run_reads_the_pointer_once(tmp_path: Path) -> None:
    """Terraform's apply: lock, read (twice), write, unlock, then ``output`` reads again.
    Under the lock the grant took, the pointer it read or wrote is current: one pointer
    read, and the write neither reads the pointer nor the lock first (was 3 and 1)."""
    store = _CountingStore()
    backend = TerraformStateBackend(store, DirectoryBlobStore(tmp_path / "blobs"), SystemClock())
    server = LoopbackStateServer(backend)
    try:
        backend.post_state("e", "p", b'{"v": 0}', None)
        with server.grant("e", "p", "run-1") as grant:
            url, token, path = server.address, grant.password, "/terraform/state/e/p"
            info = json.dumps({"ID": "L1"}).encode()
            store.reads.update(get_tf_state=0, get_lock=0)
            assert call(url, "POST", path + "/lock", token, info)[0] == 200
            assert call(url, "GET", path, token) == (200, b'{"v": 0}')
            assert call(url, "GET", path, token) == (200, b'{"v": 0}')
            assert call(url, "POST", path + "?ID=L1", token, b'{"v": 1}')[0] == 200
            assert call(url, "GET", path, token) == (200, b'{"v": 1}')
            assert store.reads == {"get_tf_state": 1, "get_lock": 0}
            assert call(url, "DELETE", path + "/lock", token, info)[0] == 200
            # Unlocked: the next read is a real one (anyone may have written meanwhile).
            backend.post_state("e", "p", b'{"v": 2}', None)
            assert call(url, "GET", path, token) == (200, b'{"v": 2}')
            # Without the grant's lock, a write checks the lock as before.
            store.reads.update(get_tf_state=0, get_lock=0)
            assert call(url, "POST", path, token, b'{"v": 3}')[0] == 200
            assert store.reads == {"get_tf_state": 1, "get_lock": 1}
        versions = backend.list_versions("e", "p")
        assert [backend.state_at(v) for v in versions] == [
            b'{"v": 0}',
            b'{"v": 1}',
            b'{"v": 2}',
            b'{"v": 3}',
        ]
    finally:
        server.close()


def test_a_pointer_moved_under_the_lock_loses_no_version(tmp_path: Path) -> None:
    """An operator's DELETE (or a force-unlock and a write) under terraform's lock: the
    write conditional on the remembered pointer fails once, then lands after the newest
    version; nothing is overwritten and the state read afterwards is the one written."""
    store = _CountingStore()
    backend = TerraformStateBackend(store, DirectoryBlobStore(tmp_path / "blobs"), SystemClock())
    server = LoopbackStateServer(backend)
    try:
        backend.post_state("e", "p", b'{"v": 0}', None)
        with server.grant("e", "p", "run-1") as grant:
            url, token, path = server.address, grant.password, "/terraform/state/e/p"
            info = json.dumps({"ID": "L1"}).encode()
            assert call(url, "POST", path + "/lock", token, info)[0] == 200
            assert call(url, "GET", path, token) == (200, b'{"v": 0}')
            backend.unlock("e", "p", None)  # the operator's force-unlock,
            backend.post_state("e", "p", b'{"op": 1}', None)  # and write
            assert call(url, "POST", path + "?ID=L1", token, b'{"v": 1}')[0] == 200
            assert backend.get_state("e", "p") == b'{"v": 1}'
        versions = [backend.state_at(v) for v in backend.list_versions("e", "p")]
        assert versions == [b'{"v": 0}', b'{"op": 1}', b'{"v": 1}']
    finally:
        server.close()
