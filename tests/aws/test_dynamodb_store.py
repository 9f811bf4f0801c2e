"""What only the DynamoDB store promises: its key design, no Scan, sizes, atomicity, errors.

The StateStore contract itself runs against it in tests/contract (``store[dynamodb]``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from botocore.stub import Stubber

from functions_aws._dynamo_docs import DynamoDocuments, item_key
from functions_aws._dynamo_errors import ConditionFailedError, ContendedError, translate
from functions_aws.dynamodb_store import (
    DynamoStateStore,
    DynamoStoreError,
    ItemTooLargeError,
    count_requests,
    create_table,
)
from nclav.docstore import layout
from nclav.docstore import runs as doc_runs
from nclav.errors import ConflictError, NclavError, NotFoundError, TemporaryError
from nclav.plan import Action, Step
from nclav.ports import StateStore
from nclav.records import (
    AuditEvent,
    DriftRecord,
    EventKind,
    IacOperation,
    IacRun,
    Run,
    RunStatus,
    StepRecord,
    StepStatus,
    iso_time,
)
from nclav.state import EnclaveState

if TYPE_CHECKING:
    from collections import Counter

T0 = 1_767_225_600.0
TABLE = "nclav-state"


@pytest.fixture
def client(aws: str) -> Any:
    made = boto3.client("dynamodb", config=Config(max_pool_connections=32))
    create_table(made, TABLE)
    return made


@pytest.fixture
def store(client: Any) -> DynamoStateStore:
    return DynamoStateStore(TABLE, client=client)


def make_run(**fields: Any) -> Run:
    return Run(created_at=iso_time(T0), **fields)


def steps_of(run: Run, count: int) -> list[StepRecord]:
    return [
        StepRecord.of(run.id, Step(f"s{i:03d}", Action.PROVISION_ENCLAVE, f"e{i}", None, ()))
        for i in range(count)
    ]


def all_items(client: Any) -> list[dict[str, Any]]:
    """Every item of the table (the test inspects with Scan; the store never does)."""
    pages = client.get_paginator("scan").paginate(TableName=TABLE, ConsistentRead=True)
    return [item for page in pages for item in page["Items"]]


def run_key(run_id: str) -> dict[str, Any]:
    return item_key(layout.run_key(run_id))


def step_key(run_id: str, step_id: str) -> dict[str, Any]:
    return item_key(layout.step_key(run_id, step_id))


def steps_left_key(run_id: str) -> dict[str, Any]:
    return item_key(layout.steps_left_key(run_id))


def raw(client: Any, key: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = client.get_item(TableName=TABLE, Key=key, ConsistentRead=True)["Item"]
    return item


# -- the key design ------------------------------------------------------------------------------


def test_the_table_is_on_demand_with_the_four_indexes(client: Any) -> None:
    table = client.describe_table(TableName=TABLE)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"gsi1", "gsi2", "leases", "ready"}
    assert indexes["ready"]["Projection"]["ProjectionType"] == "KEYS_ONLY"
    assert [k["AttributeName"] for k in indexes["ready"]["KeySchema"]] == ["ready_pk", "ready_at"]
    assert indexes["leases"]["Projection"]["ProjectionType"] == "KEYS_ONLY"
    assert [k["AttributeName"] for k in indexes["leases"]["KeySchema"]] == [
        "lease_pk",
        "lease_expires_at",
    ]


def test_items_carry_the_documented_keys(store: DynamoStateStore, client: Any) -> None:
    store.put_enclave(EnclaveState(enclave_id="a"), None)
    run = store.create_run(make_run(), steps_of(make_run(), 0))
    big = make_run()
    big = store.create_run(big, steps_of(big, 1))
    store.claim_step(big.id, "s000", "w", 30, T0)
    store.append_event(AuditEvent(kind=EventKind.ENCLAVE_PROVISIONED, at="t", enclave_id="a"))
    store.append_event(AuditEvent(kind=EventKind.RECONCILE_STARTED, at="t", run_id=run.id))
    iac = IacRun(
        enclave_id="a", partition_id="p", operation=IacOperation.PROVISION, started_at="T1"
    )
    store.put_iac_run(iac)
    store.lock("a/p", {"ID": "l1"})
    store.set_tf_state("a/p", "tfstate/a/p/1")
    store.acquire_partition("a/p", "w", 30, T0)

    keys = {(i["pk"]["S"], i["sk"]["S"]) for i in all_items(client)}
    seq = f"{1:020d}"
    assert keys == {
        ("ENCLAVES", "a"),
        (f"RUN#{run.id}", "#RUN"),
        (f"RUN#{run.id}", "#STEPS_LEFT"),
        (f"RUN#{big.id}", "#RUN"),
        (f"RUN#{big.id}", "#STEPS_LEFT"),
        (f"RUN#{big.id}", "STEP#s000"),
        ("UNFINISHED_RUNS", seq),
        ("UNFINISHED_RUNS", f"{2:020d}"),
        ("EVENTS", seq),
        ("EVENTS", f"{2:020d}"),
        ("IAC#a#p", f"T1#{seq}"),
        (f"IACRUN#{iac.id}", "#IACRUN"),
        ("TF#a/p", "LOCK"),
        ("TF#a/p", "STATE"),
        ("MUTEX#a/p", "#MUTEX"),
        ("COUNTER", "RUNS"),
        ("COUNTER", "EVENTS"),
        ("COUNTER", "IAC"),
    }
    run_item = raw(client, run_key(big.id))
    assert (run_item["gsi1pk"]["S"], run_item["gsi1sk"]["S"]) == ("RUNS", f"{2:020d}")
    assert run_item["gsi2pk"]["S"] == "RUNS#queued"
    step = raw(client, step_key(big.id, "s000"))
    assert (step["lease_pk"]["S"], step["lease_expires_at"]["N"]) == ("LEASES", repr(T0 + 30))
    assert step["plan"] == run_item["plan"]
    events = {i["sk"]["S"]: i for i in all_items(client) if i["pk"]["S"] == "EVENTS"}
    assert events[seq]["gsi1pk"]["S"] == "EVENTS#ENCLAVE#a"
    assert events[f"{2:020d}"]["gsi2pk"]["S"] == f"EVENTS#RUN#{run.id}"


def test_a_finished_step_leaves_the_lease_index_and_a_final_run_its_unfinished_copy(
    store: DynamoStateStore, client: Any
) -> None:
    run = make_run()
    run = store.create_run(run, steps_of(run, 1))
    store.claim_step(run.id, "s000", "w", 30, T0)
    store.finish_step(run.id, "s000", "w", StepStatus.SUCCEEDED, None, T0 + 1)
    step = raw(client, step_key(run.id, "s000"))
    assert not {"lease_pk", "lease_expires_at", "lease_owner"} & set(step)
    store.update_run(run.model_copy(update={"status": RunStatus.SUCCEEDED}))
    assert raw(client, run_key(run.id))["gsi2pk"]["S"] == "RUNS#succeeded"
    assert not [i for i in all_items(client) if i["pk"]["S"] == "UNFINISHED_RUNS"]


# -- no Scan, and the request counter --------------------------------------------------------------


class Recorder:
    """Forwards to a store and records which methods were called."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.called: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.called.add(name)
        return getattr(self.inner, name)


