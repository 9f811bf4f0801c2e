"""Requests per step of each cloud state store, counted at the transport, for one workload.

The same engine workload runs once over each ``StateStore`` adapter: core's composition (the
engine, the service, the terraform runner with its loopback state backend) with the local
driver, real terraform, a blob store on disk and a queue drained in this process, applying
``examples/<tree>/enclaves`` (a reconcile, then every step, Terraform state traffic included).
Only the state store changes, and each one's requests are counted where its SDK sends them:

* **DynamoDB** (moto server): botocore's ``before-send`` event, one per HTTP request.
* **Firestore** (the gcloud emulator): a gRPC client interceptor on the client's channel, one
  per RPC (a streamed ``RunQuery`` or ``BatchGetDocuments`` counts once).
* **Cosmos DB** (@vercel/cosmosdb-server): the azure-core transport, one per HTTP request;
  with an estimate of request units (below).

Each figure is printed with ``met``/``OVER`` against the DynamoDB figure of the same tree
(issue 12: Firestore operations per step at most DynamoDB's; issue 16: Cosmos requests per
step at most DynamoDB's). A store whose stand-in is missing is skipped with the reason.

Request units (Cosmos), estimated from sizes, since the stand-in charges nothing. Azure's
published figures ("Understand request unit consumption", learn.microsoft.com/azure/cosmos-db/
understand-request-unit-consumption; session consistency): a point read costs 1.00 RU at 1 KB,
1.04 at 2 KB, 1.14 at 4 KB, 1.33 at 8 KB, 1.67 at 16 KB, 2.19 at 32 KB, 4.76 at 64 KB; a write
(create, replace, upsert) 4.95 at 1 KB, 6.29 at 2 KB, 6.67 at 4 KB, 7.04 at 8 KB, 9.52 at 16
KB, 11.23 at 32 KB, 22.67 at 64 KB; in between, interpolated linearly; an item under 1 KB
costs the 1 KB figure. Here: a point read is charged by the size of the item returned, a
write by the size of the item sent; a delete as a 1 KB write; a patch as a write of its body;
a transactional batch as the sum of its operations (each write by its own size); a query
(charged by Azure by its index work, "potentially more than point operations") as 2.5 RU
plus a point read of the bytes it returns. Metadata requests (the account, the database, the
container, partition key ranges) are counted as requests but not charged.

    .venv/bin/python scripts/bench_store.py [--tree product-a] [--stores dynamodb,firestore,cosmos]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from nclav.ports import StateStore

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "core", REPO, REPO / "tests", REPO / "scripts"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

STORES = ("dynamodb", "firestore", "cosmos")


class Skip(Exception):
    """A store that cannot be measured here (its stand-in is missing); the reason."""


# -- the workload ---------------------------------------------------------------------------


class _Queue:
    """A ``WorkQueue`` this process drains: every message handled in order, in this thread."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def send(self, message: Mapping[str, Any], delay_s: float = 0) -> None:
        with self.lock:
            self.messages.append((time.monotonic() + delay_s, dict(message)))

    def close(self) -> None:
        return None

    def drain(self, handle: Callable[[dict[str, Any]], None]) -> int:
        handled = 0
        while True:
            with self.lock:
                if not self.messages:
                    return handled
                self.messages.sort(key=lambda m: m[0])
                due, message = self.messages.pop(0)
            time.sleep(max(0.0, due - time.monotonic()))
            handle(message)
            handled += 1


_method = threading.local()  # the outermost StateStore method running on this thread


@dataclass
class Tally:
    """Requests counted at a store's transport while ``active``, by operation and by the
    ``StateStore`` method that made them."""

    active: bool = False
    by_operation: Counter[str] = field(default_factory=Counter)
    by_method: Counter[str] = field(default_factory=Counter)
    ru: float = 0.0

    def add(self, operation: str, ru: float = 0.0) -> None:
        if self.active:
            self.by_operation[operation] += 1
            self.by_method[getattr(_method, "name", None) or "(not a store method)"] += 1
            self.ru += ru

    @property
    def total(self) -> int:
        return sum(self.by_operation.values())

    def clear(self) -> None:
        self.by_operation.clear()
        self.by_method.clear()
        self.ru = 0.0


