"""Drift checks with real terraform: a ``terraform_data`` partition whose stored state is
edited through the state backend (no provider needed), on the engine with the local adapters.

The AWS-provider drift (a real resource changed behind nclav's back) is in
``test_drift_aws.py``; the API and CLI flow through a real server in tests/e2e.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import TYPE_CHECKING

import pytest

from drift_harness import DATA_PARTITION, DriftHarness, write_tree
from nclav.iac.logs import read_log
from nclav.records import DriftStatus, EventKind, IacOperation, IacStatus, RunStatus
from nclav.state import Status

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.terraform

if shutil.which("terraform") is None:
    if os.environ.get("CI") == "true":
        pytest.fail("terraform is not on PATH: CI must run the terraform tests", pytrace=False)
    pytest.skip("terraform is not on PATH", allow_module_level=True)


@pytest.fixture(name="h")
def harness_fixture(tmp_path: Path) -> Iterator[DriftHarness]:
    harness = DriftHarness(tmp_path)
    yield harness
    harness.close()


def _events(h: DriftHarness, kind: EventKind) -> list[dict[str, object]]:
    return [e.to_json() for e in h.store.list_events("e") if e.kind == kind]


def test_in_sync_check_writes_no_state_version_and_is_recorded(
    h: DriftHarness, tmp_path: Path
) -> None:
    h.apply(write_tree(tmp_path / "tree", {"p": DATA_PARTITION % "hello"}))
    versions = h.state_versions("p")
    assert versions >= 1
    record = h.check("p")
    assert record is not None
    assert record.status == DriftStatus.IN_SYNC, record.error
    assert record.resource_drift == ()
    assert h.state_versions("p") == versions  # a read-only check: no new state version
    run = h.store.get_iac_run(record.iac_run_id or "")
    assert run is not None
    assert run.operation == IacOperation.DRIFT_CHECK
    assert run.status == IacStatus.SUCCEEDED
    log = read_log(h.blobs, run, 0).decode()
    assert "=== terraform plan ===" in log
    assert "No changes" in log
    assert h.store.get_lock("e/p") is None  # -lock=false: the state lock was never taken


def test_edited_state_is_drift_then_acknowledged_until_it_changes(
    h: DriftHarness, tmp_path: Path
) -> None:
    h.apply(write_tree(tmp_path / "tree", {"p": DATA_PARTITION % "hello"}))
    h.tamper_output("p", "v", "edited")
    versions = h.state_versions("p")
    drifted = h.check("p")
    assert drifted is not None
    assert drifted.status == DriftStatus.DRIFTED
    assert [r.address for r in drifted.resource_drift] == ["output.v"]
    assert drifted.fingerprint
    assert "edited" in drifted.plan_text  # terraform's own words, from show of the saved plan
    assert h.state_versions("p") == versions  # the drifted state is reported, not rewritten
    detected = _events(h, EventKind.DRIFT_DETECTED)
    assert len(detected) == 1 and detected[0]["addresses"] == "output.v"

    # Acknowledged (what POST .../drift/ack does): in sync while the drift stays the same.
    h.store.put_drift(
        drifted.model_copy(
            update={"acknowledged": drifted.fingerprint, "status": DriftStatus.IN_SYNC}
        )
    )
    again = h.check("p")
    assert again is not None
    assert (again.status, again.is_acknowledged) == (DriftStatus.IN_SYNC, True)
    assert len(_events(h, EventKind.DRIFT_DETECTED)) == 1  # nothing new to report

    # Other drift (another output edited too): a new fingerprint, reported again.
    h.tamper_output("p", "w", "edited")
    changed = h.check("p")
    assert changed is not None
    assert changed.status == DriftStatus.DRIFTED
    assert [r.address for r in changed.resource_drift] == ["output.v", "output.w"]
    assert not changed.is_acknowledged
    assert changed.fingerprint != drifted.fingerprint
    assert len(_events(h, EventKind.DRIFT_DETECTED)) == 2


def test_check_runs_the_last_applied_config_not_the_newest_tree(
    h: DriftHarness, tmp_path: Path
) -> None:
    tree = write_tree(tmp_path / "tree", {"p": DATA_PARTITION % "hello"})
    h.apply(tree)
    write_tree(tree, {"p": DATA_PARTITION % "a change not applied yet"})
    newest = h.submit(tree)  # submitted, not applied: a plain plan of it would show a change
    record = h.check("p")
    assert record is not None
    assert record.status == DriftStatus.IN_SYNC, record.plan_text
    found = h.store.get_enclave("e")
    assert found is not None
    assert found[0].partitions["p"].bundle != newest


def test_remediate_reapplies_a_drifted_partition(h: DriftHarness, tmp_path: Path) -> None:
    tree = write_tree(
        tmp_path / "tree", {"p": DATA_PARTITION % "hello"}, drift={"p": "{remediate: true}"}
    )
    h.apply(tree)
    h.tamper_output("p", "v", "edited")
    record = h.check("p")
    assert record is not None
    assert record.status == DriftStatus.DRIFTED
    assert record.remediation_run_id
    assert h.queue.wait_idle(timeout=240)
    run = h.store.get_run(record.remediation_run_id)
    assert run is not None
    assert (run.status, run.trigger) == (RunStatus.SUCCEEDED, "drift"), run.errors
    found = h.store.get_enclave("e")
    assert found is not None
    assert found[0].partitions["p"].meta.status == Status.ACTIVE
    resolved = h.check("p")
    assert resolved is not None
    assert resolved.status == DriftStatus.IN_SYNC
    assert len(_events(h, EventKind.DRIFT_RESOLVED)) == 1


def test_changing_drift_settings_does_not_reapply(h: DriftHarness, tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", {"p": DATA_PARTITION % "hello"})
    h.apply(tree)
    runs = len(h.store.list_iac_runs("e", "p"))
    write_tree(
        tree, {"p": DATA_PARTITION % "hello"}, drift={"p": "{interval: 1h, remediate: true}"}
    )
    run = h.apply(tree)
    assert run.status == RunStatus.SUCCEEDED
    assert run.changes == 0
    assert len(h.store.list_iac_runs("e", "p")) == runs  # terraform did not run again


def test_scheduled_checks_go_through_the_queue_workers(h: DriftHarness, tmp_path: Path) -> None:
    h.apply(write_tree(tmp_path / "tree", {"a": DATA_PARTITION % "a", "b": DATA_PARTITION % "b"}))
    now = time.time()
    assert h.scheduler.tick(now) == []  # first sight: due times spread over an interval
    sent = h.scheduler.tick(now + h.options.interval_s)
    assert sorted(sent) == [("e", "a"), ("e", "b")]
    assert h.queue.wait_idle(timeout=120)
    for pid in ("a", "b"):
        record = h.store.get_drift("e", pid)
        assert record is not None
        assert record.status == DriftStatus.IN_SYNC, record.error
        assert record.in_flight_until is None
        assert record.next_due is not None and record.next_due > now + 0.8 * 3600
