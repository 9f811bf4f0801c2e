"""The API's JSON views of applied state: failed partitions stay visible, status moves."""

from __future__ import annotations

from nclav.model import Cloud
from nclav.state import EnclaveState, PartitionState, ResourceMeta, Status
from nclav.views import enclave_graph_json, status_json, system_graph_json

T1, T2 = "2026-01-01T00:00:00.000000Z", "2026-01-02T00:00:00.000000Z"


def state() -> EnclaveState:
    active = ResourceMeta().active("h", now=T1)
    failed = ResourceMeta().started(Status.PROVISIONING).failed("terraform apply: exit 1", now=T2)
    return EnclaveState(
        enclave_id="e",
        meta=active,
        partitions={
            "ok": PartitionState(meta=active.active("h2", now=T2)),
            "broken": PartitionState(meta=failed),
        },
    )


def test_graph_nodes_carry_a_failed_partition_and_its_error() -> None:
    nodes = {n["id"]: n for n in enclave_graph_json(state(), "e")["nodes"]}
    assert nodes["broken"]["status"] == "error"
    assert nodes["broken"]["last_error"]["message"] == "terraform apply: exit 1"
    assert nodes["ok"]["last_error"] is None
    (enclave,) = system_graph_json([state()])["nodes"]
    assert {p["id"]: p["status"] for p in enclave["partitions"]} == {
        "ok": "active",
        "broken": "error",
    }


def test_last_reconciled_counts_partition_only_applies() -> None:
    doc = status_json([state()], Cloud.LOCAL, [Cloud.LOCAL])
    assert doc["last_reconciled_at"] == T2  # "ok" was re-applied after its enclave
    assert [(e["enclave_id"], e.get("partition_id")) for e in doc["errors"]] == [("e", "broken")]
