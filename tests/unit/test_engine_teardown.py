"""Teardown never forgets what terraform made (issue 8, points 2 and 3), with the engine fakes.

A partition's config, bundle and inputs are recorded when its apply starts, so the teardown of
a partition whose first apply failed half-way runs ``terraform destroy`` with the files that
made its state; a partition whose state has no recorded config fails loudly; an enclave record
is never dropped while partitions or Terraform state of it remain.
"""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING

import pytest
from engine_fakes import Rig

from nclav.errors import PermanentError
from nclav.model import Cloud
from nclav.plan import Action, Plan, Step, plan_teardown
from nclav.records import RunStatus, StepStatus
from nclav.state import EnclaveState, PartitionState, ResourceMeta, Status
from nclav.views import status_json
from support import enclave_files, write_tree

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SOLO, HALF = "solo", "solo/half"
MAIN_TF = b'resource "terraform_data" "made" {}\n'
FULL = {"resources": [{"mode": "managed", "type": "terraform_data", "name": "made"}]}
EMPTY: dict[str, list[object]] = {"resources": []}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, backoff_s=2.0, max_attempts=4, lease_s=60.0)
    with_half = write_tree(
        r.add_tree("v1"), enclave_files(SOLO, keep="", half='inputs:\n  size: "3"\n')
    )
    (with_half / SOLO / "half" / "main.tf").write_bytes(MAIN_TF)
    write_tree(r.add_tree("v2"), enclave_files(SOLO, keep=""))
    yield r
    r.close()


def put_tf_state(rig: Rig, key: str, doc: dict[str, list[object]]) -> None:
    """What terraform's HTTP backend leaves: a state version and the pointer to it."""
    blob = f"tfstate/{key}/00000001"
    rig.blobs.put(blob, json.dumps({"version": 4, **doc}).encode())
    rig.store.set_tf_state(key, blob)


def only_step(rig: Rig, run_id: str) -> str:
    (step,) = rig.store.list_steps(run_id)
    return step.step_id


def test_a_failed_first_apply_is_destroyed_with_the_files_it_started_with(rig: Rig) -> None:
    rig.iac.failures.forever(f"apply:{HALF}", PermanentError("terraform apply: exit 1"))
    assert rig.apply("v1").status == RunStatus.FAILED
    half = rig.enclave(SOLO).partitions["half"]
    assert half.meta.status == Status.ERROR
    assert half.desired is not None and half.desired.id == "half"
    assert half.bundle == "v1" and half.started_inputs == {"size": "3"}
    put_tf_state(rig, HALF, FULL)  # terraform created "made" before failing

    run = rig.apply("v2")
    assert run.status == RunStatus.SUCCEEDED, run
    assert only_step(rig, run.id) == f"teardown_partition:{HALF}"
    assert rig.iac.destroys == [(run.id, HALF)]
    assert rig.iac.destroy_files[HALF] == {"main.tf": MAIN_TF}  # from v1, not from v2
    assert rig.journal.count("driver.teardown_partition", HALF) == 1
    assert "half" not in rig.enclave(SOLO).partitions


def test_a_destroy_that_fails_keeps_the_partition_and_its_state(rig: Rig) -> None:
    assert rig.apply("v1").status == RunStatus.SUCCEEDED
    put_tf_state(rig, HALF, FULL)
    rig.iac.failures.forever(f"destroy:{HALF}", PermanentError("terraform destroy: exit 1"))
    run = rig.apply("v2")
    assert run.status == RunStatus.FAILED
    half = rig.enclave(SOLO).partitions["half"]
    assert half.meta.status == Status.ERROR and half.meta.last_error is not None
    assert "terraform destroy: exit 1" in half.meta.last_error.message
    assert rig.store.get_tf_state(HALF) is not None
    assert rig.journal.count("driver.teardown_partition", HALF) == 0


def seed_unrecorded(rig: Rig, doc: dict[str, list[object]]) -> None:
    """A partition record an older nclav wrote: state in the store, no config recorded."""
    assert rig.apply("v2").status == RunStatus.SUCCEEDED
    found = rig.store.get_enclave(SOLO)
    assert found is not None
    state, version = found
    old = PartitionState(meta=ResourceMeta(status=Status.ACTIVE))
    rig.store.put_enclave(
        state.model_copy(update={"partitions": {**state.partitions, "old": old}}), version
    )
    put_tf_state(rig, f"{SOLO}/old", doc)


