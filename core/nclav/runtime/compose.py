"""``compose``: the one place engine, service, router, bundles and IaC runner are built.

Every runtime builds its adapters (state store, work queue, blob store, drivers, clock) and its
API token, and hands them here with its ``Settings``; what comes back is the same object graph
on every runtime. The worker owner id is made here and given to both the engine and the
terraform runner, so a step's lease and its partition's mutex name the same worker.
"""

from __future__ import annotations

import logging
import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from nclav.records import new_id

logger = logging.getLogger(__name__)

RETRY_KIND = "retry_run"  # {"kind": "retry_run", "run_id": ...}: as POST /runs/{id}/retry

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nclav.api.http import Authenticator
    from nclav.api.router import Router
    from nclav.drift.options import DriftOptions
    from nclav.engine import Driver, Engine
    from nclav.gitsource.source import GitSource
    from nclav.iac.partition import PartitionIac
    from nclav.iac.sandbox import TimeLimit
    from nclav.model import Cloud
    from nclav.ports import BlobStore, Clock, SecretStore, StateStore, WorkQueue
    from nclav.runtime.settings import Settings
    from nclav.service import Bundles, Service


class Composition:
    """What ``compose`` built; the router (which needs the API token) on first use."""

    def __init__(
        self,
        owner: str,
        bundles: Bundles,
        iac: PartitionIac,
        engine: Engine,
        service: Service,
        router: Callable[[Composition], Router],
        git: Callable[[Service], GitSource | None] | None = None,
    ) -> None:
        self.owner, self.bundles, self.iac = owner, bundles, iac
        self.engine, self.service = engine, service
        self._router = router
        self._git = git
        self._git_lock = threading.Lock()
        # The git source's queue messages (a push to fetch, a preview to plan) are handled
        # by whichever worker receives them, like steps.
        from nclav.gitsource.settings import KINDS

        for kind in KINDS:
            engine.register_control(kind, self._git_message)

    @cached_property
    def router(self) -> Router:
        return self._router(self)

    @property
    def git(self) -> GitSource | None:
        """The git source (issue 15), built on first use; None when the runtime has none."""
        with self._git_lock:
            if "_git_source" not in self.__dict__:
                self.__dict__["_git_source"] = self._git(self.service) if self._git else None
            source: GitSource | None = self.__dict__["_git_source"]
            return source

    def _git_message(self, message: Mapping[str, Any]) -> None:
        source = self.git
        if source is None:
            logger.warning("%s message dropped: this runtime has no git source", message["kind"])
            return
        source.handle(dict(message))


class _LazyGit:
    """The git source as the routes see it: built on first use; a runtime whose builder
    returned None (its secret unreadable) answers 503 on the /source and /webhooks routes."""

    def __init__(self, source: Callable[[], GitSource | None]) -> None:
        self._source = source

    def __getattr__(self, name: str) -> Any:
        source = self._source()
        if source is None:
            from nclav.api.http import ServiceUnavailable

            raise ServiceUnavailable("the git source is off: see the server log")
        return getattr(source, name)


def install_notifier(
    queue: WorkQueue,
    environ: Mapping[str, str],
    secrets: Callable[[], SecretStore] | None,
    notify_url: str | None = None,
) -> None:
    """This process's notifications (``nclav.notify``): on when a target is configured."""
    from nclav import notify

    found = notify.notify_settings(notify_url, environ, secrets)
    notify.install(notify.Notifier(found, queue) if found.targets else None)


def _retry_run(engine: Engine, message: Mapping[str, Any]) -> None:
    """``{"kind": "retry_run", "run_id": ...}``: as ``POST /runs/{id}/retry``. A refusal
    (unknown run, not final, a newer run on its enclaves) is logged and the message
    acknowledged: sending it again would be refused again (a temporary store error raises,
    and the delivery policy delivers the message again)."""
    from nclav.errors import ConflictError, NotFoundError

    run_id = message.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        logger.warning("retry_run message without a run_id acknowledged: %r", dict(message))
        return
    try:
        run = engine.retry(run_id)
    except (NotFoundError, ConflictError) as exc:
        logger.warning("retry_run %s refused: %s", run_id, exc)
        return
    logger.info("retry_run %s: queued run %s (try %d)", run_id, run.id, run.attempt)


