"""The AWS runtime in a test: moto resources, Lambda contexts, recorded events, an SQS pump.

``Deployment`` creates what infra/aws creates (the DynamoDB table, the two queues with their
DLQs, the versioned bucket, the API token secret) in the moto server of the ``aws`` fixture,
sets the functions' ``NCLAV_*`` environment and installs a fresh runtime for the handlers.

``Pump`` stands in for Lambda's SQS event source mappings: it receives from moto's queues,
builds the SQS event Lambda would send (the record shape of a real event) and invokes the
worker handlers with it, deleting what the partial batch response does not list, until the
queues are empty.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import secrets
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from functions_aws import api, bootstrap, iac_worker, worker
from functions_aws.dynamodb_store import create_table
from functions_aws.s3_blobs import create_bucket
from functions_aws.sqs_queue import create_queues
from nclav.bundle import pack_directory

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    import pytest

    from functions_aws.bootstrap import AwsRuntime

EVENTS = Path(__file__).parent / "events"
LAMBDA_PAYLOAD_BYTES = 6 * 1024 * 1024  # a synchronous invocation's request or response
REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass
class FakeContext:
    """What Lambda passes as ``context`` (the attributes powertools and the workers read)."""

    function_name: str = "nclav-test"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_ms: int = 900_000
    deadline: float | None = None  # monotonic; when set, the time left counts down

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        if self.deadline is not None:
            return max(int((self.deadline - time.monotonic()) * 1000), 0)
        return self.remaining_ms


def enclaves_tree(root: Path, *enclave_ids: str, extra: str = "") -> Path:
    """A tree of local-cloud enclaves without partitions (driver steps only, no terraform)."""
    for eid in enclave_ids:
        (root / eid).mkdir(parents=True, exist_ok=True)
        text = f"id: {eid}\nname: {eid}\ncloud: local\nregion: local-1\n{extra}"
        (root / eid / "config.yml").write_text(text)
    return root


def load_event(name: str) -> dict[str, Any]:
    """A recorded event from ``tests/aws/events`` (a fresh copy each time)."""
    return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))


def http_event(
    method: str,
    target: str,
    *,
    token: str | None = None,
    body: bytes | str | dict[str, Any] | list[Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A function URL event (payload 2.0) for ``method target``, from the recorded one."""
    event = load_event("function_url_get")
    path, _, query = target.partition("?")
    event["rawPath"], event["rawQueryString"] = path, query
    event["requestContext"]["http"].update(method=method, path=path)
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    sent = dict(event["headers"])
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    if isinstance(body, dict | list):
        body = json.dumps(body)
        sent["content-type"] = "application/json"
    if isinstance(body, str):
        event["body"], event["isBase64Encoded"] = body, False
    elif isinstance(body, bytes):
        event["body"] = base64.b64encode(body).decode()
        event["isBase64Encoded"] = True
        sent.setdefault("content-type", "application/octet-stream")
    sent.update({k.lower(): v for k, v in (headers or {}).items()})
    event["headers"] = sent
    return event


