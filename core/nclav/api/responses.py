"""What every nclav endpoint answers, as the OpenAPI document publishes it.

``NCLAV_API`` is what ``openapi`` adds to nclav's route table (its default). ``RESPONSES``
maps each route (method and pattern, exactly as ``build_router`` registers it) to the responses
it gives besides the common JSON error: each status with its media type and body schema. JSON
bodies are described by pydantic models, the records themselves where the body is their dump
(``Run``, ``StepRecord``, ``IacRun``, the YAML models inside an enclave's ``desired``), so a
field added to a record reaches the document without an edit here. The views of
``nclav.views`` are shaped by hand, so their models forbid unknown fields: a view that grows a
field without its model here fails the schemathesis suite against a live server (and
``tests/unit/test_openapi_responses.py``) instead of drifting silently.

Routes with bodies the router does not parse (bundles, Terraform state) list them in
``RAW_REQUESTS``, so clients and fuzzers know what to send; ``PATH_PARAMETERS`` and
``QUERY_PARAMETERS`` give each parameter's schema by name.

The table is kept apart from ``routes.py`` so that changing a handler and describing its answer
are separate edits; ``tests/unit/test_openapi_responses.py`` fails for a route with no entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, RootModel, TypeAdapter

from nclav.api.http import JSON_CONTENT_TYPE, REQUEST_ID_HEADER
from nclav.api.streams import SSE_TYPE, LogPage, RunEventsPage
from nclav.drift.views import DriftCheckQueued, DriftCounts, DriftList, DriftView
from nclav.engine.driver import Orphan
from nclav.model import Cloud, EnclaveConfig, ExportType, Id, PartitionConfig
from nclav.plan import Action, ChangeKind
from nclav.records import EventField, EventKind, IacRun, IacStatus, Run, StepRecord
from nclav.state import LastError, ResourceMeta, Status
from nclav.ui.models import LoggedIn, Overview, SessionInfo, SignedOut

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
GZIP_CONTENT_TYPE = "application/gzip"
RUN_STATUS_HEADER = "X-Nclav-Run-Status"

_VIEW = ConfigDict(extra="forbid", defer_build=True)


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented response: ``body`` is a pydantic model (JSON), a JSON schema for another
    media type, or None for a response without a body (204, or 200 with nothing to say)."""

    status: int
    description: str
    body: type[BaseModel] | Mapping[str, Any] | None = None
    media_type: str = JSON_CONTENT_TYPE
    # Response headers beyond X-Request-Id (which every response carries): name -> JSON schema.
    headers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RawBody:
    """A request body the handler reads itself (the router parses no model for it)."""

    media_type: str
    schema: Mapping[str, Any]
    required: bool = True
    description: str = ""


@dataclass(frozen=True, slots=True)
class ApiDescription:
    """What ``openapi`` adds to a route table: each route's responses (by method and pattern),
    the raw bodies some routes read, and the schema of each path and query parameter by name
    (a plain string when not listed)."""

    responses: Mapping[tuple[str, str], Sequence[Reply]] = field(default_factory=dict)
    raw_requests: Mapping[tuple[str, str], RawBody] = field(default_factory=dict)
    path_parameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    query_parameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Headers every response carries: name -> JSON schema.
    common_headers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


# -- health ---------------------------------------------------------------------------------


class Health(BaseModel):
    model_config = _VIEW
    status: Literal["ok"]


class Ready(BaseModel):
    model_config = _VIEW
    status: Literal["ready"]


# -- bundles, plans, runs -----------------------------------------------------------------


class BundleStored(BaseModel):
    """``POST /bundles``: the digest names the bundle's files, not the uploaded bytes."""

    model_config = _VIEW
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    files: int = Field(ge=0)
    bytes: int = Field(ge=0)
    created: bool


class SignedUpload(BaseModel):
    """``POST /bundles/uploads``: where to PUT the bundle, then what to POST."""

    model_config = _VIEW
    method: Literal["PUT"]
    url: str
    headers: dict[str, str]
    expires_in: int = Field(ge=0)
    complete: str


class BundleRef(BaseModel):
    model_config = _VIEW
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class PlannedChange(BaseModel):
    """``Change.to_json``: which id fields appear depends on the kind."""

    model_config = _VIEW
    kind: ChangeKind
    id: str | None = None
    enclave_id: str | None = None
    partition_id: str | None = None
    export_name: str | None = None
    importer_enclave: str | None = None
    alias: str | None = None
    reason: str | None = None
    conditional: bool | None = None


