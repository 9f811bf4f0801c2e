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
    from nclav.engine import Driver, Engine, PartitionIac
    from nclav.model import Cloud
    from nclav.ports import BlobStore, Clock, IacRunner, StateStore, WorkQueue
    from nclav.runtime.settings import Settings
    from nclav.service import Bundles, Service


class Composition:
    """What ``compose`` built; the router (which needs the API token) on first use."""

    def __init__(
        self,
        owner: str,
        bundles: Bundles,
        iac: IacRunner,
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
    api_base: str | None = None,
    wrap_iac: Callable[[Callable[[], PartitionIac]], IacRunner] | None = None,
    local_dirs: bool = False,
) -> Composition:
    """Build the runtime's core objects from its adapters.

    ``token`` is the API token, or a function that fetches it (called when the router or
    terraform first needs it). ``wrap_iac`` lets a runtime wrap the terraform runner (a time
    budget, workspaces kept in the blob store); it gets a function that builds core's runner
    on first use, so a worker that never runs terraform never builds it.
    """
    from nclav.engine import Engine
    from nclav.service import Bundles, Service

    owner = owner or new_owner()
    default_cloud = settings.default_cloud
    bundles = Bundles(blobs, default_cloud)

    def partition_iac() -> PartitionIac:
        # The one construction of core's terraform runner.
        from nclav.engine import PartitionIac

        return PartitionIac(
            store,
            blobs,
            clock,
            settings.workspaces,
            api_base=api_base,
            token=token if isinstance(token, str) else token(),
            timeout_s=settings.iac_timeout_s,
            lease_s=settings.lease_s,
            owner=owner,
        )

    iac: IacRunner = wrap_iac(partition_iac) if wrap_iac is not None else partition_iac()
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
