"""The local runtime: a threaded HTTP/1.1 server in front of ``Router.dispatch``.

One thread per connection, so a long request (a reconcile waiting for its run, which calls
back into this same server's Terraform state backend) never blocks the others.

The server only translates: each request becomes an ``ApiRequest`` (with a fresh request id,
echoed as ``X-Request-Id``) and the ``ApiResponse`` is written back. Before reading a body it
asks the router whether the route, the credentials and the size are acceptable, so an
unauthenticated or oversized upload is refused without being read. Bodies need a
Content-Length; chunked uploads get 411.

Access lines go to the ``nclav.api.access`` logger: client address, method, path (no query
string), status, size, duration and request id. Headers and bodies are never logged.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import socketserver
import sys
import threading
import time
from dataclasses import replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from nclav.api.http import (
    REQUEST_ID_HEADER,
    ApiRequest,
    ApiResponse,
    Headers,
    error_response,
    new_request_id,
    split_target,
    status_code_name,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from nclav.api.router import Router

_log = logging.getLogger(__name__)
_access = logging.getLogger("nclav.api.access")

# The hard cap on any request body, whatever a route allows (Terraform state can be large).
MAX_REQUEST_BODY = 64 * 1024 * 1024
# A refused body up to this size is read and discarded, so the connection stays usable and
# the client is not reset while still sending; a bigger one is left unread and the
# connection closed.
_DRAIN_LIMIT = 1024 * 1024
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")
_NO_BODY_STATUSES = frozenset({204, 304})


class ApiServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that serves one ``Router``. Port 0 binds a free port; read
    the one chosen from ``server_address`` or ``url``."""

    daemon_threads = True  # a stuck client connection never blocks process exit
    request_queue_size = 128  # listen backlog: bursts of concurrent clients are queued

    def __init__(
        self,
        address: tuple[str, int],
        router: Router | None = None,
        *,
        max_body: int = MAX_REQUEST_BODY,
    ) -> None:
        # None until ``serve`` is given one: ``nclav serve`` binds its port first, so a port
        # in use is reported before anything is created or printed.
        self._router = router
        self.max_body = max_body
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _RequestHandler)

    @property
    def router(self) -> Router:
        if self._router is None:
            raise RuntimeError("this server has no router yet")
        return self._router

    @router.setter
    def router(self, router: Router) -> None:
        self._router = router

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, a reverse DNS query that can stall
        # start-up for seconds; nothing here uses the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def url(self) -> str:
        host = self.server_name
        return (
            f"http://[{host}]:{self.server_port}"
            if ":" in host
            else f"http://{host}:{self.server_port}"
        )

    def handle_error(self, request: object, client_address: object) -> None:
        # socketserver's default prints the traceback to stderr; keep it in the log instead.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            # A client that resets or times out is routine on a network: one line, no trace.
            _log.warning("connection from %s dropped: %s", _peer(client_address), exc)
            return
        _log.exception("unexpected error while serving a connection")