class PlannedStep(BaseModel):
    """``Step.to_json``."""

    model_config = _VIEW
    id: str
    action: Action
    enclave_id: str
    target: str | None
    depends_on: list[str]
    conditional: bool


class DryRun(BaseModel):
    """``POST /reconcile/dry-run``: the plan for a bundle against the applied state."""

    model_config = _VIEW
    bundle: str
    changes: list[PlannedChange]
    steps: list[PlannedStep]
    dry_run: Literal[True]
    errors: list[str]
    # The delete guard's view of this plan (a reconcile of it waits for approval when it
    # deletes more than max_deletes, or every applied enclave).
    deletions: list[str]
    deletes_every_enclave: int  # how many enclaves, when the plan deletes every one; else 0
    max_deletes: int


class RunAccepted(Run):
    """A started run (202), or a finished one (200) when ``?wait=`` saw it end."""

    run_id: str
    steps: list[StepRecord] | None = None


class NoChanges(BaseModel):
    """``POST /reconcile`` of a tree that changes nothing: no run is recorded."""

    model_config = _VIEW
    run: None
    run_id: None
    bundle: str
    changes: Literal[0]
    dry_run: Literal[False]
    message: str


class ReconcileAnswer(RootModel[RunAccepted | NoChanges]):
    """A run that finished within ``?wait=``, or "no changes" (no run recorded)."""


class RunWithSteps(Run):
    """``GET /runs/{run_id}``: the run and every step record."""

    steps: list[StepRecord]


class RunList(RootModel[list[Run]]):
    """Runs, newest first."""


# -- applied state views (nclav.views) ------------------------------------------------------


class DesiredEnclave(EnclaveConfig):
    """An enclave's applied config, with its partitions' configs in place of their ids."""

    partitions: tuple[PartitionConfig, ...] = ()  # type: ignore[assignment]


class PartitionView(BaseModel):
    model_config = _VIEW
    desired: PartitionConfig | None
    meta: ResourceMeta
    partition_handle: dict[str, JsonValue] | None
    resolved_outputs: dict[str, str]


class EnclaveView(BaseModel):
    """``views.enclave_json``: EnclaveState as the original served it (behaviour-spec 8.4)."""

    model_config = _VIEW
    enclave_id: str
    desired: DesiredEnclave | None
    enclave_handle: dict[str, JsonValue] | None
    export_handles: dict[str, dict[str, JsonValue]]
    import_handles: dict[str, dict[str, JsonValue]]
    meta: ResourceMeta
    resolved_cloud: Cloud | None
    context_vars: dict[str, str]
    partitions: dict[str, PartitionView]


class EnclaveList(RootModel[list[EnclaveView]]):
    """Every enclave's applied state."""


class PartitionNode(BaseModel):
    model_config = _VIEW
    id: str
    name: str
    produces: ExportType | None
    status: Status
    last_error: LastError | None


class ExportEdge(BaseModel):
    model_config = _VIEW
    export_name: str
    from_: str = Field(alias="from")
    type: ExportType


class EnclaveGraph(BaseModel):
    """``views.enclave_graph_json``."""

    model_config = _VIEW
    enclave: str
    nodes: list[PartitionNode]
    edges: list[ExportEdge]
    status: Status


class EnclaveNode(BaseModel):
    model_config = _VIEW
    id: str
    name: str
    cloud: Cloud | None
    status: Status
    created_at: str | None
    updated_at: str | None
    last_error: LastError | None
    partitions: list[PartitionNode]


class ImportEdge(BaseModel):
    model_config = _VIEW
    alias: str
    export: str
    from_: str = Field(alias="from")
    to: str
    partition: str | None = None


class SystemGraph(BaseModel):
    """``views.system_graph_json``: enclaves as nodes, imports as edges."""

    model_config = _VIEW
    nodes: list[EnclaveNode]
    edges: list[ImportEdge]


class StatusError(BaseModel):
    model_config = _VIEW
    enclave_id: str
    partition_id: str | None = None
    message: str
    occurred_at: str


class StatusView(BaseModel):
    """``views.status_json``."""

    model_config = _VIEW
    active_drivers: list[Cloud]
    # Messages in the runtime's dead-letter queues; null where it has none to count (local).
    dead_letters: int | None
    by_status: dict[Status, int]
    default_cloud: Cloud
    drift: DriftCounts
    enclave_count: int
    errors: list[StatusError]
    last_reconciled_at: str | None


