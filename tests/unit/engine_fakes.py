"""Test doubles for the engine: a fake Terraform, a driver that fails on demand, a queue in hand.

None of them runs terraform. ``FakeIac`` has the signatures of ``PartitionIac``; ``FlakyDriver``
implements the ``Driver`` protocol on top of ``LocalDriver``; ``SyncQueue`` keeps messages in
lists that a test drains itself, holding delayed ones aside until a ``ManualClock`` passes them.
``Rig`` wires them into an ``Engine`` over ``InMemoryStateStore`` and ``DirectoryBlobStore``.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from nclav.config import load_directory
from nclav.engine import Engine, LocalDriver
from nclav.graph import validate_graph
from nclav.local import DirectoryBlobStore, InMemoryStateStore, ThreadWorkQueue
from nclav.model import Cloud
from nclav.plan import Plan, plan_changes
from nclav.ports import ManualClock, SystemClock

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nclav.engine import PartitionIac
    from nclav.graph import Graph
    from nclav.model import EnclaveConfig, Export, Import, PartitionConfig
    from nclav.ports import Clock
    from nclav.records import AuditEvent, Run, StepRecord
    from nclav.state import EnclaveState, Handle

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


class Journal:
    """One ordered log shared by the driver and the IaC fake: ("what", "which") entries."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[tuple[str, str]] = []

    def add(self, what: str, which: str) -> None:
        with self.lock:
            self.entries.append((what, which))

    def index(self, what: str, which: str) -> int:
        with self.lock:
            return self.entries.index((what, which))

    def count(self, what: str, which: str | None = None) -> int:
        with self.lock:
            return sum(1 for w, x in self.entries if w == what and which in (None, x))

    def of(self, *whats: str) -> list[tuple[str, str]]:
        with self.lock:
            return [e for e in self.entries if e[0] in whats]