def workload(store: Any) -> None:
    """Every StateStore method, with small and chunked runs (their paths differ)."""
    store.ping()
    store.put_enclave(EnclaveState(enclave_id="a"), None)
    store.put_enclave(EnclaveState(enclave_id="a", context_vars={"k": "v"}), 1)
    store.put_enclave(EnclaveState(enclave_id="b"), None)
    store.get_enclave("a")
    store.list_enclaves()
    store.delete_enclave("b", 1)
    small, big = make_run(), make_run(plan_on_start=True)
    store.create_run(small, steps_of(small, 3))
    store.create_run(big, [])
    store.begin_run(big.model_copy(update={"status": RunStatus.RUNNING}), steps_of(big, 120))
    huge = make_run()
    store.create_run(huge, steps_of(huge, 130))
    store.get_run(small.id)
    store.list_runs(10)
    store.list_runs(10, RunStatus.QUEUED)
    store.list_unfinished_runs()
    store.list_steps(big.id)
    store.get_step(small.id, "s000")
    store.get_steps(small.id, ["s000", "s001"])
    store.has_unfinished_steps(small.id)
    store.claim_step(small.id, "s000", "w", 30, T0)
    store.claim_step(small.id, "s001", "w", 30, T0)
    store.renew_lease(small.id, "s000", "w", 30, T0 + 1)
    store.finish_step(small.id, "s000", "w", StepStatus.SUCCEEDED, None, T0 + 2)
    pending = store.get_step(small.id, "s002")
    store.update_step(pending.model_copy(update={"error": "x"}), pending.version)
    store.list_expired_leases(T0 + 100)
    store.list_stuck_ready_steps(T0 + 100)
    store.update_run(small.model_copy(update={"status": RunStatus.FAILED}))
    store.append_event(AuditEvent(kind=EventKind.ENCLAVE_PROVISIONED, at="t", enclave_id="a"))
    store.list_events()
    store.list_events("a", 5)
    store.list_events("a", 5, run_id="r")
    store.list_events(run_id="r")
    iac = IacRun(enclave_id="a", partition_id="p", operation=IacOperation.PROVISION, started_at="1")
    store.put_iac_run(iac)
    store.put_iac_run(iac.model_copy(update={"started_at": "2"}))
    store.get_iac_run(iac.id)
    store.list_iac_runs("a", "p")
    store.lock("a/p", {"ID": "1"})
    store.lock("a/p", {"ID": "2"})
    store.get_lock("a/p")
    store.unlock("a/p", "2")
    store.unlock("a/p", "1")
    store.set_tf_state("a/p", "k")
    store.get_tf_state("a/p")
    store.list_tf_states("a")
    store.set_tf_state("a/p", None)
    store.swap_tf_state("a/p", None, "k2")
    store.acquire_partition("a/p", "w", 30, T0)
    store.release_partition("a/p", "w")
    store.put_drift(DriftRecord(enclave_id="a", partition_id="p"))
    store.get_drift("a", "p")
    store.list_drift()
    store.list_drift("a")
    store.delete_drift("a", "p")


