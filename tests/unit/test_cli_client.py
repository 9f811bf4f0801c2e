"""The CLI's HTTP client: where the token comes from, and how answers become exit codes.

A tiny stdlib HTTP server on a loopback port plays canned answers; the real server is in
tests/e2e/test_cli.py.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

from nclav.cli.client import ApiError, Client, InvalidRequest, issue_line, resolve_token
from nclav.cli.common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_UNREACHABLE,
    CliError,
    UnreachableError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TOKEN = "t" * 64


# -- the token -----------------------------------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("NCLAV_TOKEN", "NCLAV_HOME", "NCLAV_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_explicit_token_wins(no_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCLAV_TOKEN", "from-env")
    assert resolve_token("from-flag") == ("from-flag", "--token")


def test_env_token_beats_the_file(no_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (no_env / "home" / ".nclav").mkdir(parents=True)
    (no_env / "home" / ".nclav" / "token").write_text("from-file")
    monkeypatch.setenv("NCLAV_TOKEN", " from-env\n")
    assert resolve_token(None) == ("from-env", "NCLAV_TOKEN")


def test_token_file_in_home_is_read_automatically(no_env: Path) -> None:
    path = no_env / "home" / ".nclav" / "token"
    path.parent.mkdir(parents=True)
    path.write_text(TOKEN + "\n")
    assert resolve_token(None) == (TOKEN, str(path))


def test_nclav_home_moves_the_token_file(no_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (no_env / "srv").mkdir()
    (no_env / "srv" / "token").write_text(TOKEN)
    monkeypatch.setenv("NCLAV_HOME", str(no_env / "srv"))
    assert resolve_token(None) == (TOKEN, str(no_env / "srv" / "token"))


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_no_token_says_what_to_do(no_env: Path, content: str | None) -> None:
    path = no_env / "home" / ".nclav" / "token"
    if content is not None:
        path.parent.mkdir(parents=True)
        path.write_text(content)
    with pytest.raises(UnreachableError) as caught:
        resolve_token(None)
    assert caught.value.exit_code == EXIT_UNREACHABLE
    assert caught.value.message == (
        f"no token: start `nclav serve` or set NCLAV_TOKEN (no token file at {path})"
    )


# -- answers -------------------------------------------------------------------------------------


class Canned(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, dict[str, str], bytes]] = {}
    seen: list[dict[str, Any]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        status, headers, payload = self.answers.get(self.path.split("?")[0], (404, {}, b""))
        if self.path.startswith("/slow"):
            threading.Event().wait(2)
        self.send_response(status)
        for name, value in {"Content-Length": str(len(payload)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "request_id": "rid-1"}
    if details:
        error["details"] = details
    return json.dumps({"error": error}).encode()


JSON = {"Content-Type": "application/json"}


@pytest.fixture
def canned() -> Iterator[str]:
    Canned.seen = []
    Canned.answers = {
        "/ok": (200, JSON, b'{"fine": true}'),
        "/401": (401, JSON, error_body("unauthorized", "invalid credentials")),
        "/403": (403, JSON, error_body("forbidden", "forbidden")),
        "/404": (404, JSON, error_body("not_found", "run 'x' not found")),
        "/422": (
            422,
            JSON,
            error_body(
                "validation_error",
                "2 problems found",
                [
                    {"path": "a/config.yml", "line": 3, "field": "id", "message": "bad id"},
                    {"path": "bundle", "line": None, "field": "", "message": "too big"},
                ],
            ),
        ),
        "/500": (500, {"Content-Type": "text/plain"}, b"kaput"),
        "/notjson": (200, {}, b"<html>"),
        "/slow": (200, JSON, b"{}"),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def make(url: str, **kwargs: Any) -> Client:
    return Client(url, lambda: (TOKEN, "NCLAV_TOKEN"), **kwargs)


def test_success_sends_the_bearer_token(canned: str) -> None:
    assert make(canned + "/").get("/ok") == {"fine": True}
    (seen,) = Canned.seen
    assert seen["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert seen["headers"]["User-Agent"].startswith("nclav-cli/")


def test_json_body_and_query(canned: str) -> None:
    make(canned).request("POST", "/ok", json_body={"bundle": "d"}, query={"wait": 5, "x": None})
    (seen,) = Canned.seen
    assert seen["path"] == "/ok?wait=5"
    assert seen["headers"]["Content-Type"] == "application/json"
    assert json.loads(seen["body"]) == {"bundle": "d"}


@pytest.mark.parametrize("path", ["/401", "/403"])
def test_refused_token_is_exit_3_and_names_its_source(canned: str, path: str) -> None:
    with pytest.raises(UnreachableError) as caught:
        make(canned).get(path)
    assert caught.value.exit_code == EXIT_UNREACHABLE
    assert f"the server at {canned} refused the token from NCLAV_TOKEN" in caught.value.message
    assert "NCLAV_TOKEN" in (caught.value.hint or "")


def test_422_is_exit_2_with_one_line_per_issue(canned: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        make(canned).get("/422")
    error = caught.value
    assert error.exit_code == EXIT_INVALID
    assert error.lines == ["  a/config.yml:3: id: bad id", "  bundle: too big"]
    assert [issue_line(d, "trees/x") for d in error.details] == [
        "trees/x/a/config.yml:3: id: bad id",
        "bundle: too big",
    ]


def test_other_errors_are_exit_1_with_status_message_and_request_id(canned: str) -> None:
    with pytest.raises(ApiError) as caught:
        make(canned).get("/404")
    assert caught.value.exit_code == EXIT_FAILED
    assert caught.value.status == 404
    assert caught.value.message == (
        "server returned 404 Not Found: run 'x' not found (request id rid-1)"
    )
    with pytest.raises(ApiError) as caught:
        make(canned).get("/500")
    assert caught.value.message == "server returned 500 Internal Server Error: kaput"


def test_a_body_that_is_not_json_is_an_error(canned: str) -> None:
    with pytest.raises(CliError, match="not JSON"):
        make(canned).get("/notjson")


def test_server_down_is_exit_3_with_what_to_do() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UnreachableError) as caught:
        make(f"http://127.0.0.1:{port}").get("/status")
    assert caught.value.message == (
        f"cannot reach the nclav server at http://127.0.0.1:{port}: connection refused"
    )
    assert "nclav serve" in (caught.value.hint or "")


def test_a_server_that_does_not_answer_times_out(canned: str) -> None:
    with pytest.raises(UnreachableError, match=r"no answer within 0\.3s"):
        make(canned, timeout_s=0.3).get("/slow")


def test_unknown_host_is_exit_3() -> None:
    with pytest.raises(UnreachableError, match="cannot reach the nclav server"):
        make("http://nclav-test.invalid:8080", timeout_s=5).get("/status")


def test_only_http_urls() -> None:
    with pytest.raises(CliError) as caught:
        make("ftp://example.com")
    assert caught.value.exit_code == EXIT_INVALID


def test_loopback_requests_bypass_proxies(canned: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # would refuse the connection
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert make(canned).get("/ok") == {"fine": True}


def test_verbose_logs_requests_but_never_the_token(
    canned: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make(canned, verbose=True).get("/ok")
    err = capsys.readouterr().err
    assert f"> GET {canned}/ok" in err
    assert "< 200 OK (14 bytes" in err
    assert TOKEN not in err
