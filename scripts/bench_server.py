"""Shared by the benchmarks: a real local nclav server and a plain HTTP client for it.

``local_server`` runs the product exactly as ``nclav serve --cloud local`` wires it
(``LocalRuntime``: SQLite under a fresh NCLAV_HOME, the thread queue, the sweeper and the
threaded HTTP server on a loopback port), in this process; the benchmarks then talk to it
with plain HTTP calls only, the same path users take.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nclav.local.runtime import LocalOptions, LocalRuntime

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# Terraform must not phone home (version checks) while it is being timed.
os.environ.setdefault("CHECKPOINT_DISABLE", "1")


class HttpError(RuntimeError):
    pass


@dataclass
class Client:
    """One keep-alive connection to the server, Bearer token on every call."""

    base: str
    token: str
    timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.base)
        self._conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=self.timeout_s
        )

    def call(self, method: str, path: str, body: object | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            self._conn.request(method, path, body=data, headers=headers)
            response = self._conn.getresponse()
        except (http.client.HTTPException, OSError):
            self._conn.close()  # a dropped keep-alive connection: reconnect once
            self._conn.request(method, path, body=data, headers=headers)
            response = self._conn.getresponse()
        raw = response.read()
        if response.status >= 400:
            raise HttpError(f"{method} {path}: {response.status} {raw[:2000]!r}")
        return json.loads(raw) if raw else None

    def close(self) -> None:
        self._conn.close()


@contextmanager
def local_server(
    workers: int = 4, home: Path | None = None, before_start: Callable[[Path], None] | None = None
) -> Iterator[tuple[Client, Path]]:
    """A fresh NCLAV_HOME (unless ``home`` is given) and a started server on a free port.

    ``before_start(home)`` runs before the server opens its state store (to seed it).
    """
    scratch = None if home is not None else tempfile.mkdtemp(prefix="nclav-bench-home-")
    root = home if home is not None else Path(str(scratch))
    try:
        if before_start is not None:
            before_start(root)
        token = secrets.token_hex(32)
        runtime = LocalRuntime(LocalOptions(home=root, port=0, workers=workers), token)
        base = runtime.start()
        client = Client(base, token)
        try:
            yield client, root
        finally:
            client.close()
            runtime.stop()
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


__all__ = ["Client", "HttpError", "local_server", "timed"]
