"""``DocumentStateStore``: the StateStore over a documents port (``nclav.docstore.port``).

The whole store's logic lives here once: an adapter supplies only the port's conditional
operations (DynamoDB's in functions_aws/_dynamo_docs.py, the in-memory one in ``memory``).
Every compare-and-swap is a server-side condition (never a read, then a write), and every
read the engine decides on is consistent. The layout is one table (``layout``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nclav.docstore import layout as lay
from nclav.docstore.partitions import DocPartitions
from nclav.docstore.port import ConditionFailedError, Delete, Patch, Put, Query, absent, eq
from nclav.docstore.runs import DocRuns
from nclav.docstore.steps import DocSteps
from nclav.errors import ConflictError
from nclav.records import AuditEvent, DriftRecord
from nclav.state import EnclaveState

if TYPE_CHECKING:
    from nclav.docstore.port import Doc, Documents, Key


def _drift_key(enclave_id: str, partition_id: str) -> Key:
    return lay.DRIFT, f"{enclave_id}#{partition_id}"


class DocumentStateStore(DocRuns, DocSteps, DocPartitions):
    def __init__(self, docs: Documents) -> None:
        self.docs = docs
        self._held_docs: dict[Key, Doc] = {}
        self._iac_places: dict[str, Key] = {}

    def ping(self) -> None:
        self.docs.get((lay.COUNTER, "PING"), consistent=False)

    # -- enclaves ------------------------------------------------------------------------------

    def get_enclave(self, enclave_id: str) -> tuple[EnclaveState, int] | None:
        doc = self.docs.get((lay.ENCLAVES, enclave_id))
        if doc is None:
            return None
        return EnclaveState.model_validate_json(lay.read_doc(doc)), int(doc["version"])

    def list_enclaves(self) -> list[EnclaveState]:
        docs = self.docs.query(Query(lay.ENCLAVES, consistent=True))
        return [EnclaveState.model_validate_json(lay.read_doc(d)) for d in docs]

    def put_enclave(self, state: EnclaveState, expected_version: int | None) -> int:
        version = (expected_version or 0) + 1
        what = f"the state of enclave {state.enclave_id}"
        packed = lay.doc_fields(self.docs, state.model_dump_json(by_alias=True), what)
        doc = lay.keyed((lay.ENCLAVES, state.enclave_id), version=version, **lay.present(packed))
        when = absent("pk") if expected_version is None else eq("version", expected_version)
        try:
            self.docs.write(Put(doc, when))
        except ConditionFailedError as exc:
            raise self._conflict(state.enclave_id, expected_version, exc) from exc
        return version

    def delete_enclave(self, enclave_id: str, expected_version: int) -> None:
        try:
            self.docs.write(Delete((lay.ENCLAVES, enclave_id), eq("version", expected_version)))
        except ConditionFailedError as exc:
            raise self._conflict(enclave_id, expected_version, exc) from exc

    @staticmethod
    def _conflict(
        enclave_id: str, expected: int | None, exc: ConditionFailedError
    ) -> ConflictError:
        found = int(exc.item["version"]) if exc.item else None
        return ConflictError(f"enclave {enclave_id}: expected version {expected}, found {found}")

    # -- audit events --------------------------------------------------------------------------

    def append_event(self, event: AuditEvent) -> AuditEvent:
        # An atomic counter, not a compare-and-set: events are many and nothing reads them
        # as a cursor, so two appends committing out of seq order for a moment is harmless.
        counter = self.docs.write(Patch((lay.COUNTER, lay.EVENTS), add={"n": 1}), returns="new")
        stored = event.model_copy(update={"seq": int(counter["n"])})
        self.docs.write(Put(lay.event_doc(self.docs, stored)))
        return stored

    def list_events(
        self, enclave_id: str | None = None, limit: int = 100, *, run_id: str | None = None
    ) -> list[AuditEvent]:
        if limit <= 0:
            return []
        if run_id is not None:
            # A run has few events; with an enclave filter as well, read them all.
            most = limit if enclave_id is None else None
            query = Query(lay.events_of_run(run_id), lay.GSI2, forward=False, limit=most)
        elif enclave_id is not None:
            query = Query(lay.events_of_enclave(enclave_id), lay.GSI1, forward=False, limit=limit)
        else:
            query = Query(lay.EVENTS, forward=False, limit=limit, consistent=True)
        found = [lay.event_from(d) for d in self.docs.query(query)]
        if run_id is not None and enclave_id is not None:
            found = [ev for ev in found if ev.enclave_id == enclave_id][:limit]
        found.reverse()
        return found

    # -- drift records: one document per partition under DRIFT, id <enclave>#<partition> --

    def put_drift(self, record: DriftRecord) -> None:
        where = f"the drift record of {record.enclave_id}/{record.partition_id}"
        packed = lay.doc_fields(self.docs, record.model_dump_json(), where)
        key = _drift_key(record.enclave_id, record.partition_id)
        self.docs.write(Put(lay.keyed(key, **lay.present(packed))))

    def get_drift(self, enclave_id: str, partition_id: str) -> DriftRecord | None:
        doc = self.docs.get(_drift_key(enclave_id, partition_id))
        return DriftRecord.model_validate_json(lay.read_doc(doc)) if doc is not None else None

    def delete_drift(self, enclave_id: str, partition_id: str) -> None:
        self.docs.write(Delete(_drift_key(enclave_id, partition_id)))

    def list_drift(self, enclave_id: str | None = None) -> list[DriftRecord]:
        prefix = f"{enclave_id}#" if enclave_id is not None else None
        docs = self.docs.query(Query(lay.DRIFT, prefix=prefix, consistent=True))
        return [DriftRecord.model_validate_json(lay.read_doc(d)) for d in docs]


__all__ = ["DocumentStateStore"]
