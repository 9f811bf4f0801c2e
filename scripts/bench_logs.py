"""Blob-store requests per 1,000 IaC log lines: per-line appends (before) and chunks (now).

Each scenario writes terraform-like lines (80 characters) at a given rate, with a simulated
clock ticking the shipper once a second (as its timer thread does), into:

* ``S3BlobStore`` on moto's in-process S3, counting every S3 request with botocore's
  ``before-call.s3.*`` event: what the AWS runtime pays;
* the ``BlobStore`` port itself (calls on a counting wrapper): what any runtime pays.

"before" is how IaC logs were written until now: one ``append`` per line.

    .venv/bin/python scripts/bench_logs.py [--lines 1000 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT)]

from nclav.iac.logs import LogShipper, read_chunks  # noqa: E402
from nclav.local import DirectoryBlobStore  # noqa: E402

RATES: list[tuple[str, float | None]] = [
    ("burst", None),
    ("1000/s", 1000),
    ("100/s", 100),
    ("10/s", 10),
    ("1/s", 1),
]


class Counting:
    """Counts calls on any ``BlobStore``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def lines_of(n: int) -> list[str]:
    return [
        f"terraform_data.item[{i}]: Creation complete after 0s [id=...]".ljust(80) for i in range(n)
    ]


def shipped(blobs: Any, n: int, rate: float | None) -> None:
    clock = Clock()
    shipper = LogShipper(blobs, "iac-logs/e/p/run", clock=clock, timer=False)
    next_tick = 1.0
    for line in lines_of(n):
        shipper.write(line)
        if rate:
            clock.now += 1 / rate
        while clock.now >= next_tick:
            shipper.tick()
            next_tick += 1
    shipper.close()


def appended(blobs: Any, n: int) -> None:
    blobs.put("iac-logs/e/p/run.log", b"")
    for line in lines_of(n):
        blobs.append("iac-logs/e/p/run.log", (line + "\n").encode())


def s3_counts(n: int) -> dict[str, int] | None:
    try:
        import boto3
        from moto import mock_aws

        from functions_aws.s3_blobs import S3BlobStore
    except ImportError:
        return None
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    out: dict[str, int] = {}
    scenarios: list[tuple[str, float | None]] = [("before", None), *RATES]
    for label, rate in scenarios:
        with mock_aws():
            client = boto3.client("s3", region_name="us-east-1")
            client.create_bucket(Bucket="bench")
            counter = Counter[str]()

            def count(model: Any, counter: Counter[str] = counter, **_: Any) -> None:
                counter.update([model.name])

            client.meta.events.register("before-call.s3.*", count)
            blobs = S3BlobStore("bench", "nclav", client=client)
            if label == "before":
                appended(blobs, n)
            else:
                shipped(blobs, n, rate)
            out[label] = sum(counter.values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[1000, 2000])
    args = parser.parse_args()
    for n in args.lines:
        print(f"{n} lines of 80 characters:")
        with tempfile.TemporaryDirectory() as tmp:
            before = Counting(DirectoryBlobStore(Path(tmp) / "before"))
            appended(before, n)
            print(
                f"  BlobStore calls   before (append per line): {sum(before.calls.values()):6d}"
                f"  = {1000 * sum(before.calls.values()) / n:7.1f} per 1,000 lines"
            )
            for label, rate in RATES:
                blobs = Counting(DirectoryBlobStore(Path(tmp) / label.replace("/", "-")))
                shipped(blobs, n, rate)
                total = sum(blobs.calls.values())
                assert read_chunks(blobs.inner, "iac-logs/e/p/run").count(b"\n") == n
                print(
                    f"  BlobStore calls   now, {label:>7}:             {total:6d}"
                    f"  = {1000 * total / n:7.1f} per 1,000 lines"
                )
        s3 = s3_counts(n)
        if s3 is None:
            print("  S3 requests: skipped (boto3/moto not installed)")
            continue
        for label, total in s3.items():
            what = "before (append per line)" if label == "before" else f"now, {label:>7}"
            per = 1000 * total / n
            print(f"  S3 requests       {what:<26} {total:6d}  = {per:7.1f} per 1,000 lines")


if __name__ == "__main__":
    main()
