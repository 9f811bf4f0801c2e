"""A strict local fake of the Google REST APIs the GCP adapters call.

Google has no emulator for Resource Manager, Billing, Service Usage, Compute, IAM, Cloud DNS,
Cloud Asset or Secret Manager, so the GCP driver and the Secret Manager store are tested
against this HTTP server (127.0.0.1, threaded). It is strict where a mock would be lenient:
every request is checked against the discovery document of the API version the code calls
(the documents google-api-python-client ships, read here as data only): the HTTP method and
path must be a method of that version, every query parameter one of its parameters, and the
JSON body must fit the method's request schema field by field (names, types, enums). Anything
else is recorded as a violation and answered 400 ``INVALID_ARGUMENT`` as Google would, and
the ``serve_fake`` context manager fails the test at teardown if any was recorded. So a v1
field name sent to the v3 Resource Manager API fails the test, and so does a body POSTed to a
GET method. The fake's own answers are checked against the response schemas too (a fake that
answered v1 field names would make a v1-reading driver pass).

Each API is served under ``/<api>/`` (``endpoints()`` gives the base URLs), with the state the
adapters use: projects (v3: ``name = projects/<number>``, ``state`` ``ACTIVE`` |
``DELETE_REQUESTED``), billing links, enabled services, service accounts, IAM policies with
etags (projects, service accounts, Cloud Run services, Pub/Sub topics and subscriptions),
networks, subnetworks, addresses, forwarding rules, managed zones and record sets,
secrets and their versions, Cloud Asset search results. Creating what exists answers 409
``ALREADY_EXISTS`` (Compute: ``errors[0].reason == "alreadyExists"``). Long-running operations
follow a script (``script_operations("pending", "failed", ...)``, default done at once): a
pending one stays ``done: false`` (Compute: ``RUNNING``) for ``pending_polls`` reads, a failed
one ends with an ``error`` and leaves nothing created. ``fail_next(method_id, ...)`` makes the
next call of a method answer an error.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import googleapiclient

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

DOCUMENTS = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"
# The API versions the adapters call; a request to any other version is a violation.
VERSIONS = {
    "cloudresourcemanager": "v3",
    "cloudbilling": "v1",
    "serviceusage": "v1",
    "compute": "v1",
    "iam": "v1",
    "iamcredentials": "v1",
    "dns": "v1",
    "cloudasset": "v1",
    "secretmanager": "v1",
    "pubsub": "v1",
    "run": "v2",
}
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_SA_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_RRSET = ("name", "type", "ttl", "rrdatas")  # what a deletion must match exactly
_SECRET_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_GRPC_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


# -- discovery documents --------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    api: str
    id: str
    http: str
    template: str
    regex: re.Pattern[str]
    literal: int  # characters outside {vars}: the most specific template wins
    query: dict[str, dict[str, Any]]
    request: str | None
    response: str | None


def _compile(template: str) -> tuple[re.Pattern[str], int]:
    out, literal, pos = [], 0, 0
    for m in re.finditer(r"\{(\+?)([^}]+)\}", template):
        text = template[pos : m.start()]
        out.append(re.escape(text))
        literal += len(text)
        name = re.sub(r"\W", "_", m.group(2))
        out.append(f"(?P<{name}>.+)" if m.group(1) else f"(?P<{name}>[^/:]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    literal += len(template) - pos
    return re.compile("".join(out)), literal


class Discovery:
    """One API version's discovery document: its methods by path, its schemas."""

    def __init__(self, api: str, version: str) -> None:
        doc = json.loads((DOCUMENTS / f"{api}.{version}.json").read_text())
        self.api, self.version = api, version
        self.schemas: dict[str, Any] = doc["schemas"]
        self.global_params = set(doc.get("parameters", {}))
        self.methods: list[Method] = []
        self._walk(doc, doc.get("servicePath", ""))

    def _walk(self, resource: dict[str, Any], service_path: str) -> None:
        for spec in resource.get("methods", {}).values():
            template = service_path + spec.get("flatPath", spec["path"])
            regex, literal = _compile(template)
            params = spec.get("parameters", {})
            self.methods.append(
                Method(
                    api=self.api,
                    id=spec["id"],
                    http=spec["httpMethod"],
                    template=template,
                    regex=regex,
                    literal=literal,
                    query={k: v for k, v in params.items() if v.get("location") == "query"},
                    request=(spec.get("request") or {}).get("$ref"),
                    response=(spec.get("response") or {}).get("$ref"),
                )
            )
        for sub in resource.get("resources", {}).values():
            self._walk(sub, service_path)

    def match(self, http: str, path: str) -> tuple[Method, dict[str, str]] | None:
        found = [
            (m, match)
            for m in self.methods
            if m.http == http and (match := m.regex.fullmatch(path)) is not None
        ]
        if not found:
            return None
        method, match = max(found, key=lambda f: f[0].literal)
        return method, {k: unquote(v) for k, v in match.groupdict().items()}

    def check(self, ref: str, value: Any, where: str) -> list[str]:
        """What in ``value`` does not fit schema ``ref`` (unknown fields, wrong types, enums)."""
        errors: list[str] = []
        self._check({"$ref": ref}, value, where, errors)
        return errors

    def _check(self, schema: dict[str, Any], value: Any, where: str, errors: list[str]) -> None:
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        kind = schema.get("type")
        if kind == "any":
            return
        if kind == "object" or "properties" in schema:
            if not isinstance(value, dict):
                errors.append(f"{where}: expected an object, got {type(value).__name__}")
                return
            props: dict[str, Any] = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if key in props:
                    self._check(props[key], item, f"{where}.{key}", errors)
                elif extra is not None:
                    self._check(extra, item, f"{where}[{key!r}]", errors)
                else:
                    errors.append(
                        f"{where}: unknown field {key!r} in {schema.get('id', 'object')} "
                        f"({self.api} {self.version}; known: {', '.join(sorted(props))})"
                    )
        elif kind == "array":
            if not isinstance(value, list):
                errors.append(f"{where}: expected an array, got {type(value).__name__}")
                return
            for i, item in enumerate(value):
                self._check(schema.get("items", {}), item, f"{where}[{i}]", errors)
        elif kind == "string":
            if not isinstance(value, str):
                errors.append(f"{where}: expected a string, got {value!r}")
            elif "enum" in schema and value not in schema["enum"]:
                errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
        elif kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                errors.append(f"{where}: expected an integer, got {value!r}")
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                errors.append(f"{where}: expected a number, got {value!r}")
        elif kind == "boolean" and not isinstance(value, bool):
            errors.append(f"{where}: expected a boolean, got {value!r}")


