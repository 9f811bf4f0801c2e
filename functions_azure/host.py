"""What the Functions host is configured to do, read where the host reads it: ``host.json``
beside ``function_app.py``, overridden by app settings ``AzureFunctionsJobHost__<path>``
(``__`` between the levels, e.g. ``AzureFunctionsJobHost__extensions__queues__batchSize``),
which is how the terraform app runs the same package with its own values.

Two of those values are core's business too, so they are checked, not assumed:

* ``extensions.queues.maxDequeueCount``: the host moves a message to ``<queue>-poison`` after
  that many failed deliveries. Core's delivery policy must give up first
  (``NCLAV_MAX_RECEIVES`` below it), so a step is recorded failed instead of vanishing
  into the poison queue (``check_policy``, called by every queue trigger).
* ``functionTimeout``: the host stops an execution then. Terraform is held to the time an
  execution has left (``functions_iac``), which is this timeout minus the time spent.
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nclav.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.runtime.settings import Settings

HOST_JSON = Path(__file__).with_name("host.json")
OVERRIDE = "AzureFunctionsJobHost__"
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.\d+)?$")


@cache
def _file(path: Path = HOST_JSON) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path}: cannot read the host configuration: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigurationError(f"{path}: expected a JSON object")
    return doc


def value(path: str, environ: Mapping[str, str] | None = None) -> Any:
    """The host's setting at dotted ``path`` (``extensions.queues.batchSize``): the app
    setting override if there is one, else host.json's value, else None."""
    env = os.environ if environ is None else environ
    override = env.get(OVERRIDE + path.replace(".", "__"))
    if override is not None:
        return override
    node: Any = _file()
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def timespan_s(text: object, name: str) -> float | None:
    """Seconds in a host.json timespan (``[d.]hh:mm:ss``); None for ``-1`` (unbounded)."""
    if str(text).strip() == "-1":
        return None
    found = _TIMESPAN.match(str(text).strip())
    if found is None:
        raise ConfigurationError(f"host.json {name}: expected [d.]hh:mm:ss, got {text!r}")
    days, hours, minutes, seconds = (int(g or 0) for g in found.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def max_dequeue_count(environ: Mapping[str, str] | None = None) -> int:
    raw = value("extensions.queues.maxDequeueCount", environ)
    return 5 if raw is None else int(raw)  # the host's default


def function_timeout_s(environ: Mapping[str, str] | None = None) -> float | None:
    """The execution time limit; None when unbounded (``-1``)."""
    raw = value("functionTimeout", environ)
    return 1800.0 if raw is None else timespan_s(raw, "functionTimeout")


def check_policy(settings: Settings) -> None:
    """``ConfigurationError`` unless core gives up on a message before the host poisons it."""
    limit = max_dequeue_count(settings.environ or None)
    if settings.max_receives >= limit:
        raise ConfigurationError(
            f"NCLAV_MAX_RECEIVES={settings.max_receives} must be below the host's "
            f"extensions.queues.maxDequeueCount={limit}: otherwise the host moves a message to "
            "<queue>-poison before nclav records its step failed"
        )


__all__ = [
    "HOST_JSON",
    "check_policy",
    "function_timeout_s",
    "max_dequeue_count",
    "timespan_s",
    "value",
]
