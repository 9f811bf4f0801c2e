"""Step ids hold ``/`` (``provision_partition:<enclave>/<partition>``): each is one document.

A found defect: the Firestore store used a step id as its document id as it was, so a
partition step's ``/`` made a document path of odd length and creating the run raised
``ValueError`` (every terraform step of the GCP scenario suite). The id is now quoted, as a
Terraform state key is.
"""

from __future__ import annotations

import pytest

from functions_gcp.firestore_store import open_store
from nclav.plan import Action, Step
from nclav.records import Run, StepStatus, iso_time, step_records
from stand_ins import FIRESTORE_PROJECT

pytestmark = pytest.mark.slow
T0 = 1_767_225_600.0


def test_a_partition_steps_id_with_a_slash_is_one_document(firestore: str) -> None:
    store = open_store(FIRESTORE_PROJECT)
    run = Run(created_at=iso_time(T0))
    step = Step("provision_partition:alpha/p", Action.PROVISION_PARTITION, "alpha", "p", ())
    store.create_run(run, step_records(run.id, [step]))
    claimed = store.claim_step(run.id, "provision_partition:alpha/p", "w", 30.0, T0)
    assert claimed is not None and claimed.status == StepStatus.RUNNING
    assert [s.step_id for s in store.list_steps(run.id)] == ["provision_partition:alpha/p"]
    found = store.get_step(run.id, "provision_partition:alpha/p")
    assert found is not None and found.lease_owner == "w"
