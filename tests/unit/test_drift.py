"""Drift detection without terraform: the schedule (jitter, concurrency, only active
partitions, intervals from config), a check yielding to an apply and an apply waiting for a
check, the settings, the fingerprint, the routes and the CLI's rendering.

Stores, queues, bundles and ``PartitionIac`` are the real local ones; terraform runs in
tests/terraform/test_drift_state.py (edited state) and test_drift_aws.py (real AWS drift)."""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from nclav.api.auth import TokenAuth
from nclav.api.http import ApiRequest
from nclav.api.routes import build_router
from nclav.bundle import pack_directory
from nclav.cli.render import drift_lines, status_lines
from nclav.config import load_directory
from nclav.drift import DriftOptions, DriftScheduler, check_partition, drifted_resources
from nclav.drift.analysis import fingerprint
from nclav.drift.schedule import check_message, spread
from nclav.engine import Engine, LocalDriver, PartitionIac
from nclav.errors import SpecError, TemporaryError
from nclav.graph import validate_graph
from nclav.hashing import partition_hash
from nclav.iac.state_backend import TerraformStateBackend
from nclav.local import DirectoryBlobStore, InMemoryStateStore
from nclav.model import Cloud, DriftSettings, PartitionConfig
from nclav.ports import ManualClock
from nclav.records import (
    DriftRecord,
    DriftStatus,
    IacOperation,
    IacRun,
    IacStatus,
    Run,
    iso_time,
)
from nclav.service import Bundles, Service
from nclav.state import EnclaveState, PartitionState, ResourceMeta, Status

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

TOKEN = "t" * 64


class ListQueue:
    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None:
        self.sent.append(dict(message))

    def close(self) -> None:
        pass


def _state(*partitions: tuple[str, Status], enclave: str = "e") -> EnclaveState:
    return EnclaveState(
        enclave_id=enclave,
        partitions={
            pid: PartitionState(
                desired=PartitionConfig(id=pid, name=pid), meta=ResourceMeta(status=status)
            )
            for pid, status in partitions
        },
    )


def _scheduler(
    store: InMemoryStateStore, concurrency: int = 2, interval: float = 3600.0
) -> tuple[DriftScheduler, ListQueue]:
    queue = ListQueue()
    opts = DriftOptions(interval_s=interval, concurrency=concurrency, timeout_s=600)
    return DriftScheduler(store, queue, opts), queue


# -- the schedule --------------------------------------------------------------------------


def test_first_checks_are_spread_over_the_interval() -> None:
    store = InMemoryStateStore()
    store.put_enclave(_state(*((f"p{i:03d}", Status.ACTIVE) for i in range(200))), None)
    scheduler, queue = _scheduler(store)
    assert scheduler.tick(1000.0) == []
    dues = sorted((r.next_due or 0) - 1000.0 for r in store.list_drift())
    assert len(dues) == 200
    assert all(0 <= d < 3600 for d in dues)
    # No thundering herd: every tenth of the interval holds some, none holds most.
    buckets = [sum(1 for d in dues if k * 360 <= d < (k + 1) * 360) for k in range(10)]
    assert min(buckets) > 0 and max(buckets) < 50, buckets
    assert spread("e", "p001") == spread("e", "p001")  # stable across processes


def test_at_most_concurrency_checks_and_only_active_partitions() -> None:
    store = InMemoryStateStore()
    store.put_enclave(
        _state(
            ("a", Status.ACTIVE),
            ("b", Status.ACTIVE),
            ("c", Status.ACTIVE),
            ("busy", Status.UPDATING),
            ("broken", Status.ERROR),
        ),
        None,
    )
    scheduler, queue = _scheduler(store)
    scheduler.tick(0.0)
    later = 3600.0
    sent = scheduler.tick(later)
    assert len(sent) == 2  # concurrency 2
    assert all(m["kind"] == "drift_check" and m["action"] == "drift_check" for m in queue.sent)
    assert {p for _, p in sent} <= {"a", "b", "c"}
    assert scheduler.tick(later + 1) == []  # both still in flight
    # One finishes (its worker clears in_flight_until): one more may go.
    done = store.get_drift(*sent[0])
    assert done is not None
    store.put_drift(done.model_copy(update={"in_flight_until": None, "next_due": later + 3600}))
    third = scheduler.tick(later + 2)
    assert len(third) == 1 and third[0] not in sent
    # A worker that died: its check stops counting once in_flight_until passes.
    assert scheduler.tick(later + 601) == [sent[1]]  # the third still counts
    assert all(p not in ("busy", "broken") for _, p in [*sent, *third])


