"""``DynamoStateStore``: the StateStore on one DynamoDB table (single-table design).

The table's keys, indexes, access patterns, consistency, sizes and hot keys are described in
functions_aws/README.md ("The DynamoDB store"); ``_dynamo_keys`` builds every key it names.
Every compare-and-swap is a server-side ``ConditionExpression`` (never a read, then a write),
and every read the engine decides on is consistent.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from functions_aws import _dynamo_keys as k
from functions_aws._dynamo_errors import (
    ConditionFailedError,
    DynamoStoreError,
    ItemTooLargeError,
)
from functions_aws._dynamo_iac import DynamoIacRuns
from functions_aws._dynamo_items import event_from, event_item
from functions_aws._dynamo_keys import (
    ENCLAVES,
    EVENTS,
    GSI1,
    GSI2,
    N,
    S,
    counter_key,
    doc_attrs,
    enclave_key,
    events_of_enclave,
    events_of_run,
    integer,
    present,
    read_doc,
)
from functions_aws._dynamo_runs import DynamoRuns
from functions_aws._dynamo_steps import DynamoSteps
from functions_aws._dynamo_table import Expr, Table
from functions_aws.provision import create_table
from nclav.errors import ConflictError
from nclav.records import AuditEvent, DriftRecord
from nclav.state import EnclaveState

if TYPE_CHECKING:
    from functions_aws._dynamo_errors import Item


def count_requests(client: Any) -> Counter[str]:
    """Count the DynamoDB requests ``client`` makes from now on, by operation name.

    The counter is live: read it after a workload. Each API call counts once (botocore's
    own retries of a throttled call are not separate calls).
    """
    counts: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        counts[str(model.name)] += 1

    client.meta.events.register("before-call.dynamodb.*", count)
    return counts


class DynamoStateStore(DynamoRuns, DynamoSteps, DynamoIacRuns):
    def __init__(self, table_name: str, client: Any | None = None) -> None:
        self._table = Table(table_name, client)
        self._held_items: dict[tuple[str, str], Item] = {}
        self._iac_places: dict[str, tuple[str, str]] = {}
        self.table_name = table_name

    @property
    def client(self) -> Any:
        """The boto3 DynamoDB client (created on first use when none was given)."""
        return self._table.client

    def ping(self) -> None:
        self._table.get(counter_key("PING"), consistent=False)

    # -- enclaves ------------------------------------------------------------------------------

    def get_enclave(self, enclave_id: str) -> tuple[EnclaveState, int] | None:
        item = self._table.get(enclave_key(enclave_id))
        if item is None:
            return None
        return EnclaveState.model_validate_json(read_doc(item)), integer(item["version"])

    def list_enclaves(self) -> list[EnclaveState]:
        e = Expr()
        items = self._table.query(f"{e.n('pk')} = {e.v(S(ENCLAVES))}", e, consistent=True)
        return [EnclaveState.model_validate_json(read_doc(i)) for i in items]

    def put_enclave(self, state: EnclaveState, expected_version: int | None) -> int:
        version = (expected_version or 0) + 1
        doc = state.model_dump_json(by_alias=True)
        item = {
            **enclave_key(state.enclave_id),
            "version": N(version),
            **present(doc_attrs(doc, f"the state of enclave {state.enclave_id}")),
        }
        e = Expr()
        if expected_version is None:
            condition = f"attribute_not_exists({e.n('pk')})"
        else:
            condition = f"{e.n('version')} = {e.v(N(expected_version))}"
        try:
            self._table.put(item, condition, e, old=True)
        except ConditionFailedError as exc:
            found = integer(exc.item["version"]) if exc.item else None
            raise ConflictError(
                f"enclave {state.enclave_id}: expected version {expected_version}, found {found}"
            ) from exc
        return version

    def delete_enclave(self, enclave_id: str, expected_version: int) -> None:
        e = Expr()
        condition = f"{e.n('version')} = {e.v(N(expected_version))}"
        try:
            self._table.delete(enclave_key(enclave_id), condition, e, old=True)
        except ConditionFailedError as exc:
            found = integer(exc.item["version"]) if exc.item else None
            raise ConflictError(
                f"enclave {enclave_id}: expected version {expected_version}, found {found}"
            ) from exc

    # -- audit events --------------------------------------------------------------------------

    def append_event(self, event: AuditEvent) -> AuditEvent:
        # An atomic counter, not a compare-and-set: events are many and nothing reads them
        # as a cursor, so two appends committing out of seq order for a moment is harmless.
        stored = event.model_copy(update={"seq": self._table.add_one(counter_key(EVENTS))})
        self._table.put(event_item(stored))
        return stored

    def list_events(
        self, enclave_id: str | None = None, limit: int = 100, *, run_id: str | None = None
    ) -> list[AuditEvent]:
        if limit <= 0:
            return []
        e = Expr()
        if run_id is not None:
            items = self._table.query(
                f"{e.n('gsi2pk')} = {e.v(S(events_of_run(run_id)))}",
                e,
                index=GSI2,
                forward=False,
                # A run has few events; with an enclave filter as well, read them all.
                limit=limit if enclave_id is None else None,
            )
        elif enclave_id is not None:
            items = self._table.query(
                f"{e.n('gsi1pk')} = {e.v(S(events_of_enclave(enclave_id)))}",
                e,
                index=GSI1,
                forward=False,
                limit=limit,
            )
        else:
            items = self._table.query(
                f"{e.n('pk')} = {e.v(S(EVENTS))}", e, forward=False, limit=limit, consistent=True
            )
        found = [event_from(i) for i in items]
        if run_id is not None and enclave_id is not None:
            found = [ev for ev in found if ev.enclave_id == enclave_id][:limit]
        found.reverse()
        return found

    # -- drift records: one item per partition under DRIFT, sort key <enclave>#<partition> --

    def put_drift(self, record: DriftRecord) -> None:
        where = f"the drift record of {record.enclave_id}/{record.partition_id}"
        item = {
            **k.drift_key(record.enclave_id, record.partition_id),
            **present(doc_attrs(record.model_dump_json(), where)),
        }
        self._table.put(item)

    def get_drift(self, enclave_id: str, partition_id: str) -> DriftRecord | None:
        item = self._table.get(k.drift_key(enclave_id, partition_id))
        return DriftRecord.model_validate_json(read_doc(item)) if item is not None else None

    def delete_drift(self, enclave_id: str, partition_id: str) -> None:
        self._table.delete(k.drift_key(enclave_id, partition_id))

    def list_drift(self, enclave_id: str | None = None) -> list[DriftRecord]:
        e = Expr()
        condition = f"{e.n('pk')} = {e.v(S(k.DRIFT))}"
        if enclave_id is not None:
            condition += f" AND begins_with({e.n('sk')}, {e.v(S(f'{enclave_id}#'))})"
        items = self._table.query(condition, e, consistent=True)
        return [DriftRecord.model_validate_json(read_doc(i)) for i in items]


__all__ = [
    "DynamoStateStore",
    "DynamoStoreError",
    "ItemTooLargeError",
    "count_requests",
    "create_table",
]
