"""Commit statuses: the plan and the apply reported on the pushed commit.

GitHub: ``POST {api}/repos/{owner}/{repo}/statuses/{sha}`` with ``state`` (pending, success,
failure, error), ``context``, ``description`` (at most 140 characters) and ``target_url``.
GitLab: ``POST {api}/projects/{url-encoded path}/statuses/{sha}`` with ``state`` (pending,
running, success, failed, canceled), ``name``, ``description`` and ``target_url``.

Contexts are ``nclav/plan`` and ``nclav/apply``. A status that cannot be sent is logged (never
with the token) and dropped: reporting must not stop a reconcile.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from nclav.plan import Change

logger = logging.getLogger(__name__)

State = Literal["pending", "success", "failure"]
PLAN, APPLY = "nclav/plan", "nclav/apply"
_GITLAB_STATE = {"pending": "pending", "success": "success", "failure": "failed"}


def describe_changes(changes: list[Change]) -> str:
    """Terraform's summary line for a plan: "3 to add, 1 to change, 0 to destroy"."""
    add = change = destroy = 0
    for c in changes:
        kind = c.kind.value
        if kind.endswith(("Created", "Wired")) and not kind.endswith("Unwired"):
            add += 1
        elif kind.endswith("Updated"):
            change += 1
        else:
            destroy += 1
    return f"{add} to add, {change} to change, {destroy} to destroy"


def repository_path(url: str) -> str:
    """``owner/repo`` (or ``group/sub/project``) of a repository URL."""
    return urlsplit(url).path.strip("/").removesuffix(".git")


@dataclass
class StatusReporter:
    provider: str  # "github" or "gitlab"
    api_url: str
    repository_url: str
    token: str
    public_url: str | None = None
    timeout_s: float = 10.0

    def target(self, run_id: str | None) -> str | None:
        if not self.public_url or not run_id:
            return None
        return f"{self.public_url.rstrip('/')}/runs/{run_id}"

    def report(
        self, sha: str, context: str, state: State, description: str, run_id: str | None = None
    ) -> bool:
        """Send one status; return whether the host accepted it."""
        path = repository_path(self.repository_url)
        base = self.api_url.rstrip("/")
        body: dict[str, str] = {"description": description[:140]}
        target = self.target(run_id)
        if target:
            body["target_url"] = target
        headers = {"Content-Type": "application/json", "User-Agent": "nclav"}
        if self.provider == "github":
            url = f"{base}/repos/{path}/statuses/{sha}"
            body.update(state=state, context=context)
            headers.update(
                {
                    "Accept": "application/vnd.github+json",
                    "Authorization": f"Bearer {self.token}",
                    "X-GitHub-Api-Version": "2022-11-28",
                }
            )
        else:
            url = f"{base}/projects/{quote(path, safe='')}/statuses/{sha}"
            body.update(state=_GITLAB_STATE[state], name=context)
            headers["PRIVATE-TOKEN"] = self.token
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                response.read()
            return True
        except urllib.error.HTTPError as exc:
            logger.warning("commit status %s for %s refused: HTTP %s", context, sha, exc.code)
        except (OSError, ValueError) as exc:
            logger.warning("commit status %s for %s not sent: %s", context, sha, exc)
        return False


__all__ = ["APPLY", "PLAN", "State", "StatusReporter", "describe_changes", "repository_path"]
