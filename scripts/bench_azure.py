"""Benchmark of the Azure runtime's plumbing (issue 16 targets).

1. Cold import of ``functions_azure.function_app`` (what the Functions host imports before any
   function runs), in a fresh interpreter each time, median of ``--runs``. Target: at most
   300 ms.
2. Cold first request: a fresh process imports the app and calls its HTTP function once
   (``GET /health``; then, in another fresh process, an authenticated ``GET /runs``, which
   builds the runtime: settings, Cosmos/Blob/Queue clients, core's compose, the router) with
   the stand-ins configured: Azurite and cosmosdb-server started here, the deployment's
   container, queues and Cosmos container created first. Target: import + first call at most
   500 ms. Key Vault has no stand-in: the process's secret store is an in-memory one holding
   the API token (one import less than the real adapter).
3. Lines of ``functions_azure/`` without ``driver/`` against ``functions_aws/`` without
   ``driver/``. Target: no larger.

Cosmos requests per step are measured by scripts/bench_store.py.

    .venv/bin/python scripts/bench_azure.py [--runs 5] [--skip-cold]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[1]
IMPORT_TARGET_MS = 300.0
FIRST_REQUEST_TARGET_MS = 500.0

_IMPORT = """
import time
t0 = time.perf_counter()
import functions_azure.function_app
print((time.perf_counter() - t0) * 1000)
"""

_COLD = """
import json, sys, time
c0, t0 = time.process_time(), time.perf_counter()
import functions_azure.function_app as fa
t1 = time.perf_counter()
import azure.functions as func
from functions_azure import bootstrap
class Secrets:
    def __init__(self, token): self.values = {"api-token": token}
    def get(self, name): return self.values.get(name)
    def put(self, name, value): self.values[name] = value
    def delete(self, name): self.values.pop(name, None)
path, token = sys.argv[1], sys.argv[2]
bootstrap.install(bootstrap.AzureRuntime(bootstrap.Settings.from_env(), secrets=Secrets(token)))
auth = {"authorization": "Bearer " + token}
req = func.HttpRequest("GET", "http://bench" + path, headers=auth, body=b"")
result = fa.respond(req, lambda: bootstrap.runtime().router)
t2, c2 = time.perf_counter(), time.process_time()
took = {"import": (t1 - t0) * 1000, "call": (t2 - t1) * 1000, "cpu": (c2 - c0) * 1000}
print(json.dumps({**took, "status": result.status_code}))
"""


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCLAV_", "Azure"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "core"), str(REPO)])
    env.update(extra or {})
    return env


def bench_import(runs: int) -> float:
    times = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", _IMPORT], capture_output=True, text=True, check=True, env=_env()
        )
        times.append(float(done.stdout.strip().splitlines()[-1]))
    median = statistics.median(times)
    flag = "met" if median <= IMPORT_TARGET_MS else "OVER"
    print(
        f"function_app cold import: {median:.0f} ms median of {runs} "
        f"(target at most {IMPORT_TARGET_MS:.0f} ms: {flag})"
    )
    return median


@contextmanager
def stand_ins() -> Iterator[dict[str, str]]:
    """Azurite and cosmosdb-server on 127.0.0.1, and the app settings of a deployment on them."""
    sys.path.insert(0, str(REPO / "tests"))
    import pytest

    import azure_stand_ins as s  # type: ignore[import-not-found]
    from functions_azure._cosmos_docs import create_container as create_cosmos_container
    from functions_azure.blob_store import AzureBlobStore, create_container
    from functions_azure.queue import create_queues

    with ExitStack() as stack:
        try:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            storage = stack.enter_context(s.start_azurite(workdir))
            cosmos_url = stack.enter_context(s.start_cosmos_server(workdir))
        except pytest.skip.Exception as exc:
            raise SystemExit(f"stand-ins missing: {exc}") from None
        from azure.cosmos import CosmosClient
        from azure.storage.queue import QueueServiceClient

        blobs = AzureBlobStore.from_connection_string(storage, "nclav-blobs")
        create_container(blobs.container)
        service = QueueServiceClient.from_connection_string(storage)
        create_queues(service, "nclav-steps")
        create_queues(service, "nclav-iac")
        client = CosmosClient(cosmos_url, credential=s.COSMOS_KEY, enable_endpoint_discovery=False)
        create_cosmos_container(client.create_database_if_not_exists("nclav"), "state")
        yield {
            "NCLAV_STORAGE_ACCOUNT": s.DEV_ACCOUNT,
            "NCLAV_STORAGE_CONNECTION": storage,
            "NCLAV_COSMOS_ENDPOINT": cosmos_url,
            "NCLAV_COSMOS_KEY": s.COSMOS_KEY,
            "NCLAV_CLOUD": "local",
            "NCLAV_WORKSPACES": tempfile.mkdtemp(prefix="nclav-bench-ws-"),
        }


def bench_cold(runs: int) -> float:
    token = secrets.token_hex(32)
    worst = 0.0
    with stand_ins() as settings:
        for path in ("/health", "/runs"):
            results = []
            for _ in range(runs):
                done = subprocess.run(
                    [sys.executable, "-c", _COLD, path, token],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=_env(settings),
                )
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            statuses = {r["status"] for r in results}
            assert statuses == {200}, (path, statuses)
            imp = statistics.median(r["import"] for r in results)
            call = statistics.median(r["call"] for r in results)
            total = statistics.median(r["import"] + r["call"] for r in results)
            cpu = statistics.median(r["cpu"] for r in results)
            worst = max(worst, total)
            flag = "met" if total <= FIRST_REQUEST_TARGET_MS else "OVER"
            print(
                f"cold first request GET {path}: import {imp:.0f} ms + first call {call:.0f} ms "
                f"= {total:.0f} ms (CPU {cpu:.0f} ms) median of {runs} (target at most "
                f"{FIRST_REQUEST_TARGET_MS:.0f} ms: {flag})"
            )
    return worst


def lines(folder: str) -> int:
    files = (p for p in (REPO / folder).rglob("*.py") if "driver" not in p.parts)
    return sum(len(p.read_text().splitlines()) for p in files)


def lines_report() -> None:
    azure, aws = lines("functions_azure"), lines("functions_aws")
    flag = "met" if azure <= aws else "OVER"
    print(
        f"functions_azure lines (without driver/): {azure}; functions_aws: {aws} "
        f"(target no larger: {flag})"
    )


def byte_compile() -> None:
    """Byte-compile the app's code as ``pip install`` does for a deployment (the measured
    processes must not compile every module they import: PYTHONDONTWRITEBYTECODE may be set)."""
    import compileall

    for folder in ("core/nclav", "functions_azure"):
        compileall.compile_dir(REPO / folder, quiet=1, workers=1)


def main() -> None:
    byte_compile()
    print(
        f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (timings scale with it)"
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-cold", action="store_true", help="no stand-ins, no first request")
    args = parser.parse_args()
    bench_import(args.runs)
    if not args.skip_cold:
        bench_cold(args.runs)
    lines_report()


if __name__ == "__main__":
    main()