def test_no_store_method_ever_scans(store: DynamoStateStore, client: Any) -> None:
    counts = count_requests(client)
    recorder = Recorder(store)
    workload(recorder)
    protocol = {n for n in vars(StateStore) if not n.startswith("_")}
    assert protocol <= recorder.called  # the workload really covers every method
    assert "Scan" not in counts
    assert set(counts) <= {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactWriteItems",
    }
    assert counts["BatchWriteItem"] >= 10  # the 120- and 130-step plans went in chunks


def test_count_requests_counts_each_call_by_operation(store: DynamoStateStore, client: Any) -> None:
    counts: Counter[str] = count_requests(client)
    assert store.get_enclave("nope") is None
    store.put_enclave(EnclaveState(enclave_id="a"), None)
    store.list_enclaves()
    assert dict(counts) == {"GetItem": 1, "PutItem": 1, "Query": 1}
    run = make_run()
    store.create_run(run, steps_of(run, 5))
    assert counts["TransactWriteItems"] == 1  # the run, its steps and the seq in one commit


# -- sizes ---------------------------------------------------------------------------------------


def test_a_small_state_is_plain_json_and_a_large_one_compressed(
    store: DynamoStateStore, client: Any
) -> None:
    small = EnclaveState(enclave_id="s")
    store.put_enclave(small, None)
    assert "doc" in raw(client, {"pk": {"S": "ENCLAVES"}, "sk": {"S": "s"}})
    # ~1.2 MB of JSON, three times the item limit, that compresses well (like real state).
    large = EnclaveState(
        enclave_id="l", context_vars={f"var_{i:05d}": "value-" * 20 for i in range(10_000)}
    )
    store.put_enclave(large, None)
    item = raw(client, {"pk": {"S": "ENCLAVES"}, "sk": {"S": "l"}})
    assert "docz" in item and "doc" not in item
    assert len(item["docz"]["B"]) < 350_000 < len(large.model_dump_json())
    assert store.get_enclave("l") == (large, 1)
    assert store.list_enclaves() == [large, small]


def test_a_state_too_large_even_compressed_is_refused_clearly(store: DynamoStateStore) -> None:
    # Random text does not compress: ~1.4 MB of it stays far above what an item holds.
    noise = {f"v{i}": os.urandom(350).hex() for i in range(2_000)}
    state = EnclaveState(enclave_id="big", context_vars=noise)
    with pytest.raises(ItemTooLargeError) as caught:
        store.put_enclave(state, None)
    assert isinstance(caught.value, NclavError)
    assert "enclave big" in str(caught.value) and "compressed" in str(caught.value)
    assert store.get_enclave("big") is None  # refused whole: nothing half-written
    assert store.put_enclave(EnclaveState(enclave_id="big"), None) == 1