class Event(BaseModel):
    """``AuditEvent.to_json``: the original's flat shape; a kind's own fields (``message``,
    ``export_name``, ``changes``, ``dry_run``, ...) sit beside the common ones."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, EventField]

    kind: EventKind
    id: str
    at: str
    seq: int
    enclave_id: str | None = None
    importer_enclave: str | None = None
    partition_id: str | None = None
    run_id: str | None = None


class EventList(RootModel[list[Event]]):
    """The newest audit events, oldest first."""


class UnscannedCloud(BaseModel):
    model_config = _VIEW
    cloud: Cloud
    error: str


class Orphans(BaseModel):
    """What every driver found that no partition owns, and the clouds that could not be asked."""

    model_config = _VIEW
    orphans: list[Orphan]
    unavailable: list[UnscannedCloud]


class IacRunList(RootModel[list[IacRun]]):
    """A partition's IaC runs, newest first."""


# -- Terraform HTTP state backend -------------------------------------------------------------

_OBJECT: Mapping[str, Any] = {"type": "object"}


class TerraformState(RootModel[dict[str, JsonValue]]):
    """A Terraform state document, stored and served byte for byte."""


class LockInfo(RootModel[dict[str, JsonValue]]):
    """Terraform's lock info (``ID``, ``Operation``, ``Who``, ...), as the holder sent it."""


# -- the git source (nclav.gitsource) ----------------------------------------------------------


class SourceView(BaseModel):
    """``GET``/``PUT /source``: the source's settings, the last commits seen and applied, what
    is pending, recent pushes and how to set the webhook up (never a credential)."""

    model_config = _VIEW
    configured: bool
    url: str | None
    branch: str
    path: str
    poll_s: float
    preview_branches: bool
    token: bool  # whether a token is stored (the token itself is never shown)
    statuses: bool  # whether commit statuses are reported
    last_seen: dict[str, JsonValue] | None
    applied: dict[str, JsonValue] | None
    pending: dict[str, JsonValue] | None
    pushes: list[dict[str, JsonValue]]
    rejected_deliveries: int
    webhook: dict[str, JsonValue]


class SourceSync(BaseModel):
    """``POST /source/sync``: the branch head and the run it started (none: nothing to do)."""

    model_config = _VIEW
    commit: str | None
    run_id: str | None
    status: str
    run: Run | None = None


class WebhookSecret(BaseModel):
    """``POST /source/webhook-secret``: the new secret (shown once; set it on the git host)."""

    model_config = _VIEW
    webhook_secret: str


class WebhookAnswer(BaseModel):
    """A push delivery's answer: accepted (202), ignored (202 with the reason), duplicate or
    ping (200)."""

    model_config = _VIEW
    status: str
    commit: str | None = None
    ref: str | None = None
    delivery: str | None = None


_WEBHOOK = (
    Reply(202, "Recorded and queued, or ignored (the answer says why)", WebhookAnswer),
    Reply(200, "A ping, or a delivery already seen", WebhookAnswer),
)


# -- the web dashboard -----------------------------------------------------------------------

HTML_CONTENT_TYPE = "text/html; charset=utf-8"
_NOT_MODIFIED = Reply(304, "The browser's copy (If-None-Match) is current")
_COOKIE: Mapping[str, Mapping[str, Any]] = {"Set-Cookie": {"type": "string"}}


# -- the table -------------------------------------------------------------------------------

_RUN_STARTED = (
    Reply(
        202,
        "The run was queued; poll GET /runs/{run_id}. X-Nclav-Wait-Capped: ?wait= was cut to "
        "this many seconds (the runtime's time limit)",
        RunAccepted,
    ),
    Reply(200, "The run finished within ?wait=", RunAccepted),
)
_STORED = Reply(200, "Done (no body)")
_HELD = Reply(409, "The state is locked by another holder: its lock info", LockInfo)
_STATE = "/terraform/state/{enc}/{part}"
_IAC = "/enclaves/{id}/partitions/{part}/iac/runs"
_DRIFT = "/enclaves/{id}/partitions/{part}/drift"

