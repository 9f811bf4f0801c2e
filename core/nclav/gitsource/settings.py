"""The git source's settings: what ``nclav serve --git-*`` and ``NCLAV_GIT_*`` configure.

A deployment follows one source (repository, branch, path), because a reconcile's tree is the
whole desired state: two sources would delete each other's enclaves. The URL never carries
credentials: a token goes to the secret store (``NCLAV_GIT_TOKEN``), so no URL that is logged
or stored can leak it.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from nclav.errors import Issue, SpecError

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_BRANCH = "main"
DEFAULT_PATH = "enclaves"
DEFAULT_POLL_S = 300.0
PROVIDERS = ("github", "gitlab")
# A branch name git would accept, kept simple: no spaces, no "..", no control characters.
_BRANCH = re.compile(r"[A-Za-z0-9._/-]{1,200}")

# The git source's queue messages (``{"kind": ...}``): a pushed or polled head to fetch and
# reconcile, and a preview branch's commit to plan.
SYNC, PREVIEW = "sync_source", "preview_source"
KINDS = (SYNC, PREVIEW)


def _issue(field: str, message: str) -> SpecError:
    return SpecError([Issue("git source", None, field, message)])


def check_url(url: str, field: str = "url") -> str:
    """An http(s) repository URL without credentials, trailing slashes removed."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise _issue(field, f"expected an https:// repository URL, got {url!r}")
    if parts.username is not None or parts.password is not None:
        # The URL would end up in logs and the stored source: the token has its own setting.
        raise _issue(
            field, "the URL must not contain credentials; give the token as NCLAV_GIT_TOKEN"
        )
    if parts.query or parts.fragment:
        raise _issue(field, "the URL must not have a query or a fragment")
    return url.rstrip("/")


def check_branch(branch: str, field: str = "branch") -> str:
    branch = branch.strip().removeprefix("refs/heads/")
    if not _BRANCH.fullmatch(branch) or ".." in branch or branch.startswith(("/", "-")):
        raise _issue(field, f"expected a branch name such as 'main', got {branch!r}")
    return branch


def check_path(path: str, field: str = "path") -> str:
    """A relative path inside the repository ('.' for its root), normalised."""
    raw = path.strip() or "."
    norm = posixpath.normpath(raw)
    if raw.startswith("/") or norm == ".." or norm.startswith("../") or "\\" in raw:
        raise _issue(
            field, f"expected a path inside the repository such as 'enclaves', got {raw!r}"
        )
    return norm


def _flag(value: str | None, field: str) -> bool:
    if value is None or value.strip() == "":
        return False
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise _issue(field, f"expected true or false, got {value!r}")


def _seconds(value: str | None, field: str, default: float) -> float:
    if value is None or value.strip() == "":
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise _issue(field, f"expected a number of seconds, got {value!r}") from None
    if seconds < 0:
        raise _issue(field, "expected 0 (off) or a positive number of seconds")
    return seconds


@dataclass(frozen=True)
class GitSettings:
    """The source and how to talk to its host. ``url`` None: no source configured (yet)."""

    url: str | None = None
    branch: str = DEFAULT_BRANCH
    path: str = DEFAULT_PATH
    poll_s: float = DEFAULT_POLL_S  # 0 turns the poll off
    preview_branches: bool = False
    provider: str | None = None  # "github" / "gitlab" for commit statuses; guessed from the host
    api_url: str | None = None  # the host's API base (GitHub Enterprise, self-managed GitLab)
    public_url: str | None = None  # where people reach this server: statuses link the run
    webhook_rate: float = 10.0  # deliveries per second per source, after a burst of...
    webhook_burst: int = 100

    def __post_init__(self) -> None:
        if self.provider is not None and self.provider not in PROVIDERS:
            raise _issue("provider", f"expected one of {', '.join(PROVIDERS)}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GitSettings:
        """The ``NCLAV_GIT_*`` settings; bad values raise SpecError naming the variable."""

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        url = get("NCLAV_GIT_URL")
        provider = get("NCLAV_GIT_PROVIDER")
        if provider is not None and provider.lower() not in PROVIDERS:
            raise _issue("NCLAV_GIT_PROVIDER", f"expected one of {', '.join(PROVIDERS)}")
        api_url = get("NCLAV_GIT_API_URL")
        public_url = get("NCLAV_PUBLIC_URL")
        return cls(
            url=check_url(url, "NCLAV_GIT_URL") if url else None,
            branch=check_branch(get("NCLAV_GIT_BRANCH") or DEFAULT_BRANCH, "NCLAV_GIT_BRANCH"),
            path=check_path(get("NCLAV_GIT_PATH") or DEFAULT_PATH, "NCLAV_GIT_PATH"),
            poll_s=_seconds(get("NCLAV_GIT_POLL_S"), "NCLAV_GIT_POLL_S", DEFAULT_POLL_S),
            preview_branches=_flag(get("NCLAV_GIT_PREVIEW_BRANCHES"), "NCLAV_GIT_PREVIEW_BRANCHES"),
            provider=provider.lower() if provider else None,
            api_url=check_url(api_url, "NCLAV_GIT_API_URL") if api_url else None,
            public_url=check_url(public_url, "NCLAV_PUBLIC_URL") if public_url else None,
        )

    def with_source(self, url: str | None, branch: str | None, path: str | None) -> GitSettings:
        return replace(
            self,
            url=check_url(url) if url else self.url,
            branch=check_branch(branch) if branch else self.branch,
            path=check_path(path) if path is not None else self.path,
        )

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"

    def guessed_provider(self) -> str | None:
        if self.provider:
            return self.provider
        host = (urlsplit(self.url).hostname or "") if self.url else ""
        if host == "github.com" or host.endswith(".github.com"):
            return "github"
        if "gitlab" in host:
            return "gitlab"
        return None

    def status_api(self) -> str | None:
        """The API base commit statuses go to, or None when it cannot be known."""
        if self.api_url:
            return self.api_url
        provider = self.guessed_provider()
        if not self.url or provider is None:
            return None
        parts = urlsplit(self.url)
        if provider == "github":
            return "https://api.github.com"
        return f"{parts.scheme}://{parts.netloc}/api/v4"


__all__ = [
    "DEFAULT_BRANCH",
    "DEFAULT_PATH",
    "DEFAULT_POLL_S",
    "GitSettings",
    "check_branch",
    "check_path",
    "check_url",
]
