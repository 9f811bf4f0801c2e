"""The GCP driver's bridges and leak checks against the strict Google API fake: Private
Service Connect imports (address, forwarding rule, A record) and their idempotent re-run,
pass-through exports/imports, teardown, and the Cloud Asset orphan scan."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from functions_gcp.driver import GcpDriver, GcpDriverConfig
from gcp_api_fake import GcpApiFake, anonymous_session, serve_fake
from nclav.errors import PermanentError, WaitingError
from nclav.model import (
    Dns,
    EnclaveConfig,
    EnclaveTarget,
    Export,
    ExportType,
    Import,
    Network,
    PartitionConfig,
)
from nclav.state import EnclaveState, PartitionState

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nclav.state import Handle

IMPORTER = "acme-app"
ATTACHMENT = "projects/acme-db/regions/us-central1/serviceAttachments/pg"
BASE = f"https://www.googleapis.com/compute/v1/projects/{IMPORTER}/regions/us-central1"


@pytest.fixture
def fake() -> Iterator[GcpApiFake]:
    with serve_fake() as running:
        yield running


@pytest.fixture
def driver(fake: GcpApiFake) -> GcpDriver:
    config = GcpDriverConfig(
        parent="folders/123", billing_account="012345-6789AB-CDEF01", project_prefix="acme"
    )
    return GcpDriver(config, session=anonymous_session(), endpoints=fake.endpoints())


def enclave(eid: str, *, network: bool = True) -> EnclaveConfig:
    return EnclaveConfig(
        id=eid,
        name=eid,
        region="us-central1",
        network=Network(subnets=("10.1.0.0/24",)) if network else None,
        dns=Dns(zone=f"{eid}.internal") if network else None,
    )


def tcp_export() -> Export:
    return Export(
        name="pg",
        target_partition="db",
        export_type=ExportType.TCP,
        to=EnclaveTarget(enclave="app"),
        auth="native",
    )


def imp(alias: str = "pg") -> Import:
    return Import.model_validate({"from": "db", "export_name": "pg", "alias": alias})


@pytest.fixture
def exported(driver: GcpDriver) -> Handle:
    outputs = {"hostname": "10.9.0.5", "port": "5432", "psc_service_attachment": ATTACHMENT}
    return driver.provision_export(enclave("db"), tcp_export(), outputs)


@pytest.fixture
def importer(driver: GcpDriver) -> EnclaveConfig:
    config = enclave("app")
    driver.provision_enclave(config, None)
    return config


def test_a_tcp_export_is_the_partitions_service_attachment(
    driver: GcpDriver, exported: Handle
) -> None:
    assert exported["type"] == "tcp" and exported["service_attachment"] == ATTACHMENT
    with pytest.raises(PermanentError, match="psc_service_attachment"):
        driver.provision_export(enclave("db"), tcp_export(), {"hostname": "h", "port": "1"})


def test_a_psc_import_is_an_address_a_forwarding_rule_and_a_record(
    fake: GcpApiFake, driver: GcpDriver, exported: Handle, importer: EnclaveConfig
) -> None:
    handle = driver.provision_import(importer, imp(), exported)
    address = fake.compute[f"{BASE}/addresses/nclav-ep-ip-pg"]
    assert address["purpose"] == "GCE_ENDPOINT" and address["addressType"] == "INTERNAL"
    assert address["subnetwork"].endswith("/subnetworks/subnet-0")
    rule = fake.compute[f"{BASE}/forwardingRules/nclav-ep-pg"]
    assert rule["target"] == ATTACHMENT and rule["IPAddress"] == address["selfLink"]
    assert rule["labels"] == {
        "nclav-managed": "true",
        "nclav-enclave": "app",
        "nclav-import": "pg",
    }
    record = fake.records[(IMPORTER, "nclav-zone")][("pg.app.internal.", "A")]
    assert record["rrdatas"] == [address["address"]] and record["ttl"] == 300
    assert handle["outputs"] == {
        "hostname": "pg.app.internal",
        "port": "5432",
        "psc_service_attachment": ATTACHMENT,
    }
    assert handle["endpoint_ip"] == address["address"]


def test_a_psc_import_rerun_changes_nothing(
    fake: GcpApiFake, driver: GcpDriver, exported: Handle, importer: EnclaveConfig
) -> None:
    first = driver.provision_import(importer, imp(), exported)
    compute = {k: dict(v) for k, v in fake.compute.items()}
    second = driver.provision_import(importer, imp(), exported)
    assert second == first and fake.compute == compute
    assert len(fake.called("dns.changes.create")) == 1  # the record was already right
    assert len(fake.called("compute.addresses.insert")) == 2  # the second answered 409
    assert len(fake.called("compute.forwardingRules.insert")) == 2
    assert fake.called("compute.forwardingRules.delete") == []


def test_a_changed_attachment_or_address_is_replaced(
    fake: GcpApiFake, driver: GcpDriver, exported: Handle, importer: EnclaveConfig
) -> None:
    driver.provision_import(importer, imp(), exported)
    moved = {**exported, "service_attachment": ATTACHMENT.replace("/pg", "/pg2")}
    handle = driver.provision_import(importer, imp(), moved)
    assert fake.compute[f"{BASE}/forwardingRules/nclav-ep-pg"]["target"].endswith("/pg2")
    assert len(fake.called("compute.forwardingRules.delete")) == 1
    # a record pointing elsewhere (edited by hand) is swapped in one change
    fake.records[(IMPORTER, "nclav-zone")][("pg.app.internal.", "A")]["rrdatas"] = ["10.7.7.7"]
    driver.provision_import(importer, imp(), moved)
    change = fake.called("dns.changes.create")[-1].body
    assert change["deletions"][0]["rrdatas"] == ["10.7.7.7"]
    record = fake.records[(IMPORTER, "nclav-zone")][("pg.app.internal.", "A")]
    assert record["rrdatas"] == [handle["endpoint_ip"]]


def test_a_connection_the_producer_has_not_accepted(
    fake: GcpApiFake, driver: GcpDriver, exported: Handle, importer: EnclaveConfig
) -> None:
    fake.psc_status = "PENDING"
    with pytest.raises(WaitingError, match="awaits the producer's acceptance"):
        driver.provision_import(importer, imp(), exported)
    fake.psc_status = "REJECTED"
    with pytest.raises(PermanentError, match=f"must accept project {IMPORTER}"):
        driver.provision_import(importer, imp("pg2"), exported)


def test_a_psc_import_needs_the_importers_network_and_zone(
    driver: GcpDriver, exported: Handle
) -> None:
    with pytest.raises(PermanentError, match="needs the importer's network"):
        driver.provision_import(enclave("app", network=False), imp(), exported)
    with pytest.raises(PermanentError, match="not wired yet"):
        driver.provision_import(enclave("app"), imp(), None)


def test_a_pending_endpoint_operation_waits_then_completes(
    fake: GcpApiFake, driver: GcpDriver, exported: Handle, importer: EnclaveConfig
) -> None:
    fake.script_operations("pending")
    with pytest.raises(WaitingError):
        driver.provision_import(importer, imp(), exported)
    handle = driver.provision_import(importer, imp(), exported)
    assert handle["dns_name"] == "pg.app.internal."


def test_import_teardown_removes_record_rule_and_address(
    fake: GcpApiFake, driver: GcpDriver, exported: Handle, importer: EnclaveConfig
) -> None:
    handle = driver.provision_import(importer, imp(), exported)
    driver.teardown_import("app", "pg", handle)
    assert fake.records[(IMPORTER, "nclav-zone")] == {}
    assert not [k for k in fake.compute if "/addresses/" in k or "/forwardingRules/" in k]
    driver.teardown_import("app", "pg", handle)  # redelivered: nothing left, no error


def test_http_imports_pass_the_exporters_outputs_through(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    http = Export(
        name="api",
        target_partition="web",
        export_type=ExportType.HTTP,
        to=EnclaveTarget(enclave="app"),
    )
    export = driver.provision_export(enclave("db"), http, {"hostname": "h.run.app", "port": "443"})
    handle = driver.provision_import(enclave("app", network=False), imp("api"), export)
    assert handle["mode"] == "pass-through" and handle["outputs"]["hostname"] == "h.run.app"
    other = {"driver": "aws", "kind": "export", "outputs": {"queue_url": "https://sqs/q"}}
    assert driver.provision_import(enclave("app"), imp("q"), other)["outputs"] == {
        "queue_url": "https://sqs/q"
    }
    assert fake.calls == []


# -- leak checks ----------------------------------------------------------------------------------


def labelled(partition: str, enclave_id: str = "app") -> dict[str, str]:
    return {"nclav-managed": "true", "nclav-enclave": enclave_id, "nclav-partition": partition}


def test_orphans_are_labelled_resources_of_partitions_gone(
    fake: GcpApiFake, driver: GcpDriver, importer: EnclaveConfig
) -> None:
    handle, _ = driver.provision_enclave(importer, None)
    scope = f"projects/{IMPORTER}"
    fake.add_asset(
        scope, "//storage.googleapis.com/kept", "storage.googleapis.com/Bucket", labelled("web")
    )
    fake.add_asset(
        scope, "//storage.googleapis.com/gone", "storage.googleapis.com/Bucket", labelled("old")
    )
    fake.add_asset(
        scope,
        "//compute.googleapis.com/vpc",
        "compute.googleapis.com/Network",
        {"nclav-managed": "true", "nclav-enclave": "app"},
    )
    state = EnclaveState(
        enclave_id="app", enclave_handle=handle, partitions={"web": PartitionState()}
    )
    found = driver.list_orphans([state])
    assert [(o.resource_id, o.partition_id, o.resource_type) for o in found] == [
        ("//storage.googleapis.com/gone", "old", "storage.googleapis.com/Bucket")
    ]
    assert found[0].to_json()["cloud"] == "gcp"
    search = fake.called("cloudasset.searchAllResources")[0]
    assert search.http == "GET" and search.body is None
    assert search.query["query"] == ["labels.nclav-managed=true AND labels.nclav-enclave=app"]
    assert driver.list_orphans([]) == []
    other = EnclaveState(enclave_id="x", enclave_handle={"driver": "aws", "kind": "enclave"})
    assert driver.list_orphans([other]) == []


def test_the_orphan_scan_reads_every_page(
    fake: GcpApiFake, driver: GcpDriver, importer: EnclaveConfig
) -> None:
    handle, _ = driver.provision_enclave(importer, None)
    fake.asset_page_size = 2
    for i in range(5):
        fake.add_asset(
            f"projects/{IMPORTER}", f"//x/{i}", "pubsub.googleapis.com/Topic", labelled("gone")
        )
    assert len(driver.enclave_orphans(handle, [])) == 5
    assert len(fake.called("cloudasset.searchAllResources")) == 3
    assert driver.partition_resources(handle, "gone") == [f"//x/{i}" for i in range(5)]
    assert driver.partition_resources(handle, "web") == []


def test_a_queue_import_is_a_subscription_on_the_exporters_topic(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    queue = Export(
        name="jobs",
        target_partition="worker",
        export_type=ExportType.QUEUE,
        to=EnclaveTarget(enclave="app"),
    )
    topic = "projects/acme-db/topics/jobs"
    export = driver.provision_export(enclave("db"), queue, {"queue_url": topic})
    handle = driver.provision_import(enclave("app"), imp("jobs"), export)
    name = f"projects/{IMPORTER}/subscriptions/nclav-jobs"
    assert fake.subscriptions[name]["topic"] == topic
    assert fake.subscriptions[name]["ackDeadlineSeconds"] == 60
    assert handle["outputs"] == {"queue_url": name}
    assert driver.provision_import(enclave("app"), imp("jobs"), export) == handle  # 409: there
    moved = {**export, "topic": "projects/acme-db/topics/other"}
    with pytest.raises(PermanentError, match="cannot|is on projects/acme-db/topics/jobs"):
        driver.provision_import(enclave("app"), imp("jobs"), moved)
    with pytest.raises(PermanentError, match="Pub/Sub topic"):
        driver.provision_import(enclave("app"), imp("jobs"), {**export, "topic": "https://x"})
    driver.teardown_import("app", "jobs", handle)
    assert fake.subscriptions == {}
    driver.teardown_import("app", "jobs", handle)  # gone already: fine


def test_a_partition_account_left_behind_is_an_orphan(
    fake: GcpApiFake, driver: GcpDriver, importer: EnclaveConfig
) -> None:
    handle, _ = driver.provision_enclave(importer, None)
    for pid in ("web", "old.job"):
        driver.provision_partition(importer, PartitionConfig(id=pid, name=pid), None)
    state = EnclaveState(
        enclave_id="app", enclave_handle=handle, partitions={"web": PartitionState()}
    )
    found = driver.list_orphans([state])
    assert [(o.partition_id, o.resource_type) for o in found] == [
        ("old.job", "iam.googleapis.com/ServiceAccount")
    ]
    assert found[0].resource_id.startswith(
        f"//iam.googleapis.com/projects/{IMPORTER}/serviceAccounts/partition-old-job-"
    )
    assert driver.partition_resources(handle, "web") == [
        f"//iam.googleapis.com/projects/{IMPORTER}/serviceAccounts/"
        f"partition-web@{IMPORTER}.iam.gserviceaccount.com"
    ]
    driver.teardown_partition("app", "web", None, enclave_handle=handle)
    assert driver.partition_resources(handle, "web") == []


def test_a_public_http_export_adds_all_users_to_the_services_policy(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    service = "projects/acme-db/locations/us-central1/services/web"
    fake.run_services.add(service)
    owner = {"role": "roles/run.admin", "members": ["user:ops@example.com"]}
    fake.policies[service] = {"version": 1, "etag": "BwE=", "bindings": [owner]}
    outputs = {"hostname": "web.run.app", "port": "443", "cloud_run_service": service}
    http = Export(
        name="api", target_partition="web", export_type=ExportType.HTTP, to="public", auth="none"
    )
    handle = driver.provision_export(enclave("db"), http, outputs)
    assert fake.policies[service]["bindings"] == [
        owner,
        {"role": "roles/run.invoker", "members": ["allUsers"]},
    ]  # added to the policy, never replacing it
    assert handle["iam_bindings_applied"] == ["allUsers:roles/run.invoker"]
    assert fake.called("run.projects.locations.services.getIamPolicy")[0].http == "GET"
    assert driver.provision_export(enclave("db"), http, outputs) == handle
    assert len(fake.called("run.projects.locations.services.setIamPolicy")) == 1
    private = Export.model_validate({**http.model_dump(), "auth": "token"})
    assert driver.provision_export(enclave("db"), private, outputs)["iam_bindings_applied"] == []
    with pytest.raises(PermanentError, match="cloud_run_service"):
        driver.provision_export(enclave("db"), http, {**outputs, "cloud_run_service": "web"})


# -- IAM of imports (the PRD's grants the original never made) ------------------------------------


def runner(eid: str = "app") -> EnclaveConfig:
    return enclave(eid).model_copy(update={"identity": f"{eid}-runner"})


RUNNER = f"serviceAccount:app-runner@{IMPORTER}.iam.gserviceaccount.com"


def test_a_native_http_import_lets_the_importers_account_invoke_the_service(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    service = "projects/acme-db/locations/us-central1/services/web"
    fake.run_services.add(service)
    owner = {"role": "roles/run.admin", "members": ["user:ops@example.com"]}
    fake.policies[service] = {"version": 1, "etag": "BwE=", "bindings": [owner]}
    http = Export(
        name="api",
        target_partition="web",
        export_type=ExportType.HTTP,
        to=EnclaveTarget(enclave="app"),
        auth="native",
    )
    outputs = {"hostname": "web.run.app", "port": "443", "cloud_run_service": service}
    export = driver.provision_export(enclave("db"), http, outputs)
    assert export["cloud_run_service"] == service and export["iam_bindings_applied"] == []
    assert fake.policies[service]["bindings"] == [owner]  # nobody public
    app = runner()
    driver.provision_enclave(app, None)
    handle = driver.provision_import(app, imp("api"), export)
    invoker = {"role": "roles/run.invoker", "members": [RUNNER]}
    assert fake.policies[service]["bindings"] == [owner, invoker]
    assert handle["mode"] == "native" and handle["outputs"]["hostname"] == "web.run.app"
    assert handle["iam_grants"] == [
        {"api": "run", "resource": f"v2/{service}", "role": "roles/run.invoker", "member": RUNNER}
    ]
    sets = len(fake.called("run.projects.locations.services.setIamPolicy"))
    assert driver.provision_import(app, imp("api"), export) == handle  # re-run: no new write
    assert len(fake.called("run.projects.locations.services.setIamPolicy")) == sets
    with pytest.raises(PermanentError, match="declares no identity"):
        driver.provision_import(enclave("app"), imp("api"), export)
    without = driver.provision_export(enclave("db"), http, {"hostname": "web.run.app"})
    with pytest.raises(PermanentError, match="cloud_run_service"):
        driver.provision_import(app, imp("api"), without)
    driver.teardown_import("app", "api", handle)
    assert fake.policies[service]["bindings"] == [owner]  # that grant only, taken back
    fake.run_services.discard(service)
    driver.teardown_import("app", "api", handle)  # the service gone already: fine


def test_a_queue_import_makes_the_importers_account_a_subscriber_of_the_topic_first(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    topic = "projects/acme-db/topics/jobs"
    fake.topics.add(topic)
    publisher = {"role": "roles/pubsub.publisher", "members": ["group:producers@example.com"]}
    fake.policies[topic] = {"version": 1, "etag": "BwE=", "bindings": [publisher]}
    queue = Export(
        name="jobs",
        target_partition="worker",
        export_type=ExportType.QUEUE,
        to=EnclaveTarget(enclave="app"),
        auth="native",
    )
    export = driver.provision_export(enclave("db"), queue, {"queue_url": topic})
    with pytest.raises(PermanentError, match="declares no identity"):
        driver.provision_import(enclave("app"), imp("jobs"), export)
    assert fake.subscriptions == {}  # refused before anything was made
    app = runner()
    driver.provision_enclave(app, None)
    handle = driver.provision_import(app, imp("jobs"), export)
    order = [c.method_id for c in fake.calls if c.method_id.startswith("pubsub.")]
    assert order.index("pubsub.projects.topics.setIamPolicy") < order.index(
        "pubsub.projects.subscriptions.create"
    )
    subscriber = {"role": "roles/pubsub.subscriber", "members": [RUNNER]}
    name = f"projects/{IMPORTER}/subscriptions/nclav-jobs"
    assert fake.policies[topic]["bindings"] == [publisher, subscriber]
    assert fake.policies[name]["bindings"] == [subscriber]
    assert [g["resource"] for g in handle["iam_grants"]] == [f"v1/{topic}", f"v1/{name}"]
    assert fake.called("pubsub.projects.topics.getIamPolicy")[0].http == "GET"
    assert driver.provision_import(app, imp("jobs"), export) == handle
    driver.teardown_import("app", "jobs", handle)
    assert fake.policies[topic]["bindings"] == [publisher] and fake.subscriptions == {}
