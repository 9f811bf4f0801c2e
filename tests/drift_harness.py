"""An engine with real terraform, real bundles and the local adapters, for drift tests and
``scripts/bench_drift.py``; and the Terraform provider mirror the AWS drift tests need."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from nclav.bundle import pack_directory
from nclav.drift import DriftOptions, DriftScheduler, check_partition
from nclav.engine import Engine, LocalDriver, PartitionIac
from nclav.iac.state_backend import TerraformStateBackend
from nclav.local import DirectoryBlobStore, InMemoryStateStore, ThreadWorkQueue
from nclav.model import Cloud
from nclav.ports import SystemClock
from nclav.service import Bundles

if TYPE_CHECKING:
    from nclav.records import DriftRecord, Run

# Where a filesystem mirror of Terraform providers may be (the directory holding
# ``registry.terraform.io``); NCLAV_TEST_TF_MIRROR names another.
MIRROR_CANDIDATES = (
    "/opt/tf-plugins",
    "/usr/share/terraform/plugins",
    "/usr/local/share/terraform/plugins",
    str(Path.home() / ".terraform.d" / "plugins"),
)
AWS_PROVIDER = "registry.terraform.io/hashicorp/aws"

DATA_PARTITION = """\
resource "terraform_data" "t" {
  input = "%s"
}

output "v" {
  value = terraform_data.t.output
}

output "w" {
  value = terraform_data.t.output
}
"""


def aws_mirror() -> Path | None:
    """The provider mirror holding hashicorp/aws, or None."""
    named = os.environ.get("NCLAV_TEST_TF_MIRROR")
    for candidate in ([named] if named else []) + list(MIRROR_CANDIDATES):
        root = Path(candidate)
        if (root / AWS_PROVIDER).is_dir():
            return root
    return None


def write_mirror_config(mirror: Path, dest: Path) -> Path:
    """A Terraform CLI config installing every provider from ``mirror`` only (offline)."""
    dest.write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n',
        encoding="utf-8",
    )
    return dest


def write_tree(
    root: Path, partitions: dict[str, str], *, drift: dict[str, str] | None = None
) -> Path:
    """Enclave ``e`` holding each partition id -> its main.tf; ``drift`` -> its drift: text."""
    enclave = root / "e"
    enclave.mkdir(parents=True, exist_ok=True)
    (enclave / "config.yml").write_text("id: e\nname: e\ncloud: local\nregion: local-1\n")
    for pid, main_tf in partitions.items():
        part = enclave / pid
        part.mkdir(exist_ok=True)
        config = f"id: {pid}\nname: {pid}\n"
        if drift and pid in drift:
            config += f"drift: {drift[pid]}\n"
        (part / "config.yml").write_text(config)
        (part / "main.tf").write_text(main_tf)
    return root


class DriftHarness:
    def __init__(self, tmp: Path, *, workers: int = 2, timeout_s: float = 300.0) -> None:
        self.tmp = tmp
        self.store = InMemoryStateStore()
        self.blobs = DirectoryBlobStore(tmp / "blobs")
        self.clock = SystemClock()
        self.bundles = Bundles(self.blobs, Cloud.LOCAL)
        self.iac = PartitionIac(
            self.store, self.blobs, self.clock, tmp / "workspaces", timeout_s=timeout_s
        )
        self.queue = ThreadWorkQueue(lambda m: self.engine.handle(m), workers=workers)
        self.engine = Engine(
            self.store,
            self.queue,
            self.blobs,
            self.clock,
            {Cloud.LOCAL: LocalDriver()},
            Cloud.LOCAL,
            self.iac,
            self.bundles.load,
            backoff_s=0.1,
        )
        self.options = DriftOptions(interval_s=3600, concurrency=2)
        self.scheduler = DriftScheduler(self.store, self.queue, self.options, self.bundles.load)
        self.state = TerraformStateBackend(self.store, self.blobs, self.clock)

    def close(self) -> None:
        self.queue.close(drain=False, timeout=60)
        self.iac.close()

    def submit(self, tree: Path) -> str:
        _, data, _ = pack_directory(tree)
        return str(self.bundles.put(data)["digest"])

    def apply(self, tree: Path, timeout: float = 240) -> Run:
        run = self.engine.start_run(self.submit(tree))
        assert self.queue.wait_idle(timeout=timeout)
        final = self.store.get_run(run.id)
        assert final is not None and final.status.final, final
        return final

    def check(self, partition: str) -> DriftRecord | None:
        return check_partition(self.engine, "e", partition, self.options)

    def state_versions(self, partition: str) -> int:
        return len(self.blobs.list(f"tfstate/e/{partition}/"))

    def tamper_output(self, partition: str, name: str, value: str) -> None:
        """A new state version whose output ``name`` no longer matches its resource."""
        raw = self.state.get_state("e", partition)
        assert raw is not None
        doc = json.loads(raw)
        doc["serial"] += 1
        doc["outputs"][name]["value"] = value
        self.state.post_state("e", partition, json.dumps(doc).encode(), None)
