"""A runtime's settings: every field is ``NCLAV_<FIELD>`` in the environment.

``Settings`` holds what every runtime shares (clouds, leases, retries, redelivery, terraform
workspaces). A cloud subclasses it with its resource names only (a table, a bucket, queue
URLs): a field without a default is required. ``from_env`` reads each field from its variable
(an explicit keyword argument wins over the environment) and names the variable of a missing
or malformed value in a ``ConfigurationError``. A driver's options are not fields: they are
read from the plugin's own declaration (``nclav.runtime.drivers``) when the driver is built.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from nclav.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.model import Cloud


@dataclass(frozen=True, kw_only=True)
class Settings:
    cloud: str = "local"  # the default cloud of enclaves that name none
    enable_clouds: tuple[str, ...] = ()  # more clouds' drivers, comma-separated
    workspaces: Path = Path("/tmp/nclav/workspaces")  # noqa: S108 - terraform working dirs
    lease_s: float = 120.0  # a step's lease, renewed while it runs
    max_attempts: int = 4  # attempts of a step that raised TemporaryError
    backoff_s: float = 2.0  # the engine's retry backoff base
    # Deliveries of one message before the step is recorded failed; keep it below the
    # queue's own dead-letter limit, so the failure is recorded before the message leaves.
    max_receives: int = 5
    redelivery_backoff_s: float = 5.0  # first redelivery delay, doubled each time
    redelivery_max_s: float = 900.0  # longest redelivery delay
    iac_timeout_s: float = 1800.0  # one terraform command at most
    max_deletes: int = 5  # deletions one reconcile may make without confirmation
    # The driver options given explicitly (flags) by cloud; a cloud not here reads its
    # NCLAV_<CLOUD>_<OPTION> variables from ``environ``.
    driver_options: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("max_attempts", "max_receives"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{env_var(name)}: expected at least 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **explicit: Any) -> Self:
        """Settings from ``environ`` (default: ``os.environ``); ``explicit`` values win."""
        source = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {"environ": source}
        missing: list[str] = []
        for f in dataclasses.fields(cls):
            if f.name in ("environ", "driver_options"):
                continue
            if f.name in explicit:
                values[f.name] = explicit[f.name]
                continue
            name = env_var(f.name)
            raw = source.get(name, "").strip()
            if not raw:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    missing.append(name)
                continue
            values[f.name] = _parse(name, raw, f.default)
        if missing:
            raise ConfigurationError(f"environment variables not set: {', '.join(missing)}")
        if "driver_options" in explicit:
            values["driver_options"] = explicit["driver_options"]
        return cls(**values)

    @property
    def default_cloud(self) -> Cloud:
        return self.clouds[0]

    @property
    def clouds(self) -> tuple[Cloud, ...]:
        """The default cloud first, then the enabled ones; ``ConfigurationError`` if unknown."""
        from nclav.model import Cloud

        out = []
        for name in dict.fromkeys((self.cloud, *self.enable_clouds)):
            try:
                out.append(Cloud(name))
            except ValueError:
                known = ", ".join(c.value for c in Cloud)
                raise ConfigurationError(f"unknown cloud {name!r}; expected {known}") from None
        return tuple(out)


@dataclass(frozen=True, kw_only=True)
class HostedSettings(Settings):
    """What every cloud's hosted runtime adds (``nclav.runtime.hosted``): a cloud subclasses
    it with its resource names."""

    blob_prefix: str = ""  # key prefix inside the bucket or container
    secret_prefix: str = "nclav-"  # the secrets' name prefix in the cloud's secret store
    token_secret: str = "api-token"  # the API token's secret name, under the secret prefix
    # terraform in a function (core's sandbox time limit in each cloud's words)
    iac_min_remaining_s: float = 120.0  # refuse to start terraform with less left
    iac_margin_s: float = 60.0  # kept back at the end to stop terraform cleanly


def env_var(name: str) -> str:
    return f"NCLAV_{name.upper()}"


def _parse(name: str, raw: str, default: object) -> object:
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, tuple):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if isinstance(default, Path):
        return Path(raw)
    if isinstance(default, int | float):
        try:
            number = float(raw)
        except ValueError:
            raise ConfigurationError(f"{name}: expected a number, got {raw!r}") from None
        if number < 0:
            raise ConfigurationError(f"{name}: expected a number >= 0, got {raw!r}")
        return int(number) if isinstance(default, int) else number
    return raw


__all__ = ["HostedSettings", "Settings", "env_var"]
