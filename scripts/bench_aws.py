"""Benchmark of the AWS runtime: handler import times, and DynamoDB requests per step.

1. Import time of each handler module (``functions_aws.api``, ``worker``, ``iac_worker``,
   ``schedule``), each in a fresh interpreter (``python -X importtime``, the module's
   cumulative time; median of ``--runs``): the cold-start floor a Lambda function pays before
   its first line runs. Target: under 300 ms for the API and the step worker. Also what the
   first invocation adds by importing core, boto3 and the adapters (the runtime's lazy build).
2. Cold first request of the API handler: a fresh process imports ``functions_aws.api`` and
   answers one function URL event (``GET /health``, then in another fresh process an
   authenticated ``GET /runs``), against a moto server with a deployment. Target: import +
   first call at most 300 ms. Also the line count of ``functions_aws/`` without ``driver/``
   (target: at most 2,000, no module over ~250).
3. DynamoDB requests, counted with botocore's ``before-call.dynamodb.*`` event on the one
   DynamoDB client of the runtime (``dynamodb_store.count_requests``), against a moto server
   started here: for an apply of each example tree (per step), and for a no-op apply of it.
   Everything goes through the handlers: API calls as function URL events, the steps through
   the worker handlers from moto's SQS, real terraform whose HTTP state backend reaches the
   API handler through a loopback HTTP server. Requests are split by who made them: the API
   (reconcile, run reads), the workers, the Terraform state backend (terraform -> API), and
   the lease renewers, and by the ``StateStore`` method that made them.

    .venv/bin/python scripts/bench_aws.py [--runs 5] [--skip-dynamodb] [--skip-cold]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from aws_lambda_powertools.utilities.typing import LambdaContext

REPO = Path(__file__).resolve().parents[1]
HANDLERS = ("api", "worker", "iac_worker", "schedule")
FIRST_USE = (
    "nclav.api.routes nclav.engine nclav.service boto3 functions_aws.dynamodb_store "
    "functions_aws.sqs_queue functions_aws.s3_blobs functions_aws.secrets functions_aws.lambda_iac"
)
_IMPORTTIME = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$")


# -- 1. import times ---------------------------------------------------------------------------


def import_ms(statement: str, module: str) -> float:
    """Cumulative import time of ``module`` (ms) when ``statement`` runs in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NCLAV_"))}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    total = 0
    for line in done.stderr.splitlines():
        found = _IMPORTTIME.match(line)
        if found and found.group(2).strip() in module.split():
            total += int(found.group(1))
    return total / 1000


def bench_imports(runs: int) -> None:
    print(f"Handler import time, a fresh process each (-X importtime; median of {runs} runs)")
    for name in HANDLERS:
        module = f"functions_aws.{name}"
        times = [import_ms(f"import {module}", module) for _ in range(runs)]
        median = statistics.median(times)
        flag = "  OVER 300 ms" if name in ("api", "worker") and median >= 300 else ""
        print(f"  {module:<26} {median:7.1f} ms (min {min(times):.1f}){flag}")
    # What the first invocation imports on top (the modules are imported after the handler's).
    statement = (
        f"import functions_aws.api, functions_aws.worker; import {', '.join(FIRST_USE.split())}"
    )
    times = [import_ms(statement, FIRST_USE) for _ in range(runs)]
    median = statistics.median(times)
    lowest = min(times)
    print(
        f"  first invocation imports   {median:7.1f} ms (min {lowest:.1f}): core, boto3, adapters"
    )


# -- 2. cold first request, and the size of the AWS folder --------------------------------------

_COLD = """
import base64, json, os, sys, time, uuid
t0 = time.perf_counter()
import functions_aws.api as api
t1 = time.perf_counter()
event = json.loads(sys.argv[1])
class C:
    function_name = "nclav-bench"; memory_limit_in_mb = 512; aws_request_id = str(uuid.uuid4())
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:nclav-bench"
    def get_remaining_time_in_millis(self): return 900_000
result = api.handler(event, C())
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "call": t2 - t1, "status": result["statusCode"]}))
"""


