"""Drift detection: is what Terraform manages still what nclav last applied?

* ``analysis``: a refresh-only plan's ``resource_drift`` as ``ResourceDrift`` entries and the
  fingerprint that acknowledgements name;
* ``options``: the schedule's settings (``NCLAV_DRIFT_INTERVAL_S``, ``NCLAV_DRIFT_CONCURRENCY``)
  and a partition's own (``drift:`` in its config.yml);
* ``schedule``: which checks are due, sent as ``{"kind": "drift_check", ...}`` queue messages,
  jittered and at most ``concurrency`` at once;
* ``worker``: a queue worker's handling of such a message: the check, its record, the events,
  remediation;
* ``actions``: what the API and CLI do: list, check now, acknowledge.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nclav.drift.analysis import drifted_resources, fingerprint
    from nclav.drift.options import DriftOptions
    from nclav.drift.schedule import DriftScheduler, check_message
    from nclav.drift.worker import DRIFT_KIND, check_partition, handle_drift_check

# Each name from its module on first use: importing ``nclav.drift.options`` (every runtime's
# settings do) must not import the worker and the analysis with it (a cold start pays them).
_HOMES = {
    "DRIFT_KIND": "worker",
    "DriftOptions": "options",
    "DriftScheduler": "schedule",
    "check_message": "schedule",
    "check_partition": "worker",
    "drifted_resources": "analysis",
    "fingerprint": "analysis",
    "handle_drift_check": "worker",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DRIFT_KIND",
    "DriftOptions",
    "DriftScheduler",
    "check_message",
    "check_partition",
    "drifted_resources",
    "fingerprint",
    "handle_drift_check",
]