RESPONSES: Mapping[tuple[str, str], tuple[Reply, ...]] = {
    ("GET", "/health"): (Reply(200, "The server is up", Health),),
    ("GET", "/ready"): (Reply(200, "The state store answers", Ready),),
    ("GET", "/openapi.json"): (
        Reply(
            200,
            "This document",
            {"type": "object", "required": ["openapi", "info", "paths"]},
        ),
    ),
    ("POST", "/bundles"): (
        Reply(201, "A new bundle was stored", BundleStored),
        Reply(200, "The server already had this bundle", BundleStored),
    ),
    ("GET", "/bundles/{digest}"): (Reply(200, "The server has this bundle", BundleRef),),
    ("POST", "/bundles/uploads"): (
        Reply(
            200,
            "PUT the bundle to this URL with these headers (a 404 error: this server takes "
            "bundles directly at POST /bundles)",
            SignedUpload,
        ),
    ),
    ("POST", "/bundles/uploads/{digest}/complete"): (
        Reply(201, "The uploaded bundle was checked and stored", BundleStored),
        Reply(200, "The server already had this bundle", BundleStored),
    ),
    ("POST", "/reconcile/dry-run"): (Reply(200, "The plan", DryRun),),
    ("POST", "/reconcile"): (
        Reply(202, "The run was queued; poll GET /runs/{run_id}", RunAccepted),
        Reply(200, "The run finished within ?wait=, or no changes (no run)", ReconcileAnswer),
    ),
    ("GET", "/runs"): (Reply(200, "Runs, newest first", RunList),),
    ("GET", "/runs/{run_id}"): (Reply(200, "The run with its steps", RunWithSteps),),
    ("POST", "/runs/{run_id}/approve"): _RUN_STARTED,
    ("GET", "/source"): (Reply(200, "The git source", SourceView),),
    ("PUT", "/source"): (Reply(200, "The git source as set", SourceView),),
    ("POST", "/source/sync"): (
        Reply(202, "The run started for the branch head", SourceSync),
        Reply(200, "Nothing to do, or the run finished within ?wait=", SourceSync),
    ),
    ("POST", "/source/webhook-secret"): (Reply(200, "The new secret", WebhookSecret),),
    ("POST", "/webhooks/github"): _WEBHOOK,
    ("POST", "/webhooks/gitlab"): _WEBHOOK,
    ("POST", "/webhooks/git"): _WEBHOOK,
    ("POST", "/runs/{run_id}/retry"): _RUN_STARTED,
    ("POST", "/runs/{run_id}/cancel"): (Reply(200, "The cancelled run", RunAccepted),),
    ("GET", "/enclaves"): (Reply(200, "Every enclave's applied state", EnclaveList),),
    ("GET", "/enclaves/{id}"): (Reply(200, "The enclave's applied state", EnclaveView),),
    ("GET", "/enclaves/{id}/graph"): (Reply(200, "The enclave's graph", EnclaveGraph),),
    ("GET", "/graph"): (Reply(200, "The system graph", SystemGraph),),
    ("GET", "/status"): (Reply(200, "Counts, default cloud, drivers, errors", StatusView),),
    ("GET", "/events"): (Reply(200, "The newest audit events, oldest first", EventList),),
    ("GET", "/orphans"): (Reply(200, "What nclav made that no partition owns", Orphans),),
    ("DELETE", "/enclaves/{id}"): _RUN_STARTED,
    ("DELETE", "/enclaves/{id}/partitions/{part}"): _RUN_STARTED,
    ("GET", _IAC): (Reply(200, "IaC runs, newest first", IacRunList),),
    ("GET", _IAC + "/latest"): (Reply(200, "The newest IaC run", IacRun),),
    ("GET", _IAC + "/{run_id}"): (Reply(200, "The IaC run", IacRun),),
    ("GET", _IAC + "/{run_id}/log"): (
        Reply(
            200,
            "The log from ?offset= (at most ?limit= bytes); the headers say where to ask next "
            "and whether more may come. With Accept: application/json the same as a JSON page; "
            "with Accept: text/event-stream (where the runtime streams) server-sent events, "
            "one per chunk, id = byte offset",
            {"type": "string"},
            media_type=TEXT_CONTENT_TYPE,
            headers={
                RUN_STATUS_HEADER: {"type": "string", "enum": [s.value for s in IacStatus]},
                "X-Nclav-Next-Offset": {"type": "string", "pattern": "^[0-9]+$"},
                "X-Nclav-Complete": {"type": "string", "enum": ["true", "false"]},
            },
        ),
        Reply(200, "", LogPage),
        Reply(200, "", {"type": "string"}, media_type=SSE_TYPE),
    ),
    ("GET", "/runs/{run_id}/events"): (
        Reply(
            200,
            "The run's step transitions and audit events after ?after= as a JSON page; with "
            "Accept: text/event-stream (where the runtime streams) as server-sent events",
            RunEventsPage,
        ),
        Reply(200, "", {"type": "string"}, media_type=SSE_TYPE),
    ),
    ("GET", _STATE): (
        Reply(200, "The current state", TerraformState),
        Reply(204, "No state stored yet"),
    ),
    ("POST", _STATE): (_STORED, _HELD),
    ("DELETE", _STATE): (_STORED,),
    ("POST", _STATE + "/lock"): (
        Reply(200, "Locked (no body)"),
        Reply(423, "Already locked: the holder's lock info", LockInfo),
    ),
    ("DELETE", _STATE + "/lock"): (Reply(200, "Unlocked (no body)"), _HELD),
    ("GET", "/drift"): (Reply(200, "Every partition's drift and the counts", DriftList),),
    ("GET", _DRIFT): (Reply(200, "The partition's drift, with the plan text", DriftView),),
    ("POST", _DRIFT + "/check"): (
        Reply(202, "The check was queued; poll the partition's drift", DriftCheckQueued),
        Reply(200, "The check ended within ?wait=", DriftView),
    ),
    ("POST", _DRIFT + "/ack"): (Reply(200, "Acknowledged: the partition's drift", DriftView),),
    # the web dashboard (nclav.ui)
    ("GET", "/ui"): (
        Reply(200, "The dashboard page", {"type": "string"}, media_type=HTML_CONTENT_TYPE),
        _NOT_MODIFIED,
    ),
    ("GET", "/ui/static/{asset}"): (
        Reply(
            200,
            "A JavaScript module (text/javascript), the style sheet (text/css) or the icon "
            "(image/svg+xml)",
            {"type": "string"},
            media_type="*/*",
        ),
        _NOT_MODIFIED,
    ),
    ("POST", "/ui/login"): (
        Reply(200, "Signed in: Set-Cookie carries the session", LoggedIn, headers=_COOKIE),
    ),
    ("POST", "/ui/logout"): (
        Reply(200, "Signed out: Set-Cookie clears the session", SignedOut, headers=_COOKIE),
    ),
    ("GET", "/ui/session"): (Reply(200, "Whether signed in; the CSRF token", SessionInfo),),
    ("GET", "/ui/api/overview"): (Reply(200, "The dashboard's overview", Overview),),
}

