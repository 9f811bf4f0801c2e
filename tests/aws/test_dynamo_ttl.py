"""DynamoDB TTL: history (runs, steps, events, IaC records) expires, state never does."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest

from functions_aws.dynamodb_store import DynamoStateStore, create_table
from nclav.plan import Action, Step
from nclav.records import AuditEvent, EventKind, IacOperation, IacRun, Run, step_records
from nclav.state import EnclaveState

DAY = 86_400


@pytest.fixture
def ddb(aws: str) -> Any:
    client = boto3.client("dynamodb")
    create_table(client, "nclav-ttl")
    return client


def fill(ddb: Any) -> list[dict[str, Any]]:
    store = DynamoStateStore("nclav-ttl", client=ddb)
    store.put_enclave(EnclaveState(enclave_id="a"), None)
    run = Run(created_at="2026-01-01T00:00:00Z")
    store.create_run(
        run, step_records(run.id, [Step("s", Action.PROVISION_ENCLAVE, "a", None, ())])
    )
    store.append_event(AuditEvent(kind=EventKind.ENCLAVE_PROVISIONED, at="t", enclave_id="a"))
    store.put_iac_run(
        IacRun(enclave_id="a", partition_id="p", operation=IacOperation.PROVISION, started_at="1")
    )
    store.set_tf_state("a/p", "tfstate/a/p/1")
    return list(ddb.scan(TableName="nclav-ttl")["Items"])


def test_history_expires_after_the_retention_and_state_never(
    ddb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ttl = ddb.describe_time_to_live(TableName="nclav-ttl")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at" and ttl["TimeToLiveStatus"] == "ENABLED"
    monkeypatch.setenv("NCLAV_RETENTION_DAYS", "30")
    now = time.time()
    expiring, kept = [], []
    for item in fill(ddb):
        (expiring if "expires_at" in item else kept).append(item)
    kinds = {i["pk"]["S"].split("#")[0] for i in expiring}
    assert kinds == {"RUN", "UNFINISHED_RUNS", "EVENTS", "IAC", "IACRUN"}, kinds
    for item in expiring:
        assert abs(float(item["expires_at"]["N"]) - (now + 30 * DAY)) < 60
    assert any(i["pk"]["S"].startswith("ENCLAVE") for i in kept)
    assert not any(i["pk"]["S"].startswith("ENCLAVE") for i in expiring)
    assert not any("TFSTATE" in i["pk"]["S"].upper() for i in expiring)


def test_retention_zero_keeps_history(ddb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCLAV_RETENTION_DAYS", "0")
    assert not [i for i in fill(ddb) if "expires_at" in i]
