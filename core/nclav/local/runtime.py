"""The local runtime: the one place that names the local adapters; core's ``compose`` wires them.

``nclav serve --cloud local`` runs exactly the engine the cloud functions run, with SQLite (or
memory, ``--ephemeral``), an in-process queue with a worker pool, blobs and workspaces in
directories under ``~/.nclav``, and a threaded HTTP server. Terraform reaches its state through
``PartitionIac``'s loopback backend with a per-run credential, never through this server.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nclav.api.auth import load_or_create_token
from nclav.api.server import (
    DEFAULT_MAX_STREAMS,
    ApiServer,
    serve_bound,
    start_server,
    stop_server,
)
from nclav.drift import DriftOptions, DriftScheduler
from nclav.engine import LocalDriver
from nclav.engine.driver import TerraformHoldings
from nclav.errors import Issue, SpecError
from nclav.gitsource.fetch import GitFetcher
from nclav.gitsource.settings import GitSettings
from nclav.gitsource.source import TOKEN_SECRET, GitSource
from nclav.local.dir_blobs import DirectoryBlobStore
from nclav.local.file_secrets import FileSecretStore
from nclav.local.memory_store import InMemoryStateStore
from nclav.local.sqlite_store import SqliteStateStore
from nclav.local.thread_queue import ThreadWorkQueue
from nclav.model import Cloud
from nclav.ports import SystemClock
from nclav.runtime.compose import compose
from nclav.runtime.delivery import Delivery, DeliveryPolicy, Outcome, deliver
from nclav.runtime.drivers import drivers_for
from nclav.runtime.settings import Settings
from nclav.service import DEFAULT_BUNDLE_CACHE_BYTES

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.api.router import Router
    from nclav.engine import Driver, Engine, PartitionIac
    from nclav.ports import StateStore
    from nclav.service import Service

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalOptions:
    home: Path
    default_cloud: Cloud = Cloud.LOCAL
    enabled: tuple[Cloud, ...] = ()
    ephemeral: bool = False
    bind: str = "127.0.0.1"
    port: int = 8080
    workers: int = 4
    lease_s: float = 30.0
    sweep_every_s: float = 2.0
    iac_timeout_s: float = 1800.0
    max_attempts: int = 4
    backoff_s: float = 2.0
    bundle_cache_bytes: int = DEFAULT_BUNDLE_CACHE_BYTES
    max_deletes: int = 5  # the delete guard's limit per run (serve --max-deletes)
    # Deliveries of a step message and their backoff: the same policy as a cloud's worker.
    max_receives: int = 5
    redelivery_backoff_s: float = 1.0
    redelivery_max_s: float = 60.0
    # Per-cloud driver option values by cloud name (serve's --<cloud>-<option> flags).
    driver_options: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)
    # Webhook targets (comma-separated; None: NCLAV_NOTIFY_URL), see nclav.notify.
    notify_url: str | None = None
    max_streams: int = DEFAULT_MAX_STREAMS  # server-sent event streams open at once
    # -- the git source (issue 15): settings, and secrets given by flags or the environment
    git: GitSettings = field(default_factory=GitSettings)
    git_token: str | None = field(default=None, repr=False)
    git_webhook_secret: str | None = field(default=None, repr=False)
    rotate_webhook_secret: bool = False

    def settings(self, root: Path) -> Settings:
        """Core's settings for a runtime whose files live under ``root``."""
        return Settings(
            cloud=self.default_cloud.value,
            enable_clouds=tuple(c.value for c in self.enabled),
            workspaces=root / "workspaces",
            lease_s=self.lease_s,
            max_attempts=self.max_attempts,
            backoff_s=self.backoff_s,
            max_receives=self.max_receives,
            redelivery_backoff_s=self.redelivery_backoff_s,
            redelivery_max_s=self.redelivery_max_s,
            iac_timeout_s=self.iac_timeout_s,
            max_deletes=self.max_deletes,
            driver_options=self.driver_options,
            environ=dict(os.environ),  # NCLAV_NOTIFY_SECRET and the like, read where used
        )