def test_removed_partitions_lose_their_record() -> None:
    store = InMemoryStateStore()
    store.put_enclave(_state(("a", Status.ACTIVE), ("b", Status.ACTIVE)), None)
    scheduler, _ = _scheduler(store)
    scheduler.tick(0.0)
    found = store.get_enclave("e")
    assert found is not None
    store.put_enclave(_state(("a", Status.ACTIVE)), found[1])
    scheduler.tick(1.0)
    assert [r.partition_id for r in store.list_drift()] == ["a"]


def _tree(root: Path, drift: str | None) -> Path:
    (root / "e" / "p").mkdir(parents=True, exist_ok=True)
    (root / "e" / "config.yml").write_text("id: e\nname: e\ncloud: local\nregion: r\n")
    extra = f"drift: {drift}\n" if drift else ""
    (root / "e" / "p" / "config.yml").write_text(f"id: p\nname: p\n{extra}")
    (root / "e" / "p" / "main.tf").write_text('resource "terraform_data" "t" {}\n')
    return root


def test_interval_comes_from_the_newest_submitted_config(tmp_path: Path) -> None:
    store, blobs = InMemoryStateStore(), DirectoryBlobStore(tmp_path / "blobs")
    bundles = Bundles(blobs, Cloud.LOCAL)
    store.put_enclave(_state(("p", Status.ACTIVE)), None)
    digest = bundles.put(pack_directory(_tree(tmp_path / "t", "{interval: 'off'}"))[1])["digest"]
    store.create_run(Run(created_at=iso_time(0), bundle=str(digest)), [])
    queue = ListQueue()
    scheduler = DriftScheduler(store, queue, DriftOptions(interval_s=60), bundles.load)
    scheduler.tick(0.0)
    record = store.get_drift("e", "p")
    assert record is not None and record.next_due is None  # off: never due
    assert scheduler.tick(10**9) == []
    # Turned on again (a newer run's bundle), with its own interval.
    digest = bundles.put(pack_directory(_tree(tmp_path / "t", "{interval: 1d}"))[1])["digest"]
    store.create_run(Run(created_at=iso_time(1), bundle=str(digest)), [])
    scheduler.tick(100.0)
    record = store.get_drift("e", "p")
    assert record is not None and record.next_due is not None
    assert 100.0 <= record.next_due < 100.0 + 86400


# -- the mutex: a check yields to an apply; an apply waits for a check --------------------


def _iac(tmp_path: Path, store: InMemoryStateStore) -> PartitionIac:
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    return PartitionIac(store, blobs, ManualClock(), tmp_path / "ws", check_timeout_s=30)


def _running(store: InMemoryStateStore, op: IacOperation) -> IacRun:
    run = IacRun(enclave_id="e", partition_id="p", operation=op, started_at=iso_time(time.time()))
    store.put_iac_run(run)
    return run


def test_an_apply_waits_for_a_running_check_then_takes_the_partition(tmp_path: Path) -> None:
    store = InMemoryStateStore()
    iac = _iac(tmp_path, store)
    check = _running(store, IacOperation.DRIFT_CHECK)
    assert store.acquire_partition("e/p", "checker", 60, iac.clock.now())

    def finish() -> None:
        time.sleep(0.6)
        store.put_iac_run(check.model_copy(update={"status": IacStatus.SUCCEEDED}))
        store.release_partition("e/p", "checker")

    threading.Thread(target=finish).start()
    started = time.monotonic()
    with iac._exclusive("e", "p"):
        waited = time.monotonic() - started
    # The check's remaining time (0.6 s; a loaded machine adds some), not a retry backoff
    # (TemporaryError) nor the whole check timeout (30 s).
    assert 0.5 <= waited < 10.0


