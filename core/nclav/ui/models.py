"""The dashboard's own JSON shapes (published in the OpenAPI document like every view)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nclav.records import Run

_VIEW = ConfigDict(extra="forbid", defer_build=True)


class LoginBody(BaseModel):
    """``POST /ui/login``: the API token, exchanged once for a session cookie."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)
    token: str = Field(min_length=1, max_length=1024)


class LoggedIn(BaseModel):
    """A new session: the CSRF token the page sends with each action, and its expiry."""

    model_config = _VIEW
    csrf_token: str
    expires_at: int = Field(description="Epoch seconds")


class SessionInfo(BaseModel):
    """``GET /ui/session``: whether the cookie holds a live session (then its CSRF token and
    expiry), and which optional routes (approvals, run events, drift) this server has."""

    model_config = _VIEW
    signed_in: bool
    csrf_token: str | None = None
    expires_at: int | None = Field(default=None, description="Epoch seconds")
    features: dict[str, bool]


class SignedOut(BaseModel):
    model_config = _VIEW
    signed_out: Literal[True]


class OverviewError(BaseModel):
    model_config = _VIEW
    enclave_id: str
    partition_id: str | None = None
    message: str
    occurred_at: str


class AppliedCommit(BaseModel):
    """The commit of the newest run a git push started that succeeded."""

    model_config = _VIEW
    commit: str
    ref: str
    message: str
    run_id: str
    finished_at: str | None


class Overview(BaseModel):
    """``GET /ui/api/overview``: the counts the dashboard's first page shows, small whatever
    the tree's size (errors capped at ``MAX_ERRORS``, runs at the newest ``MAX_RUNS``)."""

    model_config = _VIEW
    enclave_count: int
    partition_count: int
    by_status: dict[str, int]
    by_cloud: dict[str, int]
    partitions_by_status: dict[str, int]
    error_count: int
    errors: list[OverviewError]
    runs_in_flight: list[Run]
    awaiting_approval: list[Run]
    recent_runs: list[Run]
    last_reconciled_at: str | None
    default_cloud: str
    source: AppliedCommit | None = Field(
        default=None, description="The last commit applied from the git source, when one is"
    )
    drift: dict[str, int] | None = Field(
        default=None, description="Partitions by drift status; null where drift is not checked"
    )


__all__ = [
    "AppliedCommit",
    "LoggedIn",
    "LoginBody",
    "Overview",
    "OverviewError",
    "SessionInfo",
    "SignedOut",
]
