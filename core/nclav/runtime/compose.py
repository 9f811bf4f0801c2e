"""``compose``: the one place engine, service, router, bundles and IaC runner are built.

Every runtime builds its adapters (state store, work queue, blob store, drivers, clock) and its
API token, and hands them here with its ``Settings``; what comes back is the same object graph
on every runtime. The worker owner id is made here and given to both the engine and the
terraform runner, so a step's lease and its partition's mutex name the same worker.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from nclav.records import new_id

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nclav.api.router import Router
    from nclav.engine import Driver, Engine
    from nclav.iac.partition import PartitionIac
    from nclav.iac.sandbox import TimeLimit
    from nclav.model import Cloud
    from nclav.ports import BlobStore, Clock, StateStore, WorkQueue
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
        router: Callable[[], Router],
    ) -> None:
        self.owner, self.bundles, self.iac = owner, bundles, iac
        self.engine, self.service = engine, service
        self._router = router

    @cached_property
    def router(self) -> Router:
        return self._router()


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
) -> Composition:
    """Build the runtime's core objects from its adapters.

    ``token`` is the API token, or a function that fetches it (called when the router first
    needs it; terraform never gets it: its state goes through the terraform runner's own
    loopback backend with a one-run credential). ``time_limit`` is given by a runtime whose
    workers are sandboxes with a hard time limit (Lambda): terraform is then held to the time
    an invocation has left (``PartitionIac.time_limited``).
    """
    from nclav.engine import Engine
    from nclav.iac.partition import PartitionIac
    from nclav.runtime.delivery import DeliveryPolicy
    from nclav.service import DEFAULT_BUNDLE_CACHE_BYTES, Bundles, Service

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
        pending_s=DeliveryPolicy(
            settings.max_receives, settings.redelivery_backoff_s, settings.redelivery_max_s
        ).pending_s(),
    )
    service = Service(store, bundles, engine, drivers, default_cloud, local_dirs=local_dirs)

    def router() -> Router:
        from nclav.api.auth import TokenAuth
        from nclav.api.routes import build_router
        from nclav.iac.state_backend import TerraformStateBackend

        tf_state = TerraformStateBackend(store, blobs, clock)
        auth = TokenAuth(token if isinstance(token, str) else token())
        return build_router(service, tf_state, blobs, auth)

    return Composition(owner, bundles, iac, engine, service, router)


__all__ = ["Composition", "compose", "new_owner"]
