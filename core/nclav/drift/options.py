"""The drift schedule's settings, from the server's environment and a partition's config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nclav.errors import Issue, SpecError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.model import PartitionConfig

DEFAULT_INTERVAL_S = 21_600.0  # six hours
DEFAULT_CONCURRENCY = 2
DEFAULT_TIMEOUT_S = 600.0
BUSY_RETRY_S = 60.0  # a check that found its partition busy is due again after about this


@dataclass(frozen=True)
class DriftOptions:
    """``interval_s``: between two checks of a partition (unless its config says otherwise);
    ``concurrency``: checks running at once, across the server; ``timeout_s``: one check's
    deadline (a check not reported back by then no longer counts against ``concurrency``);
    ``jitter``: each due time is spread by this fraction of the interval either way."""

    interval_s: float = DEFAULT_INTERVAL_S
    concurrency: int = DEFAULT_CONCURRENCY
    timeout_s: float = DEFAULT_TIMEOUT_S
    jitter: float = 0.1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DriftOptions:
        """``NCLAV_DRIFT_INTERVAL_S`` (seconds, > 0), ``NCLAV_DRIFT_CONCURRENCY`` (>= 1)."""
        env = os.environ if environ is None else environ
        return cls(
            interval_s=_number(env, "NCLAV_DRIFT_INTERVAL_S", DEFAULT_INTERVAL_S),
            concurrency=int(_number(env, "NCLAV_DRIFT_CONCURRENCY", DEFAULT_CONCURRENCY, 1)),
        )

    def interval_for(self, config: PartitionConfig | None) -> float | None:
        """The partition's interval in seconds; ``None`` when its checks are off."""
        if config is None or config.drift is None:
            return self.interval_s
        return config.drift.interval_s(self.interval_s)


def remediates(config: PartitionConfig | None) -> bool:
    return bool(config is not None and config.drift is not None and config.drift.remediate)


def _number(env: Mapping[str, str], name: str, default: float, minimum: float = 0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum or (minimum == 0 and value == 0) or value == float("inf"):
        bound = f"at least {minimum:g}" if minimum else "greater than 0"
        message = f"{name}={raw!r}: expected a number of seconds {bound}"
        if name.endswith("CONCURRENCY"):
            message = f"{name}={raw!r}: expected a whole number {bound}"
        raise SpecError([Issue(name, None, name, message)])
    if name.endswith("CONCURRENCY") and value != int(value):
        raise SpecError([Issue(name, None, name, f"{name}={raw!r}: expected a whole number")])
    return value


__all__ = [
    "BUSY_RETRY_S",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_INTERVAL_S",
    "DEFAULT_TIMEOUT_S",
    "DriftOptions",
    "remediates",
]
