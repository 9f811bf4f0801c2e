"""``HostedRuntime``: the cloud-neutral half of a function runtime's bootstrap.

A cloud runtime (AWS Lambda, Cloud Functions, Azure Functions) subclasses it and writes only
its adapters: ``store``, ``queues``, ``blobs``, ``secrets``, the API ``token`` and, for
terraform in a time-limited sandbox, ``time_limit``. The rest is here: the clock, the driver
plugins, the delivery policy, the git source over the secret store, and ``compose``. Every
part is built on first use and kept (``Parts``): the step worker never fetches the API token,
``/health`` builds nothing. Keyword arguments replace a part (tests hand in a
``ManualClock``, local drivers, a store that fails on purpose).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nclav.runtime.parts import Parts

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nclav.api.router import Router
    from nclav.engine import Driver, Engine
    from nclav.gitsource.source import GitSource
    from nclav.iac.partition import PartitionIac
    from nclav.iac.sandbox import TimeLimit
    from nclav.model import Cloud
    from nclav.ports import BlobStore, Clock, SecretStore, StateStore, WorkQueue
    from nclav.runtime.compose import Composition
    from nclav.runtime.delivery import DeliveryPolicy
    from nclav.runtime.settings import Settings
    from nclav.service import Service


class HostedRuntime:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        drivers: Mapping[Cloud, Driver] | None = None,
        store: StateStore | None = None,
        **parts: Any,
    ) -> None:
        self.settings = settings
        given = {"clock": clock, "drivers": None if drivers is None else dict(drivers)}
        self._parts = Parts(store=store, **given, **parts)
        self._once = self._parts.once

    # -- the cloud's adapters --------------------------------------------------------------

    @property
    def store(self) -> StateStore:
        raise NotImplementedError

    @property
    def queues(self) -> WorkQueue:
        raise NotImplementedError

    @property
    def blobs(self) -> BlobStore:
        raise NotImplementedError

    @property
    def secrets(self) -> SecretStore:
        raise NotImplementedError

    @property
    def token(self) -> str:
        """The current API token (read when the router first checks a request)."""
        raise NotImplementedError

    def auth(self) -> Any:
        """The router's token check: ``token`` re-read on each request (it may rotate)."""
        from nclav.api.auth import RotatingTokenAuth

        return RotatingTokenAuth(lambda: self.token)

    @property
    def secret_hint(self) -> str:
        """Where an operator finds the git webhook secret, in the cloud's words."""
        return "the runtime's secret store"

    def time_limit(self) -> TimeLimit | None:
        """The sandbox's time limit for terraform (``nclav.iac.sandbox``); None: none."""
        return None

    # -- the cloud-neutral parts -----------------------------------------------------------

    @property
    def clock(self) -> Clock:
        from nclav.ports import SystemClock

        return self._once("clock", SystemClock)

    @property
    def drivers(self) -> dict[Cloud, Driver]:
        from nclav.runtime.drivers import drivers_for

        s = self.settings
        return self._once(
            "drivers",
            lambda: drivers_for(s.default_cloud, s.clouds[1:], s.driver_options or None, s.environ),
        )

    def set_time_left(self, time_left: Callable[[], float | None]) -> None:
        """The current invocation's time left, for the drivers: no cloud call starts that the
        invocation could not see through (the handlers set it per invocation)."""
        for driver in self.drivers.values():
            setter = getattr(driver, "set_time_left", None)
            if callable(setter):
                setter(time_left)

    @property
    def policy(self) -> DeliveryPolicy:
        from nclav.runtime.delivery import DeliveryPolicy

        s = self.settings
        return DeliveryPolicy(s.max_receives, s.redelivery_backoff_s, s.redelivery_max_s)

    @property
    def composition(self) -> Composition:
        def build() -> Composition:
            from nclav.drift.options import DriftOptions
            from nclav.runtime.compose import compose
            from nclav.runtime.git import git_builder

            git = git_builder(
                lambda: self.blobs,
                lambda: self.queues,
                lambda: self.secrets,
                lambda: self.secret_hint,
            )
            return compose(
                self.settings,
                store=self.store,
                queue=self.queues,
                blobs=self.blobs,
                clock=self.clock,
                drivers=self.drivers,
                token=lambda: self.token,
                time_limit=self.time_limit(),
                git=git,
                drift=DriftOptions.from_env(),
                secrets=lambda: self.secrets,
                auth=self.auth(),
            )

        return self._once("composition", build)

    @property
    def engine(self) -> Engine:
        return self.composition.engine

    @property
    def iac(self) -> PartitionIac:
        return self.composition.iac

    @property
    def router(self) -> Router:
        return self._once("router", lambda: self.composition.router)

    @property
    def service(self) -> Service:
        return self.composition.service

    @property
    def git(self) -> GitSource | None:
        """The git source (``nclav.runtime.git``); None when its webhook secret cannot be
        read or created (no /source or /webhooks routes)."""
        return self.composition.git

    def close(self) -> None:
        """Stop what the runtime started (the IaC runner's loopback state backend); a
        runtime that composed nothing has nothing to stop."""
        if self._parts.built("composition"):
            self.iac.close()


__all__ = ["HostedRuntime"]
