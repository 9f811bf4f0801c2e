"""The application service every runtime's API calls: bundles, plans, runs, destroys.

It names no concrete adapter: the runtime's bootstrap hands it the ports and the engine.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nclav.bundle import bundle_digest, pack_directory, unpack
from nclav.config import load_bundle
from nclav.errors import Issue, NotFoundError, SpecError
from nclav.graph import validate_graph
from nclav.plan import plan_changes, plan_partition_teardown, plan_teardown

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.config import Desired
    from nclav.engine import Driver, Engine
    from nclav.graph import Graph
    from nclav.model import Cloud
    from nclav.ports import BlobStore, StateStore
    from nclav.records import Run

Files = dict[str, dict[str, bytes]]


def bundle_blob(digest: str) -> str:
    return f"bundles/{digest}.tar.gz"


@dataclass
class Bundles:
    """Content-addressed bundles in the blob store, with their loaded graphs cached."""

    blobs: BlobStore
    default_cloud: Cloud
    cache_size: int = 8
    _cache: OrderedDict[str, tuple[Graph, Files]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, data: bytes) -> dict[str, Any]:
        """Store an uploaded bundle (idempotent); its digest is of its files, not its bytes."""
        files = unpack(data)
        digest = bundle_digest(files)
        key = bundle_blob(digest)
        created = not self.blobs.exists(key)
        if created:
            self.blobs.put(key, data)
        return {"digest": digest, "files": len(files), "bytes": len(data), "created": created}

    def load(self, digest: str) -> tuple[Graph, Files]:
        with self._lock:
            if digest in self._cache:
                self._cache.move_to_end(digest)
                return self._cache[digest]
        key = bundle_blob(digest)
        if not self.blobs.exists(key):
            raise NotFoundError(f"bundle {digest!r} not found: upload it with POST /bundles first")
        files = unpack(self.blobs.get(key))
        return self._remember(digest, load_bundle(files), files)

    def prime(self, digest: str, desired: Desired, files: Mapping[str, bytes]) -> None:
        """Cache a bundle the server packed itself from ``desired`` (the git source), so its
        run neither unpacks nor loads the tree again; the blob must be stored already."""
        self._remember(digest, desired, files)

    def _remember(
        self, digest: str, desired: Desired, files: Mapping[str, bytes]
    ) -> tuple[Graph, Files]:
        graph = validate_graph(desired, self.default_cloud)
        by_partition: Files = {
            f"{e.id}/{p.id}": {name: files[f"{p.dir}/{name}"] for name, _ in p.files}
            for e in graph.enclaves.values()
            for p in e.partitions
        }
        with self._lock:
            self._cache[digest] = (graph, by_partition)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return graph, by_partition


@dataclass
class Service:
    store: StateStore
    bundles: Bundles
    engine: Engine
    drivers: Mapping[Cloud, Driver]
    default_cloud: Cloud
    local_dirs: bool = False  # the local runtime may read {"enclaves_dir": path} from its disk

    def bundle_for(self, bundle: str | None, enclaves_dir: str | None) -> str:
        if bundle and enclaves_dir:
            raise _request_error("bundle", "give either bundle or enclaves_dir, not both")
        if bundle:
            return bundle
        if not enclaves_dir:
            raise _request_error("bundle", "a bundle digest (POST /bundles) is required")
        if not self.local_dirs:
            raise _request_error("enclaves_dir", "only the local runtime reads server-side paths")
        digest, data, desired = pack_directory(enclaves_dir)
        # Validate here too, so every problem names the file under the directory as given.
        validate_graph(desired, self.default_cloud)
        if self.bundles.blobs.exists(bundle_blob(digest)):
            return digest  # an unchanged tree: unpacking what we just packed would only cost
        return str(self.bundles.put(data)["digest"])

    def dry_run(self, digest: str) -> dict[str, Any]:
        graph, _ = self.bundles.load(digest)
        applied = {s.enclave_id: s for s in self.store.list_enclaves()}
        plan = plan_changes(graph, applied)
        return {
            "bundle": digest,
            "changes": [c.to_json() for c in plan.changes],
            "steps": [s.to_json() for s in plan.steps],
            "dry_run": True,
            "errors": [],
        }

    def reconcile(self, digest: str, trigger: str, wait_s: float) -> Run:
        run = self.engine.start_run(digest, trigger)
        return self.wait(run.id, wait_s)

    def destroy_enclaves(self, enclave_ids: list[str], wait_s: float) -> Run:
        applied = {s.enclave_id: s for s in self.store.list_enclaves()}
        missing = [eid for eid in enclave_ids if eid not in applied]
        if missing:
            raise NotFoundError(f"enclave {missing[0]!r} not found")
        run = self.engine.start_plan(plan_teardown(applied, enclave_ids), None, "destroy")
        return self.wait(run.id, wait_s)

    def destroy_partition(self, enclave_id: str, partition_id: str, wait_s: float) -> Run:
        found = self.store.get_enclave(enclave_id)
        if found is None:
            raise NotFoundError(f"enclave {enclave_id!r} not found")
        if partition_id not in found[0].partitions:
            raise NotFoundError(f"partition {partition_id!r} not found in enclave {enclave_id!r}")
        plan = plan_partition_teardown(found[0], partition_id)
        run = self.engine.start_plan(plan, None, "destroy")
        return self.wait(run.id, wait_s)

    def wait(self, run_id: str, wait_s: float) -> Run:
        """The run, once final or after ``wait_s`` seconds, whichever comes first."""
        deadline = time.monotonic() + max(wait_s, 0.0)
        delay = 0.02
        while True:
            run = self.store.get_run(run_id)
            if run is None:
                raise NotFoundError(f"run {run_id!r} not found")
            if run.status.final or time.monotonic() >= deadline:
                return run
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
            delay = min(delay * 2, 0.5)


def _request_error(field_name: str, message: str) -> SpecError:
    return SpecError([Issue("request", None, field_name, message)])


__all__ = ["Bundles", "Service", "bundle_blob"]