# -- atomic runs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [3, 150], ids=["one-transaction", "chunked"])
def test_a_duplicate_run_changes_nothing(store: DynamoStateStore, client: Any, count: int) -> None:
    run = make_run()
    first = store.create_run(run, steps_of(run, count))
    before = all_items(client)
    other_steps = [
        s.model_copy(update={"step_id": f"x{s.step_id}", "error": "dup"})
        for s in steps_of(run, count)
    ]
    with pytest.raises(ConflictError):
        store.create_run(run.model_copy(update={"trigger": "dup"}), other_steps)
    assert sorted(map(str, all_items(client))) == sorted(map(str, before))
    assert store.get_run(run.id) == first
    assert [s.step_id for s in store.list_steps(run.id)] == [f"s{i:03d}" for i in range(count)]
    assert store.create_run(make_run(), []).seq == first.seq + 1  # no seq was used up


def test_a_chunked_run_that_never_commits_stays_invisible(
    store: DynamoStateStore, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_run()

    def dies(self: DynamoDocuments, actions: Any) -> None:
        raise TemporaryError("the worker died before the commit")

    with monkeypatch.context() as patched:
        patched.setattr(DynamoDocuments, "transact", dies)
        with pytest.raises(TemporaryError):
            store.create_run(run, steps_of(run, 150))
    assert len([i for i in all_items(client) if i["sk"]["S"].startswith("STEP#")]) == 150
    assert store.get_run(run.id) is None
    assert store.list_steps(run.id) == []
    assert store.list_unfinished_runs() == []
    store.claim_step(run.id, "s000", "w", 1, T0)  # an orphan with a lease
    assert store.list_expired_leases(T0 + 10) == []
    # A retry of the same create then commits every step.
    stored = store.create_run(run, steps_of(run, 150))
    assert len(store.list_steps(stored.id)) == 150


def test_a_chunked_begin_is_claimed_once(store: DynamoStateStore) -> None:
    queued = store.create_run(make_run(plan_on_start=True, status=RunStatus.QUEUED), [])
    running = queued.model_copy(update={"status": RunStatus.RUNNING, "started_at": iso_time(T0)})
    store.begin_run(running, steps_of(queued, 120))
    with pytest.raises(ConflictError):
        store.begin_run(running, steps_of(queued, 130))
    steps = store.list_steps(queued.id)
    assert [s.step_id for s in steps] == [f"s{i:03d}" for i in range(120)]
    assert store.list_unfinished_runs()[0].status == RunStatus.RUNNING


def test_a_begin_claim_left_by_a_dead_worker_expires(store: DynamoStateStore, client: Any) -> None:
    queued = store.create_run(make_run(plan_on_start=True), [])
    dead_at = iso_time(T0)
    # What a worker leaves when it dies between claiming the run and committing its steps.
    client.update_item(
        TableName=TABLE,
        Key=run_key(queued.id),
        UpdateExpression="SET begin_claim = :c, begin_at = :at, begin_claims = :one",
        ExpressionAttributeValues={
            ":c": {"S": "dead"},
            ":at": {"S": dead_at},
            ":one": {"N": "1"},  # every claim counts itself
        },
    )
    stray = {**step_key(queued.id, "stray"), "plan": {"S": "dead"}}
    client.put_item(TableName=TABLE, Item=stray)

    def begin_at(ts: float) -> Run:
        update = {"status": RunStatus.RUNNING, "started_at": iso_time(ts)}
        return store.begin_run(queued.model_copy(update=update), steps_of(queued, 110))

    with pytest.raises(ConflictError):  # the claim may still be live
        begin_at(T0 + doc_runs.CLAIM_TTL_S - 1)
    began = begin_at(T0 + doc_runs.CLAIM_TTL_S + 1)
    assert began.status == RunStatus.RUNNING
    assert len(store.list_steps(queued.id)) == 110
    assert store.get_step(queued.id, "stray") is None  # what the dead worker wrote is gone
    assert "begin_claim" not in raw(client, run_key(queued.id))


# -- the steps-left count ------------------------------------------------------------------------


def steps_left(client: Any, run_id: str) -> tuple[int, int | None] | None:
    found = client.get_item(TableName=TABLE, Key=steps_left_key(run_id), ConsistentRead=True)
    item = found.get("Item")
    if item is None:
        return None
    total = item.get("total")
    return int(item["n"]["N"]), int(total["N"]) if total else None


@pytest.mark.parametrize("count", [3, 150], ids=["one-transaction", "chunked"])
def test_the_count_is_committed_with_the_steps_and_moves_with_each_finish(
    store: DynamoStateStore, client: Any, count: int
) -> None:
    run = make_run()
    store.create_run(run, steps_of(run, count))
    assert steps_left(client, run.id) == (count, count)
    store.claim_step(run.id, "s000", "w", 30, T0)
    store.finish_step(run.id, "s000", "w", StepStatus.READY, "retry", T0 + 1, not_before=T0)
    assert steps_left(client, run.id) == (count, count)
    store.claim_step(run.id, "s000", "w", 30, T0 + 2)
    store.finish_step(run.id, "s000", "w", StepStatus.SUCCEEDED, None, T0 + 3)
    assert steps_left(client, run.id) == (count - 1, count)
    queued = store.create_run(make_run(plan_on_start=True), [])
    assert steps_left(client, queued.id) == (0, 0)
    running = queued.model_copy(update={"status": RunStatus.RUNNING, "started_at": iso_time(T0)})
    store.begin_run(running, steps_of(queued, count))
    assert steps_left(client, queued.id) == (count, count)


def test_a_finish_costs_one_transaction_and_the_question_one_read(
    store: DynamoStateStore, client: Any
) -> None:
    run = make_run()
    store.create_run(run, steps_of(run, 2))
    store.claim_step(run.id, "s000", "w", 30, T0)
    store.renew_lease(run.id, "s000", "w", 30, T0 + 0.5)
    counts: Counter[str] = count_requests(client)
    done = store.finish_step(run.id, "s000", "w", StepStatus.SUCCEEDED, None, T0 + 1)
    # The step this process claimed (and renewed) is known: no read back after the write.
    assert dict(counts) == {"TransactWriteItems": 1}
    assert done == store.get_step(run.id, "s000")
    counts.clear()
    assert store.has_unfinished_steps(run.id)
    assert dict(counts) == {"GetItem": 1}


def test_a_finish_of_a_step_another_process_claimed_or_changed_reads_it_back(
    store: DynamoStateStore, client: Any
) -> None:
    run = make_run()
    store.create_run(run, steps_of(run, 3))
    other = DynamoStateStore(TABLE, client=client)  # another process, the same worker id
    other.claim_step(run.id, "s000", "w", 30, T0)
    counts: Counter[str] = count_requests(client)
    done = store.finish_step(run.id, "s000", "w", StepStatus.SUCCEEDED, None, T0 + 1)
    assert dict(counts) == {"TransactWriteItems": 1, "GetItem": 1}
    assert done == store.get_step(run.id, "s000")
    # Claimed here, then renewed by the other: the version held here is stale, so the
    # finish must not answer from it.
    store.claim_step(run.id, "s001", "w", 30, T0)
    other.renew_lease(run.id, "s001", "w", 60, T0 + 1)
    done = store.finish_step(run.id, "s001", "w", StepStatus.FAILED, "boom", T0 + 2)
    assert done is not None and done == store.get_step(run.id, "s001")
    assert done.version == 4 and done.error == "boom" and done.lease_expires_at is None
    assert steps_left(client, run.id) == (1, 3)
    # Lost to another worker: None, and nothing moves.
    store.claim_step(run.id, "s002", "w", 30, T0)
    other.claim_step(run.id, "s002", "v", 30, T0 + 60)
    assert store.finish_step(run.id, "s002", "w", StepStatus.SUCCEEDED, None, T0 + 61) is None
    assert steps_left(client, run.id) == (1, 3)


def test_the_held_steps_kept_are_bounded_and_a_forgotten_one_is_read_back(
    store: DynamoStateStore, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nclav.docstore import steps as doc_steps

    monkeypatch.setattr(doc_steps, "_HELD_MAX", 2)
    run = make_run()
    store.create_run(run, steps_of(run, 3))
    for step in ("s000", "s001", "s002"):
        store.claim_step(run.id, step, "w", 30, T0)
    assert len(store._held_docs) == 2  # s000 forgotten
    counts: Counter[str] = count_requests(client)
    assert store.finish_step(run.id, "s000", "w", StepStatus.SUCCEEDED, None, T0 + 1)
    assert dict(counts) == {"TransactWriteItems": 1, "GetItem": 1}
    counts.clear()
    assert store.finish_step(run.id, "s002", "w", StepStatus.SUCCEEDED, None, T0 + 1)
    assert dict(counts) == {"TransactWriteItems": 1}


def test_later_writes_of_an_iac_run_cost_one_put(store: DynamoStateStore, client: Any) -> None:
    started = IacRun(
        enclave_id="e",
        partition_id="p",
        operation=IacOperation.PROVISION,
        started_at=iso_time(T0),
    )
    counts: Counter[str] = count_requests(client)
    store.put_iac_run(started)  # new: no locator read first
    assert dict(counts) == {"UpdateItem": 1, "TransactWriteItems": 1}
    counts.clear()
    store.put_iac_run(started.model_copy(update={"log": "x"}))
    assert dict(counts) == {"PutItem": 1}
    # A run another process wrote: its insert is refused, the locator finds it.
    fresh = DynamoStateStore(TABLE, client=client)
    fresh.put_iac_run(started.model_copy(update={"log": "z"}))
    assert store.list_iac_runs("e", "p") == [started.model_copy(update={"log": "z"})]
    # Moved by another process (a new start time): found through its locator again.
    other = DynamoStateStore(TABLE, client=client)
    other.put_iac_run(started.model_copy(update={"started_at": iso_time(T0 + 5)}))
    final = started.model_copy(update={"started_at": iso_time(T0 + 5), "log": "y"})
    store.put_iac_run(final)
    assert store.get_iac_run(started.id) == final
    assert store.list_iac_runs("e", "p") == [final]


def test_an_uncommitted_run_has_no_count(
    store: DynamoStateStore, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_run()

    def dies(self: DynamoDocuments, actions: Any) -> None:
        raise TemporaryError("the worker died before the commit")

    with monkeypatch.context() as patched:
        patched.setattr(DynamoDocuments, "transact", dies)
        with pytest.raises(TemporaryError):
            store.create_run(run, steps_of(run, 150))
    assert steps_left(client, run.id) is None
    assert not store.has_unfinished_steps(run.id)  # its steps are not the run's


def test_a_run_committed_before_the_count_existed_asks_its_steps(
    store: DynamoStateStore, client: Any
) -> None:
    run = make_run()
    store.create_run(run, steps_of(run, 2))
    client.delete_item(TableName=TABLE, Key=steps_left_key(run.id))  # what an older store wrote
    assert store.has_unfinished_steps(run.id)
    for sid in ("s000", "s001"):
        store.claim_step(run.id, sid, "w", 30, T0)
        store.finish_step(run.id, sid, "w", StepStatus.SUCCEEDED, None, T0 + 1)
    assert steps_left(client, run.id) == (-2, None)  # made by the ADDs alone: not trusted
    assert not store.has_unfinished_steps(run.id)


# -- errors --------------------------------------------------------------------------------------


@pytest.fixture
def stubbed() -> Any:
    """A store on a stubbed client: no server, each response given by the test."""
    offline = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(offline) as stubber:
        yield DynamoStateStore(TABLE, client=offline), stubber
        stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    "code", ["ThrottlingException", "ProvisionedThroughputExceededException", "InternalServerError"]
)
def test_throttling_and_server_errors_are_temporary(stubbed: Any, code: str) -> None:
    store, stubber = stubbed
    stubber.add_client_error("get_item", service_error_code=code, http_status_code=400)
    with pytest.raises(TemporaryError) as caught:
        store.get_enclave("a")
    assert isinstance(caught.value.__cause__, ClientError)


@pytest.mark.parametrize("code", ["AccessDeniedException", "ResourceNotFoundException"])
def test_other_errors_are_store_errors(stubbed: Any, code: str) -> None:
    store, stubber = stubbed
    stubber.add_client_error("query", service_error_code=code, http_status_code=400)
    with pytest.raises(DynamoStoreError) as caught:
        store.list_enclaves()
    assert not isinstance(caught.value, TemporaryError | ConflictError | NotFoundError)
    assert code in str(caught.value)
    assert isinstance(caught.value.__cause__, ClientError)


def test_a_lost_condition_is_a_conflict(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_client_error(
        "put_item", service_error_code="ConditionalCheckFailedException", http_status_code=400
    )
    with pytest.raises(ConflictError) as caught:
        store.put_enclave(EnclaveState(enclave_id="a"), None)
    assert isinstance(caught.value.__cause__, ConditionFailedError)


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [
        (["None", "ConditionalCheckFailed"], ConditionFailedError),
        (["TransactionConflict", "None"], ContendedError),
        (["ValidationError"], DynamoStoreError),
    ],
)
def test_cancelled_transactions_by_reason(reasons: list[str], expected: type[Exception]) -> None:
    exc = ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
            "CancellationReasons": [{"Code": r} for r in reasons],
        },
        "TransactWriteItems",
    )
    translated = translate(exc, "TransactWriteItems")
    assert type(translated) is expected
    if isinstance(translated, ConditionFailedError):
        assert translated.failed(1) and not translated.failed(0)


