"""The npm Firestore emulator the tests fall back on where gcloud is absent.

Runs the fallback whatever the machine has (gcloud or not), so CI shows that it starts on
loopback, is emptied between tests and serves what the store's tests use, and that each gap
named by a ``needs_gcloud_firestore`` reason (tests/stand_ins.py) is real: when a release of
@firestore-emulator/server implements one, its test here fails, and the tests marked with
that reason should stop skipping on the fallback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from google.api_core import exceptions
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

import stand_ins
from stand_ins import (
    FIRESTORE_PROJECT,
    npm_firestore_missing,
    reset_firestore,
    start_npm_firestore,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def npm_firestore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of the npm emulator (one for this module); skipped where it is not
    installed, failed under CI=true, where ``make standins`` installs it."""
    missing = npm_firestore_missing()
    if missing is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    with start_npm_firestore(tmp_path_factory.mktemp("npm-firestore")) as host:
        yield host


@pytest.fixture
def db(npm_firestore: str, monkeypatch: pytest.MonkeyPatch) -> firestore.Client:
    """A client of the npm emulator, its database emptied as the ``firestore`` fixture does."""
    reset_firestore(npm_firestore)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", npm_firestore)
    return firestore.Client(project=FIRESTORE_PROJECT)


def _listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses on which something listens on ``port`` (Linux /proc/net)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_it_listens_on_loopback_only(npm_firestore: str) -> None:
    port = int(npm_firestore.rsplit(":", 1)[1])
    assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, not the package's 0.0.0.0


def test_the_reset_call_empties_the_database(db: firestore.Client, npm_firestore: str) -> None:
    db.collection("a").document("x").set({"n": 1})
    db.collection("b").document("y").collection("c").document("z").set({"n": 1})
    reset_firestore(npm_firestore)
    assert not db.collection("b").document("y").collection("c").document("z").get().exists
    assert not db.collection("a").document("x").get().exists


def test_it_serves_what_the_store_relies_on(db: firestore.Client) -> None:
    """Reads, a conditional create, batches, filtered and ordered queries, bytes."""
    col = db.collection("runs")
    col.document("r1").create({"seq": 2, "doc": b"\x00z"})
    with pytest.raises(exceptions.AlreadyExists):
        col.document("r1").create({"seq": 9})
    batch = db.batch()
    batch.create(col.document("r2"), {"seq": 1})
    batch.create(col.document("r3"), {"seq": 3})
    batch.commit()
    assert col.document("r1").get().to_dict() == {"seq": 2, "doc": b"\x00z"}
    query = col.where(filter=FieldFilter("seq", ">", 1)).order_by("seq")
    assert [s.id for s in query.stream()] == ["r1", "r3"]
    latest = col.order_by("seq", direction=firestore.Query.DESCENDING).limit(2)
    assert [s.id for s in latest.stream()] == ["r3", "r1"]
    with pytest.raises(exceptions.NotFound):
        col.document("missing").update({"seq": 1})


# -- the gaps the needs_gcloud_firestore reasons name ---------------------------------------


def test_gap_preconditions_a_stale_last_update_time_is_accepted(db: firestore.Client) -> None:
    ref = db.collection("a").document("x")
    ref.set({"n": 1})
    stale = ref.get().update_time
    ref.update({"n": 2})
    assert ref.get().update_time > stale
    ref.update({"n": 3}, option=db.write_option(last_update_time=stale))  # gcloud's refuses
    assert ref.get().to_dict() == {"n": 3}


def test_gap_an_increment_commit_returns_no_transform_result(db: firestore.Client) -> None:
    ref = db.collection("a").document("counter")
    ref.set({"n": 1})
    batch = db.batch()
    batch.update(ref, {"n": firestore.Increment(1)})
    (result,) = batch.commit()
    assert ref.get().to_dict() == {"n": 2}  # the increment itself is applied
    assert len(result.transform_results) == 0  # gcloud's returns the new value here


def test_gap_field_deletes_are_ignored(db: firestore.Client) -> None:
    ref = db.collection("a").document("x")
    ref.set({"keep": 1, "gone": 2})
    ref.update({"gone": firestore.DELETE_FIELD})
    assert ref.get().to_dict() == {"keep": 1, "gone": 2}
    ref.set({"only": 1})  # a set() replaces the document in Firestore
    assert ref.get().to_dict() == {"keep": 1, "gone": 2, "only": 1}


def test_gap_name_order_is_insertion_order(db: firestore.Client) -> None:
    col = db.collection("a")
    for name in ("c", "a", "b"):
        col.document(name).set({"n": 1})
    assert [s.id for s in col.order_by("__name__").stream()] == ["c", "a", "b"]


def test_gap_collection_group_queries_find_nothing(db: firestore.Client) -> None:
    steps = db.collection("runs").document("r").collection("steps")
    steps.document("s").set({"lease_at": 1.0})
    where = FieldFilter("lease_at", "<=", 5.0)
    assert [s.id for s in steps.where(filter=where).stream()] == ["s"]
    assert list(db.collection_group("steps").where(filter=where).stream()) == []


def test_gap_collections_cannot_be_listed(db: firestore.Client) -> None:
    db.collection("a").document("x").set({"n": 1})
    with pytest.raises(exceptions.Unknown, match="ListCollectionIds"):
        list(db.collections())


def test_the_fixture_refuses_an_unknown_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(stand_ins.FIRESTORE_MODE_ENV, "java")
    with pytest.raises(pytest.fail.Exception, match="NCLAV_TEST_FIRESTORE='java': expected"):
        stand_ins._firestore_mode()  # noqa: SLF001