def test_an_apply_does_not_wait_for_another_apply(tmp_path: Path) -> None:
    store = InMemoryStateStore()
    iac = _iac(tmp_path, store)
    _running(store, IacOperation.UPDATE)
    assert store.acquire_partition("e/p", "applier", 60, iac.clock.now())
    started = time.monotonic()
    with pytest.raises(TemporaryError, match="busy"), iac._exclusive("e", "p"):
        pass
    assert time.monotonic() - started < 5  # not the 30 s a check would be waited for


def test_a_check_never_waits_for_the_partition(tmp_path: Path) -> None:
    store = InMemoryStateStore()
    iac = _iac(tmp_path, store)
    _running(store, IacOperation.DRIFT_CHECK)  # even another check
    assert store.acquire_partition("e/p", "other", 60, iac.clock.now())
    started = time.monotonic()
    with pytest.raises(TemporaryError), iac._exclusive("e", "p", wait_for_checks=False):
        pass
    assert time.monotonic() - started < 5  # not the 30 s a check would be waited for


def test_a_busy_partition_is_checked_again_shortly(tmp_path: Path) -> None:
    store, blobs = InMemoryStateStore(), DirectoryBlobStore(tmp_path / "blobs")
    bundles = Bundles(blobs, Cloud.LOCAL)
    tree = _tree(tmp_path / "t", None)
    digest = str(bundles.put(pack_directory(tree)[1])["digest"])
    graph = validate_graph(load_directory(tree))
    part = graph.enclaves["e"].partitions[0]
    store.put_enclave(
        EnclaveState(
            enclave_id="e",
            resolved_cloud=Cloud.LOCAL,
            partitions={
                "p": PartitionState(
                    desired=part.config,
                    bundle=digest,
                    meta=ResourceMeta(status=Status.ACTIVE, desired_hash=partition_hash(part)),
                )
            },
        ),
        None,
    )
    clock = ManualClock()
    iac = PartitionIac(store, blobs, clock, tmp_path / "ws")
    engine = Engine(
        store, ListQueue(), blobs, clock, {Cloud.LOCAL: LocalDriver()}, Cloud.LOCAL, iac,
        bundles.load,
    )  # fmt: skip
    _running(store, IacOperation.UPDATE)
    assert store.acquire_partition("e/p", "applier", 60, clock.now())
    store.put_drift(DriftRecord(enclave_id="e", partition_id="p", in_flight_until=1e12))
    # A requested check is sent again in a few seconds while its time lasts: answering now
    # would give the request the outcome of what began before it.
    queue = engine.queue
    assert isinstance(queue, ListQueue)
    message = check_message("e", "p", "requested-1", clock.now() + 600)
    engine.handle(message)
    assert queue.sent == [message]
    record = store.get_drift("e", "p")
    assert record is not None and record.check_id is None and record.in_flight_until == 1e12
    # Its time over: it answers with the partition still busy.
    engine.handle(check_message("e", "p", "requested-1", clock.now() + 1))
    assert len(queue.sent) == 1
    record = store.get_drift("e", "p")
    assert record is not None
    assert record.status == DriftStatus.NOT_CHECKED
    assert record.check_id == "requested-1"  # the request waiting for it has its answer
    assert check_partition(engine, "e", "p", DriftOptions()) is None
    record = store.get_drift("e", "p")
    assert record is not None and record.check_id is None  # a scheduled check's outcome
    assert record.in_flight_until is None  # no longer counts against the concurrency
    assert record.next_due is not None and 40 < record.next_due - clock.now() < 80
    assert store.list_iac_runs("e", "p")[0].operation == IacOperation.UPDATE  # no check ran


# -- settings, hashing, fingerprint ----------------------------------------------------------


def test_drift_settings_validate_durations() -> None:
    assert DriftSettings(interval="30m").interval_s(1) == 1800
    assert DriftSettings(interval="1d").interval_s(1) == 86400
    assert DriftSettings(interval="off").interval_s(1) is None
    assert DriftSettings().interval_s(42) == 42
    for bad in ("1x", "0h", "10s", "h", "1.5h"):
        with pytest.raises(ValueError, match="interval"):
            DriftSettings(interval=bad)


def test_a_bad_drift_key_in_config_yml_names_the_file_and_field(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "t", "{interval: 2 weeks}")
    with pytest.raises(SpecError) as caught:
        load_directory(tree)
    rendered = "\n".join(i.render() for i in caught.value.issues)
    assert "e/p/config.yml" in rendered and "interval" in rendered
    tree = _tree(tmp_path / "u", "{remediat: true}")
    with pytest.raises(SpecError) as caught:
        load_directory(tree)
    assert "remediat" in "\n".join(i.render() for i in caught.value.issues)


