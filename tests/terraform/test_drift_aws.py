"""Real drift: an SQS queue made by the hashicorp/aws provider in the moto server, its tags
changed behind nclav's back with boto3: reported drifted with the resource's address and the
changed attributes, acknowledged, and remediated.

Needs a Terraform provider filesystem mirror holding hashicorp/aws (this machine kind ships
one; ``NCLAV_TEST_TF_MIRROR`` names another). Without it the tests skip, CI included: the
mirror is not guaranteed anywhere; ``test_drift_state.py`` covers the mechanics without it.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from drift_harness import DriftHarness, aws_mirror, write_mirror_config, write_tree
from nclav.records import DriftStatus, EventKind, RunStatus

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.terraform

if shutil.which("terraform") is None:
    if os.environ.get("CI") == "true":
        pytest.fail("terraform is not on PATH: CI must run the terraform tests", pytrace=False)
    pytest.skip("terraform is not on PATH", allow_module_level=True)

MIRROR = aws_mirror()
if MIRROR is None:
    pytest.skip(
        "no Terraform provider mirror with hashicorp/aws (set NCLAV_TEST_TF_MIRROR)",
        allow_module_level=True,
    )

QUEUE = "nclav-drift-q"


def sqs_partition(endpoint: str, team: str) -> str:
    return f"""\
terraform {{
  required_providers {{
    aws = {{ source = "hashicorp/aws" }}
  }}
}}

provider "aws" {{
  region                      = "us-east-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  endpoints {{
    sqs = "{endpoint}"
    sts = "{endpoint}"
  }}
}}

resource "aws_sqs_queue" "q" {{
  name = "{QUEUE}"
  tags = {{ team = "{team}" }}
}}
"""


@pytest.fixture(name="h")
def harness_fixture(
    tmp_path: Path, aws: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DriftHarness]:
    assert MIRROR is not None
    # Terraform gets TF_CLI_CONFIG_FILE through the runner's scrubbed environment.
    monkeypatch.setenv(
        "TF_CLI_CONFIG_FILE", str(write_mirror_config(MIRROR, tmp_path / "mirror.tfrc"))
    )
    harness = DriftHarness(tmp_path)
    yield harness
    harness.close()


def _tags(sqs: Any) -> dict[str, str]:
    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    tags: dict[str, str] = sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
    return tags


def test_tags_changed_outside_terraform_are_drift_acknowledged_and_remediated(
    h: DriftHarness, tmp_path: Path, aws: str
) -> None:
    tree = write_tree(tmp_path / "tree", {"q": sqs_partition(aws, "a")})
    assert h.apply(tree).status == RunStatus.SUCCEEDED
    sqs = boto3.client("sqs", endpoint_url=aws)
    assert _tags(sqs) == {"team": "a"}
    in_sync = h.check("q")
    assert in_sync is not None
    assert in_sync.status == DriftStatus.IN_SYNC, in_sync.error

    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    sqs.tag_queue(QueueUrl=url, Tags={"team": "b"})  # behind nclav's back
    versions = h.state_versions("q")
    drifted = h.check("q")
    assert drifted is not None
    assert drifted.status == DriftStatus.DRIFTED, drifted.error
    assert [r.address for r in drifted.resource_drift] == ["aws_sqs_queue.q"]
    assert {"tags", "tags_all"} <= set(drifted.resource_drift[0].attributes)
    assert "aws_sqs_queue.q" in drifted.plan_text
    assert h.state_versions("q") == versions
    events = [e for e in h.store.list_events("e") if e.kind == EventKind.DRIFT_DETECTED]
    assert [e.fields["addresses"] for e in events] == ["aws_sqs_queue.q"]

    # Acknowledged: the same drift reads in sync.
    h.store.put_drift(
        drifted.model_copy(
            update={"acknowledged": drifted.fingerprint, "status": DriftStatus.IN_SYNC}
        )
    )
    acked = h.check("q")
    assert acked is not None
    assert (acked.status, acked.is_acknowledged) == (DriftStatus.IN_SYNC, True)

    # Remediation on: the next check re-applies the partition, and the tags come back.
    write_tree(tree, {"q": sqs_partition(aws, "a")}, drift={"q": "{remediate: true}"})
    assert h.apply(tree).changes == 0  # drift settings alone do not re-apply
    sqs.tag_queue(QueueUrl=url, Tags={"team": "c"})  # other drift: not acknowledged
    again = h.check("q")
    assert again is not None
    assert again.status == DriftStatus.DRIFTED
    assert again.remediation_run_id
    assert h.queue.wait_idle(timeout=240)
    run = h.store.get_run(again.remediation_run_id)
    assert run is not None and run.status == RunStatus.SUCCEEDED, run
    assert _tags(sqs) == {"team": "a"}
    resolved = h.check("q")
    assert resolved is not None
    assert resolved.status == DriftStatus.IN_SYNC
    assert any(e.kind == EventKind.DRIFT_RESOLVED for e in h.store.list_events("e"))
