"""AzureDriver against the strict ARM fake (tests/azure_api_fake.py).

Every request the driver sends is checked against the Azure REST specs of its api-versions
(tests/data/azure-specs); a test fails on any violation even when the driver coped with the 400.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from azure_api_fake import ARM_TOKEN, AzureApiFake, StaticCredential
from functions_azure.driver import OPTIONS, PLUGIN, AzureDriver, config_from_options
from functions_azure.driver.arm import ArmError
from functions_azure.driver.config import AzureDriverConfig, alias_name, partition_identity_name
from nclav.errors import PermanentError, SpecError, WaitingError
from nclav.model import Dns, EnclaveConfig, Export, Import, Network, PartitionConfig
from nclav.state import EnclaveState, PartitionState

if TYPE_CHECKING:
    from collections.abc import Iterator

CONFIG = AzureDriverConfig(
    tenant_id="00000000-0000-0000-0000-0000000000aa",
    management_group_id="nclav-enclaves",
    billing_account_name="ba-1",
    billing_profile_name="bp-1",
    invoice_section_name="is-1",
    subscription_prefix="acme",
)


@pytest.fixture(scope="module")
def server() -> Iterator[AzureApiFake]:
    with AzureApiFake() as fake:
        yield fake


@pytest.fixture
def fake(server: AzureApiFake) -> Iterator[AzureApiFake]:
    server.reset()
    yield server
    assert server.violations == []


@pytest.fixture
def credential() -> StaticCredential:
    return StaticCredential()


@pytest.fixture
def driver(fake: AzureApiFake, credential: StaticCredential) -> AzureDriver:
    return AzureDriver(CONFIG, credential=credential, endpoint=fake.url, transport=fake.transport())


def enclave(eid: str = "dev", cidr: str = "10.1", **extra: Any) -> EnclaveConfig:
    fields: dict[str, Any] = {
        "id": eid,
        "name": f"{eid} enclave",
        "region": "westeurope",
        "network": Network(vpc_cidr=f"{cidr}.0.0/16", subnets=(f"{cidr}.1.0/24", f"{cidr}.2.0/24")),
        "dns": Dns(zone=f"{eid}.internal"),
        **extra,
    }
    return EnclaveConfig(**fields)


def partition(pid: str = "db") -> PartitionConfig:
    return PartitionConfig(id=pid, name=pid)


def until_done(call: Any, *args: Any, attempts: int = 10) -> Any:
    """Deliver a step again while it waits (what the queue does, without the delay)."""
    for _ in range(attempts - 1):
        try:
            return call(*args)
        except WaitingError:
            continue
    return call(*args)


# -- enclaves ---------------------------------------------------------------------------------


def test_provision_enclave_alias_201(driver: AzureDriver, fake: AzureApiFake) -> None:
    handle, context = driver.provision_enclave(enclave(), None)
    sub = handle["subscription_id"]
    assert fake.aliases["acme-dev"]["body"] == {
        "displayName": "dev enclave",
        "billingScope": "/providers/Microsoft.Billing/billingAccounts/ba-1/billingProfiles/bp-1"
        "/invoiceSections/is-1",
        "workload": "Production",
    }
    assert fake.subscriptions[sub]["mg"] == "nclav-enclaves"
    vnet = fake.resource(handle["vnet_resource_id"])
    assert vnet is not None and vnet["properties"]["provisioningState"] == "Succeeded"
    assert [s["name"] for s in vnet["properties"]["subnets"]] == ["subnet-0", "subnet-1"]
    assert handle["subnet_ids"][0].endswith("/virtualNetworks/nclav-vnet/subnets/subnet-0")
    identity = fake.resource(handle["identity_resource_id"])
    assert identity is not None and identity["tags"] == {
        "nclav-managed": "true",
        "nclav-enclave": "dev",
    }
    zone = f"/subscriptions/{sub}/resourceGroups/nclav-rg/providers/Microsoft.Network/"
    assert fake.resource(zone + "privateDnsZones/dev.internal/virtualNetworkLinks/nclav-link")
    assert context["nclav_subscription_id"] == sub == context["nclav_project_id"]
    assert context["nclav_identity_client_id"] == identity["properties"]["clientId"]
    assert handle["provisioning_complete"] and handle["location"] == "westeurope"
    # Again with its handle: the same subscription, nothing new, no alias call.
    before = len(fake.aliases)
    fake.requests.clear()
    again, _ = driver.provision_enclave(enclave(), handle)
    assert again == handle and len(fake.aliases) == before
    assert not any("aliases" in target for _, target in fake.requests)


def test_alias_202_waits_then_finishes(driver: AzureDriver, fake: AzureApiFake) -> None:
    fake.alias_mode, fake.lro_pending_polls = "202", 1
    with pytest.raises(WaitingError, match="still running"):
        driver.provision_enclave(enclave(), None)
    # The redelivered step (the VNet's operation waits once too).
    handle, _ = until_done(driver.provision_enclave, enclave(), None)
    assert handle["subscription_id"] == fake.aliases["acme-dev"]["sub"]
    assert len(fake.aliases) == 1


def test_alias_202_failed_is_permanent(driver: AzureDriver, fake: AzureApiFake) -> None:
    fake.alias_mode = "202"
    fake.fail_next_lro("aliases", "InvalidBillingScope", "the invoice section is closed")
    with pytest.raises(PermanentError, match="InvalidBillingScope: the invoice section is closed"):
        driver.provision_enclave(enclave(), None)


def test_alias_409_reads_the_existing_alias(driver: AzureDriver, fake: AzureApiFake) -> None:
    fake.alias_mode = "409"
    existing = fake.seed_alias(alias_name(CONFIG, "dev"))
    handle, _ = driver.provision_enclave(enclave(), None)
    assert handle["subscription_id"] == existing
    assert (
        "GET",
        "/providers/Microsoft.Subscription/aliases/acme-dev?api-version=2021-10-01",
    ) in (fake.requests)


def test_management_group_move_409_is_checked_not_assumed(
    driver: AzureDriver, fake: AzureApiFake
) -> None:
    fake.mg_move_conflicts = 1
    with pytest.raises(WaitingError, match="409 Conflict"):
        driver.provision_enclave(enclave(), None)  # a move in progress: not placed yet
    handle, _ = driver.provision_enclave(enclave(), None)
    assert fake.subscriptions[handle["subscription_id"]]["mg"] == "nclav-enclaves"
    # Placed by someone else meanwhile: the 409 reads back as done, no waiting.
    fake.mg_move_conflicts = 1
    driver.provision_enclave(enclave(), handle)
    assert fake.mg_move_conflicts == 0


def test_new_subscriptions_register_their_providers(
    driver: AzureDriver, fake: AzureApiFake
) -> None:
    fake.provider_registering_polls = 1
    with pytest.raises(WaitingError, match="registering Microsoft.ManagedIdentity"):
        driver.provision_enclave(enclave(), None)
    handle, _ = driver.provision_enclave(enclave(), None)
    assert fake.providers[(handle["subscription_id"], "microsoft.network")][0] == "Registered"


def test_vnet_lro_pending_then_succeeded(driver: AzureDriver, fake: AzureApiFake) -> None:
    fake.lro_pending_polls = 2
    waits = 0
    while True:
        try:
            handle, _ = driver.provision_enclave(enclave(), None)
            break
        except WaitingError as exc:
            waits += 1
            assert "/_ops/" in str(exc) and exc.retry_after_s == 1.0  # the Retry-After header
    assert waits >= 2 and handle["vnet_resource_id"]


def test_vnet_lro_failed_is_permanent_and_a_rerun_repairs(
    driver: AzureDriver, fake: AzureApiFake
) -> None:
    fake.fail_next_lro("virtualNetworks", "SubnetsOverlap", "10.1.1.0/24 overlaps")
    with pytest.raises(PermanentError, match="SubnetsOverlap: 10.1.1.0/24 overlaps"):
        driver.provision_enclave(enclave(), None)
    handle, _ = driver.provision_enclave(enclave(), None)
    vnet = fake.resource(handle["vnet_resource_id"])
    assert vnet is not None and vnet["properties"]["provisioningState"] == "Succeeded"


def test_an_enclave_without_network_or_dns(driver: AzureDriver, fake: AzureApiFake) -> None:
    handle, _ = driver.provision_enclave(enclave(network=None, dns=None), None)
    assert handle["vnet_resource_id"] == "" and handle["dns_zone_name"] == ""


def test_observe_reports_a_missing_vnet_or_identity(
    driver: AzureDriver, fake: AzureApiFake
) -> None:
    handle, _ = driver.provision_enclave(enclave(), None)
    assert driver.observe_enclave(handle) == {
        "exists": True,
        "healthy": True,
        "state": "Enabled",
        "missing": [],
        "status": "active",
    }
    del fake.resources[handle["vnet_resource_id"].lower()]
    seen = driver.observe_enclave(handle)
    assert (
        seen["exists"] and not seen["healthy"] and seen["missing"] == [handle["vnet_resource_id"]]
    )
    assert seen["status"] == "degraded"
    del fake.resources[handle["identity_resource_id"].lower()]
    assert driver.observe_enclave(handle)["missing"] == [
        handle["vnet_resource_id"],
        handle["identity_resource_id"],
    ]
    assert driver.observe_enclave(None)["exists"] is False
    assert driver.observe_enclave(None)["status"] == "deleted"


@pytest.mark.parametrize(
    ("state", "exists", "status"),
    [("Warned", True, "degraded"), ("PastDue", True, "degraded"), ("Disabled", True, "deleting"),
     ("Deleted", False, "deleted")],
)  # fmt: skip
def test_observe_maps_the_subscription_state_to_a_status(
    driver: AzureDriver, fake: AzureApiFake, state: str, exists: bool, status: str
) -> None:
    handle, _ = driver.provision_enclave(enclave(), None)
    fake.subscriptions[handle["subscription_id"]]["state"] = state
    seen = driver.observe_enclave(handle)
    assert (seen["exists"], seen["healthy"], seen["state"], seen["status"]) == (
        exists,
        False,
        state,
        status,
    )
    fake.subscriptions.pop(handle["subscription_id"])
    assert driver.observe_enclave(handle)["status"] == "deleted"  # 404


def test_teardown_cancels_and_frees_the_alias(driver: AzureDriver, fake: AzureApiFake) -> None:
    handle, _ = driver.provision_enclave(enclave(), None)
    driver.teardown_enclave(enclave(), handle)
    assert fake.subscriptions[handle["subscription_id"]]["state"] == "Disabled"
    assert "acme-dev" not in fake.aliases
    driver.teardown_enclave(enclave(), None)  # nothing left: a no-op, not an error
    again, _ = driver.provision_enclave(enclave(), None)
    assert again["subscription_id"] != handle["subscription_id"]


# -- partitions -------------------------------------------------------------------------------


def test_partition_identity_roles_and_federation(
    driver: AzureDriver, fake: AzureApiFake, credential: StaticCredential
) -> None:
    enclave_handle, _ = driver.provision_enclave(enclave(), None)
    handle = driver.provision_partition(enclave(), partition(), None, enclave_handle=enclave_handle)
    identity = fake.resource(handle["partition_identity_resource_id"])
    assert identity is not None and identity["tags"]["nclav-partition"] == "db"
    fic = fake.resource(
        handle["partition_identity_resource_id"] + "/federatedIdentityCredentials/nclav-platform"
    )
    assert fic is not None and fic["properties"] == {
        "issuer": "https://login.microsoftonline.com/00000000-0000-0000-0000-0000000000aa/v2.0",
        "subject": "11111111-2222-3333-4444-555555555555",
        "audiences": ["api://AzureADTokenExchange"],
    }
    [assignment] = fake.role_assignments.values()
    assert assignment["properties"]["principalId"] == handle["partition_identity_principal_id"]
    assert assignment["properties"]["roleDefinitionId"].endswith(
        "/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c"
    )
    # A redelivery: the same assignment name answers 409 RoleAssignmentExists, which is done.
    assert (
        driver.provision_partition(enclave(), partition(), handle, enclave_handle=enclave_handle)
        == handle
    )
    assert len(fake.role_assignments) == 1
    env = driver.auth_env(enclave_handle, handle)
    assert env == {
        "ARM_TENANT_ID": CONFIG.tenant_id,
        "ARM_SUBSCRIPTION_ID": enclave_handle["subscription_id"],
        "ARM_USE_CLI": "false",
        "ARM_USE_MSI": "false",
        "ARM_CLIENT_ID": handle["partition_identity_client_id"],
        "ARM_USE_OIDC": "true",
        "ARM_OIDC_TOKEN": credential.assertion,
    }
    assert ARM_TOKEN not in env.values()  # never the platform identity's ARM token


def test_a_role_assignment_made_by_hand_counts(driver: AzureDriver, fake: AzureApiFake) -> None:
    enclave_handle, _ = driver.provision_enclave(enclave(), None)
    handle = driver.provision_partition(enclave(), partition(), None, enclave_handle=enclave_handle)
    [(key, doc)] = fake.role_assignments.items()
    fake.role_assignments = {key.replace(doc["name"], "other-name"): doc}  # same role, other name
    driver.provision_partition(enclave(), partition(), handle, enclave_handle=enclave_handle)
    assert len(fake.role_assignments) == 1


def test_a_new_principal_not_yet_replicated_waits(driver: AzureDriver, fake: AzureApiFake) -> None:
    enclave_handle, _ = driver.provision_enclave(enclave(), None)
    fake.principal_not_found = 1
    with pytest.raises(WaitingError, match="PrincipalNotFound"):
        driver.provision_partition(enclave(), partition(), None, enclave_handle=enclave_handle)
    handle = driver.provision_partition(enclave(), partition(), None, enclave_handle=enclave_handle)
    assert len(fake.role_assignments) == 1 and handle["role_assignment_ids"]


def test_partition_steps_need_the_enclave_handle(driver: AzureDriver, fake: AzureApiFake) -> None:
    with pytest.raises(PermanentError, match="no Azure subscription handle"):
        driver.provision_partition(enclave(), partition(), None, enclave_handle=None)
    with pytest.raises(PermanentError, match="no Azure subscription handle"):
        driver.auth_env(None, None)


def test_auth_env_without_a_partition_identity_has_no_credentials(
    driver: AzureDriver, fake: AzureApiFake
) -> None:
    enclave_handle, _ = driver.provision_enclave(enclave(), None)
    env = driver.auth_env(enclave_handle, None)
    assert "ARM_CLIENT_ID" not in env and env["ARM_USE_MSI"] == env["ARM_USE_CLI"] == "false"


def test_teardown_and_observe_partition(driver: AzureDriver, fake: AzureApiFake) -> None:
    enclave_handle, _ = driver.provision_enclave(enclave(), None)
    handle = driver.provision_partition(enclave(), partition(), None, enclave_handle=enclave_handle)
    assert driver.observe_partition(handle) == {"exists": True, "healthy": True}
    driver.teardown_partition("dev", "db", handle, enclave_handle=enclave_handle)
    assert fake.resource(handle["partition_identity_resource_id"]) is None
    assert fake.role_assignments == {}
    assert driver.observe_partition(handle) == {"exists": False, "healthy": False}
    driver.teardown_partition("dev", "db", handle, enclave_handle=enclave_handle)  # gone: fine


def test_long_partition_ids_get_short_stable_identity_names() -> None:
    assert partition_identity_name("db") == "partition-db"
    long = partition_identity_name("p" * 80)
    assert len(long) <= 64 and long == partition_identity_name("p" * 80)
    assert alias_name(CONFIG, "dev") == "acme-dev"
    odd = alias_name(CONFIG, "dev env/1")
    assert odd.startswith("acme-dev-env-1-") and len(odd) <= 63


# -- exports and imports ----------------------------------------------------------------------


def tcp_export() -> Export:
    return Export.model_validate(
        {"name": "pg", "target_partition": "db", "type": "tcp", "to": "any_enclave", "port": 5432}
    )


def test_private_link_export_and_import(driver: AzureDriver, fake: AzureApiFake) -> None:
    producer, _ = driver.provision_enclave(enclave("prod", "10.1"), None)
    consumer, _ = driver.provision_enclave(enclave("app", "10.2"), None)
    pls = (
        f"/subscriptions/{producer['subscription_id']}/resourceGroups/nclav-rg/providers/"
        "Microsoft.Network/privateLinkServices/pg-pls"
    )
    fake.add_resource(pls, "Microsoft.Network/privateLinkServices")
    export = driver.provision_export(enclave("prod", "10.1"), tcp_export(), {"pls_id": pls})
    assert export["pls_resource_id"] == pls and export["outputs"]["port"] == "5432"
    assert export["subscription_id"] == producer["subscription_id"]  # not the enclave id
    imp = Import.model_validate({"from": "prod", "export_name": "pg", "alias": "pg"})
    handle = driver.provision_import(enclave("app", "10.2"), imp, export)
    assert handle["outputs"] == {"hostname": "pg.app.internal", "port": "5432"}
    assert handle["private_ip"].startswith("10.2.1.")
    record = fake.resource(handle["dns_record_id"])
    assert record is not None
    assert record["properties"]["aRecords"] == [{"ipv4Address": handle["private_ip"]}]
    again = driver.provision_import(enclave("app", "10.2"), imp, export)  # idempotent
    assert again == handle
    endpoints = [d for d in fake.resources.values() if d["type"].endswith("privateEndpoints")]
    assert len(endpoints) == 1
    driver.teardown_import("app", "pg", handle)
    assert fake.resource(handle["private_endpoint_resource_id"]) is None
    assert fake.resource(handle["dns_record_id"]) is None
    assert consumer["subscription_id"] == handle["subscription_id"]


def queue_export(auth: str = "native") -> Export:
    return Export.model_validate(
        {"name": "jobs", "target_partition": "worker", "type": "queue", "to": "any_enclave",
         "auth": auth}
    )  # fmt: skip


def test_a_queue_import_grants_the_importer_data_receiver_and_a_namespace_endpoint(
    driver: AzureDriver, fake: AzureApiFake
) -> None:
    producer, _ = driver.provision_enclave(enclave("prod", "10.1"), None)
    consumer, _ = driver.provision_enclave(enclave("app", "10.2"), None)
    namespace = (
        f"/subscriptions/{producer['subscription_id']}/resourceGroups/nclav-rg/providers/"
        "Microsoft.ServiceBus/namespaces/jobs-ns"
    )
    fake.add_resource(namespace, "Microsoft.ServiceBus/namespaces")
    outputs = {
        "queue_url": "jobs-ns.servicebus.windows.net/jobs",
        "service_bus_resource_id": namespace,
    }
    export = driver.provision_export(enclave("prod", "10.1"), queue_export(), outputs)
    assert export["service_bus_resource_id"] == namespace and export["auth"] == "native"
    imp = Import.model_validate({"from": "prod", "export_name": "jobs", "alias": "jobs"})
    handle = driver.provision_import(enclave("app", "10.2"), imp, export)
    [assignment] = fake.role_assignments.values()
    assert assignment["properties"]["scope"] == namespace
    assert assignment["properties"]["principalId"] == consumer["identity_principal_id"]
    assert assignment["properties"]["roleDefinitionId"] == (
        f"/subscriptions/{producer['subscription_id']}/providers/Microsoft.Authorization/"
        "roleDefinitions/4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
    )
    endpoint = fake.resource(handle["private_endpoint_resource_id"])
    assert endpoint is not None and endpoint["name"] == "jobs-sb-pe"
    [connection] = endpoint["properties"]["privateLinkServiceConnections"]
    assert connection["properties"]["groupIds"] == ["namespace"]
    assert connection["properties"]["privateLinkServiceId"] == namespace
    assert handle["private_ip"].startswith("10.2.1.")
    assert handle["outputs"] == {"queue_url": outputs["queue_url"]}  # kept in the handle
    assert driver.provision_import(enclave("app", "10.2"), imp, export) == handle  # 409: done
    assert len(fake.role_assignments) == 1
    driver.teardown_import("app", "jobs", handle)
    assert (
        fake.role_assignments == {}
        and fake.resource(handle["private_endpoint_resource_id"]) is None
    )
    # native without the namespace id cannot grant anything: refused; token passes through
    bare = driver.provision_export(enclave("prod", "10.1"), queue_export(), {"queue_url": "q"})
    with pytest.raises(PermanentError, match="service_bus_resource_id"):
        driver.provision_import(enclave("app", "10.2"), imp, bare)
    token = driver.provision_export(
        enclave("prod", "10.1"), queue_export("token"), {"queue_url": "q"}
    )
    assert driver.provision_import(enclave("app", "10.2"), imp, token)["mode"] == "pass-through"
    with pytest.raises(PermanentError, match="namespace id"):
        driver.provision_export(
            enclave("prod", "10.1"), queue_export(), {**outputs, "service_bus_resource_id": "ns"}
        )


def test_an_endpoint_without_an_address_fails_instead_of_inventing_one(
    driver: AzureDriver, fake: AzureApiFake
) -> None:
    producer, _ = driver.provision_enclave(enclave("prod", "10.1"), None)
    driver.provision_enclave(enclave("app", "10.2"), None)
    pls = (
        f"/subscriptions/{producer['subscription_id']}/resourceGroups/nclav-rg/providers/"
        "Microsoft.Network/privateLinkServices/pg-pls"
    )
    fake.add_resource(pls, "Microsoft.Network/privateLinkServices")
    export = driver.provision_export(enclave("prod", "10.1"), tcp_export(), {"pls_id": pls})
    imp = Import.model_validate({"from": "prod", "export_name": "pg", "alias": "pg"})
    handle = driver.provision_import(enclave("app", "10.2"), imp, export)
    endpoint = fake.resource(handle["private_endpoint_resource_id"])
    assert endpoint is not None
    nic = fake.resource(endpoint["properties"]["networkInterfaces"][0]["id"])
    assert nic is not None
    nic["properties"]["ipConfigurations"][0]["properties"].pop("privateIPAddress")
    with pytest.raises(PermanentError, match="has no private address"):
        driver.provision_import(enclave("app", "10.2"), imp, export)  # the original: 10.0.0.0


def test_an_export_naming_a_missing_service_fails(driver: AzureDriver, fake: AzureApiFake) -> None:
    producer, _ = driver.provision_enclave(enclave("prod", "10.1"), None)
    missing = (
        f"/subscriptions/{producer['subscription_id']}/resourceGroups/nclav-rg/providers/"
        "Microsoft.Network/privateLinkServices/nope"
    )
    with pytest.raises(PermanentError, match="does not exist"):
        driver.provision_export(enclave("prod", "10.1"), tcp_export(), {"pls_id": missing})
    with pytest.raises(PermanentError, match="pls_id"):
        driver.provision_export(enclave("prod", "10.1"), tcp_export(), {})


def test_an_import_of_another_clouds_export_passes_outputs_through(driver: AzureDriver) -> None:
    imp = Import.model_validate({"from": "x", "export_name": "api", "alias": "api"})
    other = {"driver": "aws", "kind": "export", "outputs": {"hostname": "h", "port": "443"}}
    handle = driver.provision_import(enclave(), imp, other)
    assert handle["mode"] == "pass-through" and handle["outputs"] == other["outputs"]
    with pytest.raises(PermanentError, match="not wired yet"):
        driver.provision_import(enclave(), imp, None)


# -- orphans ----------------------------------------------------------------------------------


def test_orphans_through_resource_graph_pages(driver: AzureDriver, fake: AzureApiFake) -> None:
    handle, _ = driver.provision_enclave(enclave(), None)
    sub = handle["subscription_id"]
    for i in range(5):
        fake.add_resource(
            f"/subscriptions/{sub}/resourceGroups/work/providers/Microsoft.Storage/"
            f"storageAccounts/gone{i}",
            "Microsoft.Storage/storageAccounts",
            {"nclav-managed": "true", "nclav-enclave": "dev", "nclav-partition": "gone"},
        )
    fake.add_resource(
        f"/subscriptions/{sub}/resourceGroups/work/providers/Microsoft.Storage/storageAccounts/db0",
        "Microsoft.Storage/storageAccounts",
        {"nclav-managed": "true", "nclav-enclave": "dev", "nclav-partition": "db"},
    )
    fake.add_resource(  # another subscription nclav does not hold: not asked about
        "/subscriptions/other/resourceGroups/x/providers/Microsoft.Storage/storageAccounts/z",
        "Microsoft.Storage/storageAccounts",
        {"nclav-managed": "true", "nclav-enclave": "dev", "nclav-partition": "gone"},
    )
    fake.graph_page_size = 2
    fake.requests.clear()
    state = EnclaveState(
        enclave_id="dev", enclave_handle=handle, partitions={"db": PartitionState()}
    )
    found = driver.list_orphans([state])
    assert sorted(o.resource_id.rsplit("/", 1)[-1] for o in found) == [f"gone{i}" for i in range(5)]
    assert {(o.partition_id, o.enclave_id, o.resource_type) for o in found} == {
        ("gone", "dev", "microsoft.storage/storageaccounts")
    }
    graph = [t for m, t in fake.requests if "ResourceGraph" in t]
    assert len(graph) == 3  # 5 rows, 2 a page: every page read
    assert driver.partition_resources(handle, "db") == [
        f"/subscriptions/{sub}/resourceGroups/work/providers/Microsoft.Storage/storageAccounts/db0"
    ]
    assert driver.list_orphans([]) == []


class WrongToken:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("not-the-arm-token", 4102444800)


def test_a_refused_resource_graph_query_raises_instead_of_finding_nothing(
    driver: AzureDriver, fake: AzureApiFake
) -> None:
    handle, _ = driver.provision_enclave(enclave(), None)
    state = EnclaveState(enclave_id="dev", enclave_handle=handle, partitions={})
    refused = AzureDriver(CONFIG, credential=WrongToken(), endpoint=fake.url,
                          transport=fake.transport())  # fmt: skip
    with pytest.raises(ArmError, match="401"):
        refused.list_orphans([state])
    assert [v for v in fake.violations if "not authenticated" in v]
    fake.violations.clear()  # the 401 this test asked for


# -- the plugin -------------------------------------------------------------------------------


def test_the_plugin_declares_the_seed_readme_options() -> None:
    flags = {f"--azure-{o.name.replace('_', '-')}" for o in OPTIONS}
    assert flags == {
        "--azure-tenant-id",
        "--azure-management-group-id",
        "--azure-billing-account-name",
        "--azure-billing-profile-name",
        "--azure-invoice-section-name",
        "--azure-default-location",
        "--azure-subscription-prefix",
        "--azure-client-id",
        "--azure-client-secret",
    }
    values = {o.name: None for o in OPTIONS} | {
        "tenant_id": "t",
        "management_group_id": "mg",
        "billing_account_name": "ba",
        "billing_profile_name": "bp",
        "invoice_section_name": "is",
        "client_secret": "s3cret",
    }
    made = PLUGIN.make_driver(values)
    assert isinstance(made, AzureDriver) and made.config.default_location == "eastus2"
    assert "s3cret" not in repr(made.config)
    assert config_from_options(values).billing_scope.endswith("/invoiceSections/is")
    with pytest.raises(SpecError, match="--azure-tenant-id.*NCLAV_AZURE_TENANT_ID"):
        PLUGIN.make_driver({"management_group_id": "mg"})


def test_an_endpoint_awaiting_approval_waits_and_a_rejected_one_fails(
    driver: AzureDriver, fake: AzureApiFake
) -> None:
    producer, _ = driver.provision_enclave(enclave("prod", "10.1"), None)
    driver.provision_enclave(enclave("app", "10.2"), None)
    pls = (
        f"/subscriptions/{producer['subscription_id']}/resourceGroups/nclav-rg/providers/"
        "Microsoft.Network/privateLinkServices/pg-pls"
    )
    fake.add_resource(pls, "Microsoft.Network/privateLinkServices")
    export = driver.provision_export(enclave("prod", "10.1"), tcp_export(), {"pls_id": pls})
    imp = Import.model_validate({"from": "prod", "export_name": "pg", "alias": "pg"})
    fake.pe_connection_status = "Pending"
    with pytest.raises(WaitingError, match="awaits the exporter's approval"):
        driver.provision_import(enclave("app", "10.2"), imp, export)
    [endpoint] = fake.pe_states
    fake.pe_states[endpoint] = "Approved"  # the exporter approved it
    assert driver.provision_import(enclave("app", "10.2"), imp, export)["private_ip"]
    fake.pe_states[endpoint] = "Rejected"
    with pytest.raises(PermanentError, match="is Rejected"):
        driver.provision_import(enclave("app", "10.2"), imp, export)


def test_the_credential_chain_of_the_seed_readme() -> None:
    from azure.identity import (
        AzureCliCredential,
        ChainedTokenCredential,
        ClientSecretCredential,
        EnvironmentCredential,
        ManagedIdentityCredential,
    )

    from functions_azure.driver.arm import default_credential

    assert isinstance(default_credential("t", "id", "secret"), ClientSecretCredential)
    chain = default_credential("t", None, None)
    assert isinstance(chain, ChainedTokenCredential)
    assert [type(c) for c in chain.credentials] == [
        EnvironmentCredential,
        ManagedIdentityCredential,
        AzureCliCredential,
    ]
    # A driver made from options builds its client (and chain) on first use, offline.
    made = PLUGIN.make_driver({**{o.name: None for o in OPTIONS}, **CONFIG.__dict__})
    assert isinstance(made.arm.credential, ChainedTokenCredential)
