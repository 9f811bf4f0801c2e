"""The dashboard's routes, added to the one route table so every runtime serves them.

* ``GET /ui``: the page (one HTML shell; the pages are ``#/...`` fragments rendered by
  ``static/app.js`` from the API's JSON); ``GET /ui/static/{asset}``: its scripts and styles,
  read from the package (``importlib.resources``, so a wheel or a Lambda zip serves them).
  Both public: they hold no data. Every page and asset carries a strict
  Content-Security-Policy (scripts and styles from this origin only, no inline script, no
  framing) and is gzip-encoded when the browser accepts it.
* ``POST /ui/login`` / ``POST /ui/logout``: the session cookie (see ``nclav.ui.session``).
* ``GET /ui/session``: the CSRF token of the cookie's session (the page keeps it in memory);
  ``GET /ui/api/overview``: the first page's counts in one small document.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import re
import secrets
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

from nclav.api.http import (
    ApiRequest,
    ApiResponse,
    BadRequest,
    NotFound,
    Unauthorized,
    json_response,
)
from nclav.ui.models import LoginBody
from nclav.ui.session import (
    KEY_PURPOSE,
    SessionAuth,
    SessionCodec,
    set_cookie,
)

if TYPE_CHECKING:
    from nclav.api.router import Router
    from nclav.service import Service
    from nclav.state import EnclaveState

HTML_TYPE = "text/html; charset=utf-8"
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": HTML_TYPE,
}
ASSET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\.(js|css|svg)")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
MAX_ERRORS = 50
MAX_RUNS = 10
_IAC = "/enclaves/{id}/partitions/{part}"
# Pages and buttons that need routes other parts of nclav add: shown only when served.
FEATURES: dict[str, tuple[tuple[str, str], ...]] = {
    "approvals": (("POST", "/runs/{run_id}/approve"), ("POST", "/runs/{run_id}/cancel")),
    "run_events": (("GET", "/runs/{run_id}/events"),),
    "drift": (
        ("GET", "/drift"),
        ("POST", _IAC + "/drift/check"),
        ("POST", _IAC + "/drift/ack"),
    ),
}
_FINAL_RUN = frozenset({"succeeded", "failed", "cancelled"})


class _Asset:
    __slots__ = ("content_type", "etag", "gzipped", "raw")

    def __init__(self, name: str, raw: bytes) -> None:
        self.raw = raw
        self.gzipped = gzip.compress(raw, compresslevel=9, mtime=0)
        # Weak: the gzip and identity encodings of one file share it (RFC 9110 8.8.1).
        self.etag = 'W/"' + hashlib.sha256(raw).hexdigest()[:32] + '"'
        self.content_type = CONTENT_TYPES[name[name.rindex(".") :]]


class _Assets:
    """The packaged files, read once on first use (a Lambda cold start that never serves the
    dashboard never reads them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, _Asset] | None = None

    def get(self, name: str) -> _Asset | None:
        with self._lock:
            if self._files is None:
                root = importlib.resources.files("nclav.ui") / "static"
                # A package built without its data (not with pip) has no static/: every page
                # then answers 404 naming the cause rather than a 500.
                entries = list(root.iterdir()) if root.is_dir() else []
                self._files = {
                    entry.name: _Asset(entry.name, entry.read_bytes())
                    for entry in entries
                    if entry.is_file()
                    and (ASSET_NAME.fullmatch(entry.name) or entry.name == "index.html")
                }
            return self._files.get(name)


