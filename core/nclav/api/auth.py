"""The API token: checking it on requests, and keeping it in a file only its owner can read.

One token guards every protected route. Clients send ``Authorization: Bearer <token>``;
Terraform's HTTP state backend can only send Basic credentials, so routes marked
``bearer_or_basic`` also take ``Basic base64(<any user>:<token>)``. Every comparison goes
through ``hmac.compare_digest`` so the time taken does not reveal how much of a guess matched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from nclav._fs import atomic_write
from nclav.api.http import ApiRequest, AuthMode, Unauthorized
from nclav.errors import NclavError

if TYPE_CHECKING:
    from collections.abc import Callable

_log = logging.getLogger(__name__)

TOKEN_PATTERN = re.compile(r"[0-9a-f]{64}")
_REALM = 'realm="nclav"'


class TokenError(NclavError):
    """The token file or the token override cannot be used."""


def generate_token() -> str:
    """A new token: 64 lower-case hex characters (256 random bits)."""
    return secrets.token_hex(32)


class TokenAuth:
    """Accepts requests that present ``token`` (see the module docstring for the schemes)."""

    def __init__(self, token: str) -> None:
        _check_header_safe(token, "the API token")
        self._token = token.encode("ascii")

    def authenticate(self, request: ApiRequest, mode: AuthMode) -> None:
        if mode == "none":
            return
        header = request.headers.get("authorization")
        if header is None:
            raise self._refuse(mode, "missing Authorization header")
        scheme, _, credentials = header.strip().partition(" ")
        scheme = scheme.lower()  # auth schemes are case-insensitive (RFC 9110 section 11.1)
        supplied: bytes | None
        if scheme == "bearer":
            # Headers from some runtimes may hold unencodable text; it can only fail to match.
            supplied = credentials.strip().encode("utf-8", errors="replace")
        elif scheme == "basic" and mode == "bearer_or_basic":
            supplied = _basic_password(credentials.strip())
        else:
            raise self._refuse(mode, "unsupported authorization scheme")
        if supplied is None or not hmac.compare_digest(supplied, self._token):
            raise self._refuse(mode, "invalid credentials")

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` derived from the token (HMAC-SHA256), such as the
        dashboard's session-signing key: it lives wherever the token lives (token file,
        SecretStore), is never stored anywhere else, and changes when the token is rotated."""
        return hmac.new(self._token, purpose.encode("utf-8"), hashlib.sha256).digest()

    @staticmethod
    def _refuse(mode: AuthMode, message: str) -> Unauthorized:
        challenge = f"Bearer {_REALM}"
        if mode == "bearer_or_basic":
            challenge += f', Basic {_REALM}, charset="UTF-8"'
        return Unauthorized(message, headers={"WWW-Authenticate": challenge})


def _basic_password(credentials: str) -> bytes | None:
    """The password of ``base64(user:password)``; the user name is ignored."""
    try:
        decoded = base64.b64decode(credentials, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        return None
    _user, colon, password = decoded.partition(b":")
    return password if colon else None


def _check_header_safe(token: str, what: str) -> None:
    # A token must travel in a header: printable ASCII without spaces.
    if not token or not all("!" <= c <= "~" for c in token):
        raise TokenError(f"{what} must be non-empty printable ASCII without spaces")


def load_or_create_token(
    path: str | os.PathLike[str], rotate: bool = False, env_token: str | None = None
) -> tuple[str, bool]:
    """The server's token and whether it was just generated (so the caller prints it once).

    ``env_token`` (the NCLAV_TOKEN override) wins when non-empty and is never written to disk.
    Otherwise the token file is read, or created with mode 0600 (its directory 0700 when this
    creates it); ``rotate`` replaces it with a new token. A token file readable by group or
    others has its mode fixed to 0600, with a warning. Raises ``TokenError``.
    """
    if env_token:
        _check_header_safe(env_token, "NCLAV_TOKEN")
        return env_token, False
    file = Path(path)
    if not rotate:
        existing = _read_token(file)
        if existing is not None:
            return existing, False
    token = generate_token()
    _write_token(file, token)
    return token, True


def _read_token(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TokenError(f"cannot read token file {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TokenError(f"token file {path} is not a regular file")
        if info.st_mode & 0o077:
            try:
                os.fchmod(fd, 0o600)
            except OSError as exc:
                raise TokenError(
                    f"token file {path} is readable by other users and its mode cannot be "
                    f"changed to 0600: {exc.strerror}"
                ) from exc
            _log.warning("token file %s was readable by other users; its mode is now 0600", path)
        raw = os.read(fd, 1024)
    finally:
        os.close(fd)
    text = raw.decode("ascii", errors="replace").strip()
    if not TOKEN_PATTERN.fullmatch(text):
        # The content is never echoed: it may be a secret in the wrong place.
        raise TokenError(
            f"token file {path} is malformed: expected 64 lower-case hex characters; "
            "start with --rotate-token to replace it"
        )
    return text


def _write_token(path: Path, token: str) -> None:
    parent = path.parent
    try:
        try:
            parent.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            pass  # an existing directory is the user's; only the file's mode is ours to set
        else:
            parent.chmod(0o700)  # mkdir's mode is filtered through the umask
        # A reader sees the old token or the new one, never a partial file, and the token is
        # never readable by anyone else, not even for a moment.
        atomic_write(path, f"{token}\n".encode("ascii"), mode=0o600)
    except OSError as exc:
        raise TokenError(f"cannot write token file {path}: {exc.strerror}") from exc


class RotatingTokenAuth:
    """``TokenAuth`` over a token that can change (a cloud runtime re-reads it from its secret
    store after a TTL, so a rotation reaches warm workers); the comparison itself is
    TokenAuth's, constant-time."""

    def __init__(self, token: Callable[[], str]) -> None:
        self._token = token
        self._auth: tuple[str, TokenAuth] | None = None

    def current(self) -> TokenAuth:
        value = self._token()
        cached = self._auth
        if cached is None or cached[0] != value:
            cached = (value, TokenAuth(value))
            self._auth = cached
        return cached[1]

    def authenticate(self, request: ApiRequest, mode: AuthMode) -> None:
        self.current().authenticate(request, mode)

    def derive_key(self, purpose: str) -> bytes:
        """The current token's key for ``purpose`` (the dashboard's session cookies): a
        rotation signs everyone out, as it does on the local server."""
        return self.current().derive_key(purpose)


__all__ = [
    "TOKEN_PATTERN",
    "RotatingTokenAuth",
    "TokenAuth",
    "TokenError",
    "generate_token",
    "load_or_create_token",
]
