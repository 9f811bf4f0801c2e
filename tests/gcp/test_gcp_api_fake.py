"""The strict Google API fake itself: what it refuses is what Google's discovery documents say
the API does not have, so a driver bug of the original (v1 fields on v3) fails a test."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import requests

from gcp_api_fake import GcpApiFake, serve_fake

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def fake() -> Iterator[GcpApiFake]:
    # Violations are the point of these tests: read them, then clear them for teardown.
    with serve_fake() as running:
        yield running
        running.violations.clear()


def call(fake: GcpApiFake, http: str, api: str, path: str, **kw: Any) -> requests.Response:
    return requests.request(http, fake.endpoint(api) + path, timeout=10, **kw)


def test_a_v3_project_create_is_served_as_a_done_operation(fake: GcpApiFake) -> None:
    body = {"projectId": "acme-dev", "parent": "folders/123", "displayName": "dev", "labels": {}}
    op = call(fake, "POST", "cloudresourcemanager", "v3/projects", json=body).json()
    assert op["done"] is True and op["name"].startswith("operations/")
    project = op["response"]
    assert project["state"] == "ACTIVE" and project["name"].startswith("projects/")
    assert "lifecycleState" not in project and "projectNumber" not in project
    again = call(fake, "POST", "cloudresourcemanager", "v3/projects", json=body)
    assert again.status_code == 409 and again.json()["error"]["status"] == "ALREADY_EXISTS"
    assert fake.violations == []


def test_v1_field_names_sent_to_v3_are_violations(fake: GcpApiFake) -> None:
    # The original's bug: v1 shapes (parent as a ResourceId, lifecycleState) on the v3 API.
    v1_body = {"projectId": "acme-dev", "parent": {"type": "folder", "id": "123"}}
    answer = call(fake, "POST", "cloudresourcemanager", "v3/projects", json=v1_body)
    assert answer.status_code == 400 and answer.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert any("parent: expected a string" in v for v in fake.violations)
    fake.violations.clear()
    body = {"projectId": "acme-dev", "parent": "folders/1", "lifecycleState": "ACTIVE"}
    call(fake, "POST", "cloudresourcemanager", "v3/projects", json=body)
    assert any("unknown field 'lifecycleState'" in v for v in fake.violations)
    fake.violations.clear()
    # the v1 path does not exist in v3
    call(fake, "GET", "cloudresourcemanager", "v1/projects/acme-dev")
    assert any("no method of cloudresourcemanager v3" in v for v in fake.violations)


def test_unknown_query_parameters_bodies_and_enums_are_violations(fake: GcpApiFake) -> None:
    fake.add_project("acme-dev")
    call(fake, "GET", "cloudresourcemanager", "v3/projects/acme-dev", params={"view": "FULL"})
    assert any("unknown query parameter 'view'" in v for v in fake.violations)
    fake.violations.clear()
    # searchAllResources is a GET with query parameters; the original POSTed a JSON body
    call(fake, "POST", "cloudasset", "v1/projects/acme-dev:searchAllResources", json={})
    assert any("no method of cloudasset v1" in v for v in fake.violations)
    fake.violations.clear()
    bad = {"name": "z", "dnsName": "x.", "visibility": "internal", "description": ""}
    call(fake, "POST", "dns", "dns/v1/projects/acme-dev/managedZones", json=bad)
    assert any("'internal' is not one of" in v for v in fake.violations)
    fake.violations.clear()
    # Secret Manager takes secretId as a query parameter, not a body field
    call(
        fake,
        "POST",
        "secretmanager",
        "v1/projects/p/secrets",
        json={"secretId": "x", "replication": {"automatic": {}}},
    )
    assert any("unknown field 'secretId'" in v for v in fake.violations)


def test_operations_follow_the_script(fake: GcpApiFake) -> None:
    fake.add_project("acme-dev")
    fake.script_operations("pending", "failed")
    path = "v1/projects/acme-dev/services:batchEnable"
    pending = call(fake, "POST", "serviceusage", path, json={"serviceIds": ["dns.googleapis.com"]})
    op = pending.json()
    assert op["done"] is False
    polls = [call(fake, "GET", "serviceusage", f"v1/{op['name']}").json()["done"] for _ in "abc"]
    assert polls == [False, True, True]  # pending_polls=2
    failed = call(fake, "POST", "serviceusage", path, json={"serviceIds": ["x.googleapis.com"]})
    assert failed.json()["error"]["code"] == 9
    assert fake.services["acme-dev"] == {"dns.googleapis.com"}  # a failed one enabled nothing
    fake.script_operations("failed")
    network = {"name": "nclav-vpc", "autoCreateSubnetworks": False}
    compute = call(
        fake, "POST", "compute", "compute/v1/projects/acme-dev/global/networks", json=network
    )
    assert compute.json()["status"] == "DONE" and compute.json()["error"]["errors"]
    assert fake.compute == {}
    assert fake.violations == []


def test_compute_conflicts_use_the_compute_envelope(fake: GcpApiFake) -> None:
    fake.add_project("acme-dev")
    network = {"name": "nclav-vpc", "autoCreateSubnetworks": False}
    path = "compute/v1/projects/acme-dev/global/networks"
    assert call(fake, "POST", "compute", path, json=network).status_code == 200
    again = call(fake, "POST", "compute", path, json=network)
    assert again.status_code == 409
    assert again.json()["error"]["errors"][0]["reason"] == "alreadyExists"


def test_a_missing_project_is_forbidden_as_google_answers(fake: GcpApiFake) -> None:
    answer = call(fake, "GET", "cloudresourcemanager", "v3/projects/nope-nope")
    assert answer.status_code == 403


def test_the_fakes_own_answers_are_checked_against_the_response_schema(
    fake: GcpApiFake,
) -> None:
    fake.add_project("acme-dev")
    fake.projects["acme-dev"]["lifecycleState"] = "ACTIVE"  # a v1 field in a v3 answer
    call(fake, "GET", "cloudresourcemanager", "v3/projects/acme-dev")
    assert any(v.startswith("FAKE BUG") and "lifecycleState" in v for v in fake.violations)


def test_injected_failures_and_the_teardown_check() -> None:
    with pytest.raises(AssertionError, match="requests the real API would refuse"):  # noqa: SIM117
        with serve_fake() as fake:
            fake.fail_next("iam.projects.serviceAccounts.create", 503)
            answer = call(fake, "POST", "iam", "v1/projects/p/serviceAccounts", json={})
            assert answer.status_code == 503 and answer.json()["error"]["status"] == "UNAVAILABLE"
            call(fake, "GET", "iam", "v2/projects/p/serviceAccounts")


def test_a_project_pending_deletion_takes_no_changes_until_undeleted(fake: GcpApiFake) -> None:
    fake.add_project("acme-dev", state="DELETE_REQUESTED")
    path = "v1/projects/acme-dev/services:batchEnable"
    refused = call(fake, "POST", "serviceusage", path, json={"serviceIds": ["dns.googleapis.com"]})
    assert refused.status_code == 400
    assert refused.json()["error"]["status"] == "FAILED_PRECONDITION"
    op = call(fake, "POST", "cloudresourcemanager", "v3/projects/acme-dev:undelete", json={})
    assert op.json()["done"] is True and fake.projects["acme-dev"]["state"] == "ACTIVE"
    again = call(fake, "POST", "serviceusage", path, json={"serviceIds": ["dns.googleapis.com"]})
    assert again.status_code == 200
    assert fake.violations == []