def lines_report() -> None:
    files = sorted(p for p in (REPO / "functions_aws").rglob("*.py") if "driver" not in p.parts)
    counts = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in files}
    total = sum(counts.values())
    flag = "OVER" if total > 2000 else "met"
    print(f"functions_aws lines (without driver/): {total} (target at most 2,000: {flag})")
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        if n > 250:
            print(f"  {name:<34} {n:5d} lines  OVER ~250")


def cold_request(env: dict[str, str], event: dict[str, Any]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _COLD, json.dumps(event)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return cast("dict[str, float]", json.loads(done.stdout.strip().splitlines()[-1]))


def bench_cold(runs: int) -> None:
    print(f"Cold first request of the API handler (a fresh process each; median of {runs})")
    with moto_server() as moto, tempfile.TemporaryDirectory() as scratch:
        aws_env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": moto,
        }
        os.environ.update(aws_env)
        token, _, _ = deploy("nclav-cold", "http://127.0.0.1:9", Path(scratch))
        env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "NCLAV_", "PATH"))}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "core"), str(REPO)])
        auth = {"authorization": f"Bearer {token}"}
        for label, event in (
            ("GET /health", http_event("GET", "/health", {}, b"")),
            ("GET /runs", http_event("GET", "/runs", auth, b"")),
        ):
            results = [cold_request(env, event) for _ in range(runs)]
            assert all(r["status"] == 200 for r in results), results
            imp = statistics.median(r["import"] for r in results) * 1000
            call = statistics.median(r["call"] for r in results) * 1000
            least = min(r["import"] + r["call"] for r in results) * 1000
            flag = "  (target at most 300 ms: " + ("OVER)" if imp + call > 300 else "met)")
            print(
                f"  {label:<12} import {imp:6.1f} ms + first call {call:6.1f} ms"
                f" = {imp + call:6.1f} ms (min {least:.1f}){flag}"
            )


# -- 3. DynamoDB requests ------------------------------------------------------------------------


