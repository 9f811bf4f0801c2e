"""A real ``nclav serve`` process on a loopback port, driven with plain HTTP (http.client).

``Server`` starts ``python -m nclav serve --port 0 --home <dir>`` in its own process group,
reads the listening URL from its stderr (a file, so the server never blocks on a full pipe),
waits for ``GET /health`` and reads the API token from ``<home>/token``. ``stop`` and
``kill`` always take down the server's process group and every terraform it started (those run
in their own sessions, so they are found through /proc).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TERRAFORM = shutil.which("terraform")
_LISTENING = re.compile(r"nclav listening on (http://\S+)")


def require_terraform() -> None:
    """Skip the calling module without terraform, unless CI=true (then fail it)."""
    if TERRAFORM is not None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("terraform is not on PATH: CI must run the terraform tests", pytrace=False)
    pytest.skip("terraform is not on PATH", allow_module_level=True)


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:500]!r}>"


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Server:
    """One ``nclav serve`` process; ``start`` may be called again after ``kill``/``stop``."""

    def __init__(self, home: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.home = home
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.host = ""
        self.port = 0
        self.token = ""
        self.first_stdout = ""
        self.starts = 0

    # -- process ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None, "already running"
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NCLAV_")}
        env.update({"NCLAV_HOME": str(self.home), "NCLAV_WORKERS": "4", "PYTHONUNBUFFERED": "1"})
        env.update(self.extra_env)
        self.starts += 1
        out = self.home.parent / f"{self.home.name}-serve-{self.starts}.out"
        err = self.home.parent / f"{self.home.name}-serve-{self.starts}.err"
        self.stdout_path, self.stderr_path = out, err
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nclav", "serve", "--port", "0", "--home", str(self.home)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                cwd=self.home.parent,
            )
        deadline = time.monotonic() + timeout
        while True:
            found = _LISTENING.search(err.read_text(errors="replace"))
            if found:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = err.read_text(errors="replace")
                self.kill()
                raise AssertionError(f"nclav serve did not start:\n{log}")
            time.sleep(0.05)
        self.url = found.group(1)
        parts = urlsplit(self.url)
        self.host, self.port = str(parts.hostname), int(parts.port or 80)
        while self.get("/health", auth=False).status != 200:
            if time.monotonic() > deadline:
                raise AssertionError("GET /health never answered 200")
            time.sleep(0.05)
        self.token = self.extra_env.get("NCLAV_TOKEN") or (self.home / "token").read_text().strip()
        if self.starts == 1:
            self.first_stdout = out.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        """kill -9 the server (its whole group) and every terraform it left running."""
        if self.proc is None:
            return
        descendants: list[int] = []
        with contextlib.suppress(OSError):
            descendants = _children(self.proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in descendants:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def kill_server_only(self) -> None:
        """kill -9 the server process alone, as a crash would: its children live on."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then kill -9 after ``timeout``; returns the exit code of a clean stop."""
        if self.proc is None:
            return None
        proc = self.proc
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        self.kill()  # a clean stop leaves nothing; a stuck one is killed with its children
        self.proc = None
        return code

    # -- HTTP ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | dict[str, Any] | list[Any] | None = None,
        *,
        auth: bool | str = True,
        headers: Mapping[str, str] | None = None,
        timeout: float = 180.0,
    ) -> Response:
        """One request on a fresh connection. ``auth``: True for the token, False for none,
        or a literal Authorization header value."""
        sent: dict[str, str] = {}
        if auth is True:
            sent["Authorization"] = f"Bearer {self.token}"
        elif isinstance(auth, str):
            sent["Authorization"] = auth
        data: bytes | None
        if isinstance(body, dict | list):
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        sent.update(headers or {})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            conn.close()

    def headers_only(
        self, method: str, path: str, length: int, *, auth: bool | str = True
    ) -> Response:
        """Announce a body of ``length`` bytes, send none of it, and read the answer."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.putrequest(method, path)
            if auth is True:
                conn.putheader("Authorization", f"Bearer {self.token}")
            elif isinstance(auth, str):
                conn.putheader("Authorization", auth)
            conn.putheader("Content-Length", str(length))
            conn.endheaders()
            response = conn.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def ok(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        """The JSON of a request that must answer ``expect``."""
        response = self.request(method, path, body)
        assert response.status == expect, (method, path, response)
        return response.json if response.body else None

    # -- nclav helpers ---------------------------------------------------------------------

    def reconcile(self, tree: Path, wait: float = 150.0) -> dict[str, Any]:
        """POST /reconcile?wait= for ``tree``; the run must be final within ``wait``.

        A tree with nothing to change records no run: ``{"run": None, "changes": 0, ...}``.
        """
        run = self.ok("POST", f"/reconcile?wait={wait:g}", {"enclaves_dir": str(tree)})
        if "run" in run and run["run"] is None:
            assert run["changes"] == 0 and run["message"] == "no changes", run
            return run  # type: ignore[no-any-return]
        assert run["status"] in ("succeeded", "failed"), run
        return run  # type: ignore[no-any-return]

    def start_reconcile(self, tree: Path) -> dict[str, Any]:
        response = self.request("POST", "/reconcile", {"enclaves_dir": str(tree)})
        assert response.status in (200, 202), response
        return response.json  # type: ignore[no-any-return]

    def dry_run(self, tree: Path) -> dict[str, Any]:
        return self.ok("POST", "/reconcile/dry-run", {"enclaves_dir": str(tree)})  # type: ignore[no-any-return]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.ok("GET", f"/runs/{run_id}")  # type: ignore[no-any-return]

    def wait_run(self, run_id: str, timeout: float = 150.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["status"] in ("succeeded", "failed", "cancelled", "awaiting_approval"):
                return run
            assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
            time.sleep(0.1)

    def iac_runs(self, enclave: str, partition: str) -> list[dict[str, Any]]:
        return self.ok("GET", f"/enclaves/{enclave}/partitions/{partition}/iac/runs")  # type: ignore[no-any-return]

    def enclaves(self) -> dict[str, dict[str, Any]]:
        return {e["enclave_id"]: e for e in self.ok("GET", "/enclaves")}

    def steps(self, run: dict[str, Any]) -> dict[str, str]:
        """step_id -> status of a run."""
        doc = self.run(run["id"])
        return {s["step_id"]: s["status"] for s in doc["steps"]}


def wait_until(
    check: Callable[[], Any], timeout: float, message: str, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s: {message}")
        time.sleep(interval)


def copy_example(name: str, dest: Path) -> Path:
    """A private, editable copy of ``examples/<name>/enclaves``."""
    target = dest / name
    shutil.copytree(EXAMPLES / name / "enclaves", target)
    return target


# Fixtures are registered under their ``name`` so a test module imports ``*_fixture`` and its
# tests take ``server``, ``server_factory`` or ``shared_server`` without shadowing an import.


@pytest.fixture(name="server_factory")
def server_factory_fixture(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Make (and always tear down) servers; ``make(env=...)`` starts one on a fresh home."""
    made: list[Server] = []

    def make(*, start: bool = True, home: Path | None = None, **kwargs: Any) -> Server:
        server = Server(home or tmp_path / f"home{len(made)}", **kwargs)
        made.append(server)
        if start:
            server.start()
        return server

    try:
        yield make
    finally:
        for server in made:
            server.stop(timeout=15)


@pytest.fixture(name="server")
def server_fixture(server_factory: Callable[..., Server]) -> Server:
    return server_factory()


@pytest.fixture(name="shared_server", scope="module")
def shared_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for a whole module of tests that do not depend on each other's state."""
    server = Server(tmp_path_factory.mktemp("shared") / "home")
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=15)