# -- errors ---------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer in Google's JSON envelope."""

    def __init__(self, code: int, message: str, status: str | None = None, reason: str = ""):
        super().__init__(message)
        self.code, self.message = code, message
        self.status = status or _GRPC_STATUS.get(code, "UNKNOWN")
        self.reason = reason

    def body(self, api: str) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if api in ("compute", "dns"):  # the older envelope: errors[].reason
            reason = self.reason or {409: "alreadyExists", 404: "notFound"}.get(
                self.code, "invalid"
            )
            error["errors"] = [{"domain": "global", "reason": reason, "message": self.message}]
        else:
            error["status"] = self.status
        return {"error": error}


def _conflict(what: str) -> ApiError:
    return ApiError(409, f"The resource '{what}' already exists", "ALREADY_EXISTS")


def _missing(what: str) -> ApiError:
    return ApiError(404, f"The resource '{what}' was not found", "NOT_FOUND")


# -- state ----------------------------------------------------------------------------------------


@dataclass
class Operation:
    api: str
    name: str
    outcome: str  # done | pending | failed
    polls_left: int
    result: dict[str, Any] = field(default_factory=dict)
    target: str = ""
    project: str = ""
    region: str = ""
    on_done: Callable[[], None] | None = None


@dataclass
class Call:
    http: str
    api: str
    path: str
    method_id: str
    query: dict[str, list[str]]
    body: Any


