"""Terraform inside a function execution: Azure's words for core's sandbox time limit.

Everything cloud-neutral (one deadline per step, not starting with too little time left,
workspaces kept in the blob store) is core's: ``nclav.iac.sandbox``. Azure supplies the time
an execution has left, which the Python worker is not told: it is the host's
``functionTimeout`` (``functions_azure.host``) minus the time since the execution started
(``Execution``).

**Where terraform runs, and the long-apply design** (README.md, "The terraform worker"): the
IaC queue's function runs on Azure Functions on Container Apps, the same ``function_app`` in
an image with terraform (functions_azure/Dockerfile), scaled by KEDA on the IaC queue, with
``functionTimeout`` raised by app setting (``AzureFunctionsJobHost__functionTimeout``,
2 hours in infra/azure). Terraform is not started with less than ``NCLAV_IAC_MIN_REMAINING_S``
left; its deadline is the time left minus ``NCLAV_IAC_MARGIN_S``. A partition whose terraform
needs longer runs on ``nclav serve --cloud azure`` on a long-running host (a Container App
with a minimum of one replica, or a VM): the failed step and its IaC log say which.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from functions_azure.host import function_timeout_s

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.iac.sandbox import TimeLimit

ALTERNATIVE = "nclav serve --cloud azure"


def function_time_limit(min_remaining_s: float = 120.0, margin_s: float = 60.0) -> TimeLimit:
    # Imported here: nclav.iac (and what it imports) is the first request's, not the app's import.
    from nclav.iac.sandbox import TimeLimit

    return TimeLimit(
        min_remaining_s=min_remaining_s,
        margin_s=margin_s,
        where="this function execution",
        limit="the function app's functionTimeout",
        min_setting="NCLAV_IAC_MIN_REMAINING_S",
        advice=(
            "Run the IaC queue's function on Container Apps with a longer functionTimeout "
            "(AzureFunctionsJobHost__functionTimeout)."
        ),
        alternative=ALTERNATIVE,
    )


@dataclass(frozen=True)
class Execution:
    """One function execution's clock: started now, stopped by the host at its timeout."""

    timeout_s: float | None
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, environ: Mapping[str, str] | None = None) -> Execution:
        return cls(function_timeout_s(environ))

    def time_left_s(self) -> float | None:
        """Seconds until the host stops this execution; None when it never does."""
        if self.timeout_s is None:
            return None
        return max(self.timeout_s - (time.monotonic() - self.started), 0.0)


__all__ = ["ALTERNATIVE", "Execution", "function_time_limit"]
