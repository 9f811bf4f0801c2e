"""The DynamoDB store's drift records: one item per partition in one collection.

Every record lives under the partition key ``DRIFT`` with sort key ``<enclave>#<partition>``
(ids cannot hold ``#``), so listing them all is one consistent Query, and listing an enclave's
is the same Query with ``begins_with`` on the sort key: never a Scan. The collection holds one
small item per partition, far below a partition key's limits; the schedule reads it once a
sweep and writes an item when a check is sent and when it ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions_aws._dynamo_keys import DRIFT, S, doc_attrs, drift_key, present, read_doc
from functions_aws._dynamo_table import Expr
from nclav.records import DriftRecord

if TYPE_CHECKING:
    from functions_aws._dynamo_table import Table


class DynamoDrift:
    """The drift methods of ``DynamoStateStore``."""

    _table: Table

    def put_drift(self, record: DriftRecord) -> None:
        where = f"the drift record of {record.enclave_id}/{record.partition_id}"
        item = {
            **drift_key(record.enclave_id, record.partition_id),
            **present(doc_attrs(record.model_dump_json(), where)),
        }
        self._table.put(item)

    def get_drift(self, enclave_id: str, partition_id: str) -> DriftRecord | None:
        item = self._table.get(drift_key(enclave_id, partition_id))
        return DriftRecord.model_validate_json(read_doc(item)) if item is not None else None

    def delete_drift(self, enclave_id: str, partition_id: str) -> None:
        self._table.delete(drift_key(enclave_id, partition_id))

    def list_drift(self, enclave_id: str | None = None) -> list[DriftRecord]:
        e = Expr()
        condition = f"{e.n('pk')} = {e.v(S(DRIFT))}"
        if enclave_id is not None:
            condition += f" AND begins_with({e.n('sk')}, {e.v(S(f'{enclave_id}#'))})"
        items = self._table.query(condition, e, consistent=True)
        return [DriftRecord.model_validate_json(read_doc(i)) for i in items]


__all__ = ["DynamoDrift"]
