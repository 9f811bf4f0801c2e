"""What nclav on AWS costs: 1,000 partition applies, and an idle month, at list prices.

Measured, not guessed: a moto server (started here) holds a deployment made like infra/aws's
(tests/aws/aws_harness.py), and a reconcile of a tree of ``--partitions`` partitions (real
terraform, the local driver, ``terraform_data`` resources) runs through the handlers, as
does one sweeper invocation. Every AWS request each makes is counted by service and operation
(``BaseClient._make_api_call``), and each handler invocation is timed. The counts are then
priced with ``scripts/aws_prices.json`` (on-demand list prices with their date; free tiers
ignored):

* Lambda: one request per handler invocation, GB-seconds from the measured durations at the
  memory infra/aws gives each function (api/worker 1024 MB, iac 2048 MB, schedule 512 MB).
  Durations here include moto's latency on this machine, so they are an upper-bound guess.
* DynamoDB: one request unit per request (nclav's items are under 1 KB to write and 4 KB to
  read), two per item in a transaction (TransactWriteItems/TransactGetItems).
* SQS, S3, Secrets Manager: per request. S3 PUT/LIST/POST vs GET/HEAD tiers.
* Fixed per month: the token secret, two DLQ alarms; logs at ~1 KB per invocation.

An idle month is the sweeper every minute (43,200 invocations) and nothing else.

    .venv/bin/python scripts/aws_cost.py [--partitions 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PRICES = Path(__file__).with_name("aws_prices.json")
MEMORY_GB = {"api": 1.0, "worker": 1.0, "iac_worker": 2.0, "schedule": 0.5}
IDLE_SWEEPS = 30 * 24 * 60  # rate(1 minute)
LOG_BYTES_PER_INVOCATION = 1024
_S3_WRITES = {"PutObject", "CopyObject", "ListObjectsV2", "ListObjects", "ListObjectVersions"}
_S3_WRITES |= {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}


class Meter:
    """Requests by (function, service, operation) and handler seconds by function."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.units: Counter[tuple[str, str, str]] = Counter()
        self.seconds: dict[str, float] = {}
        self.invocations: Counter[str] = Counter()
        self.function = "setup"
        self._lock = threading.Lock()

    def install(self) -> None:
        from botocore.client import BaseClient

        original = BaseClient._make_api_call  # noqa: SLF001
        meter = self

        def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
            service = client.meta.service_model.signing_name
            units = 1
            if operation in ("TransactWriteItems", "TransactGetItems"):
                units = 2 * len(params.get("TransactItems", ()))
            key = (meter.function, service, operation)
            with meter._lock:  # noqa: SLF001
                meter.requests[key] += 1
                meter.units[key] += units
            return original(client, operation, params)

        BaseClient._make_api_call = counted  # noqa: SLF001

    def wrap(self, module: Any, function: str) -> None:
        handler = module.handler

        def timed(*args: Any, **kwargs: Any) -> Any:
            previous, self.function = self.function, function
            started = time.perf_counter()
            try:
                return handler(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                self.seconds[function] = self.seconds.get(function, 0.0) + elapsed
                self.invocations[function] += 1
                self.function = previous

        module.handler = timed


def price(
    meter: Meter, functions: set[str], scale: float, prices: dict[str, Any]
) -> dict[str, float]:
    """Dollars by service for ``scale`` times what ``functions`` did."""
    lam, ddb, sqs = prices["lambda"], prices["dynamodb_on_demand"], prices["sqs_standard"]
    s3, sm, cw = prices["s3_standard"], prices["secrets_manager"], prices["cloudwatch"]
    cost: Counter[str] = Counter()
    invocations = sum(n for f, n in meter.invocations.items() if f in functions)
    cost["Lambda requests"] = invocations * scale * lam["per_million_requests"] / 1e6
    gb_s = sum(meter.seconds[f] * MEMORY_GB[f] for f in meter.seconds if f in functions)
    cost["Lambda GB-s"] = gb_s * scale * lam["per_gb_second_x86_64"]
    for (function, service, op), n in meter.requests.items():
        if function not in functions:
            continue
        units = meter.units[(function, service, op)] * scale
        if service == "dynamodb":
            read = op in ("GetItem", "Query", "BatchGetItem", "TransactGetItems", "Scan")
            rate = ddb[
                "per_million_read_request_units" if read else "per_million_write_request_units"
            ]
            cost["DynamoDB"] += units * rate / 1e6
        elif service == "sqs":
            cost["SQS"] += n * scale * sqs["per_million_requests"] / 1e6
        elif service == "s3":
            tier = (
                "per_thousand_put_copy_post_list"
                if op in _S3_WRITES
                else "per_thousand_get_and_other"
            )
            cost["S3"] += n * scale * s3[tier] / 1e3
        elif service == "secretsmanager":
            cost["Secrets Manager calls"] += n * scale * sm["per_ten_thousand_api_calls"] / 1e4
    logs_gb = invocations * scale * LOG_BYTES_PER_INVOCATION / 1e9
    cost["CloudWatch Logs"] = logs_gb * cw["logs_per_gb_ingested"]
    return dict(cost)


APPLY = {"api", "worker", "iac_worker"}


def measure(partitions: int) -> Meter:
    """A reconcile of ``partitions`` partitions, then one sweeper invocation, metered."""
    sys.path[:0] = [str(REPO / "tests" / "aws"), str(REPO / "tests"), str(REPO / "scripts")]
    import pytest
    from aws_harness import Deployment, Pump, enclaves_tree  # type: ignore[import-not-found]

    from bench_aws import Context, moto_server
    from functions_aws import api, iac_worker, schedule, worker

    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        patch = pytest.MonkeyPatch()
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            patch.setenv(name, value)
        try:
            meter = Meter()
            meter.install()
            deployment = Deployment(patch, Path(tmp))
            tree = enclaves_tree(Path(tmp) / "tree", "cost")
            for i in range(partitions):
                part = tree / "cost" / f"p{i}"
                part.mkdir()
                (part / "config.yml").write_text(f"id: p{i}\nname: p{i}\n")
                (part / "main.tf").write_text('resource "terraform_data" "x" { input = "x" }\n')
            for module, name in (
                (api, "api"),
                (worker, "worker"),
                (iac_worker, "iac_worker"),
                (schedule, "schedule"),
            ):
                meter.wrap(module, name)
            run = deployment.api.start_reconcile(tree)
            final = Pump(deployment).run(run, timeout=600)
            if final["status"] != "succeeded":
                raise RuntimeError(f"the metered reconcile failed: {final}")
            schedule.handler({}, Context())
            return meter
        finally:
            patch.undo()


def print_costs(partitions: int = 5) -> None:
    prices = json.loads(PRICES.read_text())
    meter = measure(partitions)
    apply_cost = price(meter, APPLY, 1000 / partitions, prices)
    idle_cost = price(meter, {"schedule"}, IDLE_SWEEPS, prices)
    fixed = {
        "Secrets Manager secret": prices["secrets_manager"]["per_secret_month"],
        "CloudWatch alarms (2 DLQs)": 2 * prices["cloudwatch"]["per_standard_alarm_month"],
    }
    print(
        f"Cost at on-demand list prices, {prices['region']}, as of {prices['as_of']} "
        "(scripts/aws_prices.json; free tiers ignored)"
    )
    per = sum(n for k, n in meter.requests.items() if k[0] in APPLY) / partitions
    sweep = sum(n for k, n in meter.requests.items() if k[0] == "schedule")
    seconds = {k: round(v, 2) for k, v in meter.seconds.items()}
    print(
        f"  measured: {partitions} partition applies, {per:.0f} AWS requests per partition; "
        f"one sweep {sweep} requests; invocations {dict(meter.invocations)}, seconds {seconds}"
    )
    print(f"  1,000 partition applies: ${sum(apply_cost.values()):.4f}")
    for name, dollars in sorted(apply_cost.items(), key=lambda kv: -kv[1]):
        print(f"    {name:<26} ${dollars:.4f}")
    month = sum(idle_cost.values()) + sum(fixed.values())
    print(f"  an idle month (the sweeper every minute): ${month:.4f}")
    for name, dollars in sorted({**idle_cost, **fixed}.items(), key=lambda kv: -kv[1]):
        print(f"    {name:<26} ${dollars:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("NCLAV_CLOUD", "local")
    print_costs(args.partitions)


if __name__ == "__main__":
    main()
