"""The policy check: every AWS call a function makes must be allowed by its IAM role's policy.

``CallRecorder`` records each API call made in this process (botocore's ``before-call`` event,
on every client, through ``BaseClient`` construction) under the name of the function that is
running (``recorder.running("api")``). ``required`` turns a call into the IAM actions and
resource ARNs it needs (the operation name is the action for most services; S3, SQS batches
and DynamoDB transactions differ, and a PutObject with ``Tagging`` also needs
``s3:PutObjectTagging``, a CreateSecret with ``Tags`` ``secretsmanager:TagResource``).
``Policy`` is a small evaluator of Allow statements: action wildcards, resource ARN
wildcards; conditions are taken as satisfied and listed (``Decision.conditions``),
NotAction/NotResource are refused (infra/aws uses neither).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from botocore.client import BaseClient

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass(frozen=True)
class Call:
    function: str
    service: str  # the IAM service prefix
    operation: str
    params: Mapping[str, Any] = field(hash=False, compare=False)
    own_credentials: bool = True  # False: made with assumed credentials (another principal)


class CallRecorder:
    """Records every botocore call made while installed, tagged with the running function."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.function = "test"
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def running(self, function: str) -> Iterator[None]:
        previous, self.function = self.function, function
        try:
            yield
        finally:
            self.function = previous

    @contextlib.contextmanager
    def installed(self) -> Iterator[CallRecorder]:
        original: Callable[..., Any] = BaseClient._make_api_call  # noqa: SLF001
        recorder = self

        def record(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
            creds = client._request_signer._credentials  # noqa: SLF001
            token = getattr(creds, "token", None) if creds else None
            call = Call(
                recorder.function,
                client.meta.service_model.signing_name,
                operation,
                dict(params),
                own_credentials=not token,  # moto's assumed credentials carry a token
            )
            with recorder._lock:  # noqa: SLF001
                recorder.calls.append(call)
            return original(client, operation, params)

        BaseClient._make_api_call = record  # type: ignore[method-assign]  # noqa: SLF001
        try:
            yield self
        finally:
            BaseClient._make_api_call = original  # type: ignore[method-assign]  # noqa: SLF001

    def wrap(self, handler: Callable[..., Any], function: str) -> Callable[..., Any]:
        """``handler`` recording its calls as ``function``'s."""

        def run(*args: Any, **kwargs: Any) -> Any:
            with self.running(function):
                return handler(*args, **kwargs)

        return run

    def of(self, function: str) -> list[Call]:
        return [c for c in self.calls if c.function == function and c.own_credentials]


# -- what a call needs -------------------------------------------------------------------------

_S3_ACTIONS = {
    "HeadObject": "GetObject",
    "ListObjectsV2": "ListBucket",
    "ListObjects": "ListBucket",
    "ListObjectVersions": "ListBucketVersions",
    "DeleteObjects": "DeleteObject",
    "HeadBucket": "ListBucket",
}
_SQS_BATCH = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
_DDB_TRANSACT = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem"}
_DDB_TRANSACT |= {"ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}


_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:"


def _table(name: str, index: str | None = None) -> str:
    arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
    return f"{arn}/index/{index}" if index else arn


def _queue(url: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{urlparse(url).path.rsplit('/', 1)[1]}"


def required(call: Call, secret_arns: Mapping[str, str]) -> list[tuple[str, str]]:
    """The (action, resource ARN) pairs IAM checks for ``call``."""
    p, svc, op = call.params, call.service, call.operation
    if svc == "dynamodb":
        if op in ("TransactWriteItems", "TransactGetItems"):
            needs = []
            for item in p["TransactItems"]:
                ((kind, body),) = item.items()
                needs.append((f"dynamodb:{_DDB_TRANSACT[kind]}", _table(body["TableName"])))
            return needs
        if op in ("BatchWriteItem", "BatchGetItem"):
            return [(f"dynamodb:{op}", _table(t)) for t in p["RequestItems"]]
        return [(f"dynamodb:{op}", _table(p["TableName"], p.get("IndexName")))]
    if svc == "s3":
        bucket = f"arn:aws:s3:::{p['Bucket']}"
        action = _S3_ACTIONS.get(op, op)
        if "VersionId" in p and action in ("GetObject", "DeleteObject"):
            action += "Version"
        resource = f"{bucket}/{p['Key']}" if "Key" in p else bucket
        if op == "DeleteObjects":
            return [(f"s3:{action}", f"{bucket}/{o['Key']}") for o in p["Delete"]["Objects"]]
        needs = [(f"s3:{action}", resource)]
        if p.get("Tagging"):
            needs.append(("s3:PutObjectTagging", resource))
        return needs
    if svc == "sqs":
        queue = _queue(p["QueueUrl"]) if "QueueUrl" in p else _queue(f"/{p.get('QueueName', '*')}")
        return [(f"sqs:{_SQS_BATCH.get(op, op)}", queue)]
    if svc == "secretsmanager":
        name = str(p.get("SecretId") or p.get("Name"))
        # A secret that does not exist (yet) has no suffix: IAM sees the ARN of its bare name.
        bare = name if name.startswith("arn:") else f"{_SECRET}{name}"
        secret = secret_arns.get(name, bare)
        needs = [(f"secretsmanager:{op}", secret)]
        if op == "CreateSecret" and p.get("Tags"):  # tags on create need TagResource too
            needs.append(("secretsmanager:TagResource", secret))
        return needs
    if svc == "sts" and op == "AssumeRole":
        return [("sts:AssumeRole", str(p["RoleArn"]))]
    if svc == "sts" and op == "GetCallerIdentity":
        return []  # needs no permission
    return [(f"{svc}:{op}", "*")]


# -- the evaluator -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    allowed: bool
    conditions: tuple[str, ...] = ()  # the conditions taken as satisfied


class Policy:
    def __init__(self, documents: list[Mapping[str, Any] | str]) -> None:
        self.statements: list[Mapping[str, Any]] = []
        for doc in documents:
            parsed = json.loads(doc) if isinstance(doc, str) else doc
            found = parsed["Statement"]
            self.statements += [found] if isinstance(found, dict) else found
        for s in self.statements:
            assert "NotAction" not in s and "NotResource" not in s, s

    def decide(self, action: str, resource: str) -> Decision:
        allowed, conditions = False, []
        for s in self.statements:
            if not _matches(action, s.get("Action"), case=False):
                continue
            if not _matches(resource, s.get("Resource")):
                continue
            if s.get("Effect", "Allow") == "Deny" and not s.get("Condition"):
                return Decision(False)
            if s.get("Effect", "Allow") == "Allow":
                allowed = True
                conditions += [
                    f"{s.get('Sid', '')}: {test} {key}"
                    for test, keys in (s.get("Condition") or {}).items()
                    for key in keys
                ]
        return Decision(allowed, tuple(conditions))


def _matches(value: str, patterns: str | list[str] | None, *, case: bool = True) -> bool:
    if patterns is None:
        return False
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        a, b = (value, pattern) if case else (value.lower(), pattern.lower())
        if fnmatch.fnmatchcase(a, b):
            return True
    return False


def role_policies(state: Mapping[str, Any]) -> dict[str, Policy]:
    """Each function's policy (its role's inline policies) from ``terraform show -json``."""
    roles: dict[str, str] = {}
    documents: dict[str, list[str]] = {}
    for resource in state["values"]["root_module"].get("resources", []):
        values = resource["values"]
        if resource["type"] == "aws_iam_role" and resource["name"] == "fn":
            roles[values["name"]] = str(resource["index"])
        if resource["type"] == "aws_iam_role_policy":
            documents.setdefault(values["role"], []).append(values["policy"])
    return {fn: Policy(documents.get(role, [])) for role, fn in roles.items()}


def denied(
    calls: list[Call], policy: Policy, secret_arns: Mapping[str, str]
) -> tuple[list[str], set[str]]:
    """(calls the policy refuses, conditions assumed satisfied on the way)."""
    refused, conditions = [], set()
    for call in calls:
        for action, resource in required(call, secret_arns):
            decision = policy.decide(action, resource)
            conditions |= set(decision.conditions)
            if not decision.allowed:
                refused.append(f"{call.function}: {action} on {resource}")
    return sorted(set(refused)), conditions


__all__ = ["Call", "CallRecorder", "Decision", "Policy", "denied", "required", "role_policies"]
