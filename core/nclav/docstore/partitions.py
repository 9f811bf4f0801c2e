"""Partition records: IaC runs, Terraform locks and state pointers, and the partition mutex
(each lock, swap and mutex decision one conditional write).

Runs of a partition live in one partition sorted by ``started_at`` (then by an insert
counter, so equal start times keep insertion order), because the engine reads them right after
taking the partition mutex to find abandoned ones: that read must be consistent, which an
index could not promise. ``get_iac_run`` goes through a small locator document keyed by id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nclav.docstore import layout as lay
from nclav.docstore.port import (
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
        # Its start time or partition changed: move it, and its locator, in one transaction;
        # without transactions in this order: the new copy, the locator, the old copy gone
        # (the run is never absent; a copy left by a crash is dropped by the listing).
        moved = Put(self._locator(run.id, doc), eq("list_sk", old[1]))
        if self.docs.atomic:
            self.docs.transact([Delete(old), Put(doc), moved])
        else:
            self.docs.write(Put(doc))
            self.docs.write(moved)
            self.docs.write(Delete(old))
        self._placed(run.id, doc)

    def _placed(self, run_id: str, doc: Doc) -> None:
        if len(self._iac_places) >= _PLACES_MAX:
            forget_oldest(self._iac_places)
        self._iac_places[run_id] = key_of(doc)

    def _insert_iac_run(self, run: IacRun) -> None:
        order = self.docs.write(Patch(IAC_COUNTER, add={"n": 1}), returns="new")["n"]
        doc = self._iac_doc(run, int(order))
        ops = [Put(self._locator(run.id, doc), absent("pk")), Put(doc)]
        try:
            if self.docs.atomic:
                self.docs.transact(ops)
            else:  # the locator first: a crash leaves one naming nothing, as if unwritten
                for op in ops:
                    self.docs.write(op)
        except ConditionFailedError:
            self._update_iac_run(run)  # written before (elsewhere): replace its record
            return
        self._placed(run.id, doc)

    @staticmethod
    def _locator(run_id: str, doc: Doc) -> Doc:
        pk, sk = key_of(doc)
        return lay.keyed(_locator_key(run_id), list_pk=pk, list_sk=sk, **lay.expiry())

    def get_iac_run(self, run_id: str) -> IacRun | None:
        locator = self.docs.get(_locator_key(run_id))
        if locator is None:
            return None
        doc = self.docs.get((str(locator["list_pk"]), str(locator["list_sk"])))
        return IacRun.model_validate_json(lay.read_doc(doc)) if doc is not None else None

    def list_iac_runs(self, enclave_id: str, partition_id: str, limit: int = 100) -> list[IacRun]:
        if limit <= 0:
            return []
        partition = lay.iac_partition(enclave_id, partition_id)
        docs = self.docs.query(Query(partition, forward=False, limit=limit, consistent=True))
        newest: dict[str, Doc] = {}
        for doc in docs:  # without transactions, a move's old copy may outlive a crash
            newest.setdefault(str(doc["id"]), doc)
        return [IacRun.model_validate_json(lay.read_doc(d)) for d in newest.values()]

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