@dataclass
class Result:
    """A function URL result, decoded."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @classmethod
    def of(cls, result: Mapping[str, Any]) -> Result:
        raw = result.get("body") or ""
        body = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode("utf-8")
        return cls(int(result["statusCode"]), dict(result.get("headers") or {}), body)

    def __repr__(self) -> str:
        return f"<Result {self.status} {self.body[:400]!r}>"


class Api:
    """Calls ``functions_aws.api.handler`` with function URL events (``runtime``: another
    container's runtime, answered through ``api.respond``)."""

    def __init__(self, token: str, runtime: AwsRuntime | None = None) -> None:
        self.token = token
        self.runtime = runtime

    def request(self, method: str, target: str, body: Any = None, **kwargs: Any) -> Result:
        kwargs.setdefault("token", self.token)
        event = http_event(method, target, body=body, **kwargs)
        if self.runtime is not None:
            return Result.of(api.respond(self.runtime.router, event))
        return Result.of(api.handler(event, FakeContext("nclav-api")))

    def ok(self, method: str, target: str, body: Any = None, expect: int = 200) -> Any:
        result = self.request(method, target, body)
        assert result.status == expect, (method, target, result)
        return result.json if result.body else None

    def upload(self, tree: Path) -> str:
        """POST /bundles with the packed tree (a base64 body); returns its digest."""
        _, data, _ = pack_directory(tree)
        result = self.request(
            "POST", "/bundles", data, headers={"content-type": "application/gzip"}
        )
        assert result.status in (200, 201), result
        return str(result.json["digest"])

    def start_reconcile(self, tree: Path) -> dict[str, Any]:
        """POST /reconcile: 202 with the run, or 200 when it is already final (nothing to do)."""
        result = self.request("POST", "/reconcile", {"bundle": self.upload(tree)})
        assert result.status in (200, 202), result
        return result.json  # type: ignore[no-any-return]

    def dry_run(self, tree: Path) -> dict[str, Any]:
        return self.ok("POST", "/reconcile/dry-run", {"bundle": self.upload(tree)})  # type: ignore[no-any-return]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.ok("GET", f"/runs/{run_id}")  # type: ignore[no-any-return]

    def steps(self, run_id: str) -> dict[str, str]:
        return {s["step_id"]: s["status"] for s in self.run(run_id)["steps"]}


@dataclass
class Queue:
    url: str
    dlq_url: str
    arn: str


class Deployment:
    """The resources of one deployment in moto, and the environment that points at them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> None:
        self.sqs = boto3.client("sqs")
        self.dynamodb = boto3.client("dynamodb")
        self.s3 = boto3.client("s3")
        self.secretsmanager = boto3.client("secretsmanager")
        suffix = uuid.uuid4().hex[:8]
        self.table, self.bucket = f"nclav-{suffix}", f"nclav-{suffix}"
        create_table(self.dynamodb, self.table)
        create_bucket(self.s3, self.bucket)
        max_receive = int(env.pop("redrive_max_receive_count", "6"))
        visibility = int(env.pop("queue_visibility_s", "10"))
        self.steps = self._queue(f"nclav-steps-{suffix}", max_receive, visibility)
        self.iac = self._queue(f"nclav-iac-{suffix}", max_receive, visibility)
        self.token = secrets.token_hex(32)
        self.secretsmanager.create_secret(Name="nclav/api-token", SecretString=self.token)
        self.workspaces = tmp_path / "workspaces"
        self.env = {
            "NCLAV_TABLE": self.table,
            "NCLAV_BUCKET": self.bucket,
            "NCLAV_STEPS_QUEUE_URL": self.steps.url,
            "NCLAV_IAC_QUEUE_URL": self.iac.url,
            "NCLAV_WORKSPACES": str(self.workspaces),
            "NCLAV_CLOUD": "local",
            "NCLAV_REDELIVERY_BACKOFF_S": "0",
            "NCLAV_MAX_RECEIVES": "3",
            "NCLAV_BACKOFF_S": "0",
            "NCLAV_IAC_HEARTBEAT_S": "1",
            "NCLAV_IAC_VISIBILITY_S": "10",
            **env,
        }
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        bootstrap.install(None)
        self.api = Api(self.token)

    def _queue(self, name: str, max_receive: int, visibility: int) -> Queue:
        url, dlq = create_queues(self.sqs, name, max_receive, visibility_timeout_s=visibility)
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return Queue(url, dlq, arn["Attributes"]["QueueArn"])

    @property
    def runtime(self) -> AwsRuntime:
        return bootstrap.runtime()

    def runtime_with(self, **parts: Any) -> AwsRuntime:
        """Install a runtime built from this environment with some parts replaced."""
        built = bootstrap.AwsRuntime(bootstrap.Settings.from_env(), **parts)
        bootstrap.install(built)
        return built

    def pending(self, url: str) -> int:
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        found = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return sum(int(found.get(n, 0)) for n in names)

    def dead_letters(self, queue: Queue) -> list[dict[str, Any]]:
        found = self.sqs.receive_message(
            QueueUrl=queue.dlq_url, MaxNumberOfMessages=10, AttributeNames=["All"]
        )
        return list(found.get("Messages", []))

    def send_raw(self, queue: Queue, body: str, delay_s: int = 0) -> None:
        self.sqs.send_message(QueueUrl=queue.url, MessageBody=body, DelaySeconds=delay_s)


def sqs_record(message: Mapping[str, Any], queue_arn: str) -> dict[str, Any]:
    """The record Lambda's event source mapping makes of a ReceiveMessage message."""
    attributes = {
        k: str(v)
        for k, v in message.get("Attributes", {}).items()
        if k
        in (
            "ApproximateReceiveCount",
            "SentTimestamp",
            "SenderId",
            "ApproximateFirstReceiveTimestamp",
            "MessageGroupId",
            "MessageDeduplicationId",
            "SequenceNumber",
        )
    }
    message_attributes = {
        name: {
            "stringValue": value.get("StringValue"),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value["DataType"],
        }
        for name, value in (message.get("MessageAttributes") or {}).items()
    }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


class Pump:
    """Lambda's SQS event source mappings: queue -> worker handler, until nothing is left."""

    def __init__(
        self, deployment: Deployment, *, iac_context: Callable[[], FakeContext] | None = None
    ) -> None:
        self.d = deployment
        self.iac_context = iac_context or (lambda: FakeContext("nclav-iac-worker"))
        self.invocations: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def receive(self, queue: Queue, max_messages: int = 10) -> list[dict[str, Any]]:
        found = self.d.sqs.receive_message(
            QueueUrl=queue.url,
            MaxNumberOfMessages=max_messages,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        return list(found.get("Messages", []))

    def invoke(self, queue: Queue, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """One invocation with ``messages``; deletes the ones that succeeded (as Lambda does)."""
        event = {"Records": [sqs_record(m, queue.arn) for m in messages]}
        if queue is self.d.iac:
            result = iac_worker.handler(event, self.iac_context())
            name = "iac_worker"
        else:
            result = worker.handler(event, FakeContext("nclav-worker"))
            name = "worker"
        self.invocations.append((name, event, result))
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] not in failed:
                self.d.sqs.delete_message(
                    QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"]
                )
        return result

    def once(self) -> int:
        """One receive and invocation per queue; returns the number of messages handled."""
        handled = 0
        for queue, batch in ((self.d.steps, 10), (self.d.iac, 1)):
            messages = self.receive(queue, batch)
            if messages:
                self.invoke(queue, messages)
                handled += len(messages)
        return handled

    def drain(self, timeout: float = 120.0) -> None:
        """Pump until both queues are empty (nothing visible, in flight or delayed)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.once():
                continue
            if self.d.pending(self.d.steps.url) == 0 and self.d.pending(self.d.iac.url) == 0:
                return
            assert time.monotonic() < deadline, "the queues did not drain"
            time.sleep(0.1)

    def run(self, run: Mapping[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        """Drain, then the run (which must be final)."""
        self.drain(timeout)
        final = self.d.api.run(str(run["id"]))
        assert final["status"] in ("succeeded", "failed"), final
        return final


class FunctionUrl(BaseHTTPRequestHandler):
    """One HTTP request -> a function URL event -> the API handler -> the HTTP response.

    What a function URL does in AWS: Terraform's HTTP state backend in the IaC worker reaches
    the API function through it (``function_url_server``). Lambda's payload limit holds as it
    does in AWS: a request body above 6 MB is refused with 413 before the function runs, and a
    response above it becomes a 502.
    """

    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if length > LAMBDA_PAYLOAD_BYTES:
            too_big = b'{"Message":"Request must be smaller than 6291456 bytes"}'
            self._reply(Result(413, {"content-type": "application/json"}, too_big))
            return
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "host"}
        event = http_event(self.command, self.path, body=body, headers=headers)
        result = Result.of(api.handler(event, FakeContext("nclav-api")))
        if len(result.body) > LAMBDA_PAYLOAD_BYTES:
            result = Result(502, {"content-type": "application/json"}, b'{"Message":null}')
        self._reply(result)

    def _reply(self, result: Result) -> None:
        self.send_response(result.status)
        for name, value in result.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(result.body)))
        self.end_headers()
        self.wfile.write(result.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextmanager
def function_url_server() -> Iterator[str]:
    """A loopback HTTP server in front of the API handler; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FunctionUrl)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


__all__ = [
    "Api",
    "Deployment",
    "FakeContext",
    "FunctionUrl",
    "Pump",
    "Queue",
    "Result",
    "enclaves_tree",
    "function_url_server",
    "http_event",
    "load_event",
    "sqs_record",
]