@contextmanager
def moto_server() -> Iterator[str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield _wait_for(proc, f"http://127.0.0.1:{port}")
        finally:
            proc.terminate()
            proc.wait(10)


def _wait_for(proc: subprocess.Popen[bytes], url: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as response:
                response.read()
            return url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)


class _Context:
    """What Lambda passes as ``context`` (the attributes powertools and the workers read)."""

    function_name = "nclav-bench"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:nclav-bench"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def Context() -> LambdaContext:  # noqa: N802
    return cast("LambdaContext", _Context())


def http_event(method: str, target: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """A function URL event (payload 2.0)."""
    path, _, query = target.partition("?")
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {k.lower(): v for k, v in headers.items()},
        "requestContext": {
            "http": {"method": method, "path": path},
            "requestId": str(uuid.uuid4()),
            "stage": "$default",
        },
        "body": base64.b64encode(body).decode() if body else "",
        "isBase64Encoded": bool(body),
    }


def call_api(method: str, target: str, token: str, body: bytes = b"") -> tuple[int, Any]:
    from functions_aws import api

    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    result = api.handler(http_event(method, target, headers, body), Context())
    raw = result.get("body") or ""
    data = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
    return int(result["statusCode"]), json.loads(data) if data else None


class FunctionUrl(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        from functions_aws import api

        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        event = http_event(self.command, self.path, dict(self.headers.items()), body)
        result = api.handler(event, Context())
        raw = result.get("body") or ""
        data = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
        self.send_response(int(result["statusCode"]))
        for name, value in (result.get("headers") or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _serve  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class Pump:
    """Lambda's SQS event source mappings over moto's queues: until both are empty."""

    def __init__(self, sqs: Any, steps_url: str, iac_url: str) -> None:
        self.sqs = sqs
        self.queues = [(steps_url, 10), (iac_url, 1)]

    def drain(self) -> None:
        from functions_aws import iac_worker, worker

        handlers = {self.queues[0][0]: worker.handler, self.queues[1][0]: iac_worker.handler}
        while True:
            handled = 0
            for url, batch in self.queues:
                found = self.sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=batch,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
                messages = found.get("Messages", [])
                if not messages:
                    continue
                records = [
                    {
                        "messageId": m["MessageId"],
                        "receiptHandle": m["ReceiptHandle"],
                        "body": m["Body"],
                        "attributes": m.get("Attributes", {}),
                        "messageAttributes": {},
                        "md5OfBody": hashlib.md5(m["Body"].encode()).hexdigest(),  # noqa: S324
                        "eventSource": "aws:sqs",
                        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bench",
                        "awsRegion": "us-east-1",
                    }
                    for m in messages
                ]
                result = handlers[url]({"Records": records}, Context())
                failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
                for m in messages:
                    if m["MessageId"] not in failed:
                        self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                handled += len(messages)
            if handled == 0 and self._empty():
                return
            if handled == 0:
                time.sleep(0.05)

    def _empty(self) -> bool:
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        for url, _ in self.queues:
            found = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)
            if sum(int(v) for v in found["Attributes"].values()):
                return False
        return True


def who() -> str:
    """Which part of the deployment is making a request, by the thread it runs on."""
    thread = threading.current_thread()
    if thread is threading.main_thread():
        return "api+workers"
    if "process_request" in thread.name:
        return "state backend"
    return "lease renewals"  # the engine's step lease and the partition mutex, while steps run


def tally(counter: Counter[str]) -> Callable[..., None]:
    """A botocore event handler counting requests by ``who`` makes them."""

    def count(**_: Any) -> None:
        counter.update([who()])

    return count


_method = threading.local()


def by_store_method(counter: Counter[str]) -> Callable[..., None]:
    """A botocore event handler counting requests by the ``StateStore`` method making them
    (the outermost one of the thread; ``track_store_methods`` records it)."""

    def count(**_: Any) -> None:
        counter.update([getattr(_method, "name", None) or "(not a store method)"])

    return count


def track_store_methods() -> None:
    """Make every ``StateStore`` method of the DynamoDB store record its name while it runs."""
    from functions_aws.dynamodb_store import DynamoStateStore
    from nclav.ports import StateStore

    def tracked(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            outer = getattr(_method, "name", None)
            _method.name = outer or name
            try:
                return method(*args, **kwargs)
            finally:
                _method.name = outer

        return call

    for name in (n for n in vars(StateStore) if not n.startswith("_")):
        setattr(DynamoStateStore, name, tracked(name, getattr(DynamoStateStore, name)))


def deploy(name: str, api_url: str, scratch: Path) -> tuple[str, str, str]:
    """Resources for one deployment in moto, and the environment that points at them.

    Returns the API token and the two queue URLs.
    """
    import boto3

    from functions_aws import bootstrap
    from functions_aws.dynamodb_store import create_table
    from functions_aws.s3_blobs import create_bucket
    from functions_aws.sqs_queue import create_queues

    sqs = boto3.client("sqs")
    create_table(boto3.client("dynamodb"), name)
    create_bucket(boto3.client("s3"), name)
    steps_url, _ = create_queues(sqs, f"{name}-steps", 6, visibility_timeout_s=60)
    iac_url, _ = create_queues(sqs, f"{name}-iac", 6, visibility_timeout_s=60)
    token = secrets.token_hex(32)
    prefix = f"{name}/"
    boto3.client("secretsmanager").create_secret(Name=f"{prefix}api-token", SecretString=token)
    os.environ.update(
        NCLAV_TABLE=name,
        NCLAV_BUCKET=name,
        NCLAV_STEPS_QUEUE_URL=steps_url,
        NCLAV_IAC_QUEUE_URL=iac_url,
        NCLAV_SECRET_PREFIX=prefix,
        NCLAV_CLOUD="local",
        NCLAV_WORKSPACES=str(scratch / name),
        NCLAV_API_URL=api_url,
    )
    bootstrap.install(None)
    return token, steps_url, iac_url


def bench_dynamodb() -> None:
    if shutil.which("terraform") is None:
        print("DynamoDB requests: skipped (terraform is not on PATH)")
        return
    import boto3

    from functions_aws import bootstrap
    from functions_aws.dynamodb_store import count_requests
    from nclav.bundle import pack_directory

    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        CHECKPOINT_DISABLE="1",
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), FunctionUrl)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api_url = f"http://127.0.0.1:{server.server_address[1]}"
    print("DynamoDB requests (moto; real terraform; local driver; a fresh deployment per tree)")
    track_store_methods()
    with moto_server() as moto, tempfile.TemporaryDirectory() as scratch:
        os.environ["AWS_ENDPOINT_URL"] = moto
        for example in ("product-a", "chain"):
            token, steps_url, iac_url = deploy(f"nclav-{example}", api_url, Path(scratch))
            client = bootstrap.runtime().client("dynamodb")
            counts: Counter[str] = count_requests(client)
            by_who: Counter[str] = Counter()
            client.meta.events.register("before-call.dynamodb.*", tally(by_who))
            by_method: Counter[str] = Counter()
            client.meta.events.register("before-call.dynamodb.*", by_store_method(by_method))
            pump = Pump(boto3.client("sqs"), steps_url, iac_url)
            tree = REPO / "examples" / example / "enclaves"
            digest = call_api("POST", "/bundles", token, pack_directory(tree)[1])[1]["digest"]
            for label in ("apply", "no-op apply"):
                counts.clear()
                by_who.clear()
                by_method.clear()
                body = json.dumps({"bundle": digest}).encode()
                status, run = call_api("POST", "/reconcile", token, body)
                assert status in (200, 202), run
                pump.drain()
                total, ops, parts = sum(counts.values()), counts.most_common(), by_who.most_common()
                methods = ", ".join(f"{k} {n}" for k, n in by_method.most_common())
                if "id" not in run:  # nothing to do: no run was made
                    steps = 0
                else:
                    status, final = call_api("GET", f"/runs/{run['id']}", token)
                    assert final["status"] == "succeeded", final
                    steps = len(final["steps"])
                per_step = f"{total / steps:.1f} per step, {steps} steps" if steps else "no steps"
                if steps:
                    met = "met" if total / steps <= 16 else "OVER"
                    per_step += f"; target at most 16 per step: {met}"
                print(f"  {example:<10} {label:<12} {total:5d} requests ({per_step})")
                print(f"  {'':<23} by operation: {', '.join(f'{k} {n}' for k, n in ops)}")
                print(f"  {'':<23} by caller:    {', '.join(f'{k} {n}' for k, n in parts)}")
                print(f"  {'':<23} by method:    {methods}")
    server.shutdown()
    server.server_close()


@contextmanager
def environment_kept() -> Iterator[None]:
    """Restore ``os.environ`` afterwards: each part points the AWS clients and the runtime at
    its own moto server and deployment (``deploy``), which the next part must not inherit
    (the cost section's deployment has another secret prefix)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per import timing")
    parser.add_argument("--skip-dynamodb", action="store_true", help="no DynamoDB counts")
    parser.add_argument("--skip-cold", action="store_true", help="no cold first request")
    args = parser.parse_args()
    lines_report()
    bench_imports(args.runs)
    if not args.skip_cold:
        with environment_kept():
            bench_cold(args.runs)
    if not args.skip_dynamodb:
        with environment_kept():
            bench_dynamodb()
        from aws_cost import print_costs  # the cost section (scripts/aws_cost.py)

        print_costs()


if __name__ == "__main__":
    main()
