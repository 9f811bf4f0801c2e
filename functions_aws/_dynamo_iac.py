"""The DynamoDB store's partition records: IaC runs, Terraform locks and state pointers, and
the partition mutex (each lock, swap and mutex decision one conditional write).

IaC runs are listed by partition and found by id.
Runs of a partition live in one item collection sorted by ``started_at`` (then by an insert
counter, so equal start times keep insertion order), because the engine reads them right after
taking the partition mutex to find abandoned ones: that read must be consistent, which an
index could not promise. ``get_iac_run`` goes through a small locator item keyed by id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions_aws import _dynamo_keys as k
from functions_aws._dynamo_errors import ConditionFailedError
from functions_aws._dynamo_items import expiry
from functions_aws._dynamo_keys import GSI1, N, S, doc_attrs, key, present, read_doc
from functions_aws._dynamo_steps import forget_oldest
from functions_aws._dynamo_table import Expr
from nclav.records import IacRun, TfLock

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import JsonValue

    from functions_aws._dynamo_errors import Item
    from functions_aws._dynamo_table import Table

IAC_COUNTER = "IAC"
_PLACES_MAX = 1024


def _iac_item(run: IacRun, order: int) -> Item:
    return {
        **k.iac_key(run.enclave_id, run.partition_id, run.started_at, order),
        "id": S(run.id),
        **present(doc_attrs(run.model_dump_json(), f"IaC run {run.id}")),
        **expiry(),
    }


def _where(item: Item) -> tuple[str, str]:
    return str(item["pk"]["S"]), str(item["sk"]["S"])


class DynamoIacRuns:
    """The partition record methods of ``DynamoStateStore``."""

    _table: Table
    _iac_places: dict[str, tuple[str, str]]  # run id -> (pk, sk) of its item, as last written

    def put_iac_run(self, run: IacRun) -> None:
        place = self._iac_places.pop(run.id, None)
        if place is not None:
            # Written by this process before (the runner puts a run at its start and as it
            # goes): no locator read while it is still where it was. A move deletes the item
            # and its order number is never reused, so the condition tells.
            item = _iac_item(run, order=int(place[1].rsplit("#", 1)[1]))
            if _where(item) == place:
                e = Expr()
                try:
                    self._table.put(item, f"attribute_exists({e.n('pk')})", e)
                except ConditionFailedError:
                    pass  # moved by another process: through the locator
                else:
                    self._placed(run.id, item)
                    return
        else:
            # Not written by this process: most likely a new run (the runner makes one per
            # terraform command), so its insert goes first, without a locator read; the
            # insert's condition tells a run another process wrote.
            self._insert_iac_run(run)
            return
        self._update_iac_run(run)

    def _update_iac_run(self, run: IacRun) -> None:
        locator = self._table.get(k.iac_locator_key(run.id))
        if locator is None:
            self._insert_iac_run(run)
            return
        old = (str(locator["list_pk"]["S"]), str(locator["list_sk"]["S"]))
        item = _iac_item(run, order=int(old[1].rsplit("#", 1)[1]))
        if _where(item) == old:
            self._table.put(item)
            self._placed(run.id, item)
            return
        # Its start time or partition changed: move it, and its locator, in one transaction.
        e = Expr()
        condition = f"{e.n('list_sk')} = {e.v(S(old[1]))}"
        self._table.transact(
            [
                {"Delete": self._table.delete_op(key(*old))},
                {"Put": self._table.put_op(item)},
                {"Put": self._table.put_op(self._locator(run.id, item), condition, e)},
            ]
        )
        self._placed(run.id, item)

    def _placed(self, run_id: str, item: Item) -> None:
        if len(self._iac_places) >= _PLACES_MAX:
            forget_oldest(self._iac_places)
        self._iac_places[run_id] = _where(item)

    def _insert_iac_run(self, run: IacRun) -> None:
        item = _iac_item(run, self._table.add_one(k.counter_key(IAC_COUNTER)))
        e = Expr()
        try:
            self._table.transact(
                [
                    {
                        "Put": self._table.put_op(
                            self._locator(run.id, item), f"attribute_not_exists({e.n('pk')})", e
                        )
                    },
                    {"Put": self._table.put_op(item)},
                ]
            )
        except ConditionFailedError:
            self._update_iac_run(run)  # written before (elsewhere): replace its record
            return
        self._placed(run.id, item)

    @staticmethod
    def _locator(run_id: str, item: Item) -> Item:
        pk, sk = _where(item)
        return {**k.iac_locator_key(run_id), "list_pk": S(pk), "list_sk": S(sk), **expiry()}

    def get_iac_run(self, run_id: str) -> IacRun | None:
        locator = self._table.get(k.iac_locator_key(run_id))
        if locator is None:
            return None
        item = self._table.get(key(str(locator["list_pk"]["S"]), str(locator["list_sk"]["S"])))
        return IacRun.model_validate_json(read_doc(item)) if item is not None else None

    def list_iac_runs(self, enclave_id: str, partition_id: str, limit: int = 100) -> list[IacRun]:
        if limit <= 0:
            return []
        e = Expr()
        items = self._table.query(
            f"{e.n('pk')} = {e.v(S(k.iac_partition(enclave_id, partition_id)))}",
            e,
            forward=False,
            limit=limit,
            consistent=True,
        )
        return [IacRun.model_validate_json(read_doc(i)) for i in items]

    # -- Terraform locks and state pointers, the partition mutex -------------------------------

    def lock(self, key: str, info: Mapping[str, JsonValue]) -> TfLock | None:
        wanted = TfLock(key=key, info=dict(info))
        item: Item = {**k.tf_lock_key(key), "info": S(wanted.model_dump_json())}
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
            self._table.delete(k.tf_lock_key(key))
            return None
        e = Expr()
        try:
            self._table.delete(
                k.tf_lock_key(key), f"{e.n('lock_id')} = {e.v(S(lock_id))}", e, old=True
            )
        except ConditionFailedError as exc:
            return _lock_from(exc.item) if exc.item is not None else None
        return None

    def get_lock(self, key: str) -> TfLock | None:
        item = self._table.get(k.tf_lock_key(key))
        return _lock_from(item) if item is not None else None

    def get_tf_state(self, key: str) -> str | None:
        item = self._table.get(k.tf_state_key(key))
        return str(item["blob_key"]["S"]) if item is not None else None

    def set_tf_state(self, key: str, blob_key: str | None) -> None:
        if blob_key is None:
            self._table.delete(k.tf_state_key(key))
        else:
            self._table.put(_tf_state_item(key, blob_key))

    def list_tf_states(self, enclave_id: str) -> list[str]:
        e = Expr()
        condition = f"{e.n('gsi1pk')} = {e.v(S(k.tf_states_of_enclave(enclave_id)))}"
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

    def acquire_partition(self, key: str, owner: str, lease_s: float, now: float) -> bool:
        e = Expr()
        holder, expires = e.n("owner"), e.n("expires_at")
        mine = e.v(S(owner))
        condition = (
            f"attribute_not_exists({e.n('pk')}) OR {holder} = {mine} OR {expires} <= {e.v(N(now))}"
        )
        update = f"SET {holder} = {mine}, {expires} = {e.v(N(now + lease_s))}"
        try:
            self._table.update(k.mutex_key(key), update, e, condition)
        except ConditionFailedError:
            return False
        return True

    def release_partition(self, key: str, owner: str) -> bool:
        e = Expr()
        try:
            self._table.delete(k.mutex_key(key), f"{e.n('owner')} = {e.v(S(owner))}", e)
        except ConditionFailedError:
            return False
        return True


def _lock_from(item: Item) -> TfLock:
    return TfLock.model_validate_json(str(item["info"]["S"]))


def _tf_state_item(key: str, blob_key: str) -> Item:
    """A state pointer item, indexed by its enclave (``list_tf_states``)."""
    index = {"gsi1pk": S(k.tf_states_of_enclave(key.split("/", 1)[0])), "gsi1sk": S(key)}
    return {**k.tf_state_key(key), "blob_key": S(blob_key), **index}


__all__ = ["IAC_COUNTER", "DynamoIacRuns"]
