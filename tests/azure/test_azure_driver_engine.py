"""The Azure driver under the real engine: a reconcile of two azure enclaves through the local
runtime (HTTP API, worker threads, real terraform), the driver against the strict ARM fake.

Every long-running ARM operation answers "still running" once, so each step that meets one
raises ``WaitingError`` and is delivered again: the run must still finish, with the tcp export
wired through a private endpoint and the importer's partition reading its hostname.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import nclav.local.runtime as local_runtime
from azure_api_fake import AzureApiFake, StaticCredential
from functions_azure.driver import AzureDriver
from functions_azure.driver.config import AzureDriverConfig
from nclav.engine import LocalDriver
from nclav.model import Cloud

for _harness in ("aws", "e2e", "scenarios"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / _harness))
from runtimes import LocalScenarioRuntime  # noqa: E402
from serve_harness import require_terraform  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

PROD_SUB = "aaaaaaaa-0000-0000-0000-000000000001"
APP_SUB = "aaaaaaaa-0000-0000-0000-000000000002"
PLS = (
    f"/subscriptions/{PROD_SUB}/resourceGroups/nclav-rg/providers/Microsoft.Network/"
    "privateLinkServices/pg-pls"
)
CONFIG = AzureDriverConfig(
    tenant_id="00000000-0000-0000-0000-0000000000aa",
    management_group_id="nclav-enclaves",
    billing_account_name="ba-1",
    billing_profile_name="bp-1",
    invoice_section_name="is-1",
)

TREE = {
    "prod/config.yml": """
id: prod
name: Producer
cloud: azure
region: westeurope
network: {vpc_cidr: "10.1.0.0/16", subnets: ["10.1.1.0/24"]}
exports:
  - {name: pg, target_partition: db, type: tcp, to: any_enclave, auth: none, port: 5432}
""",
    "prod/db/config.yml": """
id: db
name: Database
produces: tcp
inputs:
  sub: "{{ nclav_subscription_id }}"
declared_outputs: [pls_id, hostname, port]
""",
    "prod/db/main.tf": """
variable "nclav_enclave" { type = string }
variable "nclav_partition" { type = string }
variable "sub" { type = string }
resource "terraform_data" "pls" { input = var.sub }
locals {
  rg = "/subscriptions/${terraform_data.pls.output}/resourceGroups/nclav-rg"
}
output "pls_id" {
  value = "${local.rg}/providers/Microsoft.Network/privateLinkServices/pg-pls"
}
output "hostname" { value = "pg.prod.internal" }
output "port" { value = "5432" }
""",
    "app/config.yml": """
id: app
name: Application
cloud: azure
region: westeurope
network: {vpc_cidr: "10.2.0.0/16", subnets: ["10.2.1.0/24"]}
dns: {zone: app.internal}
imports:
  - {from: prod, export_name: pg, alias: pg}
""",
    "app/api/config.yml": """
id: api
name: API
inputs:
  db: "{{ pg.hostname }}:{{ pg.port }}"
declared_outputs: [db]
""",
    "app/api/main.tf": """
variable "nclav_enclave" { type = string }
variable "nclav_partition" { type = string }
variable "db" { type = string }
output "db" { value = var.db }
""",
}


@pytest.fixture
def fake() -> Iterator[AzureApiFake]:
    with AzureApiFake() as server:
        yield server
        assert server.violations == []


@pytest.fixture
def runtime(
    fake: AzureApiFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalScenarioRuntime]:
    driver = AzureDriver(
        CONFIG, credential=StaticCredential(), endpoint=fake.url, transport=fake.transport()
    )

    def drivers(*_: Any, **__: Any) -> dict[Cloud, Any]:
        return {Cloud.LOCAL: LocalDriver(), Cloud.AZURE: driver}

    monkeypatch.setattr(local_runtime, "drivers_for", drivers)
    runtime = LocalScenarioRuntime(tmp_path / "home")
    yield runtime
    runtime.close()


def test_a_reconcile_of_azure_enclaves_through_the_engine(
    runtime: LocalScenarioRuntime, fake: AzureApiFake, tmp_path: Path
) -> None:
    require_terraform()
    # Subscriptions made earlier (their aliases exist), so the test knows their ids.
    fake.seed_alias("prod", PROD_SUB)
    fake.seed_alias("app", APP_SUB)
    fake.add_resource(PLS, "Microsoft.Network/privateLinkServices")
    fake.lro_pending_polls = 1  # every long operation is "still running" once
    tree = tmp_path / "tree" / "enclaves"
    for name, text in TREE.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text.lstrip())
    run = runtime.apply(tree.parent, timeout=180)
    assert run["status"] == "succeeded", run
    enclaves = runtime.enclaves()
    assert enclaves["prod"]["enclave_handle"]["subscription_id"] == PROD_SUB
    api = enclaves["app"]["partitions"]["api"]
    assert api["resolved_outputs"] == {"db": "pg.app.internal:5432"}
    handle = enclaves["app"]["import_handles"]["pg"]
    record = fake.resource(handle["dns_record_id"])
    assert record is not None
    assert record["properties"]["aRecords"] == [{"ipv4Address": handle["private_ip"]}]
    # Each partition got its own identity with a role on its subscription.
    identities = {
        d["name"]
        for d in fake.resources.values()
        if d["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities"
    }
    assert {"partition-db", "partition-api", "nclav-identity"} <= identities
    assert len(fake.role_assignments) == 2
    # Every long operation was looked at twice: once "still running" (the step waited and was
    # delivered again), once done.
    polls = [t for _, t in fake.requests if t.startswith("/_ops/")]
    assert fake.ops and len(polls) == 2 * len(fake.ops)
