"""nclav's naming rules for what drivers create in a cloud: its tag names and stable hashes.

Every cloud driver tags what it creates with the same keys (behaviour spec §1.5), so an
operator, the orphan scan and a later attempt of a step find nclav's resources the same way
on every cloud, and derives names from ids with ``short_hash``: a pure function of its text
(sha256, never ``hash()``), so a retried step in another process computes the same name.
"""

from __future__ import annotations

import hashlib

MANAGED = "nclav-managed"
ENCLAVE = "nclav-enclave"
PARTITION = "nclav-partition"
EXPORT = "nclav-export"
IMPORT = "nclav-import"


def short_hash(text: str, length: int = 8) -> str:
    """The first ``length`` hex digits of ``text``'s sha256: stable across processes."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def nclav_tags(enclave_id: str, **extra: str) -> dict[str, str]:
    """The tag set of a resource of ``enclave_id``; ``extra`` keys use '-' for '_'
    (``partition="p"`` -> ``{"partition": "p"}``, ``nclav_partition=`` -> ``nclav-partition``)."""
    tags = {MANAGED: "true", ENCLAVE: enclave_id}
    tags.update({k.replace("_", "-"): v for k, v in extra.items()})
    return tags


__all__ = ["ENCLAVE", "EXPORT", "IMPORT", "MANAGED", "PARTITION", "nclav_tags", "short_hash"]
