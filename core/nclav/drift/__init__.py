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

from nclav.drift.analysis import drifted_resources, fingerprint
from nclav.drift.options import DriftOptions
from nclav.drift.schedule import DriftScheduler, check_message
from nclav.drift.worker import DRIFT_KIND, check_partition, handle_drift_check

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
