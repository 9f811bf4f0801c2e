"""Terraform inside a Lambda invocation: Lambda's words for core's sandbox time limit.

Everything cloud-neutral about running terraform in a short-lived sandbox (one deadline per
step, not starting with too little time left, workspaces kept in the blob store, breaking a
lock a stopped terraform left) is core's: ``nclav.iac.sandbox`` and ``nclav.iac.partition``.
Lambda supplies only the time an invocation has left (``context.get_remaining_time_in_millis``,
see ``iac_worker``) and how the limit and its alternative are worded here.

**The long-apply design.** Lambda stops a function 15 minutes after it starts at the latest.
Terraform is not started with less than ``NCLAV_IAC_MIN_REMAINING_S`` (default 120 s) left;
otherwise the step's deadline is the time left minus ``NCLAV_IAC_MARGIN_S`` (default 60 s),
shared by init, apply and output. A partition whose terraform needs more than about 13 minutes
is applied by ``nclav serve --cloud aws`` (the same engine and AWS driver, no time limit on a
step) on a long-running host such as an ECS/Fargate task or an EC2 instance. Nothing is handed
over automatically; the failed step, the partition's error and its IaC run log say which
partition needs it.

A Lambda sandbox that reached its limit is gone with its processes: there is no process group
left for recovery to stop (``nclav.iac.procs``), and none on another sandbox to find.
"""

from __future__ import annotations

from nclav.iac.sandbox import NotEnoughTimeError, OutOfTimeError, TimeLimit, workspace_blob

ALTERNATIVE = "nclav serve --cloud aws"

LambdaBudgetError = OutOfTimeError  # the name this runtime used before the move to core


def lambda_time_limit(min_remaining_s: float = 120.0, margin_s: float = 60.0) -> TimeLimit:
    return TimeLimit(
        min_remaining_s=min_remaining_s,
        margin_s=margin_s,
        where="this Lambda invocation",
        limit="Lambda's 15 minutes",
        min_setting="NCLAV_IAC_MIN_REMAINING_S",
        advice="Give the IaC function a 900 s timeout and a batch size of 1.",
        alternative=ALTERNATIVE,
    )


__all__ = [
    "ALTERNATIVE",
    "LambdaBudgetError",
    "NotEnoughTimeError",
    "lambda_time_limit",
    "workspace_blob",
]