def test_drift_keys_do_not_change_the_partition_hash(tmp_path: Path) -> None:
    plain = validate_graph(load_directory(_tree(tmp_path / "a", None)))
    watched = validate_graph(
        load_directory(_tree(tmp_path / "b", "{interval: 1h, remediate: true}"))
    )
    assert partition_hash(plain.enclaves["e"].partitions[0]) == partition_hash(
        watched.enclaves["e"].partitions[0]
    )


def test_environment_settings_are_checked() -> None:
    assert DriftOptions.from_env({}).interval_s == 21600
    assert DriftOptions.from_env({}).concurrency == 2
    opts = DriftOptions.from_env({"NCLAV_DRIFT_INTERVAL_S": "90", "NCLAV_DRIFT_CONCURRENCY": "5"})
    assert (opts.interval_s, opts.concurrency) == (90, 5)
    for env in (
        {"NCLAV_DRIFT_INTERVAL_S": "0"},
        {"NCLAV_DRIFT_INTERVAL_S": "soon"},
        {"NCLAV_DRIFT_CONCURRENCY": "0"},
        {"NCLAV_DRIFT_CONCURRENCY": "1.5"},
    ):
        with pytest.raises(SpecError, match=next(iter(env))):
            DriftOptions.from_env(env)


def _plan(after_tags: str, sensitive: bool = False) -> dict[str, Any]:
    return {
        "resource_drift": [
            {
                "address": "aws_sqs_queue.q",
                "change": {
                    "actions": ["update"],
                    "before": {"name": "q", "tags": {"team": "a"}, "secret": "x"},
                    "after": {"name": "q", "tags": {"team": after_tags}, "secret": "y"},
                    "after_sensitive": {"secret": sensitive},
                },
            }
        ],
        "output_changes": {"u": {"actions": ["no-op"]}, "v": {"actions": ["update"], "after": 1}},
    }


def test_drifted_resources_and_fingerprint() -> None:
    found = drifted_resources(_plan("b"))
    assert [(r.address, r.attributes) for r in found] == [
        ("aws_sqs_queue.q", ("secret", "tags")),
        ("output.v", ("value",)),
    ]
    assert fingerprint(found) == fingerprint(drifted_resources(_plan("b")))
    assert fingerprint(found) != fingerprint(drifted_resources(_plan("c")))  # another value
    # A sensitive attribute counts by its name: its value never reaches the fingerprint.
    hidden = drifted_resources(_plan("b", sensitive=True))
    other = _plan("b", sensitive=True)
    other["resource_drift"][0]["change"]["after"]["secret"] = "z"
    assert fingerprint(hidden) == fingerprint(drifted_resources(other))
    assert fingerprint(()) is None
    assert "y" not in json.dumps([r.model_dump() for r in found])  # values are not stored


# -- routes and rendering --------------------------------------------------------------------


def _router(tmp_path: Path) -> tuple[Any, InMemoryStateStore, ListQueue]:
    store, blobs = InMemoryStateStore(), DirectoryBlobStore(tmp_path / "blobs")
    queue = ListQueue()
    clock = ManualClock()
    iac = PartitionIac(store, blobs, clock, tmp_path / "ws")
    bundles = Bundles(blobs, Cloud.LOCAL)
    engine = Engine(
        store, queue, blobs, clock, {Cloud.LOCAL: LocalDriver()}, Cloud.LOCAL, iac, bundles.load
    )
    service = Service(store, bundles, engine, {Cloud.LOCAL: LocalDriver()}, Cloud.LOCAL)
    tf = TerraformStateBackend(store, blobs, clock)
    return build_router(service, tf, blobs, TokenAuth(TOKEN)), store, queue


