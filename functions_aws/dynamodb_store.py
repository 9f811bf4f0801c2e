"""``DynamoStateStore``: the StateStore on one DynamoDB table (single-table design).

The table's keys, indexes, access patterns, consistency, sizes and hot keys are described in
functions_aws/README.md ("The DynamoDB store"); ``_dynamo_keys`` builds every key it names.
Every compare-and-swap is a server-side ``ConditionExpression`` (never a read, then a write),
and every read the engine decides on is consistent.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from functions_aws._dynamo_drift import DynamoDrift
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
    mutex_key,
    present,
    read_doc,
    tf_lock_key,
    tf_state_key,
    tf_states_of_enclave,
)
from functions_aws._dynamo_runs import DynamoRuns
from functions_aws._dynamo_steps import DynamoSteps
from functions_aws._dynamo_table import Expr, Table
from functions_aws.provision import create_table
from nclav.errors import ConflictError
from nclav.records import AuditEvent, TfLock
from nclav.state import EnclaveState

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import JsonValue

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


class DynamoStateStore(DynamoRuns, DynamoSteps, DynamoIacRuns, DynamoDrift):
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

    # -- Terraform locks and state pointers ------------------------------------------------------

    def lock(self, key: str, info: Mapping[str, JsonValue]) -> TfLock | None:
        wanted = TfLock(key=key, info=dict(info))
        item: Item = {**tf_lock_key(key), "info": S(wanted.model_dump_json())}
        if wanted.lock_id is not None:
            item["lock_id"] = S(wanted.lock_id)
        e = Expr()
        try:
            self._table.put(item, f"attribute_not_exists({e.n('pk')})", e, old=True)
        except ConditionFailedError as exc:
            if exc.item is None:  # released between the check and the failure report
                return self.lock(key, info)
            return _lock_from(exc.item)
        return None

    def unlock(self, key: str, lock_id: str | None) -> TfLock | None:
        if lock_id is None:
            self._table.delete(tf_lock_key(key))
            return None
        e = Expr()
        try:
            self._table.delete(
                tf_lock_key(key), f"{e.n('lock_id')} = {e.v(S(lock_id))}", e, old=True
            )
        except ConditionFailedError as exc:
            return _lock_from(exc.item) if exc.item is not None else None
        return None

    def get_lock(self, key: str) -> TfLock | None:
        item = self._table.get(tf_lock_key(key))
        return _lock_from(item) if item is not None else None

    def get_tf_state(self, key: str) -> str | None:
        item = self._table.get(tf_state_key(key))
        return str(item["blob_key"]["S"]) if item is not None else None

    def set_tf_state(self, key: str, blob_key: str | None) -> None:
        if blob_key is None:
            self._table.delete(tf_state_key(key))
        else:
            self._table.put(_tf_state_item(key, blob_key))

    def list_tf_states(self, enclave_id: str) -> list[str]:
        e = Expr()
        condition = f"{e.n('gsi1pk')} = {e.v(S(tf_states_of_enclave(enclave_id)))}"
        items = self._table.query(condition, e, index=GSI1)
        return sorted(str(i["gsi1sk"]["S"]) for i in items)

    def swap_tf_state(self, key: str, expected: str | None, blob_key: str) -> bool:
        e = Expr()
        if expected is None:
            condition = f"attribute_not_exists({e.n('pk')})"
        else:
            condition = f"{e.n('blob_key')} = {e.v(S(expected))}"
        try:
            self._table.put(_tf_state_item(key, blob_key), condition, e)
        except ConditionFailedError:
            return False
        return True

    # -- partition mutex -------------------------------------------------------------------------

    def acquire_partition(self, key: str, owner: str, lease_s: float, now: float) -> bool:
        e = Expr()
        holder, expires = e.n("owner"), e.n("expires_at")
        mine = e.v(S(owner))
        condition = (
            f"attribute_not_exists({e.n('pk')}) OR {holder} = {mine} OR {expires} <= {e.v(N(now))}"
        )
        update = f"SET {holder} = {mine}, {expires} = {e.v(N(now + lease_s))}"
        try:
            self._table.update(mutex_key(key), update, e, condition)
        except ConditionFailedError:
            return False
        return True

    def release_partition(self, key: str, owner: str) -> bool:
        e = Expr()
        try:
            self._table.delete(mutex_key(key), f"{e.n('owner')} = {e.v(S(owner))}", e)
        except ConditionFailedError:
            return False
        return True


def _lock_from(item: Item) -> TfLock:
    return TfLock.model_validate_json(str(item["info"]["S"]))


def _tf_state_item(key: str, blob_key: str) -> dict[str, Any]:
    """A state pointer item, indexed by its enclave (``list_tf_states``)."""
    index = {"gsi1pk": S(tf_states_of_enclave(key.split("/", 1)[0])), "gsi1sk": S(key)}
    return {**tf_state_key(key), "blob_key": S(blob_key), **index}


__all__ = [
    "DynamoStateStore",
    "DynamoStoreError",
    "ItemTooLargeError",
    "count_requests",
    "create_table",
]
