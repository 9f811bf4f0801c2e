"""A strict local fake of Azure Resource Manager and Key Vault (the Azure driver, the secrets).

Neither ARM nor Key Vault has an emulator, so this fake stands in for both on one TLS port of
127.0.0.1. It is strict where a mock would be lenient: every request is checked against the
Azure REST API specifications of the api-versions nclav uses (the JSON specs of
``Azure/azure-rest-api-specs``, trimmed copies in tests/data/azure-specs, see its README):

- the path must match a path template of a spec (literal segments compared case-insensitively,
  as ARM does), the method must be one the template declares;
- ``api-version`` must be the version of that spec, every query parameter must be declared,
  required ones present, path parameters must match their ``pattern``/``enum``;
- a JSON body must satisfy the body schema: no unknown property, no read-only property, every
  required property present, types and enums as declared (``$ref``/``allOf`` resolved).

A request that breaks a rule is answered 400 (``InvalidRequestContent``) and recorded in
``violations``; the test fixtures assert the list is empty at teardown, so a wrong property name
or api-version fails the test that sent it even when the code under test swallowed the 400.

Behind the checks is a small in-memory cloud: subscription aliases (201 at once, or 202 with an
operation that finishes after ``lro_pending_polls`` polls, or 409 for an alias that exists),
management-group placement (``mg_move_conflicts`` 409s first), resource groups, provider
registration, user-assigned identities and federated credentials, role assignments (409
``RoleAssignmentExists`` for a second assignment of the same role to the same principal at the
same scope, under any name; ``principal_not_found`` 400s first, as while a new principal
replicates), VNets, private DNS zones, links and records, private endpoints (with their NIC and
IP), Resource Graph over the tags of everything stored (``graph_page_size`` rows a page, with
``$skipToken``), and Key Vault secrets with soft delete. Long-running operations answer with
``Azure-AsyncOperation`` (and ``Location``) headers; ``fail_next_lro(kind)`` makes the next one
of a resource type end ``Failed``.

Key Vault's challenge authentication is honoured: a request without a token is answered 401 with
a ``WWW-Authenticate: Bearer`` challenge naming the resource ``https://0.0.1:<port>`` (the
vault host minus its first label, as ``vault.azure.net`` is for ``<name>.vault.azure.net``, so
the SDK's check that a challenge's resource matches the vault's domain runs for real).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import re
import ssl
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

SPEC_DIR = Path(__file__).parent / "data" / "azure-specs"
ARM_TOKEN = "fake-arm-token"
KV_TOKEN = "fake-keyvault-token"
TENANT = "00000000-0000-0000-0000-0000000000aa"
Json = dict[str, Any]


# -- specs -----------------------------------------------------------------------------------


@dataclass
class Operation:
    method: str
    template: str
    api_version: str
    spec: Path
    op: Json
    regex: re.Pattern[str]
    names: list[str]  # path parameter names, in group order
    literals: int

    @property
    def operation_id(self) -> str:
        return str(self.op.get("operationId", ""))

    def params(self, where: str) -> list[Json]:
        return [p for p in self.op.get("parameters", []) if p.get("in") == where]


class Specs:
    """Every operation of the spec files under ``root``."""

    def __init__(self, root: Path = SPEC_DIR) -> None:
        self.root = root
        self.docs: dict[Path, Json] = {}
        self.operations: list[Operation] = []
        for path in sorted(root.rglob("*.json")):
            doc = json.loads(path.read_text())
            self.docs[path.resolve()] = doc
            version = doc["info"]["version"]
            for template, methods in doc.get("paths", {}).items():
                regex, names, literals = _template_regex(template, methods)
                for method, op in methods.items():
                    self.operations.append(
                        Operation(
                            method.upper(),
                            template,
                            version,
                            path.resolve(),
                            op,
                            regex,
                            names,
                            literals,
                        )
                    )
        # The most literal template first: .../virtualNetworkLinks/{x} before .../{type}/{x}.
        self.operations.sort(key=lambda o: -o.literals)

    def match(self, method: str, path: str) -> tuple[list[Operation], dict[str, str]]:
        """The operations whose template matches ``path`` (any method) and their parameters."""
        for op in self.operations:
            found = op.regex.fullmatch(path)
            if found:
                same = [o for o in self.operations if o.template == op.template]
                values = {n: unquote(v) for n, v in zip(op.names, found.groups(), strict=True)}
                return same, values
        return [], {}

    def resolve(self, schema: Json, base: Path) -> tuple[Json, Path]:
        while "$ref" in schema:
            ref = schema["$ref"]
            file_part, _, pointer = ref.partition("#")
            target = (base.parent / file_part).resolve() if file_part else base
            node: Any = self.docs[target]
            for part in pointer.strip("/").split("/"):
                node = node[part]
            schema, base = node, target
        return schema, base


def _template_regex(template: str, methods: Json) -> tuple[re.Pattern[str], list[str], int]:
    skip = {
        p["name"]
        for op in methods.values()
        for p in op.get("parameters", [])
        if p.get("in") == "path" and p.get("x-ms-skip-url-encoding")
    }
    empty = {
        p["name"]
        for op in methods.values()
        for p in op.get("parameters", [])
        if p.get("in") == "path" and p.get("x-nclav-may-be-empty")
    }
    names: list[str] = []
    parts = []
    literals = 0
    for segment in template.strip("/").split("/"):
        found = re.fullmatch(r"\{([^}]+)\}", segment)
        if found:
            names.append(found.group(1))
            parts.append(
                "(.+?)"
                if found.group(1) in skip
                else "([^/]*)"
                if found.group(1) in empty
                else "([^/]+)"
            )
        else:
            literals += 1
            parts.append("(?i:" + re.escape(segment) + ")")
    return re.compile("/" + "/".join(parts)), names, literals


def _props(specs: Specs, schema: Json, base: Path) -> tuple[dict[str, tuple[Json, Path]], set[str]]:
    """A schema's properties and required names, through ``allOf``."""
    schema, base = specs.resolve(schema, base)
    props = {k: (v, base) for k, v in schema.get("properties", {}).items()}
    required = set(schema.get("required", []))
    for part in schema.get("allOf", []):
        more, req = _props(specs, part, base)
        props = {**more, **props}
        required |= req
    return props, required


