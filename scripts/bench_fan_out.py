"""DynamoDB requests and items read per step by the engine's own bookkeeping.

Runs plans of ``--steps`` steps (enclaves of one enclave step and four partition steps that
depend on it, the shape of a tree) through ``Engine`` on ``DynamoStateStore`` against a moto
server started here. ``carry_out`` is replaced by a step that succeeds at once, so what is
counted is the engine's work per step (claim, finish, fan-out, run completion), not a driver's.
Also what a sweeper pass costs while the run's ready steps wait in the queue (it must re-send
none of them, and read only its indexes).
Requests are counted with ``dynamodb_store.count_requests``; items read are the items the
responses returned (Query/BatchGetItem items, GetItem hits), what read capacity is billed on.

    .venv/bin/python scripts/bench_fan_out.py [--steps 100 300]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, deque
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import boto3

import nclav.engine.engine as engine_module
from functions_aws.dynamodb_store import DynamoStateStore, count_requests, create_table
from nclav.engine import Engine
from nclav.local import DirectoryBlobStore
from nclav.model import Cloud
from nclav.plan import Action, Plan, Step
from nclav.ports import ManualClock
from nclav.records import RunStatus, StepStatus

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from nclav.ports import IacRunner

REPO = Path(__file__).resolve().parents[1]


class ListQueue:
    """A ``WorkQueue`` drained in this thread (the steps here never retry, so no delays)."""

    def __init__(self) -> None:
        self.messages: deque[dict[str, str]] = deque()

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None:
        self.messages.append(dict(message))

    def close(self) -> None:
        return None

    def drain(self, engine: Engine) -> None:
        while self.messages:
            engine.handle(self.messages.popleft())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_plan(steps: int) -> Plan:
    """``steps // 5`` enclaves: an enclave step, then four partition steps depending on it."""
    out: list[Step] = []
    for e in range(steps // 5):
        enclave = f"provision_enclave:e{e:04d}"
        out.append(Step(enclave, Action.PROVISION_ENCLAVE, f"e{e:04d}", None, ()))
        for p in range(4):
            out.append(
                Step(
                    f"provision_partition:e{e:04d}/p{p}",
                    Action.PROVISION_PARTITION,
                    f"e{e:04d}",
                    f"p{p}",
                    (enclave,),
                )
            )
    return Plan(changes=(), steps=tuple(out))


def items_read(client: Any) -> Counter[str]:
    """Items returned by the read requests of ``client`` from now on, by operation."""
    counts: Counter[str] = Counter()

    def count(http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        name = str(model.name)
        if name == "Query":
            counts[name] += len(parsed.get("Items", []))
        elif name == "GetItem":
            counts[name] += 1 if "Item" in parsed else 0
        elif name == "BatchGetItem":
            counts[name] += sum(len(v) for v in parsed.get("Responses", {}).values())

    client.meta.events.register("after-call.dynamodb.*", count)
    return counts


@contextmanager
def moto(port: int) -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tests" / "moto_atomic.py"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench(url: str, steps: int, scratch: Path) -> None:
    client = boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    table = f"bench-{steps}-{time.monotonic_ns()}"
    create_table(client, table)
    store = DynamoStateStore(table, client=client)
    clock = ManualClock()
    queue = ListQueue()
    engine = Engine(
        store,
        queue,
        DirectoryBlobStore(scratch / table),
        clock,
        {},
        Cloud.LOCAL,
        cast("IacRunner", None),
        lambda bundle: (_ for _ in ()).throw(AssertionError(bundle)),
    )
    plan = tree_plan(steps)
    requests = count_requests(client)
    items = items_read(client)
    started = time.perf_counter()
    run = engine.start_plan(plan, None)
    sweeps = sweep_cost(engine, (requests, items), queue)
    queue.drain(engine)
    elapsed = time.perf_counter() - started - sweeps[2]
    final = store.get_run(run.id)
    assert final is not None and final.status == RunStatus.SUCCEEDED, final
    n = len(plan.steps)
    total, read = sum(requests.values()), sum(items.values())
    print(
        f"{n:5d} steps: {total / n:6.2f} requests/step, {read / n:8.1f} items read/step, "
        f"{elapsed:6.1f} s  ({', '.join(f'{k} {v}' for k, v in sorted(requests.items()))})"
    )
    print(
        f"{'':13}sweeper over {sweeps[3]} ready steps just sent: "
        f"{sweeps[0]} requests a pass, {sweeps[1]} re-sent in 3 passes"
    )


def sweep_cost(
    engine: Engine, counters: tuple[Counter[str], Counter[str]], queue: ListQueue
) -> tuple[int, int, float, int]:
    """Three sweeps over the just-begun run (its ready steps' messages are fresh): requests a
    pass, steps re-sent, seconds taken, ready steps; left out of the run's counts."""
    requests, items = counters
    before = (requests.copy(), items.copy())
    sent, started = len(queue.messages), time.perf_counter()
    resent = sum(engine.sweep() for _ in range(3))
    per_pass = (sum(requests.values()) - sum(before[0].values())) // 3
    for counter, saved in zip(counters, before, strict=True):
        counter.clear()
        counter.update(saved)
    assert len(queue.messages) - sent == resent
    return per_pass, resent, time.perf_counter() - started, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100])
    args = parser.parse_args()
    # The step itself succeeds at once: only the engine's bookkeeping is measured.
    setattr(engine_module, "carry_out", lambda ctx, step: StepStatus.SUCCEEDED)  # noqa: B010
    with tempfile.TemporaryDirectory() as scratch, moto(free_port()) as url:
        for steps in args.steps:
            bench(url, steps, Path(scratch))


if __name__ == "__main__":
    main()