RAW_REQUESTS: Mapping[tuple[str, str], RawBody] = {
    ("POST", "/bundles"): RawBody(
        GZIP_CONTENT_TYPE,
        {"type": "string", "format": "binary"},
        description="A tar.gz of the enclaves tree (what `nclav apply` packs)",
    ),
    ("POST", _STATE): RawBody(JSON_CONTENT_TYPE, _OBJECT, description="A Terraform state"),
    ("POST", _STATE + "/lock"): RawBody(
        JSON_CONTENT_TYPE, _OBJECT, description="Terraform's lock info"
    ),
    ("DELETE", _STATE + "/lock"): RawBody(
        JSON_CONTENT_TYPE,
        _OBJECT,
        required=False,
        description="The lock info that took the lock; no body forces the unlock",
    ),
}

# Path parameters by name: ids are the YAML's ids, run ids UUIDs, bundles sha256 digests.
_ID: Mapping[str, Any] = TypeAdapter(Id).json_schema()
PATH_PARAMETERS: Mapping[str, Mapping[str, Any]] = {
    "id": _ID,
    "part": _ID,
    "enc": _ID,
    "run_id": {"type": "string", "format": "uuid"},
    "digest": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    "asset": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}\\.(js|css|svg)$"},
}

# Query parameters by name (every route that takes one reads it the same way). Sent as text,
# so a client or fuzzer knows what the server accepts; anything else is a 400.
QUERY_PARAMETERS: Mapping[str, Mapping[str, Any]] = {
    "wait": {"type": "number", "minimum": 0, "maximum": 3600},
    "limit": {"type": "integer", "minimum": 0},
    "offset": {"type": "integer", "minimum": 0},
    "after": {"type": "integer", "minimum": 0},
    "enclave_id": {"type": "string"},
    "enclave": _ID,
    "ID": {"type": "string"},
    "max_deletes": {"type": "integer", "minimum": 0},
    "allow_delete": {"type": "boolean"},
    "resources_only": {"type": "boolean"},
}

# Every response carries the request id it was logged under.
COMMON_HEADERS: Mapping[str, Mapping[str, Any]] = {
    REQUEST_ID_HEADER: {"type": "string"},
}

NCLAV_API = ApiDescription(
    responses=RESPONSES,
    raw_requests=RAW_REQUESTS,
    path_parameters=PATH_PARAMETERS,
    query_parameters=QUERY_PARAMETERS,
    common_headers=COMMON_HEADERS,
)

__all__ = [
    "COMMON_HEADERS",
    "GZIP_CONTENT_TYPE",
    "NCLAV_API",
    "PATH_PARAMETERS",
    "QUERY_PARAMETERS",
    "RAW_REQUESTS",
    "RESPONSES",
    "RUN_STATUS_HEADER",
    "TEXT_CONTENT_TYPE",
    "ApiDescription",
    "RawBody",
    "Reply",
]
