"""The engine carrying out real plans with real terraform, on the local adapters."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nclav.config import load_directory
from nclav.engine import Engine, LocalDriver, PartitionIac
from nclav.graph import validate_graph
from nclav.local import DirectoryBlobStore, InMemoryStateStore, ThreadWorkQueue
from nclav.model import Cloud
from nclav.plan import plan_changes
from nclav.ports import SystemClock
from nclav.records import EventKind, IacStatus, RunStatus, StepStatus
from nclav.state import Status

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from nclav.graph import Graph

pytestmark = pytest.mark.terraform

if shutil.which("terraform") is None:  # as tests/terraform/test_iac_runner.py: fail only in CI
    if os.environ.get("CI") == "true":
        pytest.fail("terraform is not on PATH: CI must run the terraform tests", pytrace=False)
    pytest.skip("terraform is not on PATH", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tree = tmp / "tree"
        shutil.copytree(REPO / "examples" / "product-a" / "enclaves", self.tree)
        self.store = InMemoryStateStore()
        self.blobs = DirectoryBlobStore(tmp / "blobs")
        clock = SystemClock()
        iac = PartitionIac(self.store, self.blobs, clock, tmp / "workspaces", timeout_s=300)
        self.queue = ThreadWorkQueue(lambda m: self.engine.handle(m), workers=2)
        self.engine = Engine(
            self.store,
            self.queue,
            self.blobs,
            clock,
            {Cloud.LOCAL: LocalDriver()},
            Cloud.LOCAL,
            iac,
            self.load,
            backoff_s=0.1,
        )

    def load(self, _digest: str) -> tuple[Graph, Mapping[str, Mapping[str, bytes]]]:
        graph = validate_graph(load_directory(self.tree))
        files = {
            f"{e.id}/{p.id}": {name: (self.tree / p.dir / name).read_bytes() for name, _ in p.files}
            for e in graph.enclaves.values()
            for p in e.partitions
        }
        return graph, files

    def apply(self) -> str:
        run = self.engine.start_run("tree")
        assert self.queue.wait_idle(timeout=240)
        final = self.store.get_run(run.id)
        assert final is not None
        assert final.status.final, final
        return run.id

    def plan_text(self) -> str:
        applied = {s.enclave_id: s for s in self.store.list_enclaves()}
        return plan_changes(self.load("")[0], applied).render_text()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.queue.close()


def test_apply_example_then_no_op_then_edit(harness: Harness) -> None:
    run_id = harness.apply()
    run = harness.store.get_run(run_id)
    assert run is not None and run.status == RunStatus.SUCCEEDED, run
    steps = harness.store.list_steps(run_id)
    assert {s.status for s in steps} == {StepStatus.SUCCEEDED}
    state = harness.store.get_enclave("product-a-dev")
    assert state is not None
    db = state[0].partitions["db"]
    assert db.meta.status == Status.ACTIVE
    assert db.resolved_outputs == {"hostname": "product-a-dev-db.postgres.internal", "port": "5432"}
    web = harness.store.get_enclave("web-dev")
    assert web is not None
    assert web[0].partitions["frontend"].resolved_outputs["hostname"] == "www.web-dev.local"
    assert harness.plan_text() == "No changes detected."
    iac_runs = harness.store.list_iac_runs("product-a-dev", "db")
    assert [r.status for r in iac_runs] == [IacStatus.SUCCEEDED]
    log = harness.blobs.get(iac_runs[0].log_blob or "").decode()
    assert "=== terraform apply ===" in log

    # A second apply with nothing changed runs no terraform at all.
    harness.apply()
    assert len(harness.store.list_iac_runs("product-a-dev", "db")) == 1

    # Changing db's hostname output re-applies db and, since its outputs moved, api.
    main_tf = harness.tree / "product-a" / "dev" / "db" / "main.tf"
    main_tf.write_text(main_tf.read_text().replace(".internal", ".internal.example"))
    run_id = harness.apply()
    by_id = {s.step_id: s.status for s in harness.store.list_steps(run_id)}
    assert by_id["provision_partition:product-a-dev/db"] == StepStatus.SUCCEEDED
    assert by_id["provision_partition:product-a-dev/api"] == StepStatus.SUCCEEDED
    assert len(harness.store.list_iac_runs("product-a-dev", "api")) == 2
    # The frontend reads only api's hostname and port, which did not move: skipped.
    assert by_id["provision_partition:web-dev/frontend"] == StepStatus.SKIPPED
    assert harness.plan_text() == "No changes detected."


def test_removed_partition_is_destroyed_and_failure_blocks_dependents(harness: Harness) -> None:
    harness.apply()
    # Remove the frontend partition: terraform destroy runs and its state goes.
    shutil.rmtree(harness.tree / "web" / "dev" / "frontend")
    (harness.tree / "web" / "dev" / "frontend").mkdir()
    run_id = harness.apply()
    teardown = [
        r for r in harness.store.list_iac_runs("web-dev", "frontend") if r.operation == "teardown"
    ]
    assert [r.status for r in teardown] == [IacStatus.SUCCEEDED]
    state = harness.store.get_enclave("web-dev")
    assert state is not None and "frontend" not in state[0].partitions
    kinds = [e.kind for e in harness.store.list_events(None, 100) if e.run_id == run_id]
    assert EventKind.PARTITION_DELETED in kinds

    # A syntax error in db: db fails with terraform's message, api is blocked, run failed.
    main_tf = harness.tree / "product-a" / "dev" / "db" / "main.tf"
    main_tf.write_text(main_tf.read_text() + "\nresource {\n")
    run_id = harness.apply()
    run = harness.store.get_run(run_id)
    assert run is not None and run.status == RunStatus.FAILED
    steps = {s.step_id: s for s in harness.store.list_steps(run_id)}
    assert steps["provision_partition:product-a-dev/db"].status == StepStatus.FAILED
    assert "terraform" in (steps["provision_partition:product-a-dev/db"].error or "")
    assert steps["provision_partition:product-a-dev/api"].status == StepStatus.BLOCKED
    state = harness.store.get_enclave("product-a-dev")
    assert state is not None
    db = state[0].partitions["db"]
    assert db.meta.status == Status.ERROR and db.meta.last_error is not None
    assert any("exited with code" in e for e in run.errors)
