"""Dashboard sessions: a signed, expiring cookie in place of the API token, for a few routes.

``POST /ui/login`` checks the API token once (through the route table's own authenticator,
so the comparison is the constant-time one every route uses) and answers a cookie
``nclav_session=<payload>.<mac>``: the payload is the session id and its expiry, the MAC an
HMAC-SHA256 under a key derived from the API token (``TokenAuth.derive_key``), so the key lives
where the token lives (token file or SecretStore) and never in the state store; rotating the
token signs every session out. The cookie is ``HttpOnly`` (no script reads it),
``SameSite=Strict`` (no other site's page sends it), ``Secure`` when the request came over
HTTPS (``X-Forwarded-Proto: https`` from the platform's front end).

``SessionAuth`` wraps the authenticator: a request with an ``Authorization`` header is the
inner authenticator's to judge; a request with only the cookie passes for the routes in
``COOKIE_ROUTES`` alone (the dashboard's reads and its few actions), never for bundles,
reconciles, destroys or the Terraform state. A state-changing method (anything but GET/HEAD)
must also carry ``X-Nclav-CSRF`` equal to the session's CSRF token (an HMAC of the session id,
compared with ``hmac.compare_digest``), which a page of another origin cannot read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING

from nclav.api.http import Forbidden, MethodNotAllowed, NotFound, Unauthorized
from nclav.api.router import Router

if TYPE_CHECKING:
    from nclav.api.http import ApiRequest, ApiResponse, Authenticator, AuthMode

COOKIE_NAME = "nclav_session"
CSRF_HEADER = "X-Nclav-CSRF"
DEFAULT_TTL_S = 8 * 3600
KEY_PURPOSE = "nclav-ui-session-v1"
_SAFE_METHODS = frozenset({"GET", "HEAD"})

# What a session cookie may reach: the dashboard's reads and actions, nothing else. Routes
# other branches add (approvals, live run events, drift) are listed too: a pattern the table
# does not serve is never reached (the router answers 404 before authenticating).
_IAC = "/enclaves/{id}/partitions/{part}/iac/runs"
COOKIE_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/ui/api/overview"),
    ("GET", "/status"),
    ("GET", "/graph"),
    ("GET", "/enclaves"),
    ("GET", "/enclaves/{id}"),
    ("GET", "/enclaves/{id}/graph"),
    ("GET", "/runs"),
    ("GET", "/runs/{run_id}"),
    ("GET", "/runs/{run_id}/events"),
    ("GET", "/events"),
    ("GET", _IAC),
    ("GET", _IAC + "/latest"),
    ("GET", _IAC + "/{run_id}"),
    ("GET", _IAC + "/{run_id}/log"),
    ("GET", "/drift"),
    ("GET", "/enclaves/{id}/partitions/{part}/drift"),
    # the actions: approve or cancel a run awaiting approval, check or acknowledge drift
    ("POST", "/runs/{run_id}/approve"),
    ("POST", "/runs/{run_id}/cancel"),
    ("POST", "/enclaves/{id}/partitions/{part}/drift/check"),
    ("POST", "/enclaves/{id}/partitions/{part}/drift/ack"),
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    expires_at: int  # epoch seconds


class SessionCodec:
    """Issues and checks session cookies and their CSRF tokens under one key."""

    def __init__(self, key: bytes, *, ttl_s: int = DEFAULT_TTL_S) -> None:
        if len(key) < 32:
            raise ValueError("the session key must be at least 32 bytes")
        self._key = key
        self.ttl_s = ttl_s

    def _mac(self, label: bytes, data: bytes) -> bytes:
        return hmac.new(self._key, label + b"\x00" + data, hashlib.sha256).digest()

    def issue(self, now: float | None = None) -> tuple[Session, str]:
        """A new session and its cookie value."""
        now = time.time() if now is None else now
        session = Session(secrets.token_urlsafe(18), int(now) + self.ttl_s)
        payload = json.dumps(
            {"sid": session.session_id, "exp": session.expires_at}, separators=(",", ":")
        ).encode("ascii")
        return session, f"{_b64(payload)}.{_b64(self._mac(b'cookie', payload))}"

    def verify(self, value: str, now: float | None = None) -> Session | None:
        """The session a cookie value names, or None if forged, malformed or expired."""
        payload_text, dot, mac_text = value.partition(".")
        payload, mac = _unb64(payload_text), _unb64(mac_text)
        if not dot or payload is None or mac is None:
            return None
        if not hmac.compare_digest(mac, self._mac(b"cookie", payload)):
            return None
        try:
            doc = json.loads(payload)
            session = Session(str(doc["sid"]), int(doc["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        now = time.time() if now is None else now
        return session if now < session.expires_at else None

    def csrf_token(self, session: Session) -> str:
        return _b64(self._mac(b"csrf", session.session_id.encode("ascii")))

    def check_csrf(self, session: Session, supplied: str | None) -> bool:
        expected = self.csrf_token(session).encode("ascii")
        return supplied is not None and hmac.compare_digest(
            supplied.strip().encode("utf-8", "replace"), expected
        )


def is_https(request: ApiRequest) -> bool:
    """Whether the browser reached us over HTTPS: the platform's front end (a function URL,
    API Gateway, a reverse proxy) says so in ``X-Forwarded-Proto``; the local server speaks
    plain HTTP on loopback."""
    proto = request.headers.get("x-forwarded-proto", "")
    return proto.split(",")[0].strip().lower() == "https"


def set_cookie(request: ApiRequest, value: str, max_age: int) -> str:
    """The ``Set-Cookie`` value for ``value`` (``max_age`` 0 clears it)."""
    parts = [
        f"{COOKIE_NAME}={value}",
        "Path=/",
        f"Max-Age={max_age}",
        "HttpOnly",
        "SameSite=Strict",
    ]
    if is_https(request):
        parts.append("Secure")
    return "; ".join(parts)


def cookie_value(request: ApiRequest) -> str | None:
    raw = request.headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(COOKIE_NAME)
    return morsel.value if morsel is not None else None


def _noop(_r: ApiRequest, _p: dict[str, str], _b: object) -> ApiResponse:
    raise AssertionError("never dispatched")


class SessionAuth:
    """The route table's authenticator with the dashboard's cookie added for ``COOKIE_ROUTES``.

    Everything else, and every request that carries an ``Authorization`` header, is decided by
    ``inner`` exactly as before."""

    def __init__(
        self,
        inner: Authenticator,
        codec: SessionCodec,
        routes: tuple[tuple[str, str], ...] = COOKIE_ROUTES,
    ) -> None:
        self.inner = inner
        self.codec = codec
        self._allowed = Router()
        for method, pattern in routes:
            self._allowed.add(method, pattern, _noop, auth="none")

    def allows_cookie(self, request: ApiRequest) -> bool:
        try:
            self._allowed.match(request.method, request.path)
        except (NotFound, MethodNotAllowed):
            return False
        return True

    def session(self, request: ApiRequest) -> Session | None:
        value = cookie_value(request)
        return self.codec.verify(value) if value else None

    def authenticate(self, request: ApiRequest, mode: AuthMode) -> None:
        if mode != "bearer" or "authorization" in request.headers:
            self.inner.authenticate(request, mode)
            return
        if not self.allows_cookie(request):
            self.inner.authenticate(request, mode)  # refuses: no credentials it accepts
            return
        session = self.session(request)
        if session is None:
            raise Unauthorized(
                "missing or expired dashboard session; sign in again",
                headers={"WWW-Authenticate": 'Bearer realm="nclav"'},
            )
        if request.method not in _SAFE_METHODS and not self.codec.check_csrf(
            session, request.headers.get(CSRF_HEADER)
        ):
            raise Forbidden(f"missing or wrong {CSRF_HEADER} header")


__all__ = [
    "COOKIE_NAME",
    "COOKIE_ROUTES",
    "CSRF_HEADER",
    "DEFAULT_TTL_S",
    "KEY_PURPOSE",
    "Session",
    "SessionAuth",
    "SessionCodec",
    "cookie_value",
    "is_https",
    "set_cookie",
]
