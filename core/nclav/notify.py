"""Outgoing webhooks for what people wait for: a run's outcome, an approval, drift.

The API, for any part of nclav::

    from nclav import notify
    notify.notify("drift.detected", {"enclave_id": "e", "partition_id": "p", ...})

Event kinds (``KINDS``): ``run.succeeded``, ``run.failed``, ``run.awaiting_approval``,
``drift.detected``, ``drift.resolved``. ``payload`` is any JSON object; it becomes ``data``.
``run_changed(run)`` maps a run's new status to its kind (the engine calls it).

``notify`` never blocks and never fails the caller: it only enqueues one control message per
target, ``{"kind": "notify", ...}``, on the work queue the engine already uses. A worker
delivers it (``handle_message``, hooked where messages enter ``Engine.handle``); a failed
delivery (connection error, timeout, 408, 429 or 5xx) is sent again through the queue with
exponential backoff (2 s, 4 s, ... at most 300 s, ``MAX_ATTEMPTS`` in all), so retries hold no
worker and survive nothing but the queue itself. Delivery is at least once: receivers
deduplicate by the body's ``id``.

The body (``format: json``)::

    {"id": "<uuid>", "kind": "run.failed", "at": "2026-...Z", "data": {...}}

signed with HMAC-SHA256 over the exact body bytes, sent as
``X-Nclav-Signature-256: sha256=<hex>`` (GitHub's scheme), with ``X-Nclav-Event: <kind>``
and ``X-Nclav-Delivery: <id>``. A receiver recomputes the HMAC with the shared secret and
compares in constant time. The secret is ``NCLAV_NOTIFY_SECRET``, or else one generated once
and kept in the SecretStore under ``notify-secret``.

Targets: ``NCLAV_NOTIFY_URL`` (``nclav serve --notify-url``), comma-separated. A URL written
``slack+https://hooks.slack.com/services/...`` is posted in Slack's incoming-webhook shape,
``{"text": "..."}`` (the ``slack+`` is dropped from the URL). Messages name a target by a
hash of its URL, never the URL itself (a Slack URL is a credential).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import secrets as _secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from nclav.errors import Issue, SpecError

if TYPE_CHECKING:
    from nclav.ports import SecretStore, WorkQueue
    from nclav.records import Run

_log = logging.getLogger(__name__)

KINDS = (
    "run.succeeded",
    "run.failed",
    "run.awaiting_approval",
    "drift.detected",
    "drift.resolved",
)
MESSAGE_KIND = "notify"
SIGNATURE_HEADER = "X-Nclav-Signature-256"
SECRET_NAME = "notify-secret"
MAX_ATTEMPTS = 8
BACKOFF_S = 2.0
MAX_BACKOFF_S = 300.0
TIMEOUT_S = 5.0
# Run status value -> event kind; keyed on the value so a status added later only needs a row.
RUN_KINDS = {
    "succeeded": "run.succeeded",
    "failed": "run.failed",
    "awaiting_approval": "run.awaiting_approval",
}

Format = Literal["json", "slack"]


@dataclass(frozen=True)
class Target:
    url: str
    format: Format = "json"

    @property
    def key(self) -> str:
        """What a queue message names the target by (the URL may hold a credential)."""
        return hashlib.sha256(f"{self.format} {self.url}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class NotifySettings:
    targets: tuple[Target, ...] = ()
    secret: str = ""
    max_attempts: int = MAX_ATTEMPTS
    backoff_s: float = BACKOFF_S
    timeout_s: float = TIMEOUT_S

    def __repr__(self) -> str:  # never print the secret or the URLs (credentials)
        return f"NotifySettings(targets={len(self.targets)}, max_attempts={self.max_attempts})"


def parse_targets(text: str | None, source: str = "NCLAV_NOTIFY_URL") -> tuple[Target, ...]:
    """``url[,url...]``; ``slack+https://...`` selects the Slack format."""
    out: list[Target] = []
    for raw in (text or "").split(","):
        url = raw.strip()
        if not url:
            continue
        fmt: Format = "json"
        if url.startswith("slack+"):
            fmt, url = "slack", url.removeprefix("slack+")
        if not url.startswith(("http://", "https://")) or len(url) < 10:
            shown = url.split("?")[0][:60]
            message = (
                f"not a webhook URL: {shown!r}; expected http(s)://... or slack+https://..., "
                "several separated by commas"
            )
            raise SpecError([Issue(source, None, "url", message)])
        out.append(Target(url, fmt))
    return tuple(dict.fromkeys(out))


