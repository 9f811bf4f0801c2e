"""``GitSource``: the deployment's git source, from a push to a run.

The webhook path only verifies, records and enqueues (``receive``); a worker does the rest
(``sync``): it asks the remote for the branch head, fetches exactly the commit to reconcile,
packs its tree into the usual content-addressed bundle and starts a run through
``Engine.start_run``, so the server-side delete guard and everything else of a reconcile
apply. The schedule calls ``tick``: it reports finished runs as commit statuses and polls the
branch head, catching pushes whose delivery was lost.

What the source remembers (the settings given at run time, the last commit seen, the commit
applied, the pending push, recent pushes and delivery ids) is one small JSON document in the
blob store, written under a lock: one writer per process, which is what the local runtime has.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from nclav._gc import paused_gc
from nclav.api.http import ApiResponse, error_response, json_response
from nclav.bundle import pack
from nclav.errors import Issue, SpecError
from nclav.gitsource.fetch import GitError, GitFetcher, Packed
from nclav.gitsource.settings import PREVIEW, SYNC
from nclav.gitsource.statuses import APPLY, PLAN, StatusReporter, describe_changes
from nclav.gitsource.webhooks import (
    BadPayload,
    BadSignature,
    Push,
    RateLimiter,
    parse,
    same_repository,
    verify,
)
from nclav.records import RunOrigin, iso_time
from nclav.service import bundle_blob

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from nclav.gitsource.settings import GitSettings
    from nclav.ports import BlobStore, SecretStore, WorkQueue
    from nclav.records import Run
    from nclav.service import Service

logger = logging.getLogger(__name__)

STATE_BLOB = "git/source.json"
TOKEN_SECRET = "git-token"
WEBHOOK_SECRET = "git-webhook-secret"  # where a cloud runtime keeps it (local: a file)
MAX_DELIVERIES = 1000
# A sandbox re-reads the webhook secret (``load_secret``) this often, as it does the API token
# (``nclav.runtime.token``), and at once when a delivery does not verify (another sandbox may
# have rotated it): at most once every ``SECRET_REREAD_S``, so forged deliveries cost the
# secret store one read a second, not one each.
SECRET_TTL_S = 300.0
SECRET_REREAD_S = 1.0
MAX_PUSHES = 50
_DOC = ConfigDict(extra="ignore")


class PushRecord(BaseModel):
    model_config = _DOC

    commit: str
    ref: str
    at: str
    delivery: str | None = None
    trigger: str = "push"
    forced: bool = False
    author: str = ""
    message: str = ""
    outcome: str = "queued"


class Applied(BaseModel):
    model_config = _DOC

    commit: str
    ref: str
    run_id: str
    at: str
    reported: str | None = None  # the run status last reported as a commit status


class SourceDoc(BaseModel):
    model_config = _DOC

    url: str | None = None
    branch: str | None = None
    path: str | None = None
    last_seen: PushRecord | None = None
    applied: Applied | None = None
    pending: PushRecord | None = None
    pushes: list[PushRecord] = Field(default_factory=list)
    deliveries: list[str] = Field(default_factory=list)
    last_poll: float = 0.0  # epoch seconds: a scheduled function polls when it is due


@dataclass
class GitSource:
    """One deployment's source. ``service`` gives the engine, the bundles and the store."""

    settings: GitSettings
    service: Service
    blobs: BlobStore
    queue: WorkQueue
    secrets: SecretStore
    fetcher: GitFetcher
    webhook_secret: str
    rotate_secret: Callable[[], str] | None = None
    secret_hint: str = ""  # how an operator reads the webhook secret (shown by GET /source)
    # Where the webhook secret is kept, read again (a cloud runtime's secret store: another
    # sandbox's rotation must reach this one); None: ``webhook_secret`` is the only copy.
    load_secret: Callable[[], str | None] | None = None
    # Several processes share the document (a cloud runtime's API, worker and schedule
    # functions): read it from the blob store before each use, write it at once. The blob
    # store has no conditional write, so two processes changing it in the same instant may
    # lose one change; the poll then finds the head neither applied nor pending.
    shared: bool = False
    rejected: int = 0  # deliveries refused for a bad signature: counted, nothing else kept
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sync_lock: threading.Lock = field(default_factory=threading.Lock)
    _write_lock: threading.Lock = field(default_factory=threading.Lock)
    _doc: SourceDoc = field(init=False)
    _changes: int = 0
    _saved: int = 0
    _dirty: threading.Event = field(default_factory=threading.Event)
    _writer: threading.Thread | None = None
    _closed: bool = False
    _limiter: RateLimiter = field(init=False)
    _polled: bool = False
    _secret_read_at: float = field(default_factory=time.monotonic)
    _secret_retried_at: float = float("-inf")

    def __post_init__(self) -> None:
        self._limiter = RateLimiter(self.settings.webhook_rate, self.settings.webhook_burst)
        doc = self._doc = self._load()
        if self.settings.url:  # flags and environment win over what PUT /source stored
            doc.url, doc.branch, doc.path = (
                self.settings.url,
                self.settings.branch,
                self.settings.path,
            )
            self._persist()
        elif doc.url:
            self.settings = self.settings.with_source(doc.url, doc.branch, doc.path)

    # -- the stored document --------------------------------------------------------------

    def _load(self) -> SourceDoc:
        if not self.blobs.exists(STATE_BLOB):
            return SourceDoc()
        return SourceDoc.model_validate_json(self.blobs.get(STATE_BLOB))

    def _reload(self) -> None:
        """The stored document, and the source it names (``PUT /source`` in another process)."""
        self._doc = self._load()
        if self._doc.url and self._doc.url != self.settings.url:
            self.settings = self.settings.with_source(
                self._doc.url, self._doc.branch, self._doc.path
            )

    def _read(self) -> SourceDoc:
        """A consistent copy of the document, for readers."""
        with self._lock:
            if self.shared:
                self._reload()
            return self._doc.model_copy(deep=True)

    @contextmanager
    def _editing(self, *, wait: bool = True) -> Iterator[SourceDoc]:
        """Change the document under the lock, then store it (group commit: changes made
        while another caller was writing share the next write).

        ``wait=False`` (the webhook) leaves the write to a background writer, so a delivery
        is answered without waiting for a durable write: a crash in those milliseconds loses
        the record, as it loses the in-process queue's message, and the poll then finds the
        branch head neither applied nor pending.
        """
        with self._lock:
            if self.shared:  # another process may have changed it: start from the stored one
                self._reload()
            yield self._doc
            self._doc.pushes = self._doc.pushes[-MAX_PUSHES:]
            self._doc.deliveries = self._doc.deliveries[-MAX_DELIVERIES:]
            self._changes += 1
            mine = self._changes
        if wait or self.shared:  # a function's background thread may be frozen: write now
            self._flush(mine)
        else:
            self._start_writer()
            self._dirty.set()

    def _flush(self, upto: int | None = None) -> None:
        with self._write_lock:
            if self._saved >= (self._changes if upto is None else upto):
                return  # a write that started after the change has stored it
            self._persist()

    def _start_writer(self) -> None:
        with self._lock:
            if self._writer is not None:
                return
            self._writer = threading.Thread(target=self._write_loop, name="nclav-git-doc")
            self._writer.daemon = True
            self._writer.start()

    def _write_loop(self) -> None:
        while not self._closed:
            self._dirty.wait()
            self._dirty.clear()
            try:
                self._flush()
            except Exception:  # the next change or close() writes it again
                logger.exception("storing the git source document failed")

    def close(self) -> None:
        """Store what the webhook recorded, stop the writer, close the fetched repositories."""
        self._closed = True
        self._dirty.set()
        if self._writer is not None:
            self._writer.join(timeout=10)
        self._flush()
        self.fetcher.close()

    def _persist(self) -> None:
        with self._lock:
            data = self._doc.model_dump_json().encode()
            upto = self._changes
        self.blobs.put(STATE_BLOB, data)
        self._saved = upto

    def token(self) -> str | None:
        return self.secrets.get(TOKEN_SECRET) or None

    def set_token(self, token: str) -> None:
        self.secrets.put(TOKEN_SECRET, token)

    def _now(self) -> str:
        return iso_time(time.time())

    # -- settings and the document GET /source shows ---------------------------------------

    def configure(self, url: str, branch: str | None, path: str | None) -> None:
        settings = self.settings.with_source(url, branch, path)
        with self._editing() as doc:
            if doc.url and not same_repository(doc.url, settings.url or ""):
                doc.applied = doc.pending = None  # another repository: nothing of it applied
            doc.url, doc.branch, doc.path = settings.url, settings.branch, settings.path
            self.settings = settings

    def describe(self) -> dict[str, Any]:
        doc = self._read()
        s = self.settings
        applied: dict[str, Any] | None = None
        if doc.applied is not None:
            run = self.service.store.get_run(doc.applied.run_id)
            applied = {
                **doc.applied.model_dump(exclude={"reported"}),
                "status": run.status.value if run else "unknown",
            }
        return {
            "configured": s.url is not None,
            "url": s.url,
            "branch": s.branch,
            "path": s.path,
            "poll_s": s.poll_s,
            "preview_branches": s.preview_branches,
            "token": self.token() is not None,
            "statuses": self._reporter() is not None,
            "last_seen": doc.last_seen.model_dump() if doc.last_seen else None,
            "applied": applied,
            "pending": doc.pending.model_dump() if doc.pending else None,
            "pushes": [p.model_dump() for p in reversed(doc.pushes)],
            "rejected_deliveries": self.rejected,
            "webhook": {
                "paths": ["/webhooks/github", "/webhooks/gitlab", "/webhooks/git"],
                "secret": self.secret_hint,
            },
        }

    def rotate(self) -> str:
        if self.rotate_secret is None:
            raise _problem("webhook secret", "this runtime's secret is managed outside nclav")
        self.webhook_secret = self.rotate_secret()
        self._secret_read_at = time.monotonic()
        return self.webhook_secret

    def _reread_secret(self) -> bool:
        """Read the webhook secret again from where it is kept; True when it changed."""
        if self.load_secret is None:
            return False
        self._secret_read_at = time.monotonic()
        try:
            found = (self.load_secret() or "").strip()
        except Exception:  # the store is down: keep verifying with the one read before
            logger.exception("reading the webhook secret again failed")
            return False
        if not found or found == self.webhook_secret:
            return False
        self.webhook_secret = found
        return True

    def _verify(self, scheme: str, headers: Any, body: bytes) -> None:
        if time.monotonic() - self._secret_read_at >= SECRET_TTL_S:
            self._reread_secret()
        try:
            verify(scheme, self.webhook_secret, headers, body)
        except BadSignature:
            now = time.monotonic()
            if now - self._secret_retried_at < SECRET_REREAD_S:
                raise
            self._secret_retried_at = now
            if not self._reread_secret():
                raise
            verify(scheme, self.webhook_secret, headers, body)

    # -- the webhook: verify, record, enqueue ------------------------------------------------

    def receive(self, scheme: str, headers: Any, body: bytes, request_id: str = "") -> ApiResponse:
        """One delivery: verify, record, enqueue (errors in the API's one JSON shape)."""
        if not self._limiter.allow():
            message = "too many webhook deliveries; retry shortly"
            retry = {"Retry-After": "1"}
            return error_response(429, "rate_limited", message, request_id, headers=retry)
        try:
            self._verify(scheme, headers, body)
        except BadSignature as exc:
            self.rejected += 1
            return error_response(401, "unauthorized", str(exc), request_id)
        try:
            delivery = parse(scheme, headers, body)
        except BadPayload as exc:
            return error_response(400, "bad_request", str(exc), request_id)
        if delivery.event == "ping":
            return json_response(200, {"status": "pong"})
        push = delivery.push
        if push is None:
            return _ignored(f"event {delivery.event}")
        s = self.settings
        if s.url is None:
            return _ignored("no git source is configured (PUT /source)")
        if push.repositories and not any(same_repository(u, s.url) for u in push.repositories):
            return _ignored(f"repository {push.repositories[0]} is not the source {s.url}")
        if push.ref.startswith("refs/tags/") or not push.ref.startswith("refs/heads/"):
            return _ignored(f"ref {push.ref}")
        if push.deleted:
            return _ignored(f"branch deletion of {push.ref}")
        preview = push.ref != s.ref
        if preview and not s.preview_branches:
            return _ignored(f"ref {push.ref} (the source follows {s.ref})")
        with self._editing(wait=False) as doc:
            if push.delivery and push.delivery in doc.deliveries:
                return json_response(200, {"status": "duplicate", "delivery": push.delivery})
            if push.delivery:
                doc.deliveries.append(push.delivery)
            record = self._record(push)
            if preview:
                record.outcome = "preview queued"
                doc.pushes.append(record)
            else:
                self._make_pending(doc, record)
        kind = PREVIEW if preview else SYNC
        self.queue.send(
            {"kind": kind, "commit": push.after, "ref": push.ref, "delivery": push.delivery or ""}
        )
        status = "preview queued" if preview else "queued"
        return json_response(202, {"status": status, "commit": push.after, "ref": push.ref})

    def _record(self, push: Push, trigger: str = "push") -> PushRecord:
        return PushRecord(
            commit=push.after,
            ref=push.ref,
            at=self._now(),
            delivery=push.delivery,
            trigger=trigger,
            forced=push.forced,
            author=push.author,
            message=push.message,
        )

    def _make_pending(self, doc: SourceDoc, record: PushRecord) -> None:
        """``record`` is now the head to reconcile; a pending older one is superseded."""
        if doc.pending is not None and doc.pending.commit != record.commit:
            self._outcome(doc, doc.pending, f"superseded by {record.commit}")
        doc.pending = record
        doc.last_seen = record
        doc.pushes.append(record)

    @staticmethod
    def _outcome(doc: SourceDoc, record: PushRecord, outcome: str) -> None:
        for p in reversed(doc.pushes):
            if p.commit == record.commit and p.at == record.at and p.ref == record.ref:
                p.outcome = outcome
                return

    # -- the worker ---------------------------------------------------------------------

    def handle(self, message: dict[str, str] | Any) -> None:
        """A queue message (``kind`` sync_source / preview_source): this module's own, or an
        operator's ``{"kind": "sync_source"}`` without a commit, which means "fetch the
        branch head now and reconcile it" (as ``POST /source/sync``)."""
        if message.get("kind") == PREVIEW:
            self.preview(message["commit"], message.get("ref", ""))
        elif message.get("commit"):
            self.sync(message["commit"])
        elif self.settings.url is None:
            logger.warning("sync_source message acknowledged: no git source is configured")
        else:
            try:
                head, run = self.sync_now()
            except SpecError as exc:  # the branch is gone: sending again would not help
                logger.warning("sync_source message acknowledged: %s", exc)
                return
            logger.info("sync_source: branch head %s, run %s", head, run.id if run else None)

    def sync(self, commit: str, *, force: bool = False) -> Run | None:
        """Reconcile the pending push if it is still ``commit``; return the run started."""
        with self._sync_lock:
            doc = self._read()
            pending = doc.pending
            if pending is None or pending.commit != commit:
                return None  # superseded, or already done by an earlier message
            url, token = self.settings.url, self.token()
            if url is None:
                return None
            try:
                head = self.fetcher.ls_remote(url, token, self.settings.branch)
            except GitError as exc:
                logger.warning("git source: %s", exc)
                head = None
            target = pending
            if head is not None and head != commit:
                # The branch moved on since this push (a burst, or out-of-order deliveries):
                # the branch head is what it says, whatever arrives later.
                with self._editing() as doc:
                    self._outcome(doc, pending, f"superseded by {head}")
                    target = PushRecord(
                        commit=head, ref=self.settings.ref, at=self._now(), trigger="head"
                    )
                    doc.pending = target
                    doc.pushes.append(target)
            applied = doc.applied
            if applied is not None and applied.commit == target.commit and not force:
                run = self.service.store.get_run(applied.run_id)
                if run is None or run.status.value != "failed":
                    self._finish(target, "no-op: already applied")
                    return None
            return self._reconcile(target, url, token)

    def _finish(self, target: PushRecord, outcome: str, applied: Applied | None = None) -> None:
        with self._editing() as doc:
            self._outcome(doc, target, outcome)
            if doc.pending is not None and doc.pending.commit == target.commit:
                doc.pending = None
            if applied is not None:
                doc.applied = applied
                # Every earlier push of the burst still waiting is superseded by this one (the
                # branch head it was checked against), whatever order the deliveries came in.
                for p in doc.pushes:
                    waiting = p.outcome == "queued" or p.outcome.startswith("superseded by")
                    if waiting and p.commit != target.commit and p != doc.pending:
                        p.outcome = f"superseded by {target.commit}"

    def _reconcile(self, target: PushRecord, url: str, token: str | None) -> Run | None:
        """Fetch, load, pack and store ``target``'s tree, then start its run.

        The cyclic garbage collector is paused throughout (``nclav._gc``): loading, packing
        and planning a large tree allocate millions of objects, nearly all either kept (the
        cached bundle, the plan) or freed by reference counting, and each automatic
        collection meanwhile walked the whole growing heap again: on the 1,000 x 10
        synthetic tree that was a fifth of the time from a push to its stored plan. One
        collection after the run has begun does the work once.
        """
        with paused_gc():
            return self._fetch_and_start(target, url, token)

    def _fetch_and_start(self, target: PushRecord, url: str, token: str | None) -> Run | None:
        reporter = self._reporter()
        try:
            packed = self.fetcher.fetch_and_pack(url, token, target.commit, self.settings.path)
        except SpecError as exc:
            self._finish(target, f"invalid: {exc}"[:500])
            if reporter:
                reporter.report(target.commit, PLAN, "failure", f"invalid: {exc}")
            return None
        except GitError as exc:  # the poll tries again: the head is neither applied nor pending
            self._finish(target, f"fetch failed: {exc}"[:500])
            return None
        loaded = time.perf_counter()
        digest = self._store(packed)
        stored = time.perf_counter()
        if reporter:
            plan = self.service.dry_run(digest)
            summary = describe_changes_json(plan["changes"])
            reporter.report(target.commit, PLAN, "success", summary)
            reporter.report(target.commit, APPLY, "pending", "applying")
        origin = RunOrigin(
            repository=url,
            ref=target.ref,
            commit=target.commit,
            author=packed.commit.author or target.author,
            message=packed.commit.message or target.message,
            delivery=target.delivery,
        )
        # A tree with no enclave is not refused here as it is from a request: nobody is there
        # to read the refusal. The run is created and the delete guard holds it for approval.
        planning = time.perf_counter()
        run = self.service.engine.start_run(
            digest, f"git-{target.trigger}"[:32], origin=origin, hold_empty=True
        )
        started = time.perf_counter()
        applied = Applied(commit=target.commit, ref=target.ref, run_id=run.id, at=self._now())
        self._finish(target, f"run {run.id}", applied)
        # Where the time of a push goes (scripts/bench_git.py reads this line).
        logger.info(
            "git source: commit %s started run %s (fetched %d bytes in %.3f s, loaded the "
            "tree in %.3f s, packed and stored the bundle in %.3f s, created and began the "
            "run in %.3f s)",
            target.commit,
            run.id,
            packed.fetched_bytes,
            packed.fetch_s,
            packed.load_s,
            stored - loaded,
            started - planning,
        )
        return run

    def _store(self, packed: Packed) -> str:
        """Store the bundle (content-addressed: once) and hand its loaded tree to the cache."""
        bundles = self.service.bundles
        key = bundle_blob(packed.digest)
        if not bundles.blobs.exists(key):
            bundles.blobs.put(key, pack(packed.files))
        bundles.prime(packed.digest, packed.desired, packed.files)
        return packed.digest

    def preview(self, commit: str, ref: str) -> dict[str, Any] | None:
        """A dry run of another branch's commit, reported as its nclav/plan status only."""
        url, token, reporter = self.settings.url, self.token(), self._reporter()
        if url is None:
            return None
        plan: dict[str, Any] | None = None
        try:
            packed = self.fetcher.fetch_and_pack(url, token, commit, self.settings.path)
            plan = found = self.service.dry_run(self._store(packed))
        except (SpecError, GitError) as exc:
            outcome = f"preview failed: {exc}"[:500]
            if reporter:
                reporter.report(commit, PLAN, "failure", f"invalid: {exc}")
        else:
            summary = describe_changes_json(found["changes"])
            outcome = f"preview: {summary}"
            if reporter:
                reporter.report(commit, PLAN, "success", f"{summary} (preview, not applied)")
        with self._editing() as doc:
            for p in reversed(doc.pushes):
                if p.commit == commit and p.ref == ref:
                    p.outcome = outcome
                    break
        return plan

    # -- manual sync and the schedule ----------------------------------------------------

    def sync_now(self) -> tuple[str | None, Run | None]:
        """POST /source/sync: the branch head now, reconciled even if it was applied."""
        url = self.settings.url
        if url is None:
            raise _problem("git source", "no git source is configured (PUT /source)")
        head = self.fetcher.ls_remote(url, self.token(), self.settings.branch)
        if head is None:
            raise _problem(
                "branch", f"branch {self.settings.branch!r} does not exist on the remote"
            )
        self._queue_head(head, "sync", send=False)
        return head, self.sync(head, force=True)

    def _queue_head(self, head: str, trigger: str, *, send: bool = True) -> None:
        with self._editing() as doc:
            record = PushRecord(commit=head, ref=self.settings.ref, at=self._now(), trigger=trigger)
            self._make_pending(doc, record)
        if send:
            self.queue.send({"kind": SYNC, "commit": head, "ref": record.ref, "delivery": ""})

    def tick(self) -> None:
        """The schedule's work: report finished runs, and poll the branch head when due.

        The first tick of a process polls at once (it may have missed pushes while it was
        down); later ones every ``poll_s``, counted from the last poll of any process."""
        self.report_finished()
        if self.settings.poll_s <= 0 or self.settings.url is None:
            return
        now = time.time()
        if self._polled and now - self._read().last_poll < self.settings.poll_s:
            return
        self._polled = True
        with self._editing() as doc:
            doc.last_poll = now
        self.poll()

    def poll(self) -> str | None:
        """Reconcile the branch head if it is neither applied nor pending; return it."""
        url = self.settings.url
        if url is None:
            return None
        try:
            head = self.fetcher.ls_remote(url, self.token(), self.settings.branch)
        except GitError as exc:
            logger.warning("git source poll: %s", exc)
            return None
        doc = self._read()
        known = {r.commit for r in (doc.pending,) if r is not None}
        if doc.applied is not None:
            known.add(doc.applied.commit)
        if head is None or head in known:
            return None
        logger.info("git source poll: branch head %s is new; reconciling it", head)
        self._queue_head(head, "poll")
        return head

    def report_finished(self) -> None:
        """Send the apply status of the applied commit's run once its state is known."""
        reporter = self._reporter()
        doc = self._read()
        applied = doc.applied
        if reporter is None or applied is None:
            return
        run = self.service.store.get_run(applied.run_id)
        if run is None or run.status.value == applied.reported:
            return
        status = run.status.value
        if status == "succeeded":
            reporter.report(applied.commit, APPLY, "success", "applied", run.id)
        elif status == "failed":
            error = run.errors[0] if run.errors else "the run failed"
            reporter.report(applied.commit, APPLY, "failure", error, run.id)
        elif status == "awaiting_approval":
            reporter.report(applied.commit, APPLY, "pending", "awaiting approval", run.id)
        else:
            return  # queued or running: pending was reported when it started
        with self._editing() as doc:
            if doc.applied is not None and doc.applied.run_id == run.id:
                doc.applied.reported = status

    def _reporter(self) -> StatusReporter | None:
        s = self.settings
        token, provider, api = self.token(), s.guessed_provider(), s.status_api()
        if not (token and provider and api and s.url):
            return None
        return StatusReporter(provider, api, s.url, token, s.public_url)


def describe_changes_json(changes: list[dict[str, Any]]) -> str:
    """``describe_changes`` for the JSON form ``Service.dry_run`` returns."""
    from nclav.plan import Change, ChangeKind

    return describe_changes([Change(ChangeKind(c["kind"]), "") for c in changes])


def _problem(field_name: str, message: str) -> SpecError:
    return SpecError([Issue("git source", None, field_name, message)])


def _ignored(reason: str) -> ApiResponse:
    return json_response(202, {"status": f"ignored: {reason}"})


__all__ = [
    "PREVIEW",
    "SYNC",
    "TOKEN_SECRET",
    "WEBHOOK_SECRET",
    "GitSource",
    "SourceDoc",
    "describe_changes_json",
]
