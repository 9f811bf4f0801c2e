"""Content hashes: what changed since the last apply.

A hash is the SHA-256 of canonical JSON (sorted keys, no whitespace, UTF-8), so it depends on
what the YAML means and on the bytes of the partition's files, never on formatting, key order,
file listing order or where the tree sits on disk.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.config import LoadedEnclave, LoadedPartition
    from nclav.model import Export, Import


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(value: object) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def enclave_hash(enclave: LoadedEnclave) -> str:
    """The enclave's own settings; partitions are hashed (and reported) on their own."""
    doc = enclave.config.model_dump(mode="json", by_alias=True, exclude={"partitions"})
    return digest(doc)


# Keys of a partition's config.yml that say how nclav watches it, not what it is: changing
# them must not re-apply the partition.
NOT_HASHED = frozenset({"drift", "retry"})


def partition_hash(partition: LoadedPartition) -> str:
    """The partition's config (but ``NOT_HASHED``) plus the content of every file in its
    directory."""
    doc = partition.config.model_dump(mode="json", by_alias=True, exclude=set(NOT_HASHED))
    return digest({"config": doc, "files": [list(f) for f in partition.files]})


def inputs_hash(resolved_inputs: Mapping[str, str]) -> str:
    return digest(dict(resolved_inputs))


def export_hash(export: Export, outputs: Mapping[str, str]) -> str:
    """An export is re-wired when its settings or its target partition's outputs change."""
    return digest(
        {"export": export.model_dump(mode="json", by_alias=True), "outputs": dict(outputs)}
    )


def import_hash(imp: Import, exporter_export_hash: str | None) -> str:
    """An import is re-wired when its settings or the export it points at change."""
    return digest(
        {"import": imp.model_dump(mode="json", by_alias=True), "export": exporter_export_hash}
    )


__all__ = [
    "NOT_HASHED",
    "canonical_json",
    "digest",
    "enclave_hash",
    "export_hash",
    "import_hash",
    "inputs_hash",
    "partition_hash",
]