def notify_settings(
    urls: str | None, env: Mapping[str, str], secrets: Callable[[], SecretStore] | None
) -> NotifySettings:
    """Every notification setting, read here only: ``urls`` (``--notify-url`` or
    ``NCLAV_NOTIFY_URL``), ``NCLAV_NOTIFY_SECRET`` from ``env``, else the stored secret,
    generated on first use."""
    targets = parse_targets(urls if urls is not None else env.get("NCLAV_NOTIFY_URL"))
    if not targets:
        return NotifySettings()
    secret = env.get("NCLAV_NOTIFY_SECRET", "")
    if not secret and secrets is not None:
        store = secrets()  # opened only when there is a target to sign for
        secret = store.get(SECRET_NAME) or ""
        if not secret:
            secret = _secrets.token_hex(32)
            store.put(SECRET_NAME, secret)
            _log.info("generated the webhook signing secret (stored as %r)", SECRET_NAME)
    if not secret:
        raise SpecError(
            [Issue("NCLAV_NOTIFY_SECRET", None, "secret", "set it: no secret store to keep one")]
        )
    return NotifySettings(targets, secret)


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """For receivers (and tests): constant-time comparison."""
    return hmac.compare_digest(sign(secret, body), header)


def slack_text(kind: str, data: Mapping[str, Any]) -> str:
    """A one-line summary for chat."""
    where = "/".join(str(data[k]) for k in ("enclave_id", "partition_id") if data.get(k))
    what = {
        "run.succeeded": "run succeeded",
        "run.failed": "run failed",
        "run.awaiting_approval": "run awaiting approval",
        "drift.detected": "drift detected",
        "drift.resolved": "drift resolved",
    }.get(kind, kind)
    parts = [f"nclav: {what}"]
    if data.get("run_id"):
        parts.append(f"run {data['run_id']}")
    if where:
        parts.append(where)
    errors = data.get("errors")
    if isinstance(errors, list) and errors:
        parts.append("; ".join(str(e) for e in errors[:3]))
    return " - ".join(parts)


# (url, body, headers, timeout) -> HTTP status; raises OSError when nothing answered.
Post = Callable[[str, bytes, Mapping[str, str], float], int]


def http_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    # Imported here: ``urllib.request`` (with ``http.client`` and ``ssl``) costs milliseconds
    # that every process importing the engine would pay, and only a delivery needs it.
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) only, checked)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