def test_state_without_a_recorded_config_fails_the_teardown_loudly(rig: Rig) -> None:
    seed_unrecorded(rig, FULL)
    run = rig.apply("v2")
    assert run.status == RunStatus.FAILED
    step = rig.step(run.id, f"teardown_partition:{SOLO}/old")
    assert step.status == StepStatus.FAILED and step.attempts == 1
    assert step.error is not None
    assert "older nclav version" in step.error
    assert "DELETE /terraform/state/solo/old" in step.error
    old = rig.enclave(SOLO).partitions["old"]  # not forgotten
    assert old.meta.status == Status.ERROR
    assert rig.store.get_tf_state(f"{SOLO}/old") is not None
    assert rig.iac.destroys == []


def test_an_emptied_state_without_a_recorded_config_is_let_go(rig: Rig) -> None:
    seed_unrecorded(rig, EMPTY)  # what terraform destroy leaves: nothing to lose
    run = rig.apply("v2")
    assert run.status == RunStatus.SUCCEEDED, run
    assert "old" not in rig.enclave(SOLO).partitions


def applied(rig: Rig) -> dict[str, EnclaveState]:
    return {s.enclave_id: s for s in rig.store.list_enclaves()}


def teardown_enclave_only(rig: Rig, enclave_id: str) -> str:
    """Run a plan holding just ``teardown_enclave`` (as a destroy planned too early would)."""
    sid = f"teardown_enclave:{enclave_id}"
    plan = Plan((), (Step(sid, Action.TEARDOWN_ENCLAVE, enclave_id, None, ()),))
    run = rig.engine.start_plan(plan, None, "destroy")
    rig.drain()
    return run.id


def test_teardown_enclave_refuses_while_partitions_remain(rig: Rig) -> None:
    assert rig.apply("v1").status == RunStatus.SUCCEEDED
    run_id = teardown_enclave_only(rig, SOLO)
    assert rig.run(run_id).status == RunStatus.FAILED
    error = rig.step(run_id, f"teardown_enclave:{SOLO}").error or ""
    assert "partitions half, keep" in error
    assert rig.journal.count("driver.teardown_enclave", SOLO) == 0
    state = rig.enclave(SOLO)
    assert set(state.partitions) == {"half", "keep"}
    assert state.meta.status == Status.ERROR


def test_teardown_enclave_refuses_while_terraform_state_remains(rig: Rig) -> None:
    rig.store.put_enclave(EnclaveState(enclave_id="ghost"), None)
    put_tf_state(rig, "ghost/lost", FULL)  # its record gone, its resources not
    put_tf_state(rig, "ghost/done", EMPTY)  # destroyed: does not hold the enclave back
    put_tf_state(rig, "ghost-2/x", FULL)  # another enclave's
    run = rig.engine.start_plan(plan_teardown(applied(rig), ["ghost"]), None, "destroy")
    rig.drain()
    assert rig.run(run.id).status == RunStatus.FAILED
    error = rig.step(run.id, "teardown_enclave:ghost").error or ""
    assert "Terraform state ghost/lost" in error
    assert "ghost/done" not in error and "ghost-2" not in error
    assert rig.enclave("ghost").meta.status == Status.ERROR

    rig.store.set_tf_state("ghost/lost", None)  # an operator destroyed it by hand
    run = rig.engine.start_plan(plan_teardown(applied(rig), ["ghost"]), None, "destroy")
    rig.drain()
    assert rig.run(run.id).status == RunStatus.SUCCEEDED
    assert rig.store.get_enclave("ghost") is None


def test_last_reconciled_moves_after_an_apply_that_only_removes_a_partition(rig: Rig) -> None:
    assert rig.apply("v1").status == RunStatus.SUCCEEDED

    def last() -> str:
        doc = status_json(rig.store.list_enclaves(), Cloud.LOCAL, [Cloud.LOCAL])
        return str(doc["last_reconciled_at"])

    before = last()
    assert rig.apply("v2").status == RunStatus.SUCCEEDED  # tears "half" down, nothing else
    assert last() > before


def test_state_that_cannot_be_destroyed_fails_the_teardown_and_says_why(rig: Rig) -> None:
    rig.iac.failures.forever(f"apply:{HALF}", PermanentError("terraform apply: exit 1"))
    assert rig.apply("v1").status == RunStatus.FAILED
    put_tf_state(rig, HALF, FULL)
    shutil.rmtree(rig.trees["v1"])  # its bundle no longer loads ...
    rig.iac.workdirs_lost.add(HALF)  # ... and its working directory is gone
    run = rig.apply("v2")
    assert run.status == RunStatus.FAILED
    error = rig.step(run.id, f"teardown_partition:{HALF}").error or ""
    assert "terraform destroy could not run" in error and "bundle v1" in error
    assert rig.enclave(SOLO).partitions["half"].meta.status == Status.ERROR
    assert rig.journal.count("driver.teardown_partition", HALF) == 0