class Failures:
    """Exceptions to raise per key: a queue consumed one per call, or one raised every time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queued: dict[str, list[BaseException]] = defaultdict(list)
        self.always: dict[str, BaseException] = {}

    def next(self, key: str) -> BaseException | None:
        with self.lock:
            if self.queued.get(key):
                return self.queued[key].pop(0)
            return self.always.get(key)

    def times(self, key: str, error: BaseException, n: int) -> None:
        with self.lock:
            self.queued[key].extend([error] * n)

    def forever(self, key: str, error: BaseException) -> None:
        with self.lock:
            self.always[key] = error

    def stop(self, key: str) -> None:
        with self.lock:
            self.queued.pop(key, None)
            self.always.pop(key, None)


@dataclass
class ApplyCall:
    run_id: str | None
    key: str  # "enclave/partition"
    inputs: dict[str, str]
    files: dict[str, bytes]
    update: bool
    outputs: dict[str, str] | None = None  # None while running or when it failed
    error: str | None = None


@dataclass
class FakeIac:
    """``PartitionIac``'s ``apply``/``destroy`` without terraform.

    Outputs are ``{key: "enclave/partition/key"}`` unless ``outputs["enclave/partition"]`` says
    otherwise. ``failures`` raises on demand (keys "apply:e/p" and "destroy:e/p"); a gate set in
    ``gates["e/p"]`` holds the apply until the test sets it (``entered["e/p"]`` is set once an
    apply of that partition has started). ``overlaps`` lists every partition that ever had two
    operations in flight at once.
    """

    journal: Journal = field(default_factory=Journal)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    failures: Failures = field(default_factory=Failures)
    gates: dict[str, threading.Event] = field(default_factory=dict)
    entered: dict[str, threading.Event] = field(
        default_factory=lambda: defaultdict(threading.Event)
    )
    delay_s: float = 0.0
    applies: list[ApplyCall] = field(default_factory=list)
    destroys: list[tuple[str | None, str]] = field(default_factory=list)
    destroy_files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # the last ones
    workdirs_lost: set[str] = field(default_factory=set)  # "e/p" whose workspace is gone
    overlaps: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _active: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def apply(
        self,
        run_id: str | None,
        enclave_id: str,
        config: PartitionConfig,
        files: Mapping[str, bytes],
        inputs: Mapping[str, str],
        env: Mapping[str, str],
        *,
        update: bool,
    ) -> dict[str, str]:
        key = f"{enclave_id}/{config.id}"
        call = ApplyCall(run_id, key, dict(inputs), dict(files), update)
        with self.lock:
            self.applies.append(call)
        self._enter(key, "apply")
        try:
            self.entered[key].set()
            gate = self.gates.get(key)
            if gate is not None:
                assert gate.wait(30), f"gate of {key} never opened"
            if self.delay_s:
                time.sleep(self.delay_s)
            error = self.failures.next(f"apply:{key}")
            if error is not None:
                call.error = str(error)
                raise error
            chosen = self.outputs.get(key, {})
            outputs = {k: chosen.get(k, f"{key}/{k}") for k in config.declared_outputs}
            call.outputs = outputs
            return outputs
        finally:
            self._leave(key, "apply")

    def destroy(
        self,
        run_id: str | None,
        enclave_id: str,
        config: PartitionConfig | None,
        files: Mapping[str, bytes],
        env: Mapping[str, str],
    ) -> bool:
        key = f"{enclave_id}/{config.id if config else ''}"
        with self.lock:
            self.destroys.append((run_id, key))
            self.destroy_files[key] = dict(files)
        self._enter(key, "destroy")
        try:
            error = self.failures.next(f"destroy:{key}")
            if error is not None:
                raise error
            if key in self.workdirs_lost and not files:
                return False  # as PartitionIac: no working directory and nothing to rebuild it
            return config is not None
        finally:
            self._leave(key, "destroy")

    def _enter(self, key: str, op: str) -> None:
        with self.lock:
            self._active[key] += 1
            if self._active[key] > 1:
                self.overlaps.append(key)
        self.journal.add(f"iac.{op}.start", key)

    def _leave(self, key: str, op: str) -> None:
        self.journal.add(f"iac.{op}.end", key)
        with self.lock:
            self._active[key] -= 1

    def apply_count(self, key: str | None = None) -> int:
        with self.lock:
            return sum(1 for c in self.applies if key in (None, c.key))

    def applies_of(self, key: str) -> list[ApplyCall]:
        with self.lock:
            return [c for c in self.applies if c.key == key]


MUTATING = (
    "provision_enclave",
    "teardown_enclave",
    "provision_partition",
    "teardown_partition",
    "provision_export",
    "teardown_export",
    "provision_import",
    "teardown_import",
)


class FlakyDriver:
    """The local driver, journaling every call; ``failures`` keys are "method:which"."""

    cloud = Cloud.LOCAL

    def __init__(self, journal: Journal) -> None:
        self.inner = LocalDriver()
        self.journal = journal
        self.failures = Failures()
        self.gates: dict[str, threading.Event] = {}  # "method:which" -> held until set
        self.entered: dict[str, threading.Event] = defaultdict(threading.Event)

    def _call(self, method: str, which: str) -> None:
        key = f"{method}:{which}"
        self.journal.add(f"driver.{method}", which)
        self.entered[key].set()
        gate = self.gates.get(key)
        if gate is not None:
            assert gate.wait(30), f"gate of {key} never opened"
        error = self.failures.next(key)
        if error is not None:
            raise error

    def mutations(self) -> list[tuple[str, str]]:
        return self.journal.of(*(f"driver.{m}" for m in MUTATING))

    def provision_enclave(
        self, enclave: EnclaveConfig, handle: Handle | None
    ) -> tuple[Handle, dict[str, str]]:
        self._call("provision_enclave", enclave.id)
        return self.inner.provision_enclave(enclave, handle)

    def teardown_enclave(self, enclave: EnclaveConfig | None, handle: Handle | None) -> None:
        self._call("teardown_enclave", enclave.id if enclave else "")

    def provision_partition(
        self,
        enclave: EnclaveConfig,
        partition: PartitionConfig,
        handle: Handle | None,
        *,
        enclave_handle: Handle | None = None,
    ) -> Handle:
        self._call("provision_partition", f"{enclave.id}/{partition.id}")
        return self.inner.provision_partition(
            enclave, partition, handle, enclave_handle=enclave_handle
        )

    def teardown_partition(
        self,
        enclave_id: str,
        partition_id: str,
        handle: Handle | None,
        *,
        enclave_handle: Handle | None = None,
    ) -> None:
        self._call("teardown_partition", f"{enclave_id}/{partition_id}")

    def provision_export(
        self, enclave: EnclaveConfig, export: Export, outputs: Mapping[str, str]
    ) -> Handle:
        self._call("provision_export", f"{enclave.id}/{export.name}")
        return self.inner.provision_export(enclave, export, outputs)

    def teardown_export(self, enclave_id: str, name: str, handle: Handle | None) -> None:
        self._call("teardown_export", f"{enclave_id}/{name}")

    def provision_import(
        self, enclave: EnclaveConfig, imp: Import, export_handle: Handle | None
    ) -> Handle:
        self._call("provision_import", f"{enclave.id}/{imp.alias}")
        return self.inner.provision_import(enclave, imp, export_handle)

    def teardown_import(self, enclave_id: str, alias: str, handle: Handle | None) -> None:
        self._call("teardown_import", f"{enclave_id}/{alias}")

    def auth_env(
        self, enclave_handle: Handle | None, partition_handle: Handle | None
    ) -> dict[str, str]:
        return {}


class SyncQueue:
    """A ``WorkQueue`` drained by the test, in the test's thread.

    Messages sent with a delay wait aside until the ``ManualClock`` reaches their due time.
    ``sent`` keeps every ``(message, delay_s)`` ever sent.
    """

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.ready: list[dict[str, str]] = []
        self.delayed: list[tuple[float, dict[str, str]]] = []
        self.sent: list[tuple[dict[str, str], float]] = []
        self.handled: list[dict[str, str]] = []

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None:
        msg = dict(message)
        self.sent.append((msg, delay_s))
        if delay_s > 0:
            self.delayed.append((self.clock.now() + delay_s, msg))
        else:
            self.ready.append(msg)

    def close(self) -> None:
        return None

    def _release_due(self) -> None:
        now = self.clock.now()
        due = [d for d in self.delayed if d[0] <= now]
        self.delayed = [d for d in self.delayed if d[0] > now]
        self.ready.extend(m for _, m in sorted(due, key=lambda d: d[0]))

    def drain(
        self,
        handle: Callable[[dict[str, str]], None],
        *,
        advance: bool = True,
        run_id: str | None = None,
        limit: int = 10_000,
    ) -> int:
        """Handle messages until none is due; with ``advance``, move the clock to delayed ones.

        With ``run_id``, only that run's messages are handled; the others stay queued.
        """
        count = 0
        while count < limit:
            self._release_due()
            mine = [i for i, m in enumerate(self.ready) if run_id in (None, m["run_id"])]
            if mine:
                msg = self.ready.pop(mine[0])
                self.handled.append(msg)
                handle(msg)
                count += 1
            elif self.delayed and advance:
                self.clock.advance(max(min(d[0] for d in self.delayed) - self.clock.now(), 0))
            else:
                return count
        raise AssertionError(f"queue did not drain within {limit} messages")


def tree_files(graph: Graph, root: Path) -> dict[str, dict[str, bytes]]:
    return {
        f"{e.id}/{p.id}": {name: (root / p.dir / name).read_bytes() for name, _ in p.files}
        for e in graph.enclaves.values()
        for p in e.partitions
    }


class Rig:
    """An ``Engine`` on the in-memory store, with the fakes above.

    ``sync=True`` (default): a ``ManualClock`` and a ``SyncQueue`` the test drains with
    ``drain()``. ``sync=False``: a ``SystemClock`` and a real ``ThreadWorkQueue``.
    Bundles are names of trees: ``trees[name]`` is a directory loaded on every call.
    """

    def __init__(self, tmp: Path, *, sync: bool = True, workers: int = 4, **engine: Any) -> None:
        self.tmp = tmp
        self.trees: dict[str, Path] = {}
        self.store = InMemoryStateStore()
        self.blobs = DirectoryBlobStore(tmp / "blobs")
        self.journal = Journal()
        self.iac = FakeIac(journal=self.journal)
        self.driver = FlakyDriver(self.journal)
        self.clock: Clock
        self.manual: ManualClock | None = None
        self.sync_queue: SyncQueue | None = None
        self.thread_queue: ThreadWorkQueue | None = None
        if sync:
            self.manual = ManualClock()
            self.clock = self.manual
            self.sync_queue = SyncQueue(self.manual)
            queue: Any = self.sync_queue
        else:
            self.clock = SystemClock()
            self.thread_queue = ThreadWorkQueue(lambda m: self.engine.handle(m), workers=workers)
            queue = self.thread_queue
        self.engine = Engine(
            self.store,
            queue,
            self.blobs,
            self.clock,
            {Cloud.LOCAL: self.driver},
            Cloud.LOCAL,
            cast("PartitionIac", self.iac),
            self.load,
            **engine,
        )

    # -- trees -------------------------------------------------------------------------------

    def add_tree(self, name: str, source: Path | None = None) -> Path:
        root = self.tmp / "trees" / name
        if source is not None:
            shutil.copytree(source, root)
        else:
            root.mkdir(parents=True)
        self.trees[name] = root
        return root

    def load(self, bundle: str) -> tuple[Graph, Mapping[str, Mapping[str, bytes]]]:
        root = self.trees[bundle]
        graph = validate_graph(load_directory(root))
        return graph, tree_files(graph, root)

    def plan(self, bundle: str) -> Plan:
        applied = {s.enclave_id: s for s in self.store.list_enclaves()}
        return plan_changes(self.load(bundle)[0], applied)

    # -- running -----------------------------------------------------------------------------

    @property
    def queue(self) -> SyncQueue:
        assert self.sync_queue is not None, "a threaded rig has no SyncQueue"
        return self.sync_queue

    @property
    def mclock(self) -> ManualClock:
        assert self.manual is not None, "a threaded rig has a SystemClock"
        return self.manual

    def drain(self, *, advance: bool = True, run_id: str | None = None) -> int:
        return self.queue.drain(self.engine.handle, advance=advance, run_id=run_id)

    def apply(self, bundle: str) -> Run:
        """Start a run and carry it to the end; return the final run."""
        run = self.engine.start_run(bundle)
        if self.sync_queue is not None:
            self.drain()
        else:
            assert self.thread_queue is not None
            assert self.thread_queue.wait_idle(timeout=20)
        final = self.run(run.id)
        assert final.status.final, final
        return final

    def run(self, run_id: str) -> Run:
        run = self.store.get_run(run_id)
        assert run is not None
        return run

    def steps(self, run_id: str) -> dict[str, StepRecord]:
        return {s.step_id: s for s in self.store.list_steps(run_id)}

    def step(self, run_id: str, step_id: str) -> StepRecord:
        step = self.store.get_step(run_id, step_id)
        assert step is not None, step_id
        return step

    def enclave(self, enclave_id: str) -> EnclaveState:
        found = self.store.get_enclave(enclave_id)
        assert found is not None, enclave_id
        return found[0]

    def events(self, run_id: str | None = None) -> list[AuditEvent]:
        return self.store.list_events(None, 10_000, run_id=run_id)

    def close(self) -> None:
        if self.thread_queue is not None:
            self.thread_queue.close()


def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


__all__ = [
    "EXAMPLES",
    "MUTATING",
    "ApplyCall",
    "FakeIac",
    "Failures",
    "FlakyDriver",
    "Journal",
    "Rig",
    "SyncQueue",
    "tree_files",
    "wait_for",
]
