"""The Firestore store's collection layout and document encoding (the design is in
``firestore_store``).

Every document path the store reads or writes is built here, so the documented layout and the
code cannot drift apart. ``<p>`` is the store's collection prefix (``NCLAV_COLLECTION_PREFIX``)::

    <p>enclaves/<enclave id>               doc, version
    <p>runs/<run id>                       doc, seq, status, unfinished_seq (sparse: while the
                                           run is not final), begun (it has steps)
    <p>runs/<run id>/<p>steps/<step id>    doc, version, order (plan order), run_seq, final,
                                           ready_at (sparse: while ready, records.ready_since),
                                           lease_at (sparse: while running, the lease expiry)
    <p>counters/<name>                     value: the last run / event / IaC run number given
    <p>events/<seq, 20 digits>             doc, seq, enclave_id, run_id
    <p>iac_runs/<IaC run id>               doc, partition (<enclave>/<partition>), sort
                                           (<started_at>#<insertion number>)
    <p>drift/<enclave>#<partition>         doc, enclave_id, partition_id
    <p>tf_locks/<quoted key>               key, info (terraform's lock info, JSON)
    <p>tf_states/<quoted key>              key, enclave_id, blob_key
    <p>mutexes/<quoted key>                owner, expires_at

Hot-path queries read sparse fields through single-field indexes (Firestore creates those by
itself; the collection-group scope of ``ready_at`` and ``lease_at`` is declared in
infra/gcp), so the sweeper never reads a step that is not ready or running:

* unfinished runs: ``unfinished_seq`` ascending;
* stuck ready steps: collection group ``<p>steps``, ``ready_at <= t``;
* expired leases: collection group ``<p>steps``, ``lease_at <= now``;
* a run's unfinished steps: ``final == false`` limit 1 (never a listing).

The listings that filter and order on two fields (runs by status, events by enclave or run,
IaC runs of a partition) need the composite indexes declared in infra/gcp; the emulator
needs none. ``doc`` and ``docz`` are exempt from indexing there.

Ids never contain ``/`` or ``#`` (``model.Id``); Terraform state keys (``enclave/partition``)
do, so those are percent-quoted into document ids.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from nclav.runtime.stores import pack_record, unpack_record

ENCLAVES = "enclaves"
RUNS = "runs"
STEPS = "steps"
COUNTERS = "counters"
EVENTS = "events"
IAC_RUNS = "iac_runs"
DRIFT = "drift"
TF_LOCKS = "tf_locks"
TF_STATES = "tf_states"
MUTEXES = "mutexes"

RUN_COUNTER = "runs"
EVENT_COUNTER = "events"
IAC_COUNTER = "iac_runs"

# A Firestore document holds at most 1 MiB (1,048,576 bytes) with its name and field names:
# the document's JSON gets this much after compression, the rest keeps ~48 KB of room.
MAX_DOC_BYTES = 1_000_000


def quoted(key: str) -> str:
    """A key with ``/`` (a Terraform state key) as a document id."""
    return quote(key, safe="")


def step_doc_id(step_id: str) -> str:
    """A step id as a document id: a partition's steps hold ``/`` ("provision_partition:e/p"),
    which Firestore reads as a path separator. Only ``%`` and ``/`` are escaped, so every id
    without them (enclave and wiring steps) keeps its document id."""
    return step_id.replace("%", "%25").replace("/", "%2F")


def drift_id(enclave_id: str, partition_id: str) -> str:
    return f"{enclave_id}#{partition_id}"


def doc_fields(doc: str, what: str) -> dict[str, Any]:
    """A record's JSON as ``doc`` (plain) or ``docz`` (zlib bytes, above core's
    ``COMPRESS_ABOVE``), never both: core's ``pack_record``, which raises
    ``RecordTooLargeError`` naming ``what`` when even the compressed bytes would not fit."""
    packed = pack_record(doc, what, max_bytes=MAX_DOC_BYTES, where="a Firestore document")
    return {"doc": packed} if isinstance(packed, str) else {"docz": packed}


def read_doc(data: dict[str, Any]) -> str:
    return unpack_record(data["docz"] if "docz" in data else str(data["doc"]))


__all__ = [
    "MAX_DOC_BYTES",
    "doc_fields",
    "drift_id",
    "quoted",
    "read_doc",
    "step_doc_id",
]
