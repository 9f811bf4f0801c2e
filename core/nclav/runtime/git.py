"""The git source of a hosted runtime (issue 15): what every cloud's bootstrap would write.

``NCLAV_GIT_*`` settings; the git token and the webhook secret in the runtime's
``SecretStore`` (the webhook secret generated on first use, like the local server's);
fetched objects kept in the temporary directory while the sandbox lives. Several functions
(API, workers, schedule) each hold one, so the source is ``shared``. The local runtime keeps
its secrets in files instead (``nclav.local.runtime``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from nclav.errors import ConfigurationError, SpecError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nclav.gitsource.source import GitSource
    from nclav.ports import BlobStore, SecretStore, WorkQueue
    from nclav.service import Service

logger = logging.getLogger(__name__)


def hosted_git_source(
    service: Service,
    *,
    blobs: BlobStore,
    queue: WorkQueue,
    secrets: SecretStore,
    secret_hint: str,
    environ: Mapping[str, str] | None = None,
) -> GitSource | None:
    """The git source, or None (no /source or /webhooks routes) when its webhook secret can
    be neither read nor created (e.g. no permission on it): the rest of the API still serves.

    ``secret_hint`` names where an operator finds the webhook secret (the cloud's words).
    Raises ``ConfigurationError`` for invalid ``NCLAV_GIT_*`` settings.
    """
    from nclav.api.auth import generate_token
    from nclav.gitsource.fetch import GitFetcher
    from nclav.gitsource.settings import GitSettings
    from nclav.gitsource.source import WEBHOOK_SECRET, GitSource

    try:
        settings = GitSettings.from_env(os.environ if environ is None else environ)
    except SpecError as exc:
        raise ConfigurationError(f"the git source settings are invalid: {exc}") from exc
    try:
        secret = secrets.get(WEBHOOK_SECRET)
        if not secret:
            secret = generate_token()
            secrets.put(WEBHOOK_SECRET, secret)
    except Exception:
        logger.exception("the git source is off: its webhook secret cannot be read or created")
        return None

    def rotate() -> str:
        new = generate_token()
        secrets.put(WEBHOOK_SECRET, new)
        return new

    return GitSource(
        settings,
        service,
        blobs,
        queue,
        secrets,
        GitFetcher(Path(tempfile.gettempdir()) / "nclav-git"),
        secret.strip(),
        rotate_secret=rotate,
        secret_hint=secret_hint,
        shared=True,
        load_secret=lambda: secrets.get(WEBHOOK_SECRET),  # another sandbox may rotate it
    )


def git_builder(
    blobs: Callable[[], BlobStore],
    queue: Callable[[], WorkQueue],
    secrets: Callable[[], SecretStore],
    secret_hint: Callable[[], str],
) -> Callable[[Service], GitSource | None]:
    """``compose``'s ``git`` argument: ``hosted_git_source`` over parts built on first use
    (the hint too: a cloud's names it with ``nclav.gitsource.source``'s constant, an import
    a request without the git source should not pay)."""

    def build(service: Service) -> GitSource | None:
        return hosted_git_source(
            service, blobs=blobs(), queue=queue(), secrets=secrets(), secret_hint=secret_hint()
        )

    return build


__all__ = ["git_builder", "hosted_git_source"]
