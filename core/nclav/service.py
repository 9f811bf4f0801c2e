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

    from nclav.engine import Driver, Engine
    from nclav.graph import Graph
    from nclav.model import Cloud
    from nclav.ports import BlobStore, StateStore
    from nclav.records import Run

Files = dict[str, dict[str, bytes]]


def bundle_blob(digest: str) -> str:
    return f"bundles/{digest}.tar.gz"


# What a loaded bundle costs in memory besides its files' bytes: its graph's records and the
# dictionaries holding them. Measured at ~1.8 KiB per file on the synthetic tree
# (scripts/synth_tree.py, 150 x 10: 0.6 MB of files took 5.5 MiB cached).
_BYTES_PER_FILE = 2048
DEFAULT_BUNDLE_CACHE_BYTES = 32 * 1024 * 1024


def bundle_cost(files: Mapping[str, bytes]) -> int:
    """The estimated memory of a loaded bundle: its files' sizes plus a per-file overhead."""
    return sum(len(data) for data in files.values()) + _BYTES_PER_FILE * len(files)


@dataclass
class Bundles:
    """Content-addressed bundles in the blob store, with their loaded graphs cached.

    The cache is bounded by estimated bytes (``bundle_cost``), not entries: eight large trees
    once held hundreds of MiB. The least recently used bundles go first; the newest one stays
    even when it alone is over the budget, since the steps of its run are about to load it.
    """

    blobs: BlobStore
    default_cloud: Cloud
    cache_bytes: int = DEFAULT_BUNDLE_CACHE_BYTES
    _cache: OrderedDict[str, tuple[Graph, Files, int]] = field(default_factory=OrderedDict)
    _cached_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def cached_bytes(self) -> int:
        """The estimated bytes the cache holds now."""
        return self._cached_bytes

    def cached(self) -> list[str]:
        """Digests in the cache, least recently used first."""
        with self._lock:
            return list(self._cache)

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
                cached = self._cache[digest]
                return cached[0], cached[1]
        key = bundle_blob(digest)
        if not self.blobs.exists(key):
            raise NotFoundError(f"bundle {digest!r} not found: upload it with POST /bundles first")
        files = unpack(self.blobs.get(key))
        graph = validate_graph(load_bundle(files), self.default_cloud)
        by_partition: Files = {
            f"{e.id}/{p.id}": {name: files[f"{p.dir}/{name}"] for name, _ in p.files}
            for e in graph.enclaves.values()
            for p in e.partitions
        }
        cost = bundle_cost(files)
        with self._lock:
            if digest not in self._cache:
                self._cache[digest] = (graph, by_partition, cost)
                self._cached_bytes += cost
            self._cache.move_to_end(digest)
            while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
                self._cached_bytes -= self._cache.popitem(last=False)[1][2]
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


__all__ = ["DEFAULT_BUNDLE_CACHE_BYTES", "Bundles", "Service", "bundle_blob", "bundle_cost"]
