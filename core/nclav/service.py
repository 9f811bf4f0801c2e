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
from nclav.engine.engine import empty_tree_issue
from nclav.errors import Issue, NotFoundError, SpecError
from nclav.graph import validate_graph
from nclav.plan import driver_issues, plan_changes
from nclav.records import RunStatus

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

    def bundle_for(
        self, bundle: str | None, enclaves_dir: str | None, *, allow_delete: bool = False
    ) -> str:
        """The digest of the tree a request names; a tree with no enclave, or one naming a
        cloud without a driver here, is refused (422) naming the request field or the file."""
        if bundle and enclaves_dir:
            raise _request_error("bundle", "give either bundle or enclaves_dir, not both")
        if bundle:
            graph, _ = self.bundles.load(bundle)
            self._check_tree(graph, "bundle", allow_delete)
            return bundle
        if not enclaves_dir:
            raise _request_error("bundle", "a bundle digest (POST /bundles) is required")
        if not self.local_dirs:
            raise _request_error("enclaves_dir", "only the local runtime reads server-side paths")
        digest, data, desired = pack_directory(enclaves_dir)
        # Validate here too, so every problem names the file under the directory as given.
        self._check_tree(validate_graph(desired, self.default_cloud), "enclaves_dir", allow_delete)
        if self.bundles.blobs.exists(bundle_blob(digest)):
            return digest  # an unchanged tree: unpacking what we just packed would only cost
        return str(self.bundles.put(data)["digest"])

    def _check_tree(self, graph: Graph, field_name: str, allow_delete: bool) -> None:
        issues = driver_issues(graph, self.drivers, self.default_cloud)
        if issues:
            raise SpecError(issues)
        if not graph.enclaves and not allow_delete:
            raise SpecError([empty_tree_issue(field_name)])

    def dry_run(self, digest: str, *, resources_only: bool = False) -> dict[str, Any]:
        graph, _ = self.bundles.load(digest)
        issues = driver_issues(graph, self.drivers, self.default_cloud)
        if issues:
            raise SpecError(issues)
        applied = {s.enclave_id: s for s in self.store.list_enclaves()}
        plan = plan_changes(graph, applied, resources_only=resources_only)
        return {
            "bundle": digest,
            "changes": [c.to_json() for c in plan.changes],
            "steps": [s.to_json() for s in plan.steps],
            "dry_run": True,
            "errors": [],
            # What the delete guard would say if the run began now (it decides at begin).
            "deletions": plan.deletions(),
            "deletes_every_enclave": plan.deletes_every_enclave(list(applied)),
            "max_deletes": self.engine.max_deletes,
        }

    def reconcile(
        self,
        digest: str,
        trigger: str,
        wait_s: float,
        *,
        max_deletes: int | None = None,
        allow_delete: bool = False,
        resources_only: bool = False,
    ) -> Run | None:
        """Start (and wait up to ``wait_s`` for) a reconcile; None when it has nothing to do."""
        run = self.engine.start_run_if_changed(
            digest,
            trigger,
            max_deletes=max_deletes,
            allow_delete=allow_delete,
            resources_only=resources_only,
        )
        return None if run is None else self._waited(run, wait_s)

    def destroy_enclaves(
        self,
        enclave_ids: list[str],
        wait_s: float,
        *,
        max_deletes: int | None = None,
        allow_delete: bool = False,
        resources_only: bool = False,
    ) -> Run:
        """Queue a destroy, planned when it begins (behind earlier runs on those enclaves)."""
        run = self.engine.start_destroy(
            enclave_ids,
            max_deletes=max_deletes,
            allow_delete=allow_delete,
            resources_only=resources_only,
        )
        return self._waited(run, wait_s)

    def destroy_partition(
        self,
        enclave_id: str,
        partition_id: str,
        wait_s: float,
        *,
        max_deletes: int | None = None,
        allow_delete: bool = False,
    ) -> Run:
        run = self.engine.start_destroy(
            [enclave_id], partition_id, max_deletes=max_deletes, allow_delete=allow_delete
        )
        return self._waited(run, wait_s)

    def approve(self, run_id: str, wait_s: float) -> Run:
        run = self.engine.approve(run_id)
        return self._waited(run, wait_s)

    def retry(self, run_id: str, wait_s: float) -> Run:
        """Queue a new try of a failed or cancelled run (``Engine.retry``) and wait for it."""
        run = self.engine.retry(run_id)
        return self._waited(run, wait_s)

    def cancel(self, run_id: str) -> Run:
        return self.engine.cancel(run_id)

    def _waited(self, run: Run, wait_s: float) -> Run:
        """``wait`` for a run the engine just returned: with no time to wait, or nothing to
        wait for, that run as it is (the engine's latest view of it), without a read."""
        if wait_s <= 0 or run.status.final or run.status == RunStatus.AWAITING_APPROVAL:
            return run
        return self.wait(run.id, wait_s)

    def wait(self, run_id: str, wait_s: float) -> Run:
        """The run, once final or after ``wait_s`` seconds, whichever comes first."""
        deadline = time.monotonic() + max(wait_s, 0.0)
        delay = 0.02
        while True:
            run = self.store.get_run(run_id)
            if run is None:
                raise NotFoundError(f"run {run_id!r} not found")
            if (
                run.status.final
                or run.status == RunStatus.AWAITING_APPROVAL
                or time.monotonic() >= deadline
            ):
                return run
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
            delay = min(delay * 2, 0.5)


def _request_error(field_name: str, message: str) -> SpecError:
    return SpecError([Issue("request", None, field_name, message)])


__all__ = ["DEFAULT_BUNDLE_CACHE_BYTES", "Bundles", "Service", "bundle_blob", "bundle_cost"]