class GcpApiFake:
    """The server and its state. ``violations`` lists every request that broke the rules."""

    def __init__(self, *, pending_polls: int = 2) -> None:
        self.discovery = {api: Discovery(api, v) for api, v in VERSIONS.items()}
        self.violations: list[str] = []
        self.calls: list[Call] = []
        self.pending_polls = pending_polls
        # True: a pending operation's resource appears only when it is done (a project being
        # created is not visible to GET, yet its id is taken: create answers 409).
        self.hide_pending = False
        self._creating: set[str] = set()
        self.lock = threading.RLock()
        self._numbers = itertools.count(100000000001)
        self._script: deque[str] = deque()
        self._failures: dict[str, deque[ApiError]] = {}
        self.operations: dict[str, Operation] = {}
        self.projects: dict[str, dict[str, Any]] = {}  # project id -> v3 Project
        self.billing: dict[str, str] = {}  # project id -> billingAccounts/...
        self.services: dict[str, set[str]] = {}
        self.service_accounts: dict[str, dict[str, Any]] = {}  # email -> ServiceAccount
        self.policies: dict[str, dict[str, Any]] = {}  # resource -> Policy
        self.compute: dict[str, dict[str, Any]] = {}  # selfLink path -> resource
        self.zones: dict[tuple[str, str], dict[str, Any]] = {}
        self.records: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}  # projects/p/subscriptions/s
        self.run_services: set[str] = set()  # projects/p/locations/r/services/s (IAM only)
        self.topics: set[str] = set()  # projects/p/topics/t (a partition's; IAM only)
        self.secrets: dict[str, dict[str, Any]] = {}  # projects/p/secrets/s -> Secret
        self.versions: dict[str, list[dict[str, Any]]] = {}
        self.assets: list[dict[str, Any]] = []  # Cloud Asset ResourceSearchResult + "scope"
        self.asset_page_size = 500
        self.tokens: list[dict[str, Any]] = []  # generateAccessToken requests granted
        self.psc_status = "ACCEPTED"  # pscConnectionStatus of new PSC forwarding rules
        self.server: ThreadingHTTPServer | None = None
        self._handlers = self._routes()

    # -- test controls -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def endpoint(self, api: str) -> str:
        """The base URL standing for ``https://<api>.googleapis.com/``."""
        return f"{self.url}/{api}/"

    def endpoints(self) -> dict[str, str]:
        return {api: self.endpoint(api) for api in VERSIONS}

    def script_operations(self, *outcomes: str) -> None:
        """The outcome of the next long-running operations, in order (then: done)."""
        assert all(o in ("done", "pending", "failed") for o in outcomes)
        self._script.extend(outcomes)

    def finish_operations(self) -> None:
        """Time passes: every pending operation is done (its deferred effect made)."""
        with self.lock:
            for op in self.operations.values():
                op.polls_left = 0
                self._op_json(op)

    def fail_next(self, method_id: str, code: int, message: str = "", status: str = "") -> None:
        """The next call of ``method_id`` (e.g. ``iam.projects.serviceAccounts.create``)
        answers this error instead."""
        error = ApiError(code, message or f"injected {code}", status or None)
        self._failures.setdefault(method_id, deque()).append(error)

    def add_project(self, project_id: str, state: str = "ACTIVE", **labels: str) -> None:
        with self.lock:
            self.projects[project_id] = self._project(project_id, "folders/1", project_id, labels)
            self.projects[project_id]["state"] = state

    def add_asset(
        self, scope: str, name: str, asset_type: str, labels: dict[str, str], project: str = ""
    ) -> None:
        self.assets.append(
            {
                "scope": scope,
                "name": name,
                "assetType": asset_type,
                "project": project or scope,
                "labels": labels,
            }
        )

    def called(self, method_id: str) -> list[Call]:
        return [c for c in self.calls if c.method_id == method_id]

    def assert_no_violations(self) -> None:
        assert self.violations == [], "requests the real API would refuse:\n" + "\n".join(
            self.violations
        )

    # -- server ------------------------------------------------------------------------------

    def start(self) -> GcpApiFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        status, payload = self.handle(request.command, request.path, raw)
        data = json.dumps(payload).encode() if payload is not None else b""
        request.send_response(status)
        request.send_header("Content-Type", "application/json; charset=UTF-8")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def handle(self, http: str, target: str, raw: bytes) -> tuple[int, Any]:
        """One request: checked against the discovery document, then served from the state."""
        parts = urlsplit(target)
        api, _, path = parts.path.lstrip("/").partition("/")
        query = parse_qs(parts.query, keep_blank_values=True)
        where = f"{http} {parts.path}"
        disc = self.discovery.get(api)
        if disc is None:
            return self._violation(api, f"{where}: no faked API {api!r}")
        found = disc.match(http, path)
        if found is None:
            return self._violation(
                api, f"{where}: no method of {api} {disc.version} has this HTTP method and path"
            )
        method, params = found
        problems = [
            f"{where}: unknown query parameter {k!r} of {method.id}"
            for k in query
            if k not in method.query and k not in disc.global_params
        ]
        for k, spec in method.query.items():
            if "enum" in spec:
                problems += [
                    f"{where}: {k}={v!r} is not one of {spec['enum']}"
                    for v in query.get(k, [])
                    if v not in spec["enum"]
                ]
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                problems.append(f"{where}: the body is not JSON")
        if body is not None and method.request is None and body != {}:
            problems.append(f"{where}: {method.id} takes no request body, got {body!r}")
        elif body is not None and method.request is not None:
            problems += disc.check(method.request, body, f"{where} body")
        with self.lock:
            self.calls.append(Call(http, api, path, method.id, query, body))
        if problems:
            return self._violation(api, *problems)
        injected = self._failures.get(method.id)
        if injected:
            return injected[0].code, injected.popleft().body(api)
        handler = self._handlers.get(method.id)
        if handler is None:
            return self._violation(api, f"{where}: {method.id} is valid but not faked")
        try:
            with self.lock:
                result = handler(params, {k: v[-1] for k, v in query.items()}, body or {})
        except ApiError as exc:
            return exc.code, exc.body(api)
        if method.response is not None and result is not None:
            for problem in disc.check(method.response, result, f"fake's answer to {where}"):
                self.violations.append(f"FAKE BUG: {problem}")
        return 200, result if result is not None else {}

    def _violation(self, api: str, *problems: str) -> tuple[int, Any]:
        with self.lock:
            self.violations.extend(problems)
        return 400, ApiError(400, "; ".join(problems), "INVALID_ARGUMENT").body(api)

    # -- long-running operations -------------------------------------------------------------

    def _operation(
        self,
        api: str,
        result: dict[str, Any],
        apply: Callable[[], None] | None = None,
        *,
        project: str = "",
        region: str = "",
        target: str = "",
    ) -> dict[str, Any]:
        """A new operation following the script; ``apply`` makes its effect (not on failure)."""
        outcome = self._script.popleft() if self._script else "done"
        number = next(self._numbers)
        if api == "compute":
            name = f"operation-{number}"
        elif api == "serviceusage":
            name = f"operations/acf.p2-{number}"
        else:
            name = f"operations/cp.{number}"
        deferred = outcome == "pending" and self.hide_pending
        if outcome != "failed" and apply is not None and not deferred:
            apply()  # the resource exists once the operation started
        op = Operation(
            api,
            name,
            outcome,
            self.pending_polls if outcome == "pending" else 0,
            result,
            target,
            project,
            region,
            apply if deferred else None,
        )
        self.operations[name] = op
        return self._op_json(op)

    def _op_json(self, op: Operation) -> dict[str, Any]:
        done = op.polls_left <= 0
        if done and op.on_done is not None:
            op.on_done()
            op.on_done = None
        if op.api == "compute":
            base = f"https://www.googleapis.com/compute/v1/projects/{op.project}"
            scope = f"/regions/{op.region}" if op.region else "/global"
            out: dict[str, Any] = {
                "kind": "compute#operation",
                "name": op.name,
                "status": "DONE" if done else "RUNNING",
                "targetLink": op.target,
                "selfLink": f"{base}{scope}/operations/{op.name}",
            }
            if op.region:
                out["region"] = f"{base}/regions/{op.region}"
            if done and op.outcome == "failed":
                out["error"] = {
                    "errors": [{"code": "QUOTA_EXCEEDED", "message": "Quota 'NETWORKS' exceeded"}]
                }
                out["httpErrorStatusCode"] = 403
            return out
        out = {"name": op.name, "done": done}
        if done and op.outcome == "failed":
            out["error"] = {"code": 9, "message": f"operation {op.name} failed (injected)"}
        elif done:
            out["response"] = op.result
        return out

    def _poll(self, name: str) -> dict[str, Any]:
        op = self.operations.get(name)
        if op is None:
            raise _missing(name)
        op.polls_left -= 1
        return self._op_json(op)

    # -- handlers ----------------------------------------------------------------------------

    def _routes(self) -> dict[str, Callable[[dict[str, str], dict[str, str], Any], Any]]:
        return {
            "cloudresourcemanager.projects.create": self._project_create,
            "cloudresourcemanager.projects.get": self._project_get,
            "cloudresourcemanager.projects.patch": self._project_patch,
            "cloudresourcemanager.projects.delete": self._project_delete,
            "cloudresourcemanager.projects.undelete": self._project_undelete,
            "cloudresourcemanager.operations.get": lambda p, q, b: self._poll(
                f"operations/{p['operationsId']}"
            ),
            "cloudresourcemanager.projects.getIamPolicy": lambda p, q, b: self._get_policy(
                f"projects/{self._project_of(p['projectsId'])['projectId']}"
            ),
            "cloudresourcemanager.projects.setIamPolicy": lambda p, q, b: self._set_policy(
                f"projects/{self._project_of(p['projectsId'])['projectId']}", b
            ),
            "cloudbilling.projects.updateBillingInfo": self._billing,
            "serviceusage.services.batchEnable": self._batch_enable,
            "serviceusage.operations.get": lambda p, q, b: self._poll(
                f"operations/{p['operationsId']}"
            ),
            "iam.projects.serviceAccounts.create": self._sa_create,
            "iam.projects.serviceAccounts.get": lambda p, q, b: self._sa(p["serviceAccountsId"]),
            "iam.projects.serviceAccounts.list": self._sa_list,
            "iam.projects.serviceAccounts.delete": self._sa_delete,
            "iam.projects.serviceAccounts.getIamPolicy": lambda p, q, b: self._get_policy(
                self._sa_resource(p)
            ),
            "iam.projects.serviceAccounts.setIamPolicy": lambda p, q, b: self._set_policy(
                self._sa_resource(p), b
            ),
            "iamcredentials.projects.serviceAccounts.generateAccessToken": self._token,
            "compute.networks.insert": self._insert("global/networks"),
            "compute.networks.get": self._get("global/networks", "network"),
            "compute.networks.delete": self._delete("global/networks", "network"),
            "compute.subnetworks.insert": self._insert("subnetworks"),
            "compute.subnetworks.get": self._get("subnetworks", "subnetwork"),
            "compute.addresses.insert": self._insert("addresses"),
            "compute.addresses.get": self._get("addresses", "address"),
            "compute.addresses.delete": self._delete("addresses", "address"),
            "compute.forwardingRules.insert": self._insert("forwardingRules"),
            "compute.forwardingRules.get": self._get("forwardingRules", "forwardingRule"),
            "compute.forwardingRules.delete": self._delete("forwardingRules", "forwardingRule"),
            "compute.globalOperations.get": lambda p, q, b: self._poll(p["operation"]),
            "compute.regionOperations.get": lambda p, q, b: self._poll(p["operation"]),
            "dns.managedZones.create": self._zone_create,
            "dns.managedZones.get": lambda p, q, b: self._zone(p),
            "dns.managedZones.delete": self._zone_delete,
            "dns.changes.create": self._dns_change,
            "dns.resourceRecordSets.list": self._rrsets,
            "cloudasset.searchAllResources": self._search,
            "run.projects.locations.services.getIamPolicy": lambda p, q, b: self._get_policy(
                self._run_service(p)
            ),
            "run.projects.locations.services.setIamPolicy": lambda p, q, b: self._set_policy(
                self._run_service(p), b
            ),
            "pubsub.projects.subscriptions.create": self._subscription_create,
            "pubsub.projects.subscriptions.get": self._subscription_get,
            "pubsub.projects.subscriptions.delete": self._subscription_delete,
            "pubsub.projects.subscriptions.getIamPolicy": lambda p, q, b: self._get_policy(
                self._subscription_get(p, q, b)["name"]
            ),
            "pubsub.projects.subscriptions.setIamPolicy": lambda p, q, b: self._set_policy(
                self._subscription_get(p, q, b)["name"], b
            ),
            "pubsub.projects.topics.getIamPolicy": lambda p, q, b: self._get_policy(self._topic(p)),
            "pubsub.projects.topics.setIamPolicy": lambda p, q, b: self._set_policy(
                self._topic(p), b
            ),
            "secretmanager.projects.secrets.create": self._secret_create,
            "secretmanager.projects.secrets.addVersion": self._secret_add,
            "secretmanager.projects.secrets.versions.access": self._secret_access,
            "secretmanager.projects.secrets.versions.disable": self._secret_disable,
            "secretmanager.projects.secrets.delete": self._secret_delete,
        }

    # Resource Manager v3 ------------------------------------------------------------------

    def _project(
        self, project_id: str, parent: str, display: str, labels: dict[str, str]
    ) -> dict[str, Any]:
        return {
            "name": f"projects/{next(self._numbers)}",
            "projectId": project_id,
            "displayName": display,
            "parent": parent,
            "labels": dict(labels),
            "state": "ACTIVE",
            "etag": "W/1",
            "createTime": "2026-01-01T00:00:00Z",
        }

    def _project_of(self, key: str, *, active: bool = False) -> dict[str, Any]:
        """By id or number; Google answers 403 (not 404) for a project it does not show.
        ``active``: a change inside the project, refused while it is pending deletion."""
        for project in self.projects.values():
            if key in (project["projectId"], project["name"].split("/")[1]):
                if active and project["state"] != "ACTIVE":
                    raise ApiError(
                        400, f"Project {key} is {project['state']}", "FAILED_PRECONDITION"
                    )
                return project
        raise ApiError(403, f"Permission denied on resource project {key} (or it may not exist)")

    def _project_create(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        pid, parent = body.get("projectId", ""), body.get("parent", "")
        if not _PROJECT_ID.fullmatch(pid):
            raise ApiError(400, f"field [project_id] has issue: invalid project id {pid!r}")
        if not re.fullmatch(r"(folders|organizations)/\d+", parent):
            raise ApiError(400, f"field [parent] has issue: {parent!r} is not a folder or org")
        if pid in self.projects or pid in self._creating:
            raise ApiError(409, "Requested entity already exists", "ALREADY_EXISTS")
        project = self._project(pid, parent, body.get("displayName", pid), body.get("labels", {}))
        self._creating.add(pid)

        def made() -> None:
            self.projects[pid] = project
            self._creating.discard(pid)

        answer = self._operation(
            "cloudresourcemanager",
            {"@type": "type.googleapis.com/google.cloud.resourcemanager.v3.Project", **project},
            made,
        )
        if answer.get("error"):
            self._creating.discard(pid)
        return answer

    def _project_get(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self._project_of(p["projectsId"])

    def _project_patch(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        project = self._project_of(p["projectsId"])
        mask = [f for f in q.get("updateMask", "").split(",") if f]
        if not mask:
            raise ApiError(400, "updateMask is required")
        for name in mask:
            if name not in ("labels", "displayName", "parent"):
                raise ApiError(400, f"updateMask: {name!r} cannot be updated")
            project[name] = body.get(name)
        return self._operation("cloudresourcemanager", dict(project))

    def _project_delete(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        project = self._project_of(p["projectsId"])
        if project["state"] != "ACTIVE":
            raise ApiError(400, "project is not active", "FAILED_PRECONDITION")
        project["state"] = "DELETE_REQUESTED"
        return self._operation("cloudresourcemanager", dict(project))

    def _project_undelete(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        project = self._project_of(p["projectsId"])
        if project["state"] != "DELETE_REQUESTED":
            raise ApiError(400, "project is not pending deletion", "FAILED_PRECONDITION")
        return self._operation(
            "cloudresourcemanager", dict(project), lambda: project.__setitem__("state", "ACTIVE")
        )

    # IAM policies (read-modify-write with etags) ----------------------------------------

    def _get_policy(self, resource: str) -> dict[str, Any]:
        return self.policies.setdefault(resource, {"version": 1, "etag": "BwE=", "bindings": []})

    def _set_policy(self, resource: str, body: Any) -> dict[str, Any]:
        current = self._get_policy(resource)
        policy = dict(body.get("policy") or {})
        if policy.get("etag") and policy["etag"] != current["etag"]:
            raise ApiError(409, "There were concurrent policy changes", "ABORTED")
        for binding in policy.get("bindings", []):
            for member in binding.get("members", []):
                email = member.split(":", 1)[-1]
                if member.startswith("serviceAccount:") and email not in self.service_accounts:
                    raise ApiError(400, f"Service account {email} does not exist.")
        tag = int(base64.b64decode(current["etag"]).hex() or "0", 16) + 1
        policy["etag"] = base64.b64encode(tag.to_bytes(4, "big")).decode()
        policy.setdefault("version", 1)
        self.policies[resource] = policy
        return policy

    # Billing, Service Usage ---------------------------------------------------------------

    def _billing(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        project = self._project_of(p["projectsId"], active=True)
        account = body.get("billingAccountName", "")
        if not re.fullmatch(r"billingAccounts/[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}", account):
            raise ApiError(400, f"billingAccountName {account!r} is malformed")
        self.billing[project["projectId"]] = account
        return {
            "name": f"projects/{project['projectId']}/billingInfo",
            "projectId": project["projectId"],
            "billingAccountName": account,
            "billingEnabled": True,
        }

    def _batch_enable(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        if p["v1Id"] != "projects":
            raise ApiError(400, f"parent {p['v1Id']}/{p['v1Id1']} is not a project")
        project = self._project_of(p["v1Id1"], active=True)
        ids = body.get("serviceIds", [])
        if not ids or len(ids) > 20:
            raise ApiError(400, f"serviceIds: 1 to 20 services per call, got {len(ids)}")
        enabled = self.services.setdefault(project["projectId"], set())
        return self._operation("serviceusage", {}, lambda: enabled.update(ids))

    # IAM service accounts, IAM credentials ----------------------------------------------

    def _sa_create(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        project = self._project_of(p["projectsId"], active=True)
        account = body.get("accountId", "")
        if not _SA_ID.fullmatch(account):
            raise ApiError(400, f"accountId {account!r} does not match ^[a-z][-a-z0-9]{{4,28}}…")
        email = f"{account}@{project['projectId']}.iam.gserviceaccount.com"
        if email in self.service_accounts:
            raise ApiError(409, f"Service account {account} already exists", "ALREADY_EXISTS")
        sa = {
            "name": f"projects/{project['projectId']}/serviceAccounts/{email}",
            "projectId": project["projectId"],
            "uniqueId": str(next(self._numbers)),
            "email": email,
            "displayName": (body.get("serviceAccount") or {}).get("displayName", ""),
            "description": (body.get("serviceAccount") or {}).get("description", ""),
        }
        self.service_accounts[email] = sa
        return sa

    def _sa(self, key: str) -> dict[str, Any]:
        for sa in self.service_accounts.values():
            if key in (sa["email"], sa["uniqueId"]):
                return sa
        raise _missing(f"serviceAccounts/{key}")

    def _sa_list(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        project = self._project_of(p["projectsId"])["projectId"]
        found = [sa for sa in self.service_accounts.values() if sa["projectId"] == project]
        start = int(q.get("pageToken") or 0)
        size = min(int(q.get("pageSize") or 100), self.asset_page_size)
        out: dict[str, Any] = {"accounts": found[start : start + size]}
        if start + size < len(found):
            out["nextPageToken"] = str(start + size)
        return out

    def _sa_resource(self, p: dict[str, str]) -> str:
        return f"serviceAccounts/{self._sa(p['serviceAccountsId'])['email']}"

    def _sa_delete(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        sa = self._sa(p["serviceAccountsId"])
        del self.service_accounts[sa["email"]]
        return {}

    def _token(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        if p["projectsId"] != "-":
            raise ApiError(400, "the project of a service account name must be '-'")
        sa = self._sa(p["serviceAccountsId"])
        if not body.get("scope"):
            raise ApiError(400, "scope is required")
        self.tokens.append({"email": sa["email"], **body})
        return {"accessToken": f"ya29.fake-{sa['email']}", "expireTime": "2026-01-01T01:00:00Z"}

    # Compute ------------------------------------------------------------------------------

    def _link(self, project: str, region: str | None, collection: str, name: str) -> str:
        scope = f"regions/{region}/{collection}" if region else collection
        return f"https://www.googleapis.com/compute/v1/projects/{project}/{scope}/{name}"

    def _insert(self, collection: str) -> Callable[[dict[str, str], dict[str, str], Any], Any]:
        def insert(p: dict[str, str], q: dict[str, str], body: Any) -> Any:
            project = self._project_of(p["project"], active=True)["projectId"]
            region = p.get("region")
            name = body.get("name", "")
            if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
                raise ApiError(400, f"Invalid value for field 'resource.name': {name!r}")
            link = self._link(project, region, collection, name)
            if link in self.compute:
                raise _conflict(link.split("/compute/v1/")[1])
            for ref in ("network", "subnetwork"):
                if ref in body and not self._resolve(body[ref]):
                    raise ApiError(
                        404, f"The resource '{body[ref]}' was not found", reason="notFound"
                    )
            kind = {"addresses": "address"}.get(collection, collection.rsplit("/", 1)[-1][:-1])
            resource = {**body, "kind": f"compute#{kind}"}
            resource.update(selfLink=link, id=str(next(self._numbers)))
            if region:
                resource["region"] = self._link(project, None, "regions", region)
            if collection == "forwardingRules" and "/serviceAttachments/" in body.get("target", ""):
                resource["pscConnectionStatus"] = self.psc_status
            if collection == "addresses":
                resource["address"] = f"10.0.0.{len(self.compute) % 250 + 2}"
                resource["status"] = "RESERVED"
            return self._operation(
                "compute",
                {},
                lambda: self.compute.__setitem__(link, resource),
                project=project,
                region=region or "",
                target=link,
            )

        return insert

    def _resolve(self, ref: str) -> dict[str, Any] | None:
        tail = ref.split("/compute/v1/")[-1].lstrip("/")
        return self.compute.get(f"https://www.googleapis.com/compute/v1/{tail}")

    def _get(self, collection: str, key: str) -> Callable[..., Any]:
        def get(p: dict[str, str], q: dict[str, str], body: Any) -> Any:
            link = self._link(p["project"], p.get("region"), collection, p[key])
            found = self.compute.get(link)
            if found is None:
                raise _missing(link.split("/compute/v1/")[1])
            return found

        return get

    def _delete(self, collection: str, key: str) -> Callable[..., Any]:
        def delete(p: dict[str, str], q: dict[str, str], body: Any) -> Any:
            link = self._link(p["project"], p.get("region"), collection, p[key])
            if link not in self.compute:
                raise _missing(link.split("/compute/v1/")[1])
            return self._operation(
                "compute",
                {},
                lambda: self.compute.pop(link),
                project=p["project"],
                region=p.get("region", ""),
                target=link,
            )

        return delete

    # Cloud DNS ----------------------------------------------------------------------------

    def _zone(self, p: dict[str, str]) -> dict[str, Any]:
        zone = self.zones.get((p["project"], p["managedZone"]))
        if zone is None:
            raise _missing(f"managedZones/{p['managedZone']}")
        return zone

    def _zone_create(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        project = self._project_of(p["project"], active=True)["projectId"]
        key = (project, body.get("name", ""))
        if key in self.zones:
            raise _conflict(f"managedZones/{key[1]}")
        if not str(body.get("dnsName", "")).endswith("."):
            raise ApiError(400, "Invalid value for 'entity.managedZone.dnsName'")
        networks = ((body.get("privateVisibilityConfig") or {}).get("networks")) or []
        if body.get("visibility") == "private" and not all(
            self._resolve(n.get("networkUrl", "")) for n in networks
        ):
            raise ApiError(400, "Invalid value for 'entity.managedZone.privateVisibilityConfig'")
        zone = {**body, "id": str(next(self._numbers)), "kind": "dns#managedZone"}
        self.zones[key] = zone
        self.records[key] = {}
        return zone

    def _zone_delete(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        self._zone(p)
        key = (p["project"], p["managedZone"])
        if self.records.get(key):
            raise ApiError(
                400, "The resource named 'zone' cannot be deleted because it is not empty"
            )
        del self.zones[key]
        return None

    def _dns_change(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        self._zone(p)
        records = self.records[(p["project"], p["managedZone"])]
        for rr in body.get("deletions", []):
            key = (rr["name"], rr["type"])
            stored = records.get(key) or {}
            if {k: stored.get(k) for k in _RRSET} != {k: rr.get(k) for k in _RRSET}:
                raise ApiError(
                    412, f"The resource record set {key} does not match", reason="conditionNotMet"
                )
        for rr in body.get("additions", []):
            key = (rr["name"], rr["type"])
            deleted = any((d["name"], d["type"]) == key for d in body.get("deletions", []))
            if key in records and not deleted:
                raise _conflict(f"entity.change.additions[{rr['name']}][{rr['type']}]")
        for rr in body.get("deletions", []):
            records.pop((rr["name"], rr["type"]), None)
        for rr in body.get("additions", []):
            records[(rr["name"], rr["type"])] = {**rr, "kind": "dns#resourceRecordSet"}
        return {**body, "id": str(next(self._numbers)), "status": "done", "kind": "dns#change"}

    def _rrsets(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        self._zone(p)
        found = [
            rr
            for rr in self.records[(p["project"], p["managedZone"])].values()
            if rr["name"] == q.get("name", rr["name"]) and rr["type"] == q.get("type", rr["type"])
        ]
        return {"kind": "dns#resourceRecordSetsListResponse", "rrsets": found}

    # Cloud Asset --------------------------------------------------------------------------

    def _search(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        scope = f"{p['v1Id']}/{p['v1Id1']}"
        terms = [t.strip() for t in q.get("query", "").split(" AND ") if t.strip()]
        wanted: list[tuple[str, str]] = []
        for term in terms:
            m = re.fullmatch(r"labels\.([\w-]+)[=:]\"?([^\"]*)\"?", term)
            if not m:
                raise ApiError(400, f"query term {term!r} is not faked")
            wanted.append((m.group(1), m.group(2)))
        hits = [
            {k: v for k, v in a.items() if k != "scope"}
            for a in self.assets
            if a["scope"] == scope and all(a["labels"].get(k) == v for k, v in wanted)
        ]
        start = int(q.get("pageToken") or 0)
        size = min(int(q.get("pageSize") or self.asset_page_size), self.asset_page_size)
        out: dict[str, Any] = {"results": hits[start : start + size]}
        if start + size < len(hits):
            out["nextPageToken"] = str(start + size)
        return out

    # Cloud Run ----------------------------------------------------------------------------

    def _run_service(self, p: dict[str, str]) -> str:
        name = f"projects/{p['projectsId']}/locations/{p['locationsId']}/services/{p['servicesId']}"
        if name not in self.run_services:
            raise ApiError(404, f"Resource '{p['servicesId']}' of kind 'SERVICE' does not exist.")
        return name

    # Pub/Sub ------------------------------------------------------------------------------

    def _topic(self, p: dict[str, str]) -> str:
        name = f"projects/{p['projectsId']}/topics/{p['topicsId']}"
        if name not in self.topics:
            raise ApiError(404, "Resource not found (resource=" + p["topicsId"] + ").")
        return name

    def _subscription_create(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        name = f"projects/{p['projectsId']}/subscriptions/{p['subscriptionsId']}"
        if not re.fullmatch(
            r"projects/[^/]+/topics/[A-Za-z][\w.~+%-]{2,254}", body.get("topic", "")
        ):
            raise ApiError(400, f"Invalid resource name given (name={body.get('topic')!r})")
        if name in self.subscriptions:
            raise ApiError(409, "Resource already exists in the project", "ALREADY_EXISTS")
        self.subscriptions[name] = {**body, "name": name, "state": "ACTIVE"}
        return self.subscriptions[name]

    def _subscription_get(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        name = f"projects/{p['projectsId']}/subscriptions/{p['subscriptionsId']}"
        if name not in self.subscriptions:
            raise ApiError(404, "Resource not found", "NOT_FOUND")
        return self.subscriptions[name]

    def _subscription_delete(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        self._subscription_get(p, q, body)
        del self.subscriptions[f"projects/{p['projectsId']}/subscriptions/{p['subscriptionsId']}"]
        return {}

    # Secret Manager -----------------------------------------------------------------------

    def _secret_name(self, p: dict[str, str]) -> str:
        return f"projects/{p['projectsId']}/secrets/{p['secretsId']}"

    def _secret_create(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        secret_id = q.get("secretId", "")
        if not _SECRET_ID.fullmatch(secret_id):
            raise ApiError(400, f"secretId {secret_id!r} must match [a-zA-Z0-9_-]{{1,255}}")
        if not (body.get("replication") or {}):
            raise ApiError(400, "Secret.replication is required")
        name = f"projects/{p['projectsId']}/secrets/{secret_id}"
        if name in self.secrets:
            raise ApiError(409, f"Secret [{name}] already exists.", "ALREADY_EXISTS")
        self.secrets[name] = {**body, "name": name, "createTime": "2026-01-01T00:00:00Z"}
        self.versions[name] = []
        return self.secrets[name]

    def _secret_add(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        name = self._secret_name(p)
        if name not in self.secrets:
            raise ApiError(404, f"Secret [{name}] not found or has no versions.", "NOT_FOUND")
        data = (body.get("payload") or {}).get("data")
        if not data:
            raise ApiError(400, "payload.data is required")
        raw = base64.b64decode(data, validate=True)
        versions = self.versions[name]
        version = {"name": f"{name}/versions/{len(versions) + 1}", "state": "ENABLED"}
        versions.append({**version, "data": raw})
        return version

    def _version(self, p: dict[str, str]) -> dict[str, Any]:
        name = self._secret_name(p)
        versions = self.versions.get(name) or []
        if p["versionsId"] == "latest":
            found = versions[-1] if versions else None
        else:
            index = int(p["versionsId"]) - 1
            found = versions[index] if 0 <= index < len(versions) else None
        if name not in self.secrets or found is None:
            raise ApiError(404, f"Secret Version [{name}/versions/...] not found.", "NOT_FOUND")
        return found

    def _secret_access(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        found = self._version(p)
        if found["state"] != "ENABLED":
            raise ApiError(
                400,
                f"Secret Version [{found['name']}] is in DISABLED state.",
                "FAILED_PRECONDITION",
            )
        return {
            "name": found["name"],
            "payload": {"data": base64.b64encode(found["data"]).decode()},
        }

    def _secret_disable(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        found = self._version(p)
        found["state"] = "DISABLED"
        return {"name": found["name"], "state": "DISABLED"}

    def _secret_delete(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        name = self._secret_name(p)
        if self.secrets.pop(name, None) is None:
            raise _missing(name)
        self.versions.pop(name, None)
        return {}


def anonymous_session() -> Any:
    """google-auth's ``AuthorizedSession`` (what the adapters use) with no credentials."""
    from google.auth.credentials import AnonymousCredentials
    from google.auth.transport.requests import AuthorizedSession

    return AuthorizedSession(AnonymousCredentials())  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def serve_fake(**options: Any) -> Iterator[GcpApiFake]:
    """A running fake; at exit, the test fails if any request broke the discovery documents."""
    fake = GcpApiFake(**options).start()
    try:
        yield fake
    finally:
        fake.stop()
    fake.assert_no_violations()


__all__ = [
    "VERSIONS",
    "ApiError",
    "Discovery",
    "GcpApiFake",
    "anonymous_session",
    "serve_fake",
]