def _call(router: Any, method: str, path: str) -> tuple[int, Any]:
    request = ApiRequest.build(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
    response = router.dispatch(request)
    return response.status, json.loads(response.body)


def _drifted(**fields: Any) -> DriftRecord:
    """e/p's record as a check that found ``_plan("b")``'s drift leaves it."""
    drift = drifted_resources(_plan("b"))
    return DriftRecord(
        enclave_id="e",
        partition_id="p",
        status=DriftStatus.DRIFTED,
        resource_drift=drift,
        fingerprint=fingerprint(drift),
        **fields,
    )


def test_routes_list_check_and_ack(tmp_path: Path) -> None:
    router, store, queue = _router(tmp_path)
    store.put_enclave(_state(("p", Status.ACTIVE), ("q", Status.UPDATING)), None)
    store.put_enclave(_state(("x", Status.ACTIVE), enclave="other"), None)
    store.put_drift(_drifted(plan_text="~ tags"))
    store.put_drift(DriftRecord(enclave_id="other", partition_id="x"))
    status, doc = _call(router, "GET", "/drift?enclave=e")
    assert status == 200
    # Every applied partition, a record or not ("q" was never checked).
    assert [(p["partition_id"], p["status"]) for p in doc["partitions"]] == [
        ("p", "drifted"),
        ("q", "not_checked"),
    ]
    assert doc["counts"]["drifted"] == 1
    assert "plan_text" not in doc["partitions"][0]
    assert _call(router, "GET", "/drift?enclave=a%20b")[0] == 400  # the id rule
    status, one = _call(router, "GET", "/enclaves/e/partitions/p/drift")
    assert (status, one["plan_text"]) == (200, "~ tags")

    status, queued = _call(router, "POST", "/enclaves/e/partitions/p/drift/check")
    assert status == 202 and queued["drift"] == "/enclaves/e/partitions/p/drift"
    sent = queue.sent[-1]
    assert len(sent.pop("check")) == 36  # the request's own check id (a uuid)
    assert float(sent.pop("until")) > 0  # sent again up to then while the partition is busy
    assert sent == {
        "kind": "drift_check",
        "action": "drift_check",
        "enclave": "e",
        "partition": "p",
    }
    assert _call(router, "POST", "/enclaves/e/partitions/q/drift/check")[0] == 409  # updating
    assert _call(router, "POST", "/enclaves/e/partitions/nope/drift/check")[0] == 404

    status, acked = _call(router, "POST", "/enclaves/e/partitions/p/drift/ack")
    assert status == 200 and (acked["status"], acked["acknowledged"]) == ("in_sync", True)
    assert _call(router, "POST", "/enclaves/other/partitions/x/drift/ack")[0] == 409  # no drift
    status, doc = _call(router, "GET", "/status")
    assert doc["drift"] == {
        "not_checked": 2,
        "in_sync": 1,
        "drifted": 0,
        "check_failed": 0,
        "acknowledged": 1,
    }
    assert "Drift: 0 drifted, 1 in sync (1 acknowledged)" in "\n".join(status_lines(doc))
    _, listing = _call(router, "GET", "/drift")
    text = "\n".join(drift_lines(listing))
    assert "e/p" in text and "in_sync (acknowledged)" in text and "other/x" in text


def test_a_check_waits_for_its_own_outcome_not_an_earlier_checks(tmp_path: Path) -> None:
    """A scheduled check that began before the request (on the state before an edit) may end
    while the requested one is still queued: ``?wait=`` answers only with its own check's."""
    router, store, queue = _router(tmp_path)
    store.put_enclave(_state(("p", Status.ACTIVE)), None)
    answer: list[tuple[int, Any]] = []
    waiting = threading.Thread(
        target=lambda: answer.append(
            _call(router, "POST", "/enclaves/e/partitions/p/drift/check?wait=20")
        )
    )
    waiting.start()
    deadline = time.monotonic() + 10
    while not queue.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    check_id = queue.sent[-1]["check"]
    # The earlier, scheduled check ends first: in sync, nothing in flight.
    store.put_drift(
        DriftRecord(
            enclave_id="e", partition_id="p", status=DriftStatus.IN_SYNC, checked_at="earlier"
        )
    )
    time.sleep(0.6)  # three of the route's polls
    assert waiting.is_alive() and not answer
    # Then the requested one, through the worker's own path.
    store.put_drift(_drifted(checked_at="later", check_id=check_id))
    waiting.join(10)
    assert answer and answer[0][0] == 200
    assert (answer[0][1]["status"], answer[0][1]["checked_at"]) == ("drifted", "later")
