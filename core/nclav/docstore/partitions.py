"""Partition records: IaC runs, Terraform locks and state pointers, and the partition mutex
(each lock, swap and mutex decision one conditional write).

Runs of a partition live in one partition sorted by ``started_at`` (then by an insert
counter, so equal start times keep insertion order), because the engine reads them right after
taking the partition mutex to find abandoned ones: that read must be consistent, which an
index could not promise. ``get_iac_run`` goes through a small locator document keyed by id.

Without atomic transactions (``Documents.atomic`` false) the locator and its document could
not be written together, so an IaC run is one document instead, keyed by its id in its
partition: a put is one write, ordered by ``IAC_INDEX`` (consistent on such adapters, one
partition), found by id through GSI2. Its insert order comes from this process's clock, not a
counter (runs of one partition starting at the same instant in two processes are ordered by
their clocks).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from nclav.docstore import layout as lay
from nclav.docstore.port import (
    TABLE,
    ConditionFailedError,
    Delete,
    Patch,
    Put,
    Query,
    absent,
    eq,
    exists,
    key_of,
    le,
)
from nclav.docstore.steps import forget_oldest
from nclav.records import IacRun, TfLock
from nclav.runtime.stores import seq_text

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import JsonValue

    from nclav.docstore.port import Doc, Documents, Key

IAC_COUNTER = (lay.COUNTER, "IAC")
_PLACES_MAX = 1024
_ORDER_LOCK = threading.Lock()
_last_order = 0


def _fresh_order() -> int:
    """An insert order without a counter: this clock in ns, strictly rising in this process."""
    global _last_order
    with _ORDER_LOCK:
        _last_order = max(time.time_ns(), _last_order + 1)
        return _last_order


def _iac_id(run_id: str) -> str:
    return f"IACRUN#{run_id}"


def _locator_key(run_id: str) -> Key:
    return f"IACRUN#{run_id}", "#IACRUN"


def _lock_key(key: str) -> Key:
    return f"TF#{key}", "LOCK"


def _state_key(key: str) -> Key:
    return f"TF#{key}", "STATE"


def _lock_from(doc: Doc) -> TfLock:
    return TfLock.model_validate_json(str(doc["info"]))


def _state_doc(key: str, blob_key: str) -> Doc:
    """A state pointer, indexed by its enclave (``list_tf_states``)."""
    index = {lay.GSI1.pk: lay.tf_states_of_enclave(key.split("/", 1)[0]), lay.GSI1.sk: key}
    return lay.keyed(_state_key(key), blob_key=blob_key, **index)


class DocPartitions:
    """The partition record methods of ``DocumentStateStore``."""

    docs: Documents
    _iac_places: dict[str, Key]  # run id -> key of its document, as last written

    def _iac_doc(self, run: IacRun, order: int) -> Doc:
        key = (
            lay.iac_partition(run.enclave_id, run.partition_id),
            f"{run.started_at}#{seq_text(order)}",
        )
        packed = lay.doc_fields(self.docs, run.model_dump_json(), f"IaC run {run.id}")
        return lay.keyed(key, id=run.id, **lay.present(packed), **lay.expiry())

    def put_iac_run(self, run: IacRun) -> None:
        if not self.docs.atomic:
            self._put_iac_record(run)
            return
        place = self._iac_places.pop(run.id, None)
        if place is None:
            # Not written by this process: most likely a new run (the runner makes one per
            # terraform command), so its insert goes first, without a locator read; the
            # insert's condition tells a run another process wrote.
            self._insert_iac_run(run)
            return
        # Written by this process before (the runner puts a run at its start and as it goes):
        # no locator read while it is still where it was. A move deletes the document and its
        # order number is never reused, so the condition tells.
        doc = self._iac_doc(run, order=int(place[1].rsplit("#", 1)[1]))
        if key_of(doc) == place:
            try:
                self.docs.write(Put(doc, exists("pk")))
            except ConditionFailedError:
                pass  # moved by another process: through the locator
            else:
                self._placed(run.id, doc)
                return
        self._update_iac_run(run)

    def _update_iac_run(self, run: IacRun) -> None:
        locator = self.docs.get(_locator_key(run.id))
        if locator is None:
            self._insert_iac_run(run)
            return
        old = (str(locator["list_pk"]), str(locator["list_sk"]))
        doc = self._iac_doc(run, order=int(old[1].rsplit("#", 1)[1]))
        if key_of(doc) == old:
            self.docs.write(Put(doc))
            self._placed(run.id, doc)
            return
        # Its start time or partition changed: move it, and its locator, in one transaction.
        moved = Put(self._locator(run.id, doc), eq("list_sk", old[1]))
        self.docs.transact([Delete(old), Put(doc), moved])
        self._placed(run.id, doc)

    def _placed(self, run_id: str, doc: Doc, place: Key | None = None) -> None:
        if len(self._iac_places) >= _PLACES_MAX:
            forget_oldest(self._iac_places)
        self._iac_places[run_id] = place or key_of(doc)

    def _iac_record(self, run: IacRun, order: int) -> Doc:
        """The one document of an IaC run, without atomic transactions."""
        packed = lay.doc_fields(self.docs, run.model_dump_json(), f"IaC run {run.id}")
        return lay.keyed(
            (lay.iac_partition(run.enclave_id, run.partition_id), _iac_id(run.id)),
            id=run.id,
            order=order,
            **{lay.IAC_INDEX.sk: f"{run.started_at}#{seq_text(order)}"},
            **{lay.GSI2.pk: _iac_id(run.id), lay.GSI2.sk: run.started_at},
            **lay.present(packed),
            **lay.expiry(),
        )

    def _put_iac_record(self, run: IacRun) -> None:
        place = self._iac_places.pop(run.id, None)  # (its partition, its order) as written
        if place is None:
            # Not written by this process: most likely new (one per terraform command), so
            # created without a read; one written elsewhere keeps its order.
            doc = self._iac_record(run, _fresh_order())
            try:
                self.docs.write(Put(doc, absent("pk")))
            except ConditionFailedError as exc:
                stored = exc.item or doc
                doc = self._iac_record(run, int(stored["order"]))
                self.docs.write(Put(doc))
        else:
            doc = self._iac_record(run, int(place[1]))
            self.docs.write(Put(doc))
            if place[0] != doc["pk"]:  # its partition changed: the new copy first, then the old
                self.docs.write(Delete((place[0], _iac_id(run.id))))
        self._placed(run.id, doc, (str(doc["pk"]), str(doc["order"])))

    def _insert_iac_run(self, run: IacRun) -> None:
        order = self.docs.write(Patch(IAC_COUNTER, add={"n": 1}), returns="new")["n"]
        doc = self._iac_doc(run, int(order))
        try:
            self.docs.transact([Put(self._locator(run.id, doc), absent("pk")), Put(doc)])
        except ConditionFailedError:
            self._update_iac_run(run)  # written before (elsewhere): replace its record
            return
        self._placed(run.id, doc)

    @staticmethod
    def _locator(run_id: str, doc: Doc) -> Doc:
        pk, sk = key_of(doc)
        return lay.keyed(_locator_key(run_id), list_pk=pk, list_sk=sk, **lay.expiry())

    def get_iac_run(self, run_id: str) -> IacRun | None:
        if not self.docs.atomic:
            found = self.docs.query(Query(_iac_id(run_id), lay.GSI2, consistent=True))
            # (Two copies only if another process moved it to another partition: the newest.)
            found.sort(key=lambda d: str(d[lay.IAC_INDEX.sk]))
            return IacRun.model_validate_json(lay.read_doc(found[-1])) if found else None
        locator = self.docs.get(_locator_key(run_id))
        if locator is None:
            return None
        doc = self.docs.get((str(locator["list_pk"]), str(locator["list_sk"])))
        return IacRun.model_validate_json(lay.read_doc(doc)) if doc is not None else None

    def list_iac_runs(self, enclave_id: str, partition_id: str, limit: int = 100) -> list[IacRun]:
        if limit <= 0:
            return []
        partition = lay.iac_partition(enclave_id, partition_id)
        index = TABLE if self.docs.atomic else lay.IAC_INDEX
        query = Query(partition, index, forward=False, limit=limit, consistent=True)
        return [IacRun.model_validate_json(lay.read_doc(d)) for d in self.docs.query(query)]

    # -- Terraform locks and state pointers, the partition mutex -------------------------------

    def lock(self, key: str, info: Mapping[str, JsonValue]) -> TfLock | None:
        wanted = TfLock(key=key, info=dict(info))
        doc = lay.keyed(_lock_key(key), info=wanted.model_dump_json())
        if wanted.lock_id is not None:
            doc["lock_id"] = wanted.lock_id
        try:
            self.docs.write(Put(doc, absent("pk")))
        except ConditionFailedError as exc:
            if exc.item is None:  # released between the check and the failure report
                return self.lock(key, info)
            return _lock_from(exc.item)
        return None

    def unlock(self, key: str, lock_id: str | None) -> TfLock | None:
        try:
            self.docs.write(
                Delete(_lock_key(key), None if lock_id is None else eq("lock_id", lock_id))
            )
        except ConditionFailedError as exc:
            return _lock_from(exc.item) if exc.item is not None else None
        return None

    def get_lock(self, key: str) -> TfLock | None:
        doc = self.docs.get(_lock_key(key))
        return _lock_from(doc) if doc is not None else None

    def get_tf_state(self, key: str) -> str | None:
        doc = self.docs.get(_state_key(key))
        return str(doc["blob_key"]) if doc is not None else None

    def set_tf_state(self, key: str, blob_key: str | None) -> None:
        self.docs.write(
            Delete(_state_key(key)) if blob_key is None else Put(_state_doc(key, blob_key))
        )

    def list_tf_states(self, enclave_id: str) -> list[str]:
        docs = self.docs.query(Query(lay.tf_states_of_enclave(enclave_id), lay.GSI1))
        return sorted(str(d[lay.GSI1.sk]) for d in docs)

    def swap_tf_state(self, key: str, expected: str | None, blob_key: str) -> bool:
        when = absent("pk") if expected is None else eq("blob_key", expected)
        try:
            self.docs.write(Put(_state_doc(key, blob_key), when))
        except ConditionFailedError:
            return False
        return True

    def acquire_partition(self, key: str, owner: str, lease_s: float, now: float) -> bool:
        when = absent("pk") | eq("owner", owner) | le("expires_at", now)
        fields = {"owner": owner, "expires_at": now + lease_s}
        try:
            self.docs.write(Patch((f"MUTEX#{key}", "#MUTEX"), fields, when=when))
        except ConditionFailedError:
            return False
        return True

    def release_partition(self, key: str, owner: str) -> bool:
        try:
            self.docs.write(Delete((f"MUTEX#{key}", "#MUTEX"), eq("owner", owner)))
        except ConditionFailedError:
            return False
        return True


__all__ = ["IAC_COUNTER", "DocPartitions"]
