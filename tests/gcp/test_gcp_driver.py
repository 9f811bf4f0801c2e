"""The GCP driver against the strict Google API fake (tests/gcp_api_fake.py): every request
it makes is checked against the discovery documents of the API versions it calls, so a v1
field on the v3 Resource Manager API, a JSON body on a GET, or an unknown parameter fails the
test at teardown. Enclaves, long-running operations (done, pending, failed), 409 on every
create, undelete, partitions and their impersonated credentials."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from functions_gcp._rest import GcpApiError
from functions_gcp.driver import GcpDriver, GcpDriverConfig
from gcp_api_fake import GcpApiFake, anonymous_session, serve_fake
from nclav.engine.driver import OrphanScanner
from nclav.errors import PermanentError, TemporaryError, WaitingError
from nclav.model import Dns, EnclaveConfig, Network, PartitionConfig

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nclav.state import Handle

PID = "acme-dev"


@pytest.fixture
def fake() -> Iterator[GcpApiFake]:
    with serve_fake() as running:
        yield running


def make(fake: GcpApiFake, **extra: object) -> GcpDriver:
    config = GcpDriverConfig(
        parent="folders/123",
        billing_account="012345-6789ab-CDEF01",
        project_prefix="acme",
        **extra,  # type: ignore[arg-type]
    )
    return GcpDriver(config, session=anonymous_session(), endpoints=fake.endpoints())


@pytest.fixture
def driver(fake: GcpApiFake) -> GcpDriver:
    return make(fake)


def enclave(eid: str = "dev", *, network: bool = True, **extra: object) -> EnclaveConfig:
    return EnclaveConfig(
        id=eid,
        name=f"{eid} env (test)",
        region="us-central1",
        network=Network(subnets=("10.0.0.0/24", "10.0.1.0/24")) if network else None,
        dns=Dns(zone=f"{eid}.internal") if network else None,
        **extra,  # type: ignore[arg-type]
    )


def partition(pid: str = "db") -> PartitionConfig:
    return PartitionConfig(id=pid, name=pid)


def converge(driver: GcpDriver, config: EnclaveConfig, tries: int = 30) -> tuple[Handle, int]:
    """Provision until it succeeds, as the queue would redeliver a waiting step."""
    for attempt in range(1, tries + 1):
        try:
            return driver.provision_enclave(config, None)[0], attempt
        except WaitingError:
            continue
    raise AssertionError("never converged")


# -- enclaves -------------------------------------------------------------------------------------


def test_an_enclave_is_a_project_with_billing_apis_network_and_zone(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    handle, context = driver.provision_enclave(enclave(), None)
    create = fake.called("cloudresourcemanager.projects.create")[0].body
    # v3 fields only: parent is a string, no v1 names
    assert create == {
        "projectId": PID,
        "parent": "folders/123",
        "displayName": "dev env test",
        "labels": {"nclav-managed": "true", "nclav-enclave": "dev"},
    }
    project = fake.projects[PID]
    assert handle["project_number"] == project["name"].removeprefix("projects/")
    assert fake.billing[PID] == "billingAccounts/012345-6789AB-CDEF01"
    assert {"compute.googleapis.com", "cloudasset.googleapis.com"} <= fake.services[PID]
    base = f"https://www.googleapis.com/compute/v1/projects/{PID}"
    assert f"{base}/global/networks/nclav-vpc" in fake.compute
    subnet = fake.compute[f"{base}/regions/us-central1/subnetworks/subnet-1"]
    assert subnet["ipCidrRange"] == "10.0.1.0/24" and subnet["privateIpGoogleAccess"] is True
    zone = fake.zones[(PID, "nclav-zone")]
    assert zone["dnsName"] == "dev.internal." and zone["visibility"] == "private"
    assert zone["privateVisibilityConfig"]["networks"][0]["networkUrl"].endswith("/nclav-vpc")
    assert handle["provisioning_complete"] is True and handle["dns_zone"] == "dev.internal."
    assert context["nclav_project_id"] == PID and context["nclav_region"] == "us-central1"


def test_a_rerun_meets_409_on_every_create_and_changes_nothing(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    config = enclave(identity="dev-runner")
    first, _ = driver.provision_enclave(config, None)
    state = {k: dict(v) for k, v in fake.compute.items()}
    second, _ = driver.provision_enclave(config, first)
    assert second == first and fake.compute == state
    assert len(fake.called("cloudresourcemanager.projects.create")) == 1  # found by GET
    for method in (
        "compute.networks.insert",
        "compute.subnetworks.insert",
        "dns.managedZones.create",
        "iam.projects.serviceAccounts.create",
    ):
        calls = fake.called(method)
        assert len(calls) >= 2, method  # asked again, answered 409, taken as there
    assert second["service_account_email"] == f"dev-runner@{PID}.iam.gserviceaccount.com"


def test_a_create_race_and_a_project_id_taken_elsewhere(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    # Created by another attempt between our GET (not visible yet) and our create: 409.
    fake.add_project(PID, **{"nclav-managed": "true", "nclav-enclave": "dev"})
    fake.fail_next("cloudresourcemanager.projects.get", 403)
    driver.provision_enclave(enclave(network=False), None)
    # An id someone else owns: 409 on create, never visible to us (retried, then failed).
    fake.fail_next("cloudresourcemanager.projects.create", 409, status="ALREADY_EXISTS")
    with pytest.raises(TemporaryError, match="acme-other is taken"):
        driver.provision_enclave(enclave("other", network=False), None)


def test_a_project_invisible_while_being_created_is_retried_not_failed(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    fake.hide_pending = True  # GET answers 403 until the create operation is done
    fake.script_operations("pending")
    with pytest.raises(WaitingError):
        driver.provision_enclave(enclave(network=False), None)
    with pytest.raises(TemporaryError, match="still being created"):
        driver.provision_enclave(enclave(network=False), None)  # 409, and still invisible
    fake.finish_operations()
    handle, _ = driver.provision_enclave(enclave(network=False), None)
    assert handle["project_id"] == PID


def test_a_pending_operation_is_a_waiting_error_and_the_next_attempt_goes_on(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    fake.script_operations("pending")
    with pytest.raises(WaitingError, match="still running") as caught:
        driver.provision_enclave(enclave(), None)
    assert caught.value.retry_after_s > 0
    assert PID in fake.projects  # the operation's work is under way
    handle, _ = driver.provision_enclave(enclave(), None)
    assert handle["project_id"] == PID
    assert len(fake.called("cloudresourcemanager.projects.create")) == 1


def test_a_pending_compute_operation_waits_and_the_rerun_meets_409(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    fake.add_project(PID, **{"nclav-managed": "true", "nclav-enclave": "dev"})
    fake.script_operations("done", "pending")  # batchEnable, then the network insert
    with pytest.raises(WaitingError, match="operation-"):
        driver.provision_enclave(enclave(), None)
    polls = fake.called("compute.globalOperations.get")
    assert len(polls) == 1 and polls[0].http == "GET"  # looked once more, did not sleep
    handle, _ = driver.provision_enclave(enclave(), None)
    assert len(fake.called("compute.networks.insert")) == 2  # the second answered 409
    assert len(handle["subnets"]) == 2


def test_every_operation_pending_at_first_still_converges(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    fake.script_operations(*["pending"] * 8)
    handle, attempts = converge(driver, enclave())
    assert attempts > 1 and handle["provisioning_complete"] is True


def test_a_failed_operation_is_an_error_and_leaves_nothing(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    fake.script_operations("failed")
    with pytest.raises(GcpApiError, match="FAILED_PRECONDITION"):
        driver.provision_enclave(enclave(), None)
    assert fake.projects == {}
    # Compute's failed operations: status DONE with error.errors[] (here the network)
    fake.add_project(PID, **{"nclav-managed": "true", "nclav-enclave": "dev"})
    fake.script_operations("done", "failed")  # batchEnable, then the network insert
    with pytest.raises(GcpApiError, match="QUOTA_EXCEEDED"):
        driver.provision_enclave(enclave(), None)
    assert fake.compute == {}


def test_a_transient_operation_error_is_temporary(fake: GcpApiFake, driver: GcpDriver) -> None:
    fake.fail_next("serviceusage.services.batchEnable", 503)
    with pytest.raises(TemporaryError, match="UNAVAILABLE"):
        driver.provision_enclave(enclave(network=False), None)


def test_a_project_pending_deletion_is_undeleted(fake: GcpApiFake, driver: GcpDriver) -> None:
    fake.add_project(PID, state="DELETE_REQUESTED")
    handle, _ = driver.provision_enclave(enclave(), None)
    assert fake.projects[PID]["state"] == "ACTIVE"
    assert len(fake.called("cloudresourcemanager.projects.undelete")) == 1
    assert fake.called("cloudresourcemanager.projects.create") == []
    # labels restored through a v3 PATCH with updateMask=labels
    patch = fake.called("cloudresourcemanager.projects.patch")[0]
    assert patch.query == {"updateMask": ["labels"]}
    assert fake.projects[PID]["labels"]["nclav-enclave"] == "dev"
    assert handle["project_id"] == PID


def test_teardown_requests_deletion_once(fake: GcpApiFake, driver: GcpDriver) -> None:
    handle, _ = driver.provision_enclave(enclave(network=False), None)
    driver.teardown_enclave(None, handle)
    assert fake.projects[PID]["state"] == "DELETE_REQUESTED"
    driver.teardown_enclave(None, handle)  # redelivered: nothing more to do
    assert len(fake.called("cloudresourcemanager.projects.delete")) == 1
    assert driver.observe_enclave(handle) == {
        "exists": True,
        "healthy": False,
        "state": "DELETE_REQUESTED",
        "missing": [],
        "status": "deleting",
    }
    driver.teardown_enclave(enclave("never"), None)  # never created: fine
    gone = driver.observe_enclave({"driver": "gcp", "kind": "enclave", "project_id": "acme-x1"})
    assert (gone["exists"], gone["status"]) == (False, "deleted")


def test_observe_reports_a_missing_vpc_or_account_as_degraded(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    config = enclave(identity="dev-runner")
    handle, _ = driver.provision_enclave(config, None)
    assert driver.observe_enclave(handle) == {
        "exists": True,
        "healthy": True,
        "state": "ACTIVE",
        "missing": [],
        "status": "active",
    }
    part = driver.provision_partition(config, partition(), None, enclave_handle=handle)
    vpc = handle["vpc_self_link"]
    del fake.compute[vpc]
    del fake.service_accounts[handle["service_account_email"]]
    seen = driver.observe_enclave(handle)
    assert seen["missing"] == [vpc, handle["service_account_email"]]
    assert (seen["exists"], seen["healthy"], seen["status"]) == (True, False, "degraded")
    assert fake.called("compute.networks.get")[0].path.endswith("/global/networks/nclav-vpc")
    assert driver.observe_partition(part) == {"exists": True, "healthy": True}
    fake.service_accounts[part["service_account_email"]]["disabled"] = True
    assert driver.observe_partition(part) == {"exists": True, "healthy": False}
    del fake.service_accounts[part["service_account_email"]]
    assert driver.observe_partition(part) == {"exists": False, "healthy": False}
    assert driver.observe_partition(None) == {"exists": False, "healthy": False}


def test_dns_without_network_and_a_changed_subnet_range_are_refused(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    bad = EnclaveConfig(id="dev", name="dev", region="us-central1", dns=Dns(zone="x.internal"))
    with pytest.raises(PermanentError, match="dns.zone needs network"):
        driver.provision_enclave(bad, None)
    driver.provision_enclave(enclave(), None)
    moved = enclave().model_copy(update={"network": Network(subnets=("10.9.0.0/24",))})
    with pytest.raises(PermanentError, match="does not change a subnet's range"):
        driver.provision_enclave(moved, None)


# -- partitions and their credentials -------------------------------------------------------------


def test_a_partition_is_a_service_account_with_its_roles(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    config = enclave(identity="dev-runner")
    enclave_handle, _ = driver.provision_enclave(config, None)
    handle = driver.provision_partition(config, partition(), None, enclave_handle=enclave_handle)
    email = f"partition-db@{PID}.iam.gserviceaccount.com"
    assert handle["service_account_email"] == email and handle["type"] == "iac"
    policy = fake.policies[f"projects/{PID}"]
    assert {"role": "roles/editor", "members": [f"serviceAccount:{email}"]} in policy["bindings"]
    sa_policy = fake.policies[f"serviceAccounts/{email}"]
    assert sa_policy["bindings"] == [
        {
            "role": "roles/iam.serviceAccountTokenCreator",
            "members": [f"serviceAccount:dev-runner@{PID}.iam.gserviceaccount.com"],
        }
    ]
    # every write sent back the etag it read (no blind overwrite)
    sets = fake.called("cloudresourcemanager.projects.setIamPolicy")
    assert all(c.body["policy"]["etag"] for c in sets)
    again = driver.provision_partition(config, partition(), handle, enclave_handle=enclave_handle)
    assert again == handle
    assert len(fake.called("cloudresourcemanager.projects.setIamPolicy")) == len(sets)


def test_policy_edits_retry_a_concurrent_change_and_never_write_after_a_failed_read(
    fake: GcpApiFake,
) -> None:
    driver = make(fake, partition_roles=("roles/viewer", "roles/storage.admin"))
    config = enclave(network=False)
    enclave_handle, _ = driver.provision_enclave(config, None)
    fake.fail_next("cloudresourcemanager.projects.setIamPolicy", 409, status="ABORTED")
    driver.provision_partition(config, partition(), None, enclave_handle=enclave_handle)
    roles = {b["role"] for b in fake.policies[f"projects/{PID}"]["bindings"]}
    assert roles == {"roles/viewer", "roles/storage.admin"}
    fake.fail_next("cloudresourcemanager.projects.getIamPolicy", 403)
    writes = len(fake.called("cloudresourcemanager.projects.setIamPolicy"))
    with pytest.raises(GcpApiError, match="PERMISSION_DENIED"):
        driver.provision_partition(config, partition("web"), None, enclave_handle=enclave_handle)
    assert len(fake.called("cloudresourcemanager.projects.setIamPolicy")) == writes


def test_a_service_account_iam_does_not_see_yet_is_waited_for(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    config = enclave(network=False)
    enclave_handle, _ = driver.provision_enclave(config, None)
    fake.fail_next(
        "cloudresourcemanager.projects.setIamPolicy",
        400,
        "Service account partition-db@acme-dev.iam.gserviceaccount.com does not exist.",
    )
    with pytest.raises(WaitingError, match="not visible to IAM yet"):
        driver.provision_partition(config, partition(), None, enclave_handle=enclave_handle)
    driver.provision_partition(config, partition(), None, enclave_handle=enclave_handle)


def test_terraform_gets_a_short_lived_token_of_the_partition_account_only(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    config = enclave(network=False)
    enclave_handle, _ = driver.provision_enclave(config, None)
    handle = driver.provision_partition(config, partition(), None, enclave_handle=enclave_handle)
    env = driver.auth_env(enclave_handle, handle)
    email = f"partition-db@{PID}.iam.gserviceaccount.com"
    assert env == {
        "GOOGLE_OAUTH_ACCESS_TOKEN": f"ya29.fake-{email}",
        "GOOGLE_PROJECT": PID,
        "GOOGLE_CLOUD_PROJECT": PID,
        "GOOGLE_REGION": "us-central1",
    }
    assert fake.tokens == [
        {
            "email": email,
            "scope": ["https://www.googleapis.com/auth/cloud-platform"],
            "lifetime": "3600s",
        }
    ]
    with pytest.raises(PermanentError, match="never runs with the platform's credentials"):
        driver.auth_env(enclave_handle, None)
    fake.fail_next("iamcredentials.projects.serviceAccounts.generateAccessToken", 404)
    with pytest.raises(WaitingError):
        driver.auth_env(enclave_handle, handle)
    fake.fail_next("iamcredentials.projects.serviceAccounts.generateAccessToken", 403)
    with pytest.raises(PermanentError, match="serviceAccountTokenCreator"):
        driver.auth_env(enclave_handle, handle)


def test_partition_teardown_removes_its_bindings_and_account(
    fake: GcpApiFake, driver: GcpDriver
) -> None:
    config = enclave(network=False)
    enclave_handle, _ = driver.provision_enclave(config, None)
    handle = driver.provision_partition(config, partition(), None, enclave_handle=enclave_handle)
    driver.teardown_partition("dev", "db", handle, enclave_handle=enclave_handle)
    assert fake.service_accounts == {}
    assert fake.policies[f"projects/{PID}"]["bindings"] == []
    driver.teardown_partition("dev", "db", handle, enclave_handle=enclave_handle)  # again: fine
    # after the enclave's teardown (project DELETE_REQUESTED): nothing to call
    driver.teardown_enclave(None, enclave_handle)
    calls = len(fake.calls)
    driver.teardown_partition("dev", "db", handle, enclave_handle=enclave_handle)
    assert [c.method_id for c in fake.calls[calls:]] == ["cloudresourcemanager.projects.get"]


def test_the_driver_is_an_orphan_scanner(driver: GcpDriver) -> None:
    assert isinstance(driver, OrphanScanner)


def test_google_error_envelopes_become_nclav_errors() -> None:
    from functions_gcp._rest import error_of, operation_error

    throttled = error_of(
        403,
        {
            "error": {
                "code": 403,
                "message": "slow down",
                "errors": [{"reason": "rateLimitExceeded"}],
            }
        },
        "compute insert",
    )
    assert isinstance(throttled, TemporaryError) and "throttled" in str(throttled)
    assert throttled.retry_after_s == 30.0
    aborted = error_of(409, {"error": {"status": "ABORTED", "message": "etag"}}, "set")
    assert isinstance(aborted, TemporaryError)
    denied = error_of(403, {"error": {"status": "PERMISSION_DENIED", "message": "no"}}, "get")
    assert isinstance(denied, GcpApiError) and str(denied) == "get: PERMISSION_DENIED: no"
    assert denied.status == 403 and denied.code == "PERMISSION_DENIED"
    assert isinstance(error_of(502, "<html>bad gateway</html>", "get"), TemporaryError)
    unavailable = operation_error({"done": True, "error": {"code": 14, "message": "x"}}, "op")
    assert isinstance(unavailable, TemporaryError)
    assert operation_error({"done": True, "response": {}}, "op") is None


def test_an_enclave_without_a_region_uses_the_default_region(fake: GcpApiFake) -> None:
    driver = make(fake, default_region="europe-west1")  # the original never read it
    handle, context = driver.provision_enclave(enclave().model_copy(update={"region": ""}), None)
    assert handle["region"] == context["nclav_region"] == "europe-west1"
    assert all("/regions/europe-west1/subnetworks/" in s for s in handle["subnets"])