def _peer(client_address: object) -> str:
    if isinstance(client_address, tuple) and client_address:
        return str(client_address[0])
    return str(client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    # Socket timeout: bounds how long a silent client holds a thread. A handler that takes
    # longer (a reconcile with ?wait=) is unaffected, since it is not waiting on the socket.
    timeout = 120.0

    _request_id = ""
    _expect_continue = False

    def version_string(self) -> str:
        return "nclav"  # the Server header; the default also advertises the Python version

    def handle_one_request(self) -> None:
        self._request_id = new_request_id()
        self._expect_continue = False
        super().handle_one_request()

    def handle_expect_100(self) -> bool:
        # Defer "100 Continue" until the route, credentials and size have been checked, so a
        # client waiting for it never uploads a body that is about to be refused.
        self._expect_continue = True
        return True

    def _serve(self) -> None:
        started = time.perf_counter()
        path, query = split_target(self.path)
        request = ApiRequest(
            self.command, path, query, Headers(self.headers.items()), b"", self._request_id
        )
        try:
            outcome = self._answer(request)
            if outcome is None:  # the client went away mid-body
                self.close_connection = True
                return
            response, close = outcome
            self._write(response, close=close)
        except OSError as exc:  # reset, broken pipe or timeout: nobody left to answer
            self.close_connection = True
            _log.info("connection dropped (request_id=%s): %s", request.request_id, exc)
            return
        elapsed_ms = (time.perf_counter() - started) * 1000
        _access.info(
            '%s "%s %s" %d %d %.1fms request_id=%s',
            self.client_address[0],
            request.method,
            request.path,
            response.status,
            len(response.body),
            elapsed_ms,
            request.request_id,
        )

    def _answer(self, request: ApiRequest) -> tuple[ApiResponse, bool] | None:
        """The response and whether to close the connection after it (body left unread)."""
        rid = request.request_id
        if "transfer-encoding" in request.headers:
            message = "chunked transfer encoding is not supported; send Content-Length"
            return error_response(411, "length_required", message, rid), True
        raw_length = request.headers.get("content-length", "0").strip()
        if not _CONTENT_LENGTH.fullmatch(raw_length):
            return error_response(400, "bad_request", "invalid Content-Length header", rid), True
        length = int(raw_length)
        if length > self.server.max_body:
            message = f"request body is {length} bytes; the limit is {self.server.max_body}"
            return self._refuse(error_response(413, "payload_too_large", message, rid), length)
        if length:
            refused = self.server.router.preflight(request, length)
            if refused is not None:
                return self._refuse(refused, length)
            if self._expect_continue:
                self.send_response_only(HTTPStatus.CONTINUE)
                self.end_headers()
            body = self.rfile.read(length)
            if len(body) < length:
                return None
            request = replace(request, body=body)
        return self.server.router.dispatch(request), False

    def _refuse(self, response: ApiResponse, length: int) -> tuple[ApiResponse, bool]:
        if self._expect_continue or length > _DRAIN_LIMIT:
            return response, True  # the body was never sent, or is too big to swallow
        self.rfile.read(length)
        return response, False

    def _write(self, response: ApiResponse, *, close: bool) -> None:
        status = response.status
        self.send_response(status)
        for name, value in response.headers.items():
            # Framing headers are this server's to set; a handler's copy could contradict them.
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        if REQUEST_ID_HEADER not in response.headers:
            self.send_header(REQUEST_ID_HEADER, self._request_id)
        has_body = status >= 200 and status not in _NO_BODY_STATUSES
        if has_body:
            self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if has_body and self.command != "HEAD":
            self.wfile.write(response.body)
        self.wfile.flush()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server calls this for what it cannot parse (request line, headers, an unknown
        # method); answer with the same JSON error shape as everything else.
        rid = self._request_id or new_request_id()
        self._request_id = rid
        if self.request_version == "HTTP/0.9":
            # What http.server takes for HTTP/0.9 is nearly always garbage (say, TLS sent to
            # a plain port); 0.9 would suppress the status line and headers entirely.
            self.request_version = "HTTP/1.0"
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        _access.info("%s rejected: %d %s request_id=%s", self.client_address[0], code, phrase, rid)
        self._write(
            error_response(code, status_code_name(code), message or phrase, rid), close=True
        )

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _serve writes the access line, with the request id and duration

    def log_message(self, format: str, *args: object) -> None:
        _log.debug(format, *args)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve
    # Methods no route takes still reach the router, which answers 405 with Allow (a 501
    # would claim the server is broken; schemathesis probes both).
    do_TRACE = do_QUERY = _serve
    # Terraform's HTTP backend can be configured to lock with these WebDAV-style methods.
    do_LOCK = do_UNLOCK = _serve


def make_server(
    router: Router, host: str = "127.0.0.1", port: int = 0, *, max_body: int = MAX_REQUEST_BODY
) -> ApiServer:
    """Bind (but do not start) a server for ``router``."""
    return ApiServer((host, port), router, max_body=max_body)


def bind_server(
    host: str = "127.0.0.1", port: int = 0, *, max_body: int = MAX_REQUEST_BODY
) -> ApiServer:
    """Bind and listen, with no router yet: ``serve_bound`` serves it once there is one.

    Raises OSError (say, EADDRINUSE) before the caller has created anything."""
    return ApiServer((host, port), None, max_body=max_body)


def serve_bound(server: ApiServer, router: Router) -> threading.Thread:
    """Serve ``router`` on an already bound ``server`` in a daemon thread."""
    server.router = router
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="nclav-http", daemon=True
    )
    thread.start()
    return thread


def listen_error(host: str, port: int, exc: OSError) -> str:
    """A one-line reason a server could not listen, with what to do about it."""
    reason = exc.strerror or str(exc)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        hint = "another process is listening there; choose another port with --port N"
    elif exc.errno == errno.EACCES:
        hint = "ports below 1024 need privileges; choose another port with --port N"
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = "this machine has no such address; check --bind"
    else:
        hint = "check --bind and --port"
    return f"cannot listen on {where}: {reason} ({hint})"


def start_server(
    router: Router, host: str = "127.0.0.1", port: int = 0, *, max_body: int = MAX_REQUEST_BODY
) -> tuple[ApiServer, threading.Thread]:
    """Bind and serve in a daemon thread; stop with ``stop_server(server, thread)``."""
    server = make_server(router, host, port, max_body=max_body)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="nclav-http", daemon=True
    )
    thread.start()
    return server, thread


def stop_server(server: ApiServer, thread: threading.Thread, timeout: float = 10.0) -> None:
    """Stop accepting, wait for the serving loop to end, and close the listening socket.

    Requests already being handled run on in their daemon threads until they finish."""
    server.shutdown()
    thread.join(timeout)
    server.server_close()


def serve_http(
    router: Router,
    host: str,
    port: int,
    *,
    stop: threading.Event,
    ready: threading.Event | Callable[[ApiServer], None] | None = None,
    max_body: int = MAX_REQUEST_BODY,
) -> None:
    """Serve until ``stop`` is set, then shut down cleanly (for ``nclav serve``).

    The serving loop runs in a thread and this one waits on ``stop``, so a SIGINT/SIGTERM
    handler only has to call ``stop.set()``: calling ``shutdown()`` from the thread running
    ``serve_forever`` would deadlock. ``ready`` is set, or called with the bound server (to
    print its URL), once the port is bound.
    """
    server, thread = start_server(router, host, port, max_body=max_body)
    try:
        if isinstance(ready, threading.Event):
            ready.set()
        elif ready is not None:
            ready(server)
        _log.info("serving on %s", server.url)
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        stop_server(server, thread)
        _log.info("server stopped")


__all__ = [
    "MAX_REQUEST_BODY",
    "ApiServer",
    "bind_server",
    "listen_error",
    "make_server",
    "serve_bound",
    "serve_http",
    "start_server",
    "stop_server",
]