def new_owner() -> str:
    """A worker's id: one per process (runtime), in leases, mutexes and logs."""
    return f"worker-{new_id()[:8]}"


def compose(
    settings: Settings,
    *,
    store: StateStore,
    queue: WorkQueue,
    blobs: BlobStore,
    clock: Clock,
    drivers: Mapping[Cloud, Driver],
    token: str | Callable[[], str],
    owner: str | None = None,
    time_limit: TimeLimit | None = None,
    local_dirs: bool = False,
    bundle_cache_bytes: int | None = None,
    git: Callable[[Service], GitSource | None] | None = None,
    drift: DriftOptions | None = None,
    secrets: Callable[[], SecretStore] | None = None,
    notify_url: str | None = None,
    auth: Authenticator | None = None,
) -> Composition:
    """Build the runtime's core objects from its adapters.

    ``token`` is the API token, or a function that fetches it (called when the router first
    needs it; terraform never gets it: its state goes through the terraform runner's own
    loopback backend with a one-run credential). ``time_limit`` is given by a runtime whose
    workers are sandboxes with a hard time limit (Lambda): terraform is then held to the time
    an invocation has left (``PartitionIac.time_limited``). ``git`` builds the runtime's git
    source from the service (first used by the router or a git queue message). Notifications
    (``nclav.notify``) are installed for this process when ``notify_url`` (else
    ``NCLAV_NOTIFY_URL`` in ``settings.environ``) names a target; ``secrets`` keeps their
    signing secret. ``auth`` replaces the token check (a runtime whose token rotates).
    """
    from nclav.drift.options import DriftOptions
    from nclav.engine import Engine
    from nclav.iac.partition import PartitionIac
    from nclav.runtime.delivery import DeliveryPolicy
    from nclav.service import DEFAULT_BUNDLE_CACHE_BYTES, Bundles, Service

    install_notifier(queue, settings.environ, secrets, notify_url)
    owner = owner or new_owner()
    default_cloud = settings.default_cloud
    cache = DEFAULT_BUNDLE_CACHE_BYTES if bundle_cache_bytes is None else bundle_cache_bytes
    bundles = Bundles(blobs, default_cloud, cache_bytes=cache)
    # The one construction of core's terraform runner (its loopback state backend starts on
    # the first terraform run, so a worker that never runs terraform never starts it).
    iac = PartitionIac(
        store,
        blobs,
        clock,
        settings.workspaces,
        timeout_s=settings.iac_timeout_s,
        lease_s=settings.lease_s,
        owner=owner,
        time_limit=time_limit,
        check_timeout_s=(drift or DriftOptions()).timeout_s,
    )
    engine = Engine(
        store,
        queue,
        blobs,
        clock,
        drivers,
        default_cloud,
        iac,
        bundles.load,
        lease_s=settings.lease_s,
        max_attempts=settings.max_attempts,
        backoff_s=settings.backoff_s,
        owner=owner,
        max_deletes=settings.max_deletes,
        pending_s=DeliveryPolicy(
            settings.max_receives, settings.redelivery_backoff_s, settings.redelivery_max_s
        ).pending_s(),
    )
    engine.register_control(RETRY_KIND, lambda message: _retry_run(engine, message))
    service = Service(store, bundles, engine, drivers, default_cloud, local_dirs=local_dirs)

    def router(built: Composition) -> Router:
        from nclav.api.auth import TokenAuth
        from nclav.api.routes import build_router
        from nclav.iac.state_backend import TerraformStateBackend

        tf_state = TerraformStateBackend(store, blobs, clock)
        checker = auth or TokenAuth(token if isinstance(token, str) else token())
        # The git source is built by its first request (its webhook secret is a read from
        # the secret store): a cold API function answering GET /runs never builds it.
        git_source = None if built._git is None else _LazyGit(lambda: built.git)
        return build_router(service, tf_state, blobs, checker, git=cast("GitSource", git_source))

    built = Composition(owner, bundles, iac, engine, service, router, git)
    return built


__all__ = ["RETRY_KIND", "Composition", "compose", "install_notifier", "new_owner"]