class _Tracked:
    """A ``StateStore`` proxy recording which port method is running (for ``by_method``)."""

    def __init__(self, inner: StateStore) -> None:
        from nclav.ports import StateStore as Port

        self._inner = inner
        self._port = {n for n in vars(Port) if not n.startswith("_")}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self._port:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            outer = getattr(_method, "name", None)
            _method.name = outer or name
            try:
                return attr(*args, **kwargs)
            finally:
                _method.name = outer

        return call


@dataclass
class Result:
    store: str
    requests: int
    steps: int
    by_operation: Counter[str]
    by_method: Counter[str]
    ru: float | None = None

    @property
    def per_step(self) -> float:
        return self.requests / self.steps if self.steps else float("nan")


def run_workload(store: StateStore, tally: Tally, tree: Path, scratch: Path) -> tuple[int, int]:
    """Apply ``tree`` through core's composition over ``store``; (requests, steps)."""
    from nclav.bundle import pack_directory
    from nclav.engine import LocalDriver
    from nclav.local import DirectoryBlobStore
    from nclav.model import Cloud
    from nclav.ports import SystemClock
    from nclav.records import RunStatus
    from nclav.runtime.compose import compose
    from nclav.runtime.settings import Settings

    queue = _Queue()
    composition = compose(
        Settings(workspaces=scratch / "workspaces"),
        store=cast("StateStore", _Tracked(store)),
        queue=queue,
        blobs=DirectoryBlobStore(scratch / "blobs"),
        clock=SystemClock(),
        drivers={Cloud.LOCAL: LocalDriver()},
        token="bench-token",
    )
    try:
        digest = str(composition.bundles.put(pack_directory(tree)[1])["digest"])
        tally.clear()
        tally.active = True
        run = composition.service.reconcile(digest, "api", 0.0)
        assert run is not None, "nothing to apply"
        queue.drain(composition.engine.handle)
        tally.active = False
        final = store.get_run(run.id)
        assert final is not None and final.status == RunStatus.SUCCEEDED, final
        return tally.total, len(store.list_steps(run.id))
    finally:
        tally.active = False
        composition.iac.close()


# -- DynamoDB (moto) ------------------------------------------------------------------------


@contextmanager
def dynamodb_store(tally: Tally) -> Iterator[StateStore]:
    import boto3
    from botocore.config import Config

    from bench_aws import moto_server
    from functions_aws.dynamodb_store import DynamoStateStore, create_table

    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
    )
    with moto_server() as url:
        client = boto3.client("dynamodb", endpoint_url=url, config=Config(max_pool_connections=32))
        create_table(client, "nclav-bench")

        def sent(**kwargs: Any) -> None:  # one per HTTP request (retries included)
            target = kwargs["request"].headers.get("X-Amz-Target", b"")
            name = target.decode() if isinstance(target, bytes) else str(target)
            tally.add(name.rsplit(".", 1)[-1] or "?")

        client.meta.events.register("before-send.dynamodb", sent)
        yield DynamoStateStore("nclav-bench", client=client)


# -- Firestore (gcloud emulator) ------------------------------------------------------------


