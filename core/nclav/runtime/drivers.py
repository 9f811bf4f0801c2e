"""Cloud driver plugins: found by entry point, each declaring its options once.

A cloud package registers ``<cloud> = "package.module:PLUGIN"`` in the ``nclav.drivers``
entry-point group, where ``PLUGIN`` is a ``DriverPlugin``: its options (name, help, default)
and ``make_driver(values)``. From that one declaration ``nclav serve`` builds its
``--<cloud>-<option>`` flags and every runtime reads ``NCLAV_<CLOUD>_<OPTION>``; core never
imports a cloud package by name. The local driver is core's own and takes no options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nclav.errors import ConfigurationError, Issue, SpecError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nclav.engine import Driver
    from nclav.model import Cloud

GROUP = "nclav.drivers"


@dataclass(frozen=True, slots=True)
class DriverOption:
    name: str  # snake_case: flag --<cloud>-<name with dashes>, env NCLAV_<CLOUD>_<NAME>
    help: str
    default: str | None = None
    required: bool = False


@dataclass(frozen=True, slots=True)
class DriverPlugin:
    cloud: str
    options: tuple[DriverOption, ...]
    factory: Callable[[Mapping[str, str | None]], Driver]

    def make_driver(self, values: Mapping[str, str | None]) -> Driver:
        """The driver for ``values`` (option name -> value; missing or empty: the default)."""
        given = {k: v for k, v in values.items() if v}
        known = {o.name for o in self.options}
        issues = [
            Issue(flag(self.cloud, k), None, k, f"unknown {self.cloud} driver option")
            for k in given
            if k not in known
        ]
        issues += [
            Issue(
                flag(self.cloud, o.name),
                None,
                o.name,
                f"required with --cloud {self.cloud} (env {env_name(self.cloud, o.name)})",
            )
            for o in self.options
            if o.required and o.name not in given
        ]
        if issues:
            raise SpecError(issues)
        full = {o.name: given.get(o.name, o.default) for o in self.options}
        return self.factory(full)

    # Existing installs' metadata may name this object as the factory itself.
    __call__ = make_driver


def flag(cloud: str, option: str) -> str:
    return f"--{cloud}-{option.replace('_', '-')}"


def env_name(cloud: str, option: str) -> str:
    return f"NCLAV_{cloud.upper()}_{option.upper()}"


def installed() -> list[str]:
    """The clouds with a driver plugin installed (reads package metadata, imports nothing)."""
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group=GROUP)})


def plugin(cloud: str) -> DriverPlugin:
    """The installed plugin of ``cloud``; ``ConfigurationError`` naming the extra to install."""
    from importlib.metadata import entry_points

    found = list(entry_points(group=GROUP, name=cloud))
    try:
        if not found:
            raise ImportError(f"no {cloud!r} entry point in group {GROUP}")
        loaded = found[0].load()
    except ImportError as exc:
        raise ConfigurationError(
            f"the {cloud} driver is not installed ({exc}); install nclav[{cloud}] "
            "or use --cloud local"
        ) from exc
    if not isinstance(loaded, DriverPlugin):
        raise ConfigurationError(f"entry point {found[0].value} is not a DriverPlugin")
    return loaded


def options_from_env(
    cloud_plugin: DriverPlugin, environ: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    """The plugin's option values from ``NCLAV_<CLOUD>_<OPTION>`` (unset: None)."""
    source = os.environ if environ is None else environ
    return {
        o.name: source.get(env_name(cloud_plugin.cloud, o.name)) or None
        for o in cloud_plugin.options
    }


def drivers_for(
    default: Cloud,
    enabled: tuple[Cloud, ...] = (),
    options: Mapping[str, Mapping[str, str | None]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[Cloud, Driver]:
    """Every driver must be asked for: ``default`` and ``enabled``.

    A cloud's option values come from ``options[cloud]`` when given (flags), else from the
    environment (``NCLAV_<CLOUD>_<OPTION>``).
    """
    from nclav.engine import LocalDriver
    from nclav.model import Cloud

    out: dict[Cloud, Driver] = {}
    for cloud in dict.fromkeys((default, *enabled)):
        if cloud == Cloud.LOCAL:
            out[cloud] = LocalDriver()
            continue
        found = plugin(cloud.value)
        given = (options or {}).get(cloud.value)
        out[cloud] = found.make_driver(
            given if given is not None else options_from_env(found, environ)
        )
    return out


__all__ = [
    "GROUP",
    "DriverOption",
    "DriverPlugin",
    "drivers_for",
    "env_name",
    "flag",
    "installed",
    "options_from_env",
    "plugin",
]
