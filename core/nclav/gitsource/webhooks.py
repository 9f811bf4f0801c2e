"""Push webhooks: verifying a delivery and reading the push out of its payload.

Three schemes, each checked in constant time over the raw body before anything is parsed:

* GitHub (``/webhooks/github``) and other hosts using its scheme (``/webhooks/git``: Gitea,
  Forgejo, Gogs): ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``.
* GitLab (``/webhooks/gitlab``): ``X-Gitlab-Token``, the shared secret itself.

A verified delivery becomes a ``Push`` (or a reason it is ignored); nothing here fetches or
plans, so the answer is fast: GitHub waits 10 s and never retries, GitLab disables a hook
after four failures.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from nclav.gitsource.fetch import SHA

ZERO_SHA = "0" * 40
SCHEMES = ("github", "gitlab", "git")


class BadSignature(Exception):
    """The delivery is not signed with the webhook secret."""


class BadPayload(Exception):
    """A signed delivery whose JSON is not a push this server understands."""


@dataclass(frozen=True)
class Push:
    ref: str
    before: str
    after: str
    forced: bool
    deleted: bool
    repositories: tuple[str, ...]  # every URL the payload names for the repository
    author: str
    message: str
    delivery: str | None
    scheme: str


@dataclass(frozen=True)
class Delivery:
    """A verified delivery: a push, a ping, or another event (ignored)."""

    event: str  # "push", "ping" or the event's own name
    delivery: str | None
    push: Push | None = None


def verify(scheme: str, secret: str, headers: Any, body: bytes) -> None:
    """Raise ``BadSignature`` unless the delivery carries ``secret`` as ``scheme`` wants."""
    key = secret.encode("utf-8")
    if scheme == "gitlab":
        supplied = str(headers.get("x-gitlab-token") or "").encode("utf-8", "replace")
        if not supplied or not hmac.compare_digest(supplied, key):
            raise BadSignature("X-Gitlab-Token does not match the webhook secret")
        return
    header = str(headers.get("x-hub-signature-256") or "")
    if not header and scheme == "git":
        header = str(headers.get("x-hub-signature") or "")  # Bitbucket Server's name for it
    algorithm, _, digest = header.partition("=")
    if algorithm.lower() != "sha256" or not digest:
        raise BadSignature("missing X-Hub-Signature-256 (sha256=...)")
    expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode("ascii")
    if not hmac.compare_digest(digest.strip().lower().encode("utf-8", "replace"), expected):
        raise BadSignature("X-Hub-Signature-256 does not match the body")


def _delivery_id(scheme: str, headers: Any) -> str | None:
    names = {
        "github": ("x-github-delivery",),
        # GitLab keeps the Idempotency-Key across retries of one event; the UUID is the event's.
        "gitlab": ("idempotency-key", "x-gitlab-event-uuid", "x-gitlab-webhook-uuid"),
        "git": (
            "x-github-delivery",
            "x-gitea-delivery",
            "x-forgejo-delivery",
            "x-gogs-delivery",
            "x-request-uuid",
        ),
    }[scheme]
    for name in names:
        value = headers.get(name)
        if value:
            return str(value)[:200]
    return None


def _event(scheme: str, headers: Any) -> str:
    if scheme == "gitlab":
        kind = str(headers.get("x-gitlab-event") or "")
        return "push" if kind in ("Push Hook", "System Hook") else kind or "unknown"
    for name in ("x-github-event", "x-gitea-event", "x-forgejo-event", "x-gogs-event"):
        value = headers.get(name)
        if value:
            return str(value)
    return "unknown"


def parse(scheme: str, headers: Any, body: bytes) -> Delivery:
    """Read a verified delivery. Raises ``BadPayload`` for a push this cannot understand."""
    event = _event(scheme, headers)
    delivery = _delivery_id(scheme, headers)
    if event != "push":
        return Delivery(event, delivery)
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise BadPayload(f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadPayload("the body is not a JSON object")
    if scheme == "gitlab" and doc.get("object_kind") not in (None, "push"):
        return Delivery(str(doc.get("object_kind")), delivery)
    return Delivery("push", delivery, _push(scheme, doc, delivery))


def _text(doc: Any, *keys: str) -> str:
    for key in keys:
        if not isinstance(doc, dict):
            return ""
        doc = doc.get(key)
    return doc if isinstance(doc, str) else ""


def _push(scheme: str, doc: dict[str, Any], delivery: str | None) -> Push:
    ref, before, after = _text(doc, "ref"), _text(doc, "before"), _text(doc, "after")
    if not ref.startswith("refs/"):
        raise BadPayload(f"ref: expected a full ref such as refs/heads/main, got {ref!r}")
    if not SHA.fullmatch(after) or (before and not SHA.fullmatch(before)):
        raise BadPayload("before/after: expected 40-character commit shas")
    deleted = after == ZERO_SHA or doc.get("deleted") is True
    urls: tuple[str, ...]
    if scheme == "gitlab":
        urls = (
            _text(doc, "project", "git_http_url"),
            _text(doc, "repository", "git_http_url"),
            _text(doc, "project", "web_url"),
            _text(doc, "repository", "homepage"),
        )
        forced = False  # GitLab does not say; the branch head decides (see source.py)
    else:
        urls = (
            _text(doc, "repository", "clone_url"),
            _text(doc, "repository", "html_url"),
            _text(doc, "repository", "url"),
        )
        forced = doc.get("forced") is True
    author, message = "", ""
    commits = doc.get("commits")
    head = doc.get("head_commit")
    if not isinstance(head, dict) and isinstance(commits, list):
        head = next((c for c in commits if isinstance(c, dict) and c.get("id") == after), None)
    if isinstance(head, dict):
        author = _text(head, "author", "name")
        lines = _text(head, "message").strip().splitlines()
        message = lines[0][:200] if lines else ""
    if not author:
        author = _text(doc, "user_name") or _text(doc, "pusher", "name")
    return Push(
        ref=ref,
        before=before,
        after=after,
        forced=forced,
        deleted=deleted,
        repositories=tuple(u for u in urls if u),
        author=author[:200],
        message=message,
        delivery=delivery,
        scheme=scheme,
    )


def same_repository(a: str, b: str) -> bool:
    """Whether two URLs name one repository (scheme, ``.git`` and case of the host aside)."""

    def norm(url: str) -> tuple[str, str]:
        parts = urlsplit(url.strip())
        path = parts.path.rstrip("/").removesuffix(".git").lower()
        return (parts.hostname or "").lower() + (f":{parts.port}" if parts.port else ""), path

    return norm(a) == norm(b)


class RateLimiter:
    """A token bucket: ``burst`` deliveries at once, then ``rate`` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


__all__ = [
    "SCHEMES",
    "ZERO_SHA",
    "BadPayload",
    "BadSignature",
    "Delivery",
    "Push",
    "RateLimiter",
    "parse",
    "same_repository",
    "verify",
]