class Notifier:
    """Enqueues notifications (``notify``) and delivers them (``deliver``)."""

    def __init__(
        self,
        settings: NotifySettings,
        queue: WorkQueue,
        *,
        post: Post = http_post,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.queue = queue
        self._post = post
        self._now = now
        self._targets = {t.key: t for t in settings.targets}

    def notify(self, kind: str, payload: Mapping[str, Any]) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown notification kind {kind!r}; one of {', '.join(KINDS)}")
        if not self._targets:
            return
        event = {
            "id": str(uuid.uuid4()),
            "kind": kind,
            "at": self._now().isoformat(timespec="seconds").replace("+00:00", "Z"),
            "data": dict(payload),
        }
        text = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
        for key in self._targets:
            message = {"kind": MESSAGE_KIND, "target": key, "attempt": "1", "event": text}
            try:
                self.queue.send(message)
            except Exception:  # never fail the caller (a step) over a notification
                _log.exception("could not enqueue the %s notification", kind)

    def deliver(self, message: Mapping[str, str]) -> None:
        """One delivery attempt; on a retryable failure, the next goes through the queue."""
        target = self._targets.get(message.get("target", ""))
        attempt = int(message.get("attempt", "1") or "1")
        try:
            event = json.loads(message["event"])
        except (KeyError, ValueError):
            _log.error("dropping a malformed notification message")
            return
        if target is None:
            _log.warning("dropping a notification: its target is no longer configured")
            return
        body, headers = self.render(target, event)
        try:
            status = self._post(target.url, body, headers, self.settings.timeout_s)
            failure = None if 200 <= status < 300 else f"HTTP {status}"
            retry = failure is not None and _retryable(status)
        except OSError as exc:  # refused, reset, DNS, timeout
            failure, retry = f"{type(exc).__name__}: {exc}", True
        if failure is None:
            return
        host = target.url.split("/")[2] if target.url.count("/") >= 2 else "?"
        if not retry or attempt >= self.settings.max_attempts:
            _log.error(
                "notification %s to %s dropped after %d attempt(s): %s",
                event.get("kind"),
                host,
                attempt,
                failure,
            )
            return
        delay = min(self.settings.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
        delay *= random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not a secret)
        _log.warning(
            "notification %s to %s failed (%s); attempt %d in %.1fs",
            event.get("kind"),
            host,
            failure,
            attempt + 1,
            delay,
        )
        self.queue.send({**message, "attempt": str(attempt + 1)}, delay_s=delay)

    def render(self, target: Target, event: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        if target.format == "slack":
            doc: object = {"text": slack_text(str(event.get("kind")), event.get("data") or {})}
        else:
            doc = event
        body = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "nclav-webhook",
            "X-Nclav-Event": str(event.get("kind")),
            "X-Nclav-Delivery": str(event.get("id")),
            SIGNATURE_HEADER: sign(self.settings.secret, body),
        }
        return body, headers


# -- the process's notifier -----------------------------------------------------------------

_installed: Notifier | None = None
_lock = threading.Lock()


def install(notifier: Notifier | None) -> None:
    """Make ``notifier`` this process's (None: notifications off). The runtime calls it."""
    global _installed
    with _lock:
        _installed = notifier


def installed() -> Notifier | None:
    return _installed


def notify(kind: str, payload: Mapping[str, Any]) -> None:
    """Send event ``kind`` with ``payload`` to every configured target, via the queue.

    Returns at once; a no-op when no target is configured. Raises ValueError only for a kind
    not in ``KINDS`` (a programming error)."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}; one of {', '.join(KINDS)}")
    notifier = _installed
    if notifier is not None:
        notifier.notify(kind, payload)


def run_changed(run: Run) -> None:
    """Notify a run's new status, when it is one people wait for (see ``RUN_KINDS``)."""
    kind = RUN_KINDS.get(str(getattr(run.status, "value", run.status)))
    if kind is None or _installed is None:
        return
    data: dict[str, Any] = {
        "run_id": run.id,
        "status": str(getattr(run.status, "value", run.status)),
        "enclave_ids": list(run.enclave_ids),
        "errors": list(run.errors),
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }
    try:
        notify(kind, data)
    except Exception:  # a notification never fails the run
        _log.exception("could not notify run %s", run.id)


def handle_message(message: Mapping[str, Any]) -> bool:
    """Deliver ``message`` if it is a notification; False for any other message.

    Never raises: a failed delivery is retried through the queue (``Notifier.deliver``)."""
    if message.get("kind") != MESSAGE_KIND:
        return False
    notifier = _installed
    if notifier is None:
        _log.warning("dropping a notification: notifications are not configured here")
        return True
    try:
        notifier.deliver(message)
    except Exception:
        _log.exception("notification delivery failed unexpectedly; dropped")
    return True


__all__ = [
    "KINDS",
    "MESSAGE_KIND",
    "RUN_KINDS",
    "SECRET_NAME",
    "SIGNATURE_HEADER",
    "NotifySettings",
    "Notifier",
    "Target",
    "handle_message",
    "http_post",
    "install",
    "installed",
    "notify",
    "notify_settings",
    "parse_targets",
    "run_changed",
    "sign",
    "slack_text",
    "verify",
]
