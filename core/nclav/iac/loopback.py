"""Terraform's HTTP state backend on the loopback interface, inside the process running it.

Terraform used to reach state through the public API with the deployment-wide API token in
``TF_HTTP_PASSWORD``: partition code (a ``local-exec``) could read that token and call any
route, other partitions' state included. And on AWS the state travelled to the API function,
whose 6 MB payload limit lost a 6.9 MB state. Now the process that runs terraform serves the
backend itself: ``LoopbackStateServer`` is a threaded HTTP server bound to 127.0.0.1 on an
ephemeral port, over the same ``TerraformStateBackend`` (state store + blob store) the public
``/terraform/state/...`` routes use, so operators still read and unlock state there with the
API token, and a state is limited only by memory (256 MiB here, like the API).

Each IaC run gets its own credential (``grant``): a random token valid only for that run's
``/terraform/state/{enclave}/{partition}`` and revoked when the run ends. A request without a
valid token is refused with 401, a token used for another partition's path with 403; tokens
are compared with ``hmac.compare_digest``. The lock info terraform stores is tagged with the
IaC run that took it (``nclav_iac_run``), so a lock a killed terraform left behind can be told
from someone else's (``PartitionIac`` breaks only the former).

Protocol (terraform's ``http`` backend with ``lock_method=POST``/``unlock_method=DELETE`` on
``<state>/lock``, as ``HttpBackend`` configures it; ``LOCK``/``UNLOCK`` on the state path work
too): GET state (200, or 204 when none), POST state (``?ID=<lock id>``; 409 with the holder
when locked by another ID), DELETE state, lock (423 with the holder), unlock (409 with the
holder).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from nclav.errors import SpecError, TemporaryError
from nclav.iac.state_backend import LockHeldError
from nclav.iac.workspace import HttpBackend

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nclav.iac.state_backend import TerraformStateBackend

logger = logging.getLogger(__name__)

MAX_STATE_BYTES = 256 * 1024 * 1024
LOCK_TAG = "nclav_iac_run"  # added to the lock info: the IaC run whose terraform took it
USERNAME = "nclav"


@dataclass(frozen=True)
class Grant:
    """One IaC run's credential: valid for one partition's state path while the run lasts."""

    enclave_id: str
    partition_id: str
    run_id: str
    token: str = field(repr=False)
    held: _Held = field(default_factory=lambda: _Held(), repr=False, compare=False)


@dataclass
class _Held:
    """The state lock a grant's terraform holds, and the state pointer under it.

    Terraform locks, reads the state (twice, for a plan and an apply), writes it, and
    unlocks. Every writer of the state but an operator's force-unlock must hold the lock
    (``post_state`` checks it), and the run holds the partition mutex too, so while the lock
    taken through this grant is held, the pointer it read or wrote last is still current: a
    second read reuses it, and a write is conditional on it without reading it first (a
    compare-and-set, so a wrong belief costs one attempt, never a lost version).
    """

    lock_id: str | None = None
    pointer: str | None = None
    known: bool = False  # ``pointer`` was read or written under ``lock_id``
    mutex: threading.Lock = field(default_factory=threading.Lock)

    def forget(self, lock_id: str | None = None) -> None:
        self.lock_id, self.pointer, self.known = lock_id, None, False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LoopbackStateServer


class LoopbackStateServer:
    """Serves ``backend`` on 127.0.0.1 to the terraform processes of this process's IaC runs.

    Started on first use and then reused by every run (one port per process); ``close``
    stops it.
    """

    def __init__(self, backend: TerraformStateBackend, *, host: str = "127.0.0.1") -> None:
        self.backend = backend
        self.host = host
        self._grants: list[Grant] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        server = self._start()
        return f"http://{self.host}:{int(server.server_address[1])}"

    @contextmanager
    def grant(self, enclave_id: str, partition_id: str, run_id: str) -> Iterator[HttpBackend]:
        """A backend for one IaC run: its credential works until the block ends."""
        self.backend.key(enclave_id, partition_id)  # refuse ids that are no state path
        grant = Grant(enclave_id, partition_id, run_id, secrets.token_urlsafe(32))
        address = self.address
        with self._lock:
            self._grants.append(grant)
        try:
            yield HttpBackend(address, enclave_id, partition_id, grant.token)
        finally:
            with self._lock:
                self._grants.remove(grant)

    def find(self, token: str) -> Grant | None:
        """The grant of ``token``, compared in constant time against every live grant."""
        with self._lock:
            grants = list(self._grants)
        found = None
        for grant in grants:
            if hmac.compare_digest(grant.token.encode(), token.encode()):
                found = grant
        return found

    def close(self) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5)

    def _start(self) -> _Server:
        with self._lock:
            if self._server is None:
                server = _Server((self.host, 0), _Handler)
                server.owner = self
                thread = threading.Thread(
                    target=server.serve_forever, name="nclav-state-loopback", daemon=True
                )
                thread.start()
                self._server, self._thread = server, thread
            return self._server


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # -- plumbing --------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silent: a request line carries no secret, but nothing here needs logging."""

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="nclav terraform state"')
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode())

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise _Refused(411, "a Content-Length is required")
        raw = self.headers.get("Content-Length") or "0"
        if not raw.isdigit():
            raise _Refused(400, "Content-Length: expected a non-negative integer")
        length = int(raw)
        if length > MAX_STATE_BYTES:
            raise _Refused(413, f"a state is at most {MAX_STATE_BYTES} bytes")
        return self.rfile.read(length) if length else b""

    def _token(self) -> str | None:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip() or None
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return None
            user, sep, password = decoded.partition(":")
            return password if sep and user == USERNAME else None
        return None

    def _route(self) -> tuple[str, str, bool, dict[str, list[str]]]:
        """(enclave, partition, is the lock path, query) of a state path; else 404."""
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/")]
        if len(parts) in (5, 6) and parts[:3] == ["", "terraform", "state"]:
            lock = len(parts) == 6
            if not lock or parts[5] == "lock":
                return parts[3], parts[4], lock, parse_qs(url.query)
        raise _Refused(404, "not a terraform state path")

    def _handle(self) -> None:
        try:
            self._serve()
        except _Refused as exc:
            self.close_connection = True  # its body may be unread: no keep-alive after it
            self._error(exc.status, exc.message)
        except LockHeldError as exc:
            self._send(409, json.dumps(exc.holder.info).encode())
        except SpecError as exc:
            self._error(400, str(exc))
        except TemporaryError as exc:
            self._error(503, str(exc))
        except Exception:
            logger.exception("terraform state loopback: request failed")
            self._error(500, "internal error")

    def _serve(self) -> None:
        enclave, partition, lock_path, query = self._route()
        # Read the body before answering, or keep-alive would parse it as the next request.
        body = self._body() if self.command in ("POST", "LOCK", "UNLOCK", "DELETE") else b""
        token = self._token()
        grant = self.server.owner.find(token) if token else None
        if grant is None:
            raise _Refused(401, "a valid credential for this IaC run is required")
        if (grant.enclave_id, grant.partition_id) != (enclave, partition):
            raise _Refused(403, "this credential is for another partition's state")
        backend = self.server.owner.backend
        method = self.command
        if lock_path:
            method = {"POST": "LOCK", "DELETE": "UNLOCK"}.get(method, "")
        held = grant.held
        if method == "GET" and not lock_path:
            with held.mutex:
                if held.known:
                    data = backend.state_at(held.pointer)
                else:
                    pointer, data = backend.read_state(enclave, partition)
                    if held.lock_id is not None:
                        held.pointer, held.known = pointer, True
            if data is None:
                self._send(204)
            else:
                self._send(200, data)
        elif method == "POST":
            lock_id = query.get("ID", [None])[0]
            with held.mutex:
                mine = lock_id is not None and lock_id == held.lock_id and held.known
                try:
                    if mine:
                        pointer = backend.post_state(
                            enclave, partition, body, lock_id, current=held.pointer, holding=True
                        )
                    else:
                        pointer = backend.post_state(enclave, partition, body, lock_id)
                except BaseException:
                    held.forget(held.lock_id)
                    raise
                if lock_id is not None and lock_id == held.lock_id:
                    held.pointer, held.known = pointer, True
            self._send(200)
        elif method == "DELETE":
            with held.mutex:
                held.forget(held.lock_id)
                backend.delete_state(enclave, partition)
            self._send(200)
        elif method == "LOCK":
            info = _lock_info(body)
            info[LOCK_TAG] = grant.run_id
            with held.mutex:
                holder = backend.lock(enclave, partition, info)
                if holder is None and isinstance(info.get("ID"), str):
                    held.forget(info["ID"])
            if holder is not None:
                self._send(423, json.dumps(holder.info).encode())
            else:
                self._send(200)
        elif method == "UNLOCK":
            # Always with the lock info: a partition's credential cannot force an unlock.
            with held.mutex:
                held.forget()
                backend.unlock(enclave, partition, _lock_info(body))
            self._send(200)
        else:
            raise _Refused(405, f"{self.command} is not served here")

    do_GET = do_POST = do_DELETE = do_LOCK = do_UNLOCK = do_PUT = do_HEAD = _handle  # noqa: N815


def _lock_info(body: bytes) -> dict[str, Any]:
    """Terraform's JSON lock info (lock and unlock both send it)."""
    if not body.strip():
        raise _Refused(400, "lock info: expected Terraform's JSON lock info")
    try:
        info = json.loads(body)
    except ValueError:
        raise _Refused(400, "lock info: expected JSON") from None
    if not isinstance(info, dict):
        raise _Refused(400, "lock info: expected a JSON object")
    return info


__all__ = ["LOCK_TAG", "MAX_STATE_BYTES", "Grant", "LoopbackStateServer"]