_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
    "array": list,
    "object": dict,
}


def validate(specs: Specs, schema: Json, base: Path, value: Any, where: str) -> list[str]:
    """Every way ``value`` breaks ``schema`` (empty when it conforms)."""
    if "x-nclav-trimmed-ref" in schema:
        return []  # a definition nclav never sends, left out of the trimmed spec
    schema, base = specs.resolve(schema, base)
    errors: list[str] = []
    kind = schema.get("type")
    props, required = _props(specs, schema, base)
    if kind is None and (props or schema.get("allOf")):
        kind = "object"
    if kind in _TYPES:
        wanted = _TYPES[kind]
        if (kind in ("integer", "number") and isinstance(value, bool)) or not isinstance(
            value, wanted
        ):
            return [f"{where}: expected {kind}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(specs, schema["items"], base, item, f"{where}[{i}]")
    if isinstance(value, dict) and kind == "object":
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                sub, sub_base = props[key]
                if sub.get("readOnly"):
                    errors.append(f"{where}.{key}: read-only property sent")
                else:
                    errors += validate(specs, sub, sub_base, item, f"{where}.{key}")
            elif isinstance(extra, dict):
                errors += validate(specs, extra, base, item, f"{where}.{key}")
            elif props or extra is False:
                errors.append(f"{where}.{key}: unknown property")
        errors += [f"{where}.{name}: required property missing" for name in required - set(value)]
    return errors


# -- the fake ----------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, code: str, message: str, inner: str | None = None) -> Reply:
    error: Json = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return Reply(status, {"error": error})


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


@dataclass
class _Op:
    resource: str  # lower-case resource id (or alias name)
    kind: str
    remaining: int
    error: Json | None = None
    status: str = "InProgress"
    done: Any = None  # callable run once when the operation succeeds


class AzureApiFake:
    """Start with ``with AzureApiFake() as fake:``; ``fake.url`` is ARM's and the vault's base."""

    def __init__(self, specs: Specs | None = None) -> None:
        self.specs = specs or Specs()
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="azure-fake-")
        self.ca_file = str(Path(self._tmp.name) / "ca.pem")
        self.reset()

    # -- knobs and state ---------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.violations: list[str] = []
            self.requests: list[tuple[str, str]] = []  # (method, path?query)
            self.alias_mode = "201"  # "201" | "202" | "409"
            self.lro_pending_polls = 0
            self.mg_move_conflicts = 0
            self.principal_not_found = 0
            self.provider_registering_polls = 0
            self.graph_page_size = 1000
            self.pe_connection_status = "Approved"  # a new endpoint's: or Pending / Rejected
            self.pe_states: dict[str, str] = {}  # endpoint id -> its connection's status
            self._fail: dict[str, Json] = {}
            self.aliases: dict[str, Json] = {}
            self.subscriptions: dict[str, Json] = {}
            self.providers: dict[tuple[str, str], list[Any]] = {}
            self.resources: dict[str, Json] = {}
            self.role_assignments: dict[str, Json] = {}
            self.ops: dict[str, _Op] = {}
            self.secrets: dict[str, Json] = {}
            self.deleted_secrets: dict[str, Json] = {}
            self._ip = 4

    def fail_next_lro(
        self, kind: str, code: str = "InternalServerError", message: str = ""
    ) -> None:
        """The next long-running operation on a resource whose type contains ``kind``
        (e.g. ``virtualNetworks``, ``aliases``) ends ``Failed`` with this error."""
        self._fail[kind.lower()] = {"code": code, "message": message or f"{kind} failed"}

    def seed_subscription(self, sub: str | None = None, *, registered: bool = True) -> str:
        sub = sub or str(uuid.uuid4())
        with self._lock:
            self.subscriptions[sub] = {"displayName": sub, "state": "Enabled", "mg": None}
            if registered:
                for ns in ("microsoft.network", "microsoft.managedidentity"):
                    self.providers[(sub, ns)] = ["Registered", 0]
        return sub

    def seed_alias(self, name: str, sub: str | None = None) -> str:
        """An alias (and its subscription) made earlier, by another run or by hand."""
        sub = self.seed_subscription(sub, registered=False)
        with self._lock:
            self.aliases[name.lower()] = {
                "name": name,
                "state": "Succeeded",
                "sub": sub,
                "body": {},
            }
        return sub

    def add_resource(
        self, resource_id: str, kind: str, tags: dict[str, str] | None = None, **extra: Any
    ) -> Json:
        """Something made outside the driver (by terraform): a private link service, a tagged
        storage account for the orphan scan."""
        doc = {
            "id": resource_id,
            "name": resource_id.rsplit("/", 1)[-1],
            "type": kind,
            "location": "eastus2",
            "tags": tags or {},
            "properties": {},
            **extra,
        }
        with self._lock:
            self.resources[resource_id.lower()] = doc
        return doc

    def resource(self, resource_id: str) -> Json | None:
        with self._lock:
            return self.resources.get(resource_id.lower())

    # -- server ------------------------------------------------------------------------------

    def __enter__(self) -> AzureApiFake:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        cert, key = _self_signed(Path(self._tmp.name))
        Path(self.ca_file).write_bytes(cert.read_bytes())
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                reply = fake.handle(self.command, self.path, dict(self.headers.items()), raw)
                data = b"" if reply.body is None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if data:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _serve

            def log_message(self, *_: Any) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._tmp.cleanup()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def transport(self) -> Any:
        """An azure-core transport that trusts this fake's certificate."""
        from azure.core.pipeline.transport import RequestsTransport

        return RequestsTransport(connection_verify=self.ca_file)

    # -- dispatch ----------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        with self._lock:
            self.requests.append((method, target))
            parts = urlsplit(target)
            path, query = parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))
            auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
            if path.startswith("/_ops/"):
                return self._op_status(path.rsplit("/", 1)[-1])
            vault = path.startswith(("/secrets", "/deletedsecrets"))
            if vault and not auth:
                challenge = (
                    f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
                    f'resource="https://0.0.1:{self.port}"'
                )
                return Reply(
                    401,
                    {"error": {"code": "Unauthorized", "message": "no token"}},
                    {"WWW-Authenticate": challenge},
                )
            if auth != f"Bearer {KV_TOKEN if vault else ARM_TOKEN}":
                return self._violation(401, f"{method} {path}: not authenticated ({auth[:20]!r})")
            ops, params = self.specs.match(method, path)
            op = next((o for o in ops if o.method == method), None)
            if op is None:
                what = "no spec path matches" if not ops else "method not in the spec"
                return self._violation(400 if not ops else 405, f"{method} {path}: {what}")
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                return self._violation(400, f"{method} {path}: body is not JSON")
            problems = self._check(op, params, query, body)
            if problems:
                return self._violation(
                    400, f"{method} {path} ({op.operation_id}): " + "; ".join(problems)
                )
            handler = getattr(self, f"_{op.operation_id}", None)
            if handler is None:
                return self._violation(501, f"the fake does not implement {op.operation_id}")
            try:
                reply: Reply = handler(params, query, body, path)
            except Exception as exc:  # a bug of the fake must fail the test, not hang it
                return self._violation(500, f"the fake failed on {method} {path}: {exc!r}")
            return reply

    def _violation(self, status: int, message: str) -> Reply:
        self.violations.append(message)
        return _error(status, "InvalidRequestContent", message)

    def _check(
        self, op: Operation, params: dict[str, str], query: dict[str, str], body: Any
    ) -> list[str]:
        problems = []
        given = query.get("api-version")
        if given != op.api_version:
            problems.append(f"api-version {given!r}, the spec is {op.api_version}")
        declared = {p["name"]: p for p in op.params("query")}
        problems += [f"undeclared query parameter {k!r}" for k in query if k not in declared]
        problems += [
            f"required query parameter {k!r} missing"
            for k, p in declared.items()
            if p.get("required") and k not in query
        ]
        for p in op.params("path"):
            value = params.get(p["name"], "")
            if "pattern" in p and not re.search(p["pattern"], value):
                problems.append(f"path parameter {p['name']}={value!r} breaks {p['pattern']}")
            if "enum" in p and value not in p["enum"]:
                problems.append(f"path parameter {p['name']}={value!r} not in {p['enum']}")
        body_params = op.params("body")
        if not body_params:
            if body is not None:
                problems.append("the operation takes no body")
        elif body is None:
            if body_params[0].get("required"):
                problems.append("required body missing")
        else:
            problems += validate(self.specs, body_params[0]["schema"], op.spec, body, "body")
        return problems

    # -- long-running operations -------------------------------------------------------------

    def _start_op(self, resource: str, kind: str, done: Any = None) -> str:
        match = next((k for k in self._fail if k in kind.lower()), None)
        failure = self._fail.pop(match) if match else None
        op_id = uuid.uuid4().hex
        self.ops[op_id] = _Op(resource.lower(), kind, self.lro_pending_polls, failure, done=done)
        return op_id

    def _op_headers(self, op_id: str, location: str | None = None) -> dict[str, str]:
        headers = {"Azure-AsyncOperation": f"{self.url}/_ops/{op_id}", "Retry-After": "1"}
        if location:
            headers["Location"] = location
        return headers

    def _pending_op(self, resource: str) -> str | None:
        for op_id, op in self.ops.items():
            if op.resource == resource.lower() and op.status == "InProgress":
                return op_id
        return None

    def _op_status(self, op_id: str) -> Reply:
        op = self.ops.get(op_id)
        if op is None:
            return _error(404, "NotFound", f"no operation {op_id}")
        if op.status == "InProgress":
            if op.remaining > 0:
                op.remaining -= 1
                return Reply(200, {"status": "InProgress"})
            op.status = "Failed" if op.error else "Succeeded"
            doc = self.resources.get(op.resource)
            if doc is not None:
                doc.setdefault("properties", {})["provisioningState"] = op.status
            if op.status == "Succeeded" and op.done:
                op.done()
        body: Json = {"status": op.status}
        if op.error:
            body["error"] = op.error
        return Reply(200, body)

    # -- subscriptions, aliases, management groups ------------------------------------------

    def _Alias_Create(self, p: Json, q: Json, body: Json, path: str) -> Reply:
        name = p["aliasName"]
        alias = self.aliases.get(name.lower())
        if alias is not None:
            if self.alias_mode == "409":
                return _error(409, "Conflict", f"alias {name} already exists")
            pending = self._pending_op(f"alias/{name}")
            if pending:
                return Reply(202, None, self._op_headers(pending, self._alias_url(name)))
            return Reply(200, self._alias_body(name))
        props = body.get("properties") or {}
        alias = {"name": name, "state": "Accepted", "sub": None, "body": props}
        self.aliases[name.lower()] = alias

        def created() -> None:
            alias["sub"] = self.seed_subscription(registered=False)
            self.subscriptions[alias["sub"]]["displayName"] = props.get("displayName", name)
            alias["state"] = "Succeeded"

        if self.alias_mode == "202":
            op_id = self._start_op(f"alias/{name}", "aliases", created)
            return Reply(202, None, self._op_headers(op_id, self._alias_url(name)))
        created()
        return Reply(201, self._alias_body(name))

    def _alias_url(self, name: str) -> str:
        return f"{self.url}/providers/Microsoft.Subscription/aliases/{name}?api-version=2021-10-01"

    def _alias_body(self, name: str) -> Json:
        alias = self.aliases[name.lower()]
        props: Json = {"provisioningState": alias["state"], "displayName": alias["name"]}
        if alias["sub"]:
            props["subscriptionId"] = alias["sub"]
        return {
            "id": f"/providers/Microsoft.Subscription/aliases/{alias['name']}",
            "name": alias["name"],
            "type": "Microsoft.Subscription/aliases",
            "properties": props,
        }

    def _Alias_Get(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        if p["aliasName"].lower() not in self.aliases:
            return _error(404, "NotFound", f"alias {p['aliasName']} not found")
        return Reply(200, self._alias_body(p["aliasName"]))

    def _Alias_Delete(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return Reply(200 if self.aliases.pop(p["aliasName"].lower(), None) else 204)

    def _Subscriptions_Get(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        sub = self.subscriptions.get(p["subscriptionId"])
        if sub is None:
            return _error(404, "SubscriptionNotFound", f"subscription {p['subscriptionId']}")
        return Reply(
            200,
            {
                "id": f"/subscriptions/{p['subscriptionId']}",
                "subscriptionId": p["subscriptionId"],
                "displayName": sub["displayName"],
                "state": sub["state"],
            },
        )

    def _Subscription_Cancel(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        sub = self.subscriptions.get(p["subscriptionId"])
        if sub is None:
            return _error(404, "SubscriptionNotFound", f"subscription {p['subscriptionId']}")
        sub["state"] = "Disabled"
        return Reply(200, {"subscriptionId": p["subscriptionId"]})

    def _ManagementGroupSubscriptions_Create(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        sub = self.subscriptions.get(p["subscriptionId"])
        if sub is None:
            return _error(404, "SubscriptionNotFound", f"subscription {p['subscriptionId']}")
        if self.mg_move_conflicts > 0:
            self.mg_move_conflicts -= 1
            return _error(409, "Conflict", "another move of this subscription is in progress")
        sub["mg"] = p["groupId"]
        return Reply(200, self._mg_body(p))

    def _mg_body(self, p: Json) -> Json:
        return {
            "id": f"/providers/Microsoft.Management/managementGroups/{p['groupId']}"
            f"/subscriptions/{p['subscriptionId']}",
            "type": "Microsoft.Management/managementGroups/subscriptions",
            "name": p["subscriptionId"],
            "properties": {
                "parent": {
                    "id": f"/providers/Microsoft.Management/managementGroups/{p['groupId']}"
                },
                "state": "Active",
            },
        }

    def _ManagementGroupSubscriptions_GetSubscription(
        self, p: Json, q: Json, body: Any, path: str
    ) -> Reply:
        sub = self.subscriptions.get(p["subscriptionId"])
        if sub is None or sub["mg"] != p["groupId"]:
            return _error(404, "NotFound", "the subscription is not in this management group")
        return Reply(200, self._mg_body(p))

    # -- resource groups, providers ----------------------------------------------------------

    def _Providers_Get(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        ns = p["resourceProviderNamespace"]
        state = self.providers.get((p["subscriptionId"], ns.lower()), ["NotRegistered", 0])
        if state[0] == "Registering":
            if state[1] > 0:
                state[1] -= 1
            else:
                state[0] = "Registered"
        return Reply(
            200,
            {
                "id": f"/subscriptions/{p['subscriptionId']}/providers/{ns}",
                "namespace": ns,
                "registrationState": state[0],
            },
        )

    def _Providers_Register(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        ns = p["resourceProviderNamespace"]
        if p["subscriptionId"] not in self.subscriptions:
            return _error(404, "SubscriptionNotFound", p["subscriptionId"])
        key = (p["subscriptionId"], ns.lower())
        if self.providers.get(key, [""])[0] != "Registered":
            self.providers[key] = ["Registering", self.provider_registering_polls]
        return Reply(200, {"namespace": ns, "registrationState": self.providers[key][0]})

    def _ResourceGroups_CreateOrUpdate(self, p: Json, q: Json, body: Json, path: str) -> Reply:
        if p["subscriptionId"] not in self.subscriptions:
            return _error(404, "SubscriptionNotFound", p["subscriptionId"])
        rid = f"/subscriptions/{p['subscriptionId']}/resourceGroups/{p['resourceGroupName']}"
        existed = rid.lower() in self.resources
        doc = {
            "id": rid,
            "name": p["resourceGroupName"],
            "type": "Microsoft.Resources/resourceGroups",
            "location": body["location"],
            "tags": body.get("tags", {}),
            "properties": {"provisioningState": "Succeeded"},
        }
        self.resources[rid.lower()] = doc
        return Reply(200 if existed else 201, doc)

    def _ResourceGroups_Get(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._get(path)

    # -- generic resources -------------------------------------------------------------------

    def _get(self, path: str) -> Reply:
        doc = self.resources.get(path.lower())
        if doc is None:
            return _error(404, "ResourceNotFound", f"{path} not found")
        return Reply(200, doc)

    def _delete(self, path: str) -> Reply:
        return Reply(200 if self.resources.pop(path.lower(), None) else 204)

    def _precheck(self, p: Json, path: str) -> Reply | None:
        sub = p.get("subscriptionId", "")
        if sub not in self.subscriptions:
            return _error(404, "SubscriptionNotFound", f"subscription {sub} not found")
        ns = path.split("/providers/")[1].split("/")[0].lower() if "/providers/" in path else ""
        if ns and self.providers.get((sub, ns), [""])[0] != "Registered":
            return _error(
                409,
                "MissingSubscriptionRegistration",
                f"the subscription is not registered to use namespace '{ns}'",
            )
        rg = f"/subscriptions/{sub}/resourceGroups/{p.get('resourceGroupName', '')}".lower()
        if rg not in self.resources:
            return _error(404, "ResourceGroupNotFound", f"resource group {rg} not found")
        return None

    def _put(
        self,
        p: Json,
        path: str,
        body: Json,
        kind: str,
        *,
        lro: bool,
        extra: Json | None = None,
        done: Any = None,
    ) -> Reply:
        refused = self._precheck(p, path)
        if refused:
            return refused
        key = path.lower()
        old = self.resources.get(key)
        props = {**(old or {}).get("properties", {}), **body.get("properties", {}), **(extra or {})}
        doc = {
            **body,
            "id": path,
            "name": path.rsplit("/", 1)[-1],
            "type": kind,
            "properties": props,
        }
        if not lro:
            self.resources[key] = doc
            return Reply(200 if old else 201, doc)
        pending = self._pending_op(key)
        if pending:
            self.resources[key] = {**doc, "properties": {**props, "provisioningState": "Updating"}}
            return Reply(201, self.resources[key], self._op_headers(pending))
        props["provisioningState"] = "Updating"
        self.resources[key] = doc
        op_id = self._start_op(key, kind, done)
        return Reply(200 if old else 201, doc, self._op_headers(op_id))

    def _delete_lro(self, path: str, kind: str, done: Any = None) -> Reply:
        key = path.lower()
        if key not in self.resources:
            return Reply(204)

        def gone() -> None:
            self.resources.pop(key, None)
            if done:
                done()

        op_id = self._start_op(key, kind, gone)
        return Reply(202, None, self._op_headers(op_id, f"{self.url}/_ops/{op_id}"))

    def _UserAssignedIdentities_CreateOrUpdate(
        self, p: Json, q: Json, body: Json, path: str
    ) -> Reply:
        old = self.resources.get(path.lower())
        ids = (old or {}).get("properties") or {
            "tenantId": TENANT,
            "principalId": str(uuid.uuid4()),
            "clientId": str(uuid.uuid4()),
        }
        return self._put(
            p, path, body, "Microsoft.ManagedIdentity/userAssignedIdentities", lro=False, extra=ids
        )

    def _UserAssignedIdentities_Get(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._get(path)

    def _UserAssignedIdentities_Delete(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        for key in [k for k in self.resources if k.startswith(path.lower() + "/")]:
            del self.resources[key]
        return self._delete(path)

    def _FederatedIdentityCredentials_CreateOrUpdate(
        self, p: Json, q: Json, body: Json, path: str
    ) -> Reply:
        parent = path.rsplit("/federatedIdentityCredentials/", 1)[0]
        if parent.lower() not in self.resources:
            return _error(404, "ResourceNotFound", f"{parent} not found")
        return self._put(
            p,
            path,
            body,
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
            lro=False,
        )

    def _FederatedIdentityCredentials_Get(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._get(path)

    def _FederatedIdentityCredentials_Delete(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._delete(path)

    # -- role assignments --------------------------------------------------------------------

    def _RoleAssignments_Create(self, p: Json, q: Json, body: Json, path: str) -> Reply:
        props = body["properties"]
        principals = {
            d["properties"].get("principalId")
            for d in self.resources.values()
            if d["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities"
        }
        if self.principal_not_found > 0 or props["principalId"] not in principals:
            self.principal_not_found = max(0, self.principal_not_found - 1)
            return _error(
                400,
                "PrincipalNotFound",
                f"Principal {props['principalId']} does not exist in the directory",
            )
        scope = "/" + p["scope"].strip("/")
        same = [
            a
            for a in self.role_assignments.values()
            if a["properties"]["scope"].lower() == scope.lower()
            and a["properties"]["roleDefinitionId"].lower() == props["roleDefinitionId"].lower()
            and a["properties"]["principalId"] == props["principalId"]
        ]
        if path.lower() in self.role_assignments or same:
            return _error(409, "RoleAssignmentExists", "The role assignment already exists.")
        doc = {
            "id": path,
            "name": p["roleAssignmentName"],
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {**props, "scope": scope, "createdOn": _now()},
        }
        self.role_assignments[path.lower()] = doc
        return Reply(201, doc)

    def _RoleAssignments_Get(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        doc = self.role_assignments.get(path.lower())
        return Reply(200, doc) if doc else _error(404, "RoleAssignmentNotFound", path)

    def _RoleAssignments_Delete(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        doc = self.role_assignments.pop(path.lower(), None)
        return Reply(200, doc) if doc else Reply(204)

    # -- network -----------------------------------------------------------------------------

    def _VirtualNetworks_CreateOrUpdate(self, p: Json, q: Json, body: Json, path: str) -> Reply:
        for subnet in body.get("properties", {}).get("subnets", []):
            subnet["id"] = f"{path}/subnets/{subnet.get('name', '')}"
        return self._put(p, path, body, "Microsoft.Network/virtualNetworks", lro=True)

    def _VirtualNetworks_Get(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._get(path)

    def _VirtualNetworks_Delete(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._delete_lro(path, "Microsoft.Network/virtualNetworks")

    def _subnet_exists(self, subnet_id: str) -> bool:
        vnet_id, _, name = subnet_id.rpartition("/subnets/")
        vnet = self.resources.get(vnet_id.lower())
        subnets = (vnet or {}).get("properties", {}).get("subnets", [])
        return any(s.get("name") == name for s in subnets)

    def _PrivateEndpoints_CreateOrUpdate(self, p: Json, q: Json, body: Json, path: str) -> Reply:
        props = body.get("properties", {})
        subnet = props.get("subnet", {}).get("id", "")
        if not self._subnet_exists(subnet):
            return _error(400, "InvalidResourceReference", f"subnet {subnet} not found")
        for conn in props.get("privateLinkServiceConnections", []):
            target = conn.get("properties", {}).get("privateLinkServiceId", "")
            if target.lower() not in self.resources:
                return _error(400, "PrivateLinkServiceNotFound", f"{target} not found")
        rg = path.split("/providers/")[0]
        nic_id = (
            f"{rg}/providers/Microsoft.Network/networkInterfaces/"
            f"{path.rsplit('/', 1)[-1]}.nic.{uuid.uuid4().hex[:8]}"
        )

        def made() -> None:
            self._ip += 1
            address = str(ipaddress.ip_network(self._prefix(subnet), strict=False)[self._ip])
            self.resources[nic_id.lower()] = {
                "id": nic_id,
                "name": nic_id.rsplit("/", 1)[-1],
                "type": "Microsoft.Network/networkInterfaces",
                "location": body.get("location"),
                "properties": {
                    "ipConfigurations": [
                        {
                            "name": "privateEndpointIpConfig",
                            "properties": {"privateIPAddress": address, "subnet": {"id": subnet}},
                        }
                    ]
                },
            }
            self.resources[path.lower()]["properties"]["networkInterfaces"] = [{"id": nic_id}]
            self.pe_states[path.lower()] = self.pe_connection_status
            self._show_state(path)

        old = self.resources.get(path.lower())
        keep = (
            {"networkInterfaces": old["properties"]["networkInterfaces"]}
            if old and old["properties"].get("networkInterfaces")
            else None
        )
        reply = self._put(
            p,
            path,
            body,
            "Microsoft.Network/privateEndpoints",
            lro=True,
            extra=keep,
            done=None if keep else made,
        )
        self._show_state(path)
        return reply

    def _show_state(self, path: str) -> None:
        """The connection state ARM keeps on an endpoint (a PUT does not set it)."""
        status = self.pe_states.get(path.lower())
        doc = self.resources.get(path.lower())
        if status is None or doc is None:
            return
        for conn in doc["properties"].get("privateLinkServiceConnections", []):
            conn.setdefault("properties", {})["privateLinkServiceConnectionState"] = {
                "status": status,
                "description": f"{status} by the fake",
                "actionsRequired": "None",
            }

    def _prefix(self, subnet_id: str) -> str:
        vnet_id, _, name = subnet_id.rpartition("/subnets/")
        for s in self.resources[vnet_id.lower()]["properties"]["subnets"]:
            if s.get("name") == name:
                return str(s["properties"]["addressPrefix"])
        return "10.0.0.0/24"

    def _PrivateEndpoints_Get(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._get(path)

    def _PrivateEndpoints_Delete(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        doc = self.resources.get(path.lower()) or {}
        nics = [n["id"].lower() for n in doc.get("properties", {}).get("networkInterfaces", [])]
        return self._delete_lro(
            path,
            "Microsoft.Network/privateEndpoints",
            lambda: [self.resources.pop(n, None) for n in nics],
        )

    def _NetworkInterfaces_Get(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._get(path)

    def _PrivateLinkServices_Get(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._get(path)

    # -- private DNS ---------------------------------------------------------------------------

    def _PrivateZones_CreateOrUpdate(self, p: Json, q: Json, body: Json, path: str) -> Reply:
        if body.get("location", "").lower() != "global":
            return _error(400, "InvalidLocation", "private DNS zones are global")
        return self._put(p, path, body, "Microsoft.Network/privateDnsZones", lro=True)

    def _PrivateZones_Get(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._get(path)

    def _PrivateZones_Delete(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._delete_lro(path, "Microsoft.Network/privateDnsZones")

    def _VirtualNetworkLinks_CreateOrUpdate(self, p: Json, q: Json, body: Json, path: str) -> Reply:
        zone = path.rsplit("/virtualNetworkLinks/", 1)[0]
        vnet = body.get("properties", {}).get("virtualNetwork", {}).get("id", "")
        if zone.lower() not in self.resources:
            return _error(404, "ParentResourceNotFound", f"{zone} not found")
        if vnet.lower() not in self.resources:
            return _error(400, "BadRequest", f"virtual network {vnet} not found")
        return self._put(
            p, path, body, "Microsoft.Network/privateDnsZones/virtualNetworkLinks", lro=True
        )

    def _VirtualNetworkLinks_Get(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._get(path)

    def _VirtualNetworkLinks_Delete(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._delete_lro(path, "Microsoft.Network/privateDnsZones/virtualNetworkLinks")

    def _RecordSets_CreateOrUpdate(self, p: Json, q: Json, body: Json, path: str) -> Reply:
        zone = path.rsplit("/", 2)[0]
        if zone.lower() not in self.resources:
            return _error(404, "ParentResourceNotFound", f"{zone} not found")
        kind = f"Microsoft.Network/privateDnsZones/{p['recordType']}"
        return self._put(p, path, body, kind, lro=False)

    def _RecordSets_Get(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._get(path)

    def _RecordSets_Delete(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        return self._delete(path)

    # -- Resource Graph ------------------------------------------------------------------------

    _PREDICATE = re.compile(
        r"^(?:tags\['(?P<k1>[^']+)'\]\s*==\s*'(?P<v>[^']*)'|isnotempty\(tags\['(?P<k2>[^']+)'\]\))$"
    )

    def _Resources(self, p: Json, q: Json, body: Json, path: str) -> Reply:
        stages = [s.strip() for s in body["query"].split("|")]
        if stages[0].lower() != "resources":
            return self._violation(400, f"the fake reads the Resources table only: {stages[0]!r}")
        predicates: list[re.Match[str]] = []
        project: list[str] | None = None
        for stage in stages[1:]:
            if stage.startswith("where "):
                for part in re.split(r"\s+and\s+", stage[6:].strip()):
                    found = self._PREDICATE.match(part.strip())
                    if not found:
                        return self._violation(
                            400, f"Resource Graph predicate the fake does not understand: {part!r}"
                        )
                    predicates.append(found)
            elif stage.startswith("project "):
                project = [c.strip() for c in stage[8:].split(",")]
            elif stage.startswith("order by "):
                continue
            else:
                return self._violation(
                    400, f"Resource Graph stage the fake does not know: {stage!r}"
                )
        subs = {s.lower() for s in body.get("subscriptions") or []}
        rows = []
        for doc in sorted(self.resources.values(), key=lambda d: str(d["id"]).lower()):
            if doc["type"] == "Microsoft.Resources/resourceGroups":
                continue  # in ResourceContainers, not Resources
            sub = str(doc["id"]).split("/")[2] if doc["id"].startswith("/subscriptions/") else ""
            if subs and sub.lower() not in subs:
                continue
            tags = doc.get("tags") or {}
            if all(
                tags.get(m["k1"]) == m["v"] if m["k1"] else bool(tags.get(m["k2"]))
                for m in predicates
            ):
                row = {
                    "id": doc["id"],
                    "name": doc["name"],
                    "type": doc["type"].lower(),
                    "tags": tags,
                    "subscriptionId": sub,
                    "location": doc.get("location"),
                }
                rows.append({k: row.get(k) for k in project} if project else row)
        options = body.get("options") or {}
        if options.get("resultFormat") != "objectArray":
            return self._violation(400, "the fake answers resultFormat objectArray only (set it)")
        start = int(base64.b64decode(options["$skipToken"])) if options.get("$skipToken") else 0
        size = min(int(options.get("$top") or 1000), self.graph_page_size)
        page = rows[start : start + size]
        out: Json = {
            "totalRecords": len(rows),
            "count": len(page),
            "resultTruncated": "false",
            "data": page,
        }
        if start + size < len(rows):
            out["$skipToken"] = base64.b64encode(str(start + size).encode()).decode()
        return Reply(200, out)

    # -- Key Vault -----------------------------------------------------------------------------

    def _bundle(self, name: str, version: Json) -> Json:
        return {
            "value": version["value"],
            "id": f"{self.url}/secrets/{name}/{version['v']}",
            "attributes": {
                "enabled": True,
                "created": version["t"],
                "updated": version["t"],
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": version.get("tags", {}),
        }

    def _SetSecret(self, p: Json, q: Json, body: Json, path: str) -> Reply:
        name = p["secret-name"]
        if name.lower() in self.deleted_secrets:
            return _error(
                409,
                "Conflict",
                f"Secret {name} is currently in a deleted but recoverable state",
                "ObjectIsDeletedButRecoverable",
            )
        secret = self.secrets.setdefault(name.lower(), {"name": name, "versions": []})
        version = {
            "v": uuid.uuid4().hex,
            "value": body["value"],
            "t": int(datetime.datetime.now(datetime.UTC).timestamp()),
            "tags": body.get("tags", {}),
        }
        secret["versions"].append(version)
        return Reply(200, self._bundle(secret["name"], version))

    def _GetSecret(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        secret = self.secrets.get(p["secret-name"].lower())
        versions = (secret or {}).get("versions", [])
        if p["secret-version"]:
            versions = [v for v in versions if v["v"] == p["secret-version"]]
        if not secret or not versions:
            return _error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {p['secret-name']} was not found in this key vault.",
            )
        return Reply(200, self._bundle(secret["name"], versions[-1]))

    def _DeleteSecret(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        secret = self.secrets.pop(p["secret-name"].lower(), None)
        if secret is None:
            return _error(404, "SecretNotFound", f"{p['secret-name']} not found")
        self.deleted_secrets[p["secret-name"].lower()] = secret
        return Reply(200, self._deleted(secret))

    def _deleted(self, secret: Json) -> Json:
        name = secret["name"]
        bundle = self._bundle(name, secret["versions"][-1])
        bundle.pop("value")
        return {
            **bundle,
            "recoveryId": f"{self.url}/deletedsecrets/{name}",
            "deletedDate": bundle["attributes"]["created"],
            "scheduledPurgeDate": bundle["attributes"]["created"] + 90 * 86400,
        }

    def _GetDeletedSecret(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        secret = self.deleted_secrets.get(p["secret-name"].lower())
        if secret is None:
            return _error(404, "SecretNotFound", f"{p['secret-name']} is not deleted")
        return Reply(200, self._deleted(secret))

    def _PurgeDeletedSecret(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        if self.deleted_secrets.pop(p["secret-name"].lower(), None) is None:
            return _error(404, "SecretNotFound", f"{p['secret-name']} is not deleted")
        return Reply(204)

    def _RecoverDeletedSecret(self, p: Json, q: Json, body: Any, path: str) -> Reply:
        secret = self.deleted_secrets.pop(p["secret-name"].lower(), None)
        if secret is None:
            return _error(404, "SecretNotFound", f"{p['secret-name']} is not deleted")
        self.secrets[p["secret-name"].lower()] = secret
        return Reply(200, self._bundle(secret["name"], secret["versions"][-1]))


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA (clients trust it as ``ca_file``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nclav azure fake")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class StaticCredential:
    """An azure-core token credential for the fake: the ARM token for ARM scopes, the Key Vault
    token otherwise; ``assertion`` is what it returns for ``api://AzureADTokenExchange``."""

    def __init__(self, assertion: str | None = None) -> None:
        self.scopes: list[str] = []
        self.assertion = assertion or make_jwt(
            {
                "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0",
                "sub": "11111111-2222-3333-4444-555555555555",
                "aud": "api://AzureADTokenExchange",
                "tid": TENANT,
                "oid": "11111111-2222-3333-4444-555555555555",
            }
        )

    def get_token(self, *scopes: str, **_: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes += scopes
        expires = int(datetime.datetime.now(datetime.UTC).timestamp()) + 3600
        if any(s.startswith("api://AzureADTokenExchange") for s in scopes):
            return AccessToken(self.assertion, expires)
        arm = any("management" in s for s in scopes)
        return AccessToken(ARM_TOKEN if arm else KV_TOKEN, expires)


def make_jwt(claims: Json) -> str:
    """An unsigned JWT carrying ``claims`` (what the driver reads from an assertion)."""

    def part(doc: Json) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.sig"


__all__ = [
    "ARM_TOKEN",
    "KV_TOKEN",
    "SPEC_DIR",
    "TENANT",
    "AzureApiFake",
    "Reply",
    "Specs",
    "StaticCredential",
    "make_jwt",
    "validate",
]