def _serve(request: ApiRequest, asset: _Asset) -> ApiResponse:
    headers = {
        **SECURITY_HEADERS,
        "Cache-Control": "no-cache",
        "ETag": asset.etag,
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("if-none-match", "") == asset.etag:
        return ApiResponse(304, b"", headers)
    headers["Content-Type"] = asset.content_type
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        return ApiResponse(200, asset.gzipped, {**headers, "Content-Encoding": "gzip"})
    return ApiResponse(200, asset.raw, headers)


def drift_counts(store: Any) -> dict[str, int] | None:
    """Partitions by drift status (plus ``acknowledged``), or None when this store keeps no
    drift records (drift detection, issue 11, adds ``list_drift`` to the stores)."""
    list_drift = getattr(store, "list_drift", None)
    if not callable(list_drift):
        return None
    records = list(list_drift(None))
    counts = Counter(str(getattr(r.status, "value", r.status)) for r in records)
    counts["acknowledged"] = sum(1 for r in records if getattr(r, "is_acknowledged", False))
    return dict(counts)


def overview_json(
    states: list[EnclaveState],
    docs: list[dict[str, Any]],
    default_cloud: str,
    drift: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The first page's counts (see ``nclav.ui.models.Overview``) from the applied state and
    the newest runs as the API serves them (``Run.model_dump(mode="json")``)."""
    by_cloud: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    errors: list[dict[str, Any]] = []
    updated: list[str] = []
    for state in states:
        cloud = state.resolved_cloud or (state.desired.cloud if state.desired else None)
        by_cloud[cloud.value if cloud else "unknown"] += 1
        if state.meta.last_error:
            errors.append({"enclave_id": state.enclave_id, **state.meta.last_error.model_dump()})
        if state.meta.updated_at:
            updated.append(state.meta.updated_at)
        for pid, part in sorted(state.partitions.items()):
            parts[part.meta.status.value] += 1
            if part.meta.updated_at:
                updated.append(part.meta.updated_at)
            if part.meta.last_error:
                errors.append(
                    {
                        "enclave_id": state.enclave_id,
                        "partition_id": pid,
                        **part.meta.last_error.model_dump(),
                    }
                )
    errors.sort(key=lambda e: e["occurred_at"], reverse=True)
    # Runs a git push started carry their origin (issue 15): the newest one applied names the
    # commit the enclaves are at.
    applied = next(
        (d for d in docs if d["status"] == "succeeded" and isinstance(d.get("origin"), dict)),
        None,
    )
    source = None
    if applied is not None:
        origin = applied["origin"]
        source = {
            "commit": str(origin.get("commit", "")),
            "ref": str(origin.get("ref", "")),
            "message": str(origin.get("message", "")),
            "run_id": applied["id"],
            "finished_at": applied.get("finished_at"),
        }
    return {
        "enclave_count": len(states),
        "partition_count": sum(parts.values()),
        "by_status": dict(Counter(s.meta.status.value for s in states)),
        "by_cloud": dict(by_cloud),
        "partitions_by_status": dict(parts),
        "error_count": len(errors),
        "errors": errors[:MAX_ERRORS],
        "runs_in_flight": [
            d for d in docs if d["status"] not in _FINAL_RUN and d["status"] != "awaiting_approval"
        ],
        "awaiting_approval": [d for d in docs if d["status"] == "awaiting_approval"],
        "recent_runs": docs[:MAX_RUNS],
        "last_reconciled_at": max(updated) if updated else None,
        "default_cloud": default_cloud,
        "drift": drift,
        "source": source,
    }


def register_dashboard(router: Router, service: Service) -> SessionAuth:
    """Add the dashboard's routes to ``router`` and let its session cookie reach the
    dashboard's routes (``SessionAuth`` wraps the router's authenticator). The session key is
    derived from the API token (``TokenAuth.derive_key``); an authenticator that cannot derive
    one gets a random key, so sessions then last as long as this process."""
    inner = router.auth
    if inner is None:
        raise RuntimeError("the dashboard needs the route table's authenticator")
    derive = getattr(inner, "derive_key", None)
    key = derive(KEY_PURPOSE) if callable(derive) else secrets.token_bytes(32)
    codec = SessionCodec(key)
    auth = SessionAuth(inner, codec)
    router.auth = auth
    assets = _Assets()
    store = service.store

    def page(request: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        found = assets.get("index.html")
        if found is None:  # a broken install: say so rather than serve nothing
            raise NotFound(
                "the dashboard's files are not installed (nclav/ui/static is package data: "
                "install nclav with pip)"
            )
        return _serve(request, found)

    def asset(request: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        name = params["asset"]
        found = assets.get(name) if ASSET_NAME.fullmatch(name) else None
        if found is None:
            raise NotFound(f"no dashboard asset {name!r}")
        return _serve(request, found)

    def login(request: ApiRequest, _p: dict[str, str], body: LoginBody) -> ApiResponse:
        # A cross-site HTML form cannot send this type without a CORS preflight.
        if not request.headers.get("content-type", "").lower().startswith("application/json"):
            raise BadRequest("send the token as JSON (Content-Type: application/json)")
        check = ApiRequest("GET", "/ui/login", headers={"Authorization": f"Bearer {body.token}"})
        try:
            inner.authenticate(check, "bearer")
        except Unauthorized:
            raise Unauthorized("the token is not this server's API token") from None
        session, value = codec.issue()
        doc = {"csrf_token": codec.csrf_token(session), "expires_at": session.expires_at}
        headers = {
            "Set-Cookie": set_cookie(request, value, codec.ttl_s),
            "Cache-Control": "no-store",
        }
        return json_response(200, doc, headers)

    def logout(request: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        headers = {"Set-Cookie": set_cookie(request, "", 0), "Cache-Control": "no-store"}
        return json_response(200, {"signed_out": True}, headers)

    def session_info(request: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        # Public, and 200 either way: the page asks on load whether to show the sign-in form
        # (a 401 would be a console error in every browser for the normal signed-out case).
        session = auth.session(request)
        doc: dict[str, Any] = {"signed_in": session is not None, "features": features()}
        if session is not None:
            doc |= {"csrf_token": codec.csrf_token(session), "expires_at": session.expires_at}
        return json_response(200, doc, {"Cache-Control": "no-store"})

    def features() -> dict[str, bool]:
        """Which optional routes this table serves, so the page offers only what works."""
        served = {(r.method, r.pattern) for r in router.routes}
        return {name: all(route in served for route in needs) for name, needs in FEATURES.items()}

    def overview(_r: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        doc = overview_json(
            store.list_enclaves(),
            [r.model_dump(mode="json") for r in store.list_runs(limit=100)],
            service.default_cloud.value,
            drift_counts(store),
        )
        return json_response(200, doc)

    router.add("GET", "/ui", page, summary="The web dashboard (HTML)", auth="none")
    router.add(
        "GET", "/ui/static/{asset}", asset, summary="A dashboard script or style", auth="none"
    )
    router.add(
        "POST",
        "/ui/login",
        login,
        summary="Exchange the API token for a dashboard session cookie",
        auth="none",
        request_model=LoginBody,
        max_body=4096,
    )
    router.add(
        "POST", "/ui/logout", logout, summary="Sign out: clear the session cookie", auth="none"
    )
    router.add(
        "GET",
        "/ui/session",
        session_info,
        summary="Whether the cookie holds a session; its CSRF token; the optional features",
        auth="none",
    )
    router.add("GET", "/ui/api/overview", overview, summary="The dashboard's overview counts")
    return auth


__all__ = ["CSP", "SECURITY_HEADERS", "overview_json", "register_dashboard"]