class _Factory:
    """What a stand-in fixture asks of pytest's ``tmp_path_factory``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))


@contextmanager
def stand_in(fixture: Any, root: Path) -> Iterator[str]:
    """Run a session stand-in fixture of tests/ outside pytest; its skip becomes ``Skip``."""
    import pytest

    generator = fixture._get_wrapped_function()(_Factory(root))  # noqa: SLF001
    try:
        value = next(generator)
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        raise Skip(str(getattr(exc, "msg", exc))) from None
    except Exception as exc:  # noqa: BLE001 - a stand-in that did not start: say so, go on
        raise Skip(f"the stand-in did not start: {type(exc).__name__}: {exc}") from None
    try:
        yield value
    finally:
        generator.close()


@contextmanager
def firestore_store(tally: Tally, root: Path) -> Iterator[StateStore]:
    import grpc  # type: ignore[import-untyped]
    from google.cloud import firestore

    import stand_ins  # type: ignore[import-not-found]
    from functions_gcp.firestore_store import FirestoreStateStore

    class Interceptor(
        grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
        grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
        grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
        grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
    ):
        def _count(self, continuation: Any, details: Any, request: Any) -> Any:
            tally.add(str(details.method).rsplit("/", 1)[-1])
            return continuation(details, request)

        intercept_unary_unary = intercept_unary_stream = _count
        intercept_stream_unary = intercept_stream_stream = _count

    class CountedClient(firestore.Client):
        def _emulator_channel(self, transport: Any) -> Any:
            channel = super()._emulator_channel(transport)  # type: ignore[no-untyped-call]
            return grpc.intercept_channel(channel, Interceptor())

    with stand_in(stand_ins.firestore_emulator, root) as host:
        os.environ["FIRESTORE_EMULATOR_HOST"] = host
        try:
            yield FirestoreStateStore(CountedClient(project=stand_ins.FIRESTORE_PROJECT))
        finally:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)


# -- Cosmos DB (@vercel/cosmosdb-server) ----------------------------------------------------

# Azure's published RU figures by item size in KB (see the module doc).
_READ_RU = ((1, 1.00), (2, 1.04), (4, 1.14), (8, 1.33), (16, 1.67), (32, 2.19), (64, 4.76))
_WRITE_RU = ((1, 4.95), (2, 6.29), (4, 6.67), (8, 7.04), (16, 9.52), (32, 11.23), (64, 22.67))
QUERY_BASE_RU = 2.5


def ru_of(table: tuple[tuple[int, float], ...], size_bytes: int) -> float:
    """The RU figure of ``table`` for an item of ``size_bytes``, linearly interpolated."""
    kb = max(size_bytes / 1024, 1.0)
    for (k0, r0), (k1, r1) in zip(table, table[1:], strict=False):
        if kb <= k1:
            return r0 + (r1 - r0) * (kb - k0) / (k1 - k0)
    (k0, r0), (k1, r1) = table[-2], table[-1]
    return r1 + (r1 - r0) * (kb - k1) / (k1 - k0)  # beyond the table: its last slope


def cosmos_charge(
    method: str, path: str, headers: Mapping[str, str], sent: bytes, got: bytes
) -> tuple[str, float]:
    """(operation, estimated RU) of one Cosmos request (see the module doc)."""
    parts = [p for p in path.split("/") if p]
    on_items = len(parts) >= 5 and parts[4] == "docs"
    if not on_items:
        return f"{method} {parts[-1] if parts else '/'} (metadata)", 0.0
    if headers.get("x-ms-cosmos-is-batch-request", "").lower() == "true":
        try:
            operations = json.loads(sent)
        except ValueError:
            operations = []
        total = 0.0
        for op in operations if isinstance(operations, list) else []:
            kind = str(op.get("operationType", "")).lower()
            body = json.dumps(op.get("resourceBody", {})).encode()
            total += ru_of(_READ_RU, len(body)) if kind == "read" else ru_of(_WRITE_RU, len(body))
        return "batch", total
    if method == "POST" and headers.get("x-ms-documentdb-isquery", "").lower() == "true":
        return "query", QUERY_BASE_RU + ru_of(_READ_RU, len(got))
    if method == "GET":
        return ("read" if len(parts) >= 6 else "read feed"), ru_of(_READ_RU, len(got))
    if method == "DELETE":
        return "delete", ru_of(_WRITE_RU, 1024)
    if method == "PATCH":
        return "patch", ru_of(_WRITE_RU, len(sent))
    verb = {"POST": "create/upsert", "PUT": "replace"}.get(method, method)
    return verb, ru_of(_WRITE_RU, len(sent))


@contextmanager
def cosmos_store(tally: Tally, root: Path) -> Iterator[StateStore]:
    from azure.core.pipeline.transport import RequestsTransport
    from azure.cosmos import CosmosClient

    import azure_stand_ins  # type: ignore[import-not-found]
    from functions_azure._cosmos_docs import CosmosDocuments, create_container
    from nclav.docstore import DocumentStateStore

    class CountedTransport(RequestsTransport):  # type: ignore[misc]
        def send(self, request: Any, **kwargs: Any) -> Any:
            response = super().send(request, **kwargs)
            from urllib.parse import urlsplit

            body = request.data if isinstance(request.data, bytes) else (request.data or "")
            sent = body if isinstance(body, bytes) else str(body).encode()
            try:
                got = response.body() or b""
            except Exception:  # a streamed body: nothing to size
                got = b""
            headers = {k.lower(): str(v) for k, v in request.headers.items()}
            operation, ru = cosmos_charge(
                request.method, urlsplit(request.url).path, headers, sent, got
            )
            tally.add(operation, ru)
            return response

    with stand_in(azure_stand_ins.cosmos_server, root) as url:
        client = CosmosClient(
            url,
            credential=azure_stand_ins.COSMOS_KEY,
            enable_endpoint_discovery=False,
            transport=CountedTransport(),
        )
        database = client.create_database(azure_stand_ins.unique_name("bench"))
        try:
            yield DocumentStateStore(CosmosDocuments(create_container(database, "state")))
        finally:
            client.delete_database(database.id)


# -- the report -----------------------------------------------------------------------------


def measure(name: str, tree: Path) -> Result:
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix=f"nclav-bench-{name}-") as tmp, ExitStack() as stack:
        scratch = Path(tmp)
        if name == "dynamodb":
            store = stack.enter_context(dynamodb_store(tally))
        elif name == "firestore":
            store = stack.enter_context(firestore_store(tally, scratch))
        else:
            store = stack.enter_context(cosmos_store(tally, scratch))
        requests, steps = run_workload(store, tally, tree, scratch)
        ru = tally.ru if name == "cosmos" else None
        return Result(
            name, requests, steps, Counter(tally.by_operation), Counter(tally.by_method), ru
        )


LABELS = {"dynamodb": "DynamoDB", "firestore": "Firestore", "cosmos": "Cosmos DB"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="product-a", help="examples/<tree>/enclaves")
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated")
    args = parser.parse_args()
    if shutil.which("terraform") is None:
        print("bench-store: skipped (terraform is not on PATH)")
        return
    os.environ.setdefault("CHECKPOINT_DISABLE", "1")
    tree = REPO / "examples" / args.tree / "enclaves"
    print(
        f"State-store requests per step: apply of examples/{args.tree} through core's engine "
        "(real terraform, local driver; Terraform state traffic included), counted at each "
        "store's transport"
    )
    baseline: float | None = None
    for name in [s.strip() for s in args.stores.split(",") if s.strip()]:
        if name not in STORES:
            parser.error(f"--stores: unknown store {name!r} (expected {', '.join(STORES)})")
        label = LABELS[name]
        try:
            result = measure(name, tree)
        except Skip as why:
            print(f"  {label:<10} skipped: {why}")
            continue
        line = (
            f"  {label:<10} {result.requests:5d} requests, {result.steps} steps: "
            f"{result.per_step:.1f} per step"
        )
        if name == "dynamodb":
            baseline = result.per_step
        elif baseline is not None:
            flag = "met" if result.per_step <= baseline else "OVER"
            line += f" (target at most DynamoDB's {baseline:.1f}: {flag})"
        else:
            line += " (no DynamoDB figure to compare with)"
        print(line)
        if result.ru is not None:
            per = result.ru / result.steps if result.steps else float("nan")
            print(f"  {'':<10} ~{result.ru:.0f} request units estimated ({per:.1f} per step)")
        ops = ", ".join(f"{k} {n}" for k, n in result.by_operation.most_common())
        print(f"  {'':<10} by operation: {ops}")
        methods = ", ".join(f"{k} {n}" for k, n in result.by_method.most_common())
        print(f"  {'':<10} by method:    {methods}")


if __name__ == "__main__":
    main()
