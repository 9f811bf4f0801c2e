"""The local runtime: the one place that names the local adapters and wires them together.

``nclav serve --cloud local`` runs exactly the engine the cloud functions run, with SQLite (or
memory, ``--ephemeral``), an in-process queue with a worker pool, blobs and workspaces in
directories under ``~/.nclav``, and a threaded HTTP server. Terraform reaches its state through
``PartitionIac``'s loopback backend with a per-run credential, never through this server.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nclav.api.auth import TokenAuth
from nclav.api.routes import build_router
from nclav.api.server import ApiServer, serve_bound, start_server, stop_server
from nclav.drift import DriftOptions, DriftScheduler
from nclav.engine import Engine, LocalDriver, PartitionIac
from nclav.engine.driver import TerraformHoldings
from nclav.errors import Issue, SpecError
from nclav.iac.state_backend import TerraformStateBackend
from nclav.local.dir_blobs import DirectoryBlobStore
from nclav.local.memory_store import InMemoryStateStore
from nclav.local.sqlite_store import SqliteStateStore
from nclav.local.thread_queue import ThreadWorkQueue
from nclav.model import Cloud
from nclav.ports import SystemClock
from nclav.service import DEFAULT_BUNDLE_CACHE_BYTES, Bundles, Service

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.api.router import Router
    from nclav.engine import Driver
    from nclav.ports import StateStore

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
    # Per-cloud driver settings by cloud name, e.g. serve's --aws-* flags under "aws".
    driver_options: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)


# Entry-point group of cloud drivers: ``<cloud> = "package.module:factory"``, where
# ``factory(options: Mapping[str, str | None]) -> Driver``. The core finds a cloud's driver
# through installed package metadata and never imports a cloud package by name.
DRIVER_GROUP = "nclav.drivers"


def drivers_for(
    default: Cloud,
    enabled: tuple[Cloud, ...],
    options: Mapping[str, Mapping[str, str | None]] | None = None,
) -> dict[Cloud, Driver]:
    """Every driver must be asked for: ``--cloud`` names the default, ``--enable-cloud`` more.

    ``options`` holds each cloud's settings by cloud name (``{"aws": {"org_unit_id": ...}}``),
    passed to its driver factory as they are.
    """
    out: dict[Cloud, Driver] = {}
    for cloud in dict.fromkeys((default, *enabled)):
        if cloud == Cloud.LOCAL:
            out[cloud] = LocalDriver()
        else:
            out[cloud] = _plugin_driver(cloud, (options or {}).get(cloud.value, {}))
    return out


def _plugin_driver(cloud: Cloud, options: Mapping[str, str | None]) -> Driver:
    from importlib.metadata import entry_points

    found = list(entry_points(group=DRIVER_GROUP, name=cloud.value))
    try:
        if not found:
            raise ImportError(f"no {cloud.value!r} entry point in group {DRIVER_GROUP}")
        factory = found[0].load()
    except ImportError as exc:
        message = (
            f"the {cloud.value} driver is not installed ({exc}); install nclav[{cloud.value}] "
            "or use --cloud local"
        )
        raise SpecError([Issue("--cloud", None, "cloud", message)]) from exc
    driver: Driver = factory(options)
    return driver


@dataclass
class LocalRuntime:
    options: LocalOptions
    token: str
    store: StateStore = field(init=False)
    router: Router = field(init=False)
    engine: Engine = field(init=False)
    queue: ThreadWorkQueue = field(init=False)
    _scratch: str | None = field(init=False, default=None)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _threads: list[threading.Thread] = field(init=False, default_factory=list)
    _server: ApiServer | None = field(init=False, default=None)

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
        clock = SystemClock()
        self.clock = clock
        drift_options = DriftOptions.from_env()
        blobs = DirectoryBlobStore(root / "blobs")
        if isinstance(drivers.get(Cloud.LOCAL), LocalDriver):  # it reports what nclav holds
            holdings = TerraformHoldings(self.store, blobs, root / "workspaces")
            drivers = {**drivers, Cloud.LOCAL: LocalDriver(holdings)}
        self.iac = PartitionIac(
            self.store,
            blobs,
            clock,
            root / "workspaces",
            timeout_s=opts.iac_timeout_s,
            lease_s=opts.lease_s,
            check_timeout_s=drift_options.timeout_s,
        )
        bundles = Bundles(blobs, opts.default_cloud, cache_bytes=opts.bundle_cache_bytes)
        self.queue = ThreadWorkQueue(self._handle, workers=opts.workers)
        self.engine = Engine(
            self.store,
            self.queue,
            blobs,
            clock,
            drivers,
            opts.default_cloud,
            self.iac,
            bundles.load,
            lease_s=opts.lease_s,
            max_attempts=opts.max_attempts,
            backoff_s=opts.backoff_s,
        )
        self.iac.owner = self.engine.owner
        self.drift = DriftScheduler(self.store, self.queue, drift_options, bundles.load)
        service = Service(
            self.store, bundles, self.engine, drivers, opts.default_cloud, local_dirs=True
        )
        tf_state = TerraformStateBackend(self.store, blobs, clock)
        self.router = build_router(service, tf_state, blobs, TokenAuth(self.token))

    def _handle(self, message: Mapping[str, str]) -> None:
        self.engine.handle(message)

    def start(self, server: ApiServer | None = None) -> str:
        """Bind (unless ``server`` was bound already, see ``bind_server``), start serving,
        resume unfinished work; return the base URL."""
        opts = self.options
        if server is None:
            self._server, thread = start_server(self.router, opts.bind, opts.port)
        else:
            self._server, thread = server, serve_bound(server, self.router)
        self._threads.append(thread)
        host, port = str(self._server.server_address[0]), int(self._server.server_address[1])
        sweeper = threading.Thread(target=self._sweep_loop, name="nclav-sweeper", daemon=True)
        sweeper.start()
        self._threads.append(sweeper)
        self.engine.sweep()  # steps a previous process left ready or running
        return f"http://{host}:{port}"

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
        close = getattr(self.store, "close", None)
        if callable(close):
            close()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)


__all__ = ["LocalOptions", "LocalRuntime", "drivers_for"]