def test_contended_run_creation_is_retried(stubbed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    store, stubber = stubbed
    monkeypatch.setattr(doc_runs, "_backoff", lambda attempt: None)
    run = make_run()
    contended = {"CancellationReasons": [{"Code": "TransactionConflict"}]}
    counter_moved = {"CancellationReasons": [{"Code": "ConditionalCheckFailed"}, {"Code": "None"}]}
    for response in (contended, counter_moved):
        stubber.add_response("get_item", {"Item": {"n": {"N": "4"}}})
        stubber.add_client_error(
            "transact_write_items",
            service_error_code="TransactionCanceledException",
            http_status_code=400,
            response_meta=None,
            modeled_fields=response,
        )
    stubber.add_response("get_item", {"Item": {"n": {"N": "5"}}})
    stubber.add_response("transact_write_items", {})
    assert store.create_run(run, []).seq == 6


def test_a_contended_finish_is_retried(stubbed: Any) -> None:
    store, stubber = stubbed
    contended = {"CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}]}
    stubber.add_client_error(
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        http_status_code=400,
        response_meta=None,
        modeled_fields=contended,
    )
    stubber.add_response("transact_write_items", {})
    run = make_run()
    (step,) = steps_of(run, 1)
    stored = {
        **step_key(run.id, step.step_id),
        "run_id": {"S": run.id},
        "step_id": {"S": step.step_id},
        "action": {"S": step.action.value},
        "enclave_id": {"S": step.enclave_id},
        "depends_on": {"L": []},
        "conditional": {"BOOL": False},
        "status": {"S": "succeeded"},
        "attempts": {"N": "1"},
        "version": {"N": "3"},
    }
    stubber.add_response("get_item", {"Item": stored})
    done = store.finish_step(run.id, step.step_id, "w", StepStatus.SUCCEEDED, None, T0)
    assert done is not None and done.status == StepStatus.SUCCEEDED and done.dependents == ()


# DynamoDB's documented codes of errors a later retry can fix.
DYNAMODB_TEMPORARY = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
]


@pytest.mark.parametrize("code", DYNAMODB_TEMPORARY)
def test_every_temporary_code_is_mapped(code: str) -> None:
    exc = ClientError({"Error": {"Code": code, "Message": "m"}}, "GetItem")
    assert isinstance(translate(exc, "GetItem"), TemporaryError)


def test_network_failures_are_temporary() -> None:
    for exc in (
        EndpointConnectionError(endpoint_url="http://x"),
        ReadTimeoutError(endpoint_url="http://x"),
    ):
        assert isinstance(translate(exc, "GetItem"), TemporaryError)


def test_a_missing_table_fails_ping(aws: str) -> None:
    with pytest.raises(DynamoStoreError, match="ResourceNotFoundException"):
        DynamoStateStore("no-such-table", client=boto3.client("dynamodb")).ping()


# -- the client ----------------------------------------------------------------------------------


def test_the_client_is_made_on_first_use_from_the_environment(client: Any) -> None:
    store = DynamoStateStore(TABLE)
    store.put_enclave(EnclaveState(enclave_id="a"), None)
    assert DynamoStateStore(TABLE, client=client).get_enclave("a") is not None
    assert store.client is store.client


def test_importing_the_store_loads_no_sdk_client() -> None:
    code = "import sys, functions_aws.dynamodb_store; print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
