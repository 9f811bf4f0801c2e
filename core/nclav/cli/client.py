"""The CLI's HTTP client: the standard library's urllib, timeouts, and one error mapping.

Every failure becomes a ``CliError`` with the exit code the user's shell sees:

* cannot connect, connection dropped, timed out, no token, 401/403 -> 3 (``UnreachableError``)
* 422 -> 2 (``InvalidError``, one ``path:line: field: message`` line per detail)
* anything else that is not 2xx -> 1 (``ApiError``; 404 is often caught by the caller)

Imported only inside commands: urllib.request alone costs more than the rest of start-up.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from nclav import __version__
from nclav.cli.common import CliError, InvalidError, UnreachableError, err

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

DEFAULT_TIMEOUT_S = 30.0
USER_AGENT = f"nclav-cli/{__version__}"
_CONNECT_HINT = "Start it with `nclav serve`, or point --remote / NCLAV_URL at a running server"


def token_path() -> Path:
    """Where ``nclav serve`` keeps its token: $NCLAV_HOME/token, else ~/.nclav/token."""
    home = os.environ.get("NCLAV_HOME")
    return Path(home) / "token" if home else Path.home() / ".nclav" / "token"


def resolve_token(explicit: str | None) -> tuple[str, str]:
    """The token and where it came from: --token, NCLAV_TOKEN, else the token file."""
    if explicit:
        return explicit.strip(), "--token"
    env = os.environ.get("NCLAV_TOKEN", "").strip()
    if env:
        return env, "NCLAV_TOKEN"
    path = token_path()
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise UnreachableError(
            f"no token: cannot read {path}: {exc.strerror}",
            hint="Set NCLAV_TOKEN or pass --token.",
        ) from exc
    if not text:
        raise UnreachableError(
            f"no token: start `nclav serve` or set NCLAV_TOKEN (no token file at {path})"
        )
    return text, str(path)


class ApiError(CliError):
    """The server answered with an error status (exit 1 unless a subclass says otherwise)."""

    def __init__(
        self,
        status: int,
        reason: str,
        code: str,
        message: str,
        request_id: str | None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        rid = f" (request id {request_id})" if request_id else ""
        super().__init__(f"server returned {status} {reason}: {message}{rid}")
        self.status = status
        self.code = code
        self.server_message = message
        self.request_id = request_id
        self.details = details or []


class InvalidRequest(ApiError):
    """422: the server found the configuration or request invalid (exit 2)."""

    exit_code = InvalidError.exit_code


def issue_line(detail: Mapping[str, Any], prefix: str = "") -> str:
    """``path:line: field: message``, as ``nclav validate`` prints an issue."""
    path = str(detail.get("path") or "")
    if prefix and path and path not in ("request", "body", "bundle"):
        path = f"{prefix.rstrip('/')}/{path}"
    where = f"{path}:{detail['line']}" if detail.get("line") is not None else path
    fld = detail.get("field") or ""
    message = detail.get("message", "")
    return f"{where}: {fld}: {message}" if fld else f"{where}: {message}"


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise CliError(
                f"the server sent a response that is not JSON ({len(self.body)} bytes)"
            ) from None


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Client:
    """Requests to one nclav server, with its token sent as ``Authorization: Bearer``."""

    def __init__(
        self,
        base_url: str,
        token: Callable[[], tuple[str, str]],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        verbose: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token_source = token
        self._token: tuple[str, str] | None = None
        self.timeout_s = timeout_s
        self.verbose = verbose
        scheme = urlsplit(self.base_url).scheme
        if scheme not in ("http", "https"):
            raise InvalidError(
                f"--remote / NCLAV_URL must be an http:// or https:// URL, got {base_url!r}"
            )
        # A proxy from the environment must never see loopback traffic (or the token).
        handlers: list[urllib.request.BaseHandler] = []
        if _is_loopback(self.base_url):
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    def token(self) -> tuple[str, str]:
        if self._token is None:
            self._token = self._token_source()
        return self._token

    def url(self, path: str, query: Mapping[str, object] | None = None) -> str:
        shown = {k: v for k, v in (query or {}).items() if v is not None}
        return self.base_url + path + (f"?{urlencode(shown)}" if shown else "")

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, object] | None = None,
        json_body: object = None,
        data: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Response:
        """One request; any status outside 2xx raises (see the module docstring)."""
        token, _ = self.token()
        url = self.url(path, query)
        sent = {
            "Authorization": f"Bearer {token}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            **(headers or {}),
        }
        if json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
            content_type = "application/json"
        if content_type:
            sent["Content-Type"] = content_type
        req = urllib.request.Request(url, data=data, headers=sent, method=method)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        started = time.perf_counter()
        if self.verbose:
            size = f" ({len(data)} bytes)" if data is not None else ""
            err(f"> {method} {url}{size}")
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                body = resp.read()
                response = Response(resp.status, resp.headers, body)
                reason = str(resp.reason or "")
        except urllib.error.HTTPError as exc:
            body = _read_quietly(exc)
            self._log(exc.code, exc.reason, exc.headers, body, started)
            raise self._error(exc.code, str(exc.reason), exc.headers, body) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc, timeout) from exc
        self._log(response.status, reason, response.headers, body, started)
        return response

    def open_stream(
        self,
        path: str,
        *,
        query: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> Any:
        """A GET whose body is read as it arrives (server-sent events): the open response,
        to be closed by the caller; errors raise as for ``request``. ``timeout_s`` bounds
        each read, so it must exceed the server's heartbeat interval."""
        token, _ = self.token()
        url = self.url(path, query)
        sent = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT, **(headers or {})}
        req = urllib.request.Request(url, headers=sent, method="GET")
        started = time.perf_counter()
        if self.verbose:
            err(f"> GET {url} (stream)")
        try:
            return self._opener.open(req, timeout=timeout_s)
        except urllib.error.HTTPError as exc:
            body = _read_quietly(exc)
            self._log(exc.code, exc.reason, exc.headers, body, started)
            raise self._error(exc.code, str(exc.reason), exc.headers, body) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc, timeout_s) from exc

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, body: object, **kwargs: Any) -> Any:
        return self.request("POST", path, json_body=body, **kwargs).json()

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs).json()

    # -- errors ----------------------------------------------------------------------------

    def _log(self, status: int, reason: str, headers: Any, body: bytes, started: float) -> None:
        if self.verbose:
            ms = (time.perf_counter() - started) * 1000
            rid = headers.get("X-Request-Id") if headers is not None else None
            extra = f", request id {rid}" if rid else ""
            err(f"< {status} {reason or ''}".rstrip() + f" ({len(body)} bytes, {ms:.1f} ms{extra})")

    def _error(self, status: int, reason: str, headers: Any, body: bytes) -> CliError:
        code, message, rid, details = "error", body.decode("utf-8", "replace").strip(), None, []
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            error = doc["error"]
            code = str(error.get("code", code))
            message = str(error.get("message", message))
            rid = error.get("request_id")
            details = [d for d in error.get("details") or [] if isinstance(d, dict)]
        if rid is None and headers is not None:
            rid = headers.get("X-Request-Id")
        if status in (401, 403):
            _, source = self.token()
            return UnreachableError(
                f"the server at {self.base_url} refused the token from {source} "
                f"({status} {reason}: {message})",
                hint="Use the token of that server (its HOME/token file, printed by "
                "`nclav serve` on first start) via --token or NCLAV_TOKEN.",
            )
        cls = InvalidRequest if status == 422 else ApiError
        error_ = cls(status, reason, code, message or reason, rid, details)
        error_.lines = [f"  {issue_line(d)}" for d in details]
        return error_

    def _unreachable(self, exc: BaseException, timeout: float) -> UnreachableError:
        reason: object = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError | socket.timeout) or isinstance(exc, TimeoutError):
            text = f"no answer within {timeout:g}s"
        elif isinstance(reason, ConnectionRefusedError):
            text = "connection refused"
        elif isinstance(reason, socket.gaierror):
            text = f"unknown host ({reason.strerror})"
        elif isinstance(reason, OSError) and reason.strerror:
            text = reason.strerror
        else:
            text = str(reason) or type(reason).__name__
        return UnreachableError(
            f"cannot reach the nclav server at {self.base_url}: {text}", hint=f"{_CONNECT_HINT}."
        )


def _read_quietly(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read()
    except (OSError, http.client.HTTPException):
        return b""


def seg(value: str) -> str:
    """A path segment, percent-encoded (ids never contain '/', but a typo might)."""
    return quote(value, safe="")


__all__ = [
    "ApiError",
    "Client",
    "InvalidRequest",
    "Response",
    "issue_line",
    "resolve_token",
    "seg",
    "token_path",
]