@dataclass
class LocalRuntime:
    options: LocalOptions
    token: str
    store: StateStore = field(init=False)
    router: Router = field(init=False)
    engine: Engine = field(init=False)
    iac: PartitionIac = field(init=False)
    queue: ThreadWorkQueue = field(init=False)
    _scratch: str | None = field(init=False, default=None)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _threads: list[threading.Thread] = field(init=False, default_factory=list)
    _server: ApiServer | None = field(init=False, default=None)
    git: GitSource = field(init=False)
    webhook_secret_created: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        opts = self.options
        drivers: Mapping[Cloud, Driver] = drivers_for(
            opts.default_cloud, opts.enabled, opts.driver_options
        )
        if opts.ephemeral:
            self._scratch = tempfile.mkdtemp(prefix="nclav-ephemeral-")
            root = Path(self._scratch)
            self.store = InMemoryStateStore()
        else:
            root = opts.home
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.store = SqliteStateStore(root / "state.db")
        self.clock = SystemClock()
        drift_options = DriftOptions.from_env()
        blobs = DirectoryBlobStore(root / "blobs")
        if isinstance(drivers.get(Cloud.LOCAL), LocalDriver):  # it reports what nclav holds
            holdings = TerraformHoldings(self.store, blobs, root / "workspaces")
            drivers = {**drivers, Cloud.LOCAL: LocalDriver(holdings)}
        settings = opts.settings(root)
        self._policy = DeliveryPolicy(
            settings.max_receives, settings.redelivery_backoff_s, settings.redelivery_max_s
        )
        self.queue = ThreadWorkQueue(consume=self._deliver, workers=opts.workers)
        built = compose(
            settings,
            store=self.store,
            queue=self.queue,
            blobs=blobs,
            clock=self.clock,
            drivers=drivers,
            token=self.token,
            local_dirs=True,
            bundle_cache_bytes=opts.bundle_cache_bytes,
            git=lambda service: self._git_source(root, service, blobs),
            drift=drift_options,
            secrets=lambda: FileSecretStore(root / "secrets"),
            notify_url=opts.notify_url,
        )
        self.iac = built.iac
        self.engine = built.engine
        git = built.git
        assert git is not None  # the local runtime always has one (configured or not)
        self.git = git
        self.router = built.router
        self.drift = DriftScheduler(self.store, self.queue, drift_options, built.bundles.load)

    def _deliver(self, delivery: Delivery) -> Outcome:
        return deliver(self.engine, delivery, self._policy)

    def _git_source(self, root: Path, service: Service, blobs: DirectoryBlobStore) -> GitSource:
        """The git source: its token in a secret store, its webhook secret beside the token."""
        opts = self.options
        secrets = FileSecretStore(root / "secrets")
        if opts.git_token:
            secrets.put(TOKEN_SECRET, opts.git_token)
        secret_file = opts.home / "webhook-secret"
        secret, self.webhook_secret_created = load_or_create_token(
            secret_file, rotate=opts.rotate_webhook_secret, env_token=opts.git_webhook_secret
        )
        hint = (
            "from NCLAV_GIT_WEBHOOK_SECRET"
            if opts.git_webhook_secret
            else f"cat {secret_file}  (mode 0600; rotate: nclav source rotate-secret)"
        )

        def rotate() -> str:
            if opts.git_webhook_secret:
                raise SpecError(
                    [Issue("webhook secret", None, "", "set by NCLAV_GIT_WEBHOOK_SECRET")]
                )
            return load_or_create_token(secret_file, rotate=True)[0]

        return GitSource(
            opts.git,
            service,
            blobs,
            self.queue,
            secrets,
            GitFetcher(root / "git"),
            secret,
            rotate_secret=rotate,
            secret_hint=hint,
        )

    def start(self, server: ApiServer | None = None) -> str:
        """Bind (unless ``server`` was bound already, see ``bind_server``), start serving,
        resume unfinished work; return the base URL."""
        opts = self.options
        if server is None:
            self._server, thread = start_server(
                self.router, opts.bind, opts.port, max_streams=opts.max_streams
            )
        else:
            self._server, thread = server, serve_bound(server, self.router)
        self._threads.append(thread)
        host, port = str(self._server.server_address[0]), int(self._server.server_address[1])
        sweeper = threading.Thread(target=self._sweep_loop, name="nclav-sweeper", daemon=True)
        sweeper.start()
        self._threads.append(sweeper)
        # Steps a previous process left ready or running: its in-process queue is gone, so
        # every ready step's message is lost (window 0), whenever it was sent.
        self.engine.sweep(window_s=0)
        git = threading.Thread(target=self._git_loop, name="nclav-git", daemon=True)
        git.start()
        self._threads.append(git)
        return f"http://{host}:{port}"

    def _git_loop(self) -> None:
        """The git source's schedule: commit statuses of finished runs, the branch poll."""
        while not self._stop.wait(min(self.options.sweep_every_s, 1.0)):
            try:
                self.git.tick()
            except Exception:  # like the sweeper: a passing error must not end the loop
                logger.exception("git source tick failed")

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.options.sweep_every_s):
            try:
                self.engine.sweep()
            except Exception:  # the sweeper must outlive a passing store error
                logger.exception("sweep failed")
            try:
                self.drift.tick(self.clock.now())  # due drift checks, to the workers
            except Exception:
                logger.exception("drift schedule failed")

    def stop(self) -> None:
        """Let steps in flight finish, stop serving, close the store.

        Terraform's loopback state backend stops after the steps in flight: a terraform still
        running reads and writes its state through it.
        """
        self._stop.set()
        self.queue.close(drain=False, timeout=self.options.iac_timeout_s)
        self.iac.close()
        if self._server is not None:
            stop_server(self._server, self._threads[0])
        for thread in self._threads[1:]:  # the sweeper: it must not touch a closed store
            thread.join(timeout=30)
        self.git.close()
        close = getattr(self.store, "close", None)
        if callable(close):
            close()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)


__all__ = ["LocalOptions", "LocalRuntime", "drivers_for"]  # drivers_for: core's, re-exported
