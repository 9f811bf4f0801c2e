"""``DynamoStateStore``: the StateStore on one DynamoDB table (single-table design).

Keys (``pk`` / ``sk``, both strings; ``<seq>`` is a 20-digit zero-padded number)::

    record                      pk                          sk
    enclave state               ENCLAVES                    <enclave_id>
    run                         RUN#<run_id>                #RUN
    step of a run               RUN#<run_id>                STEP#<step_id>
    unfinished steps of a run   RUN#<run_id>                #STEPS_LEFT
    copy of an unfinished run   UNFINISHED_RUNS             <seq>
    audit event                 EVENTS                      <seq>
    IaC run                     IAC#<enclave>#<partition>   <started_at>#<n>
    IaC run locator (by id)     IACRUN#<iac_run_id>         #IACRUN
    Terraform lock              TF#<key>                    LOCK
    Terraform state pointer     TF#<key>                    STATE
    partition mutex             MUTEX#<key>                 #MUTEX
    drift record                DRIFT                       <enclave>#<partition>
    counters                    COUNTER                     RUNS | EVENTS | IAC

Global secondary indexes (eventually consistent, so only for what may lag a moment)::

    gsi1    gsi1pk / gsi1sk   RUNS / <seq> on runs; EVENTS#ENCLAVE#<id> / <seq> on events;
                              TFSTATE#<enclave> / <key> on Terraform state pointers
    gsi2    gsi2pk / gsi2sk   RUNS#<status> / <seq> on runs; EVENTS#RUN#<id> / <seq> on events
    leases  lease_pk / lease_expires_at (N), keys only: sparse, only running steps carry
            lease_pk = LEASES
    ready   ready_pk / ready_at (N), keys only: sparse, only ready steps carry ready_pk = READY;
            ready_at is records.ready_since (when the message was sent or became due)

Access patterns (every one a GetItem, Query or BatchGetItem; the store never Scans)::

    get_enclave                 GetItem ENCLAVES/<id>, consistent
    list_enclaves               Query pk=ENCLAVES, consistent (sk order is id order)
    put/delete_enclave          PutItem/DeleteItem conditional on ``version``
    create_run                  GetItem COUNTER/RUNS, then TransactWriteItems: counter
                                compare-and-set, run (attribute_not_exists), unfinished copy,
                                steps-left count, steps; more than ~96 steps: steps first
                                (BatchWriteItem), run last
    get_run                     GetItem RUN#<id>/#RUN, consistent
    list_runs                   Query gsi1 (or gsi2 for a status), newest first, Limit
    update_run / begin_run      GetItem, then TransactWriteItems: run (conditional on status),
                                its unfinished copy put or deleted, and begin_run's steps and
                                steps-left count; a bigger plan: UpdateItem claim,
                                BatchWriteItem steps, commit (with the count)
    list_unfinished_runs        Query pk=UNFINISHED_RUNS, consistent (sk order is seq order)
    list_steps                  Query pk=RUN#<id>, consistent (run item + steps), sorted by pos
    get_step                    GetItem, consistent
    get_steps                   BatchGetItem (100 keys a request), consistent
    has_unfinished_steps        GetItem RUN#<id>/#STEPS_LEFT, consistent (runs committed before
                                the count existed: list_steps)
    claim/renew/finish/update   UpdateItem with a ConditionExpression, ReturnValues ALL_NEW;
                                a write taking a step to a final status: TransactWriteItems of
                                that UpdateItem and ADD -1 on #STEPS_LEFT. A transaction
                                returns no attributes: finish_step answers from the item its
                                process claimed or renewed, the version in the condition (no
                                such item, or a lost condition: the plain write, then GetItem)
    list_expired_leases         Query leases (lease_expires_at <= now), then BatchGetItem of the
                                candidates and their runs, consistent
    list_stuck_ready_steps      Query ready (ready_at <= older_than), then the same BatchGetItem
                                (steps made ready before the index existed are not listed)
    append_event                UpdateItem ADD on COUNTER/EVENTS, then PutItem
    list_events                 Query pk=EVENTS (consistent), gsi1 or gsi2, newest first with
                                Limit, reversed (by enclave and run: gsi2, filtered)
    put_iac_run                 first put: UpdateItem ADD COUNTER/IAC and a TransactWriteItems
                                of locator (attribute_not_exists) + run; later puts from the
                                same process: PutItem (attribute_exists); else GetItem locator
                                then PutItem
    get_iac_run                 GetItem locator, GetItem run
    list_iac_runs               Query pk=IAC#<e>#<p>, consistent, newest first, Limit
    lock / unlock               PutItem attribute_not_exists / DeleteItem on the lock ID, with
                                ReturnValuesOnConditionCheckFailure to report the holder
    tf state pointer            GetItem / PutItem / DeleteItem; swap: PutItem conditional on
                                the old blob key (attribute_not_exists when none)
    list_tf_states              Query gsi1 (pointers written before the index attributes
                                existed are not listed until their next write)
    acquire/release_partition   UpdateItem / DeleteItem conditional on owner and expiry
    put/get/delete_drift        PutItem / GetItem / DeleteItem DRIFT/<enclave>#<partition>
    list_drift                  Query pk=DRIFT (begins_with sk <enclave># for one), consistent

Consistency: everything the engine decides on (enclaves, runs, unfinished runs, steps, IaC runs
of a partition, locks) is read from the base table with ConsistentRead. The indexes serve only
the API's run and event listings, and the sweeper's lease and ready candidates, which are
re-read consistently before being reported.

Sizes: documents (enclave states, runs, events, IaC runs) are JSON, zlib-compressed above
4 KB; one that is still above 350 KB compressed is refused with ``ItemTooLargeError`` (never
silently cut). A step's error is kept up to 16,000 characters, its middle cut beyond that.

The steps-left count: the engine asks after every finished step whether its run is done.
Listing the run's steps for that made a run of N steps cost O(N^2) item reads (a 30,000-step
run, ~10^9). The count answers in one GetItem instead. It lives in its own small item, not on
the run item, because a transaction is billed twice the size of every item it writes and a
run's document can be tens of KB. It moves in the same transaction as the step write, never
in a second request that a crash could skip (a count left too high would keep the run open
forever), and not in a sparse index of unfinished steps, as indexes are eventually
consistent: a run could be declared done while its last step's write was still propagating.

Hot keys: ENCLAVES, EVENTS, UNFINISHED_RUNS, the counters and the RUNS / LEASES index
partitions each hold one partition key, good for ~1,000 writes a second each, far above the
engine's rate (a few writes per step). A run's #STEPS_LEFT item takes one transaction per
finished step of that run; transactions on one item go one at a time, and two at the same
instant cancel one (TransactionConflict, retried with a short backoff in the store), which is
fine up to some tens of finishes a second per run, far above what steps that each run a
driver call or a terraform apply reach.
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
    create_table,
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
