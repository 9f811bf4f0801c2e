"""The git source's routes, added to the shared route table by ``build_router``.

``/webhooks/*`` are the only routes without the bearer token: a delivery proves itself with
its signature (checked in constant time over the raw body) and is rate-limited per source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nclav.api.http import ApiRequest, ApiResponse, HttpError, json_response, query_number
from nclav.api.router import RequestBody

if TYPE_CHECKING:
    from nclav.api.router import Router
    from nclav.gitsource.source import GitSource

MAX_DELIVERY = 25 * 1024 * 1024  # GitHub caps webhook payloads at 25 MB
MAX_WAIT_S = 3600.0


class SourceBody(RequestBody):
    url: str
    branch: str | None = None
    path: str | None = None
    token: str | None = None  # goes to the secret store; never shown again


def _wait(request: ApiRequest) -> float:
    return query_number(request, "wait", default=0.0, maximum=MAX_WAIT_S)


def add_source_routes(router: Router, git: GitSource | None) -> None:
    """Register the source and webhook routes (none when the runtime has no git source)."""
    if git is None:
        return

    def get_source(_r: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        return json_response(200, git.describe())

    def put_source(_r: ApiRequest, _p: dict[str, str], body: SourceBody) -> ApiResponse:
        git.configure(body.url, body.branch, body.path)
        if body.token:
            git.set_token(body.token)
        return json_response(200, git.describe())

    def sync(request: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        from nclav.gitsource.fetch import GitError  # dulwich: only when a sync runs

        try:
            head, run = git.sync_now()
        except GitError as exc:  # the remote, not this server, failed: 502 with its reason
            raise HttpError(502, "git_remote", str(exc)) from exc
        doc: dict[str, Any] = {"commit": head, "run_id": run.id if run else None}
        if run is None:
            return json_response(200, {**doc, "status": "nothing to do"})
        run = git.service.wait(run.id, _wait(request))
        doc.update(status=run.status.value, run=run.model_dump(mode="json"))
        return json_response(200 if run.status.final else 202, doc)

    def rotate(_r: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        return json_response(200, {"webhook_secret": git.rotate()})

    router.add("GET", "/source", get_source, summary="The git source, last commits, pending")
    router.add(
        "PUT",
        "/source",
        put_source,
        summary="Set the git source (url, branch, path, token)",
        request_model=SourceBody,
    )
    router.add(
        "POST",
        "/source/sync",
        sync,
        summary="Fetch the branch head now and reconcile it (?wait=s)",
        status=202,
        query=("wait",),
    )
    router.add("POST", "/source/webhook-secret", rotate, summary="Replace the webhook secret")

    def webhook(scheme: str) -> Any:
        def handler(request: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
            return git.receive(scheme, request.headers, request.body, request.request_id)

        return handler

    for scheme, what in (
        ("github", "GitHub push webhook (X-Hub-Signature-256)"),
        ("gitlab", "GitLab push webhook (X-Gitlab-Token)"),
        ("git", "Push webhook of other hosts, GitHub's signature scheme"),
    ):
        router.add(
            "POST",
            f"/webhooks/{scheme}",
            webhook(scheme),
            summary=what,
            auth="none",
            max_body=MAX_DELIVERY,
            status=202,
        )


__all__ = ["SourceBody", "add_source_routes"]
