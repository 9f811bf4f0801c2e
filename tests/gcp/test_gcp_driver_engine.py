"""The GCP driver under core's engine, against the strict Google API fake: a tree of two GCP
enclaves (a PSC export and its import) applied, re-applied unchanged, and removed. Terraform is
replaced by a recorder of what it would get (its environment: the partition's token only)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest

from functions_gcp.driver import GcpDriver, GcpDriverConfig
from gcp_api_fake import GcpApiFake, anonymous_session, serve_fake
from nclav.config import load_directory
from nclav.engine import Engine, LocalDriver
from nclav.graph import validate_graph
from nclav.local import DirectoryBlobStore, InMemoryStateStore, ThreadWorkQueue
from nclav.model import Cloud
from nclav.ports import SystemClock
from nclav.records import RunStatus

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

    from nclav.graph import Graph
    from nclav.model import PartitionConfig

ATTACHMENT = "projects/acme-db/regions/us-central1/serviceAttachments/pg"
TREE = {
    "db/config.yml": """
id: db
name: Database
cloud: gcp
region: us-central1
network: {subnets: ["10.10.0.0/24"]}
dns: {zone: db.internal}
exports:
  - {name: pg, target_partition: pg, type: tcp, to: {enclave: app}, auth: native}
""",
    "db/pg/config.yml": """
id: pg
name: Postgres
produces: tcp
declared_outputs: [hostname, port, psc_service_attachment]
""",
    "db/pg/main.tf": "",
    "app/config.yml": """
id: app
name: Application
cloud: gcp
region: us-central1
network: {subnets: ["10.20.0.0/24"]}
dns: {zone: app.internal}
imports:
  - {from: db, export_name: pg, alias: pg}
""",
    "app/web/config.yml": """
id: web
name: Web
inputs:
  database: "{{ pg.hostname }}:{{ pg.port }}"
  project: "{{ nclav_project_id }}"
declared_outputs: []
""",
    "app/web/main.tf": "",
}


class RecordingIac:
    """``PartitionIac``'s apply/destroy, recording the inputs and environment terraform gets."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.applied: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        self.destroyed: list[str] = []

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
        with self.lock:
            self.applied[f"{enclave_id}/{config.id}"] = (dict(inputs), dict(env))
        outputs = {"hostname": "10.9.0.5", "port": "5432", "psc_service_attachment": ATTACHMENT}
        return {k: outputs[k] for k in config.declared_outputs}

    def destroy(
        self,
        run_id: str | None,
        enclave_id: str,
        config: PartitionConfig | None,
        files: Mapping[str, bytes],
        env: Mapping[str, str],
    ) -> bool:
        with self.lock:
            self.destroyed.append(f"{enclave_id}/{config.id if config else ''}")
        return True


@pytest.fixture
def fake() -> Iterator[GcpApiFake]:
    with serve_fake() as running:
        yield running


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    (root / "enclaves").mkdir(parents=True)
    for rel, text in files.items():
        path = root / "enclaves" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_gcp_tree_through_the_engine(fake: GcpApiFake, tmp_path: Path) -> None:
    config = GcpDriverConfig(
        parent="folders/123", billing_account="012345-6789AB-CDEF01", project_prefix="acme"
    )
    driver = GcpDriver(config, session=anonymous_session(), endpoints=fake.endpoints())
    trees = {
        "full": write_tree(tmp_path / "full", TREE),
        "empty": write_tree(tmp_path / "empty", {}),
    }

    def load(bundle: str) -> tuple[Graph, Mapping[str, Mapping[str, bytes]]]:
        root = trees[bundle]
        graph = validate_graph(load_directory(root / "enclaves"))
        files = {
            f"{e.id}/{p.id}": {n: (root / "enclaves" / p.dir / n).read_bytes() for n, _ in p.files}
            for e in graph.enclaves.values()
            for p in e.partitions
        }
        return graph, files

    iac = RecordingIac()
    store = InMemoryStateStore()
    engine: Any = None
    queue = ThreadWorkQueue(lambda m: engine.handle(m), workers=2)
    engine = Engine(
        store,
        queue,
        DirectoryBlobStore(tmp_path / "blobs"),
        SystemClock(),
        {Cloud.GCP: driver, Cloud.LOCAL: LocalDriver()},
        Cloud.GCP,
        iac,  # type: ignore[arg-type]
        load,
        max_deletes=10,
    )

    def run(bundle: str) -> Any:
        started = engine.start_run(bundle, allow_delete=bundle == "empty")
        assert queue.wait_idle(timeout=60)
        final = store.get_run(started.id)
        assert final is not None and final.status == RunStatus.SUCCEEDED, [
            (s.step_id, s.error) for s in store.list_steps(started.id)
        ]
        return final

    try:
        run("full")
        assert {"acme-db", "acme-app"} <= set(fake.projects)
        inputs, env = iac.applied["app/web"]
        assert inputs["database"] == "pg.app.internal:5432"  # through the PSC endpoint
        assert inputs["project"] == "acme-app"
        assert set(env) == {
            "GOOGLE_OAUTH_ACCESS_TOKEN",
            "GOOGLE_PROJECT",
            "GOOGLE_CLOUD_PROJECT",
            "GOOGLE_REGION",
        }
        assert env["GOOGLE_OAUTH_ACCESS_TOKEN"].endswith(
            "partition-web@acme-app.iam.gserviceaccount.com"
        )
        record = fake.records[("acme-app", "nclav-zone")][("pg.app.internal.", "A")]
        assert record["rrdatas"]
        state = store.get_enclave("app")
        assert state is not None
        assert state[0].import_handles["pg"]["type"] == "tcp"
        creates = len(fake.called("cloudresourcemanager.projects.create"))

        run("full")  # unchanged: nothing is created again
        assert len(fake.called("cloudresourcemanager.projects.create")) == creates

        run("empty")  # removed: partitions torn down, the projects pending deletion
        assert sorted(iac.destroyed) == ["app/web", "db/pg"]
        assert {fake.projects[p]["state"] for p in ("acme-db", "acme-app")} == {"DELETE_REQUESTED"}
        assert fake.service_accounts == {}
        assert fake.records[("acme-app", "nclav-zone")] == {}
    finally:
        queue.close()
