"""What moto cannot produce, with botocore's Stubber on injected clients.

moto's CreateAccount succeeds at once and never throttles; it has no CloseAccount quota, no
endpoint-connection acceptance and no IAM propagation delay. Each test queues the exact AWS
responses (errors included) on real botocore clients and drives the driver through them; a
call the test did not expect fails the Stubber.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError
from botocore.stub import ANY, Stubber

from functions_aws.driver import AwsDriver, AwsDriverConfig
from functions_aws.driver.config import (
    ADMIN_POLICY,
    account_emails,
    account_name,
    partition_role_name,
)
from functions_aws.driver.errors import translate
from functions_aws.driver.identity import delete_role
from functions_aws.driver.imports import provision_import
from functions_aws.driver.network import ensure_zone
from functions_aws.driver.sessions import principal_for
from nclav.errors import PermanentError, TemporaryError, WaitingError
from nclav.model import EnclaveConfig, Import, Network, PartitionConfig

if TYPE_CHECKING:
    from collections.abc import Iterator

ACCOUNT = "210987654321"
OU = "ou-ab12-cdef3456"
CONFIG = AwsDriverConfig(org_unit_id=OU, email_domain="example.com", account_prefix="acme")
DEV = EnclaveConfig(
    id="dev",
    name="dev",
    region="us-east-1",
    network=Network(vpc_cidr="10.1.0.0/16", subnets=("10.1.1.0/24",)),
)
SERVICES = ("organizations", "sts", "iam", "ec2", "route53")


class FakeSessions:
    """A session factory handing out the same stubbed clients to every session."""

    def __init__(self, clients: dict[str, Any]) -> None:
        self.clients = clients
        self.made: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> FakeSessions:
        self.made.append(kwargs)
        return self

    def client(self, service: str, region_name: str | None = None, config: Any = None) -> Any:
        return self.clients[service]

    def account(self, account_id: str, service: str, region: str) -> Any:
        return self.clients[service]  # the Sessions surface imports.py uses


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self) -> None:
        session = boto3.session.Session(
            aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
        )
        self.clients = {
            name: session.client(name, endpoint_url="https://stubbed.invalid") for name in SERVICES
        }
        self.stubs = {name: Stubber(client) for name, client in self.clients.items()}
        self.clock = Clock()
        self.factory = FakeSessions(self.clients)
        self.driver = AwsDriver(
            CONFIG,
            self.factory,
            clock=self.clock,
            close_quota_retry_s=86_400.0,
        )

    def __getattr__(self, name: str) -> Stubber:
        return self.stubs[name]


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    rig = Rig()
    for stub in rig.stubs.values():
        stub.activate()
    yield rig
    for stub in rig.stubs.values():
        stub.assert_no_pending_responses()
        stub.deactivate()


def creds() -> dict[str, Any]:
    return {
        "Credentials": {
            "AccessKeyId": "ASIAPARTITION0000000",
            "SecretAccessKey": "secret",
            "SessionToken": "token",
            "Expiration": datetime.now(UTC) + timedelta(hours=1),
        }
    }


def status(state: str, **extra: str) -> dict[str, Any]:
    return {
        "CreateAccountStatus": {"Id": "car-1", "AccountName": "acme-dev", "State": state, **extra}
    }


def account(email: str = "aws+acme-dev@example.com", state: str = "ACTIVE") -> dict[str, Any]:
    return {
        "Id": ACCOUNT,
        "Name": "acme-dev",
        "Email": email,
        "Status": "SUSPENDED" if state == "SUSPENDED" else "ACTIVE",
        "State": state,
    }


def nothing_yet(rig: Rig) -> None:
    """No account with the enclave's email and no creation in progress under its name."""
    rig.organizations.add_response("list_accounts", {"Accounts": []})
    rig.organizations.add_response(
        "list_create_account_status",
        {"CreateAccountStatuses": []},
        {"States": ["IN_PROGRESS"]},
    )


# -- CreateAccount ---------------------------------------------------------------------------


def test_a_running_create_account_is_checked_again_later_never_slept_on(rig: Rig) -> None:
    nothing_yet(rig)
    rig.organizations.add_response(
        "create_account",
        status("IN_PROGRESS"),
        {
            "AccountName": "acme-dev",
            "Email": "aws+acme-dev@example.com",
            "Tags": [
                {"Key": "nclav-managed", "Value": "true"},
                {"Key": "nclav-enclave", "Value": "dev"},
            ],
        },
    )
    rig.organizations.add_response(
        "describe_create_account_status", status("IN_PROGRESS"), {"CreateAccountRequestId": "car-1"}
    )
    # Waiting, not failing: the step is delivered again in 20 s without using an attempt.
    with pytest.raises(WaitingError, match="still IN_PROGRESS") as caught:
        rig.driver.accounts.ensure("dev")
    assert caught.value.retry_after_s == 20.0

    # The next delivery finds the request by account name instead of calling CreateAccount.
    for state in ("IN_PROGRESS", "SUCCEEDED"):
        rig.organizations.add_response("list_accounts", {"Accounts": []})
        rig.organizations.add_response(
            "list_create_account_status",
            {"CreateAccountStatuses": [status("IN_PROGRESS")["CreateAccountStatus"]]},
        )
        rig.organizations.add_response(
            "describe_create_account_status",
            status(state, AccountId=ACCOUNT),
            {"CreateAccountRequestId": "car-1"},
        )
        if state == "IN_PROGRESS":
            with pytest.raises(WaitingError):
                rig.driver.accounts.ensure("dev")
    rig.organizations.add_response(
        "describe_account", {"Account": account()}, {"AccountId": ACCOUNT}
    )
    assert rig.driver.accounts.ensure("dev") == (ACCOUNT, "acme-dev", "aws+acme-dev@example.com")


@pytest.mark.parametrize(
    "reason", ["ACCOUNT_LIMIT_EXCEEDED", "INVALID_EMAIL", "MISSING_PAYMENT_INSTRUMENT"]
)
def test_a_failed_create_account_is_permanent_with_its_reason(rig: Rig, reason: str) -> None:
    nothing_yet(rig)
    rig.organizations.add_response("create_account", status("IN_PROGRESS"))
    rig.organizations.add_response(
        "describe_create_account_status", status("FAILED", FailureReason=reason)
    )
    with pytest.raises(PermanentError, match=f"failed: {reason}"):
        rig.driver.accounts.ensure("dev")


def test_a_transient_failure_reason_is_retried_later(rig: Rig) -> None:
    nothing_yet(rig)
    rig.organizations.add_response("create_account", status("IN_PROGRESS"))
    rig.organizations.add_response(
        "describe_create_account_status",
        status("FAILED", FailureReason="CONCURRENT_ACCOUNT_MODIFICATION"),
    )
    with pytest.raises(TemporaryError, match="CONCURRENT_ACCOUNT_MODIFICATION"):
        rig.driver.accounts.ensure("dev")


def test_email_already_exists_adopts_the_account_an_earlier_attempt_made(rig: Rig) -> None:
    nothing_yet(rig)
    rig.organizations.add_response("create_account", status("IN_PROGRESS"))
    rig.organizations.add_response(
        "describe_create_account_status", status("FAILED", FailureReason="EMAIL_ALREADY_EXISTS")
    )
    rig.organizations.add_response("list_accounts_for_parent", {"Accounts": []}, {"ParentId": OU})
    rig.organizations.add_response("list_accounts", {"Accounts": [account()]})  # still at the root
    rig.organizations.add_response("describe_account", {"Account": account()})
    assert rig.driver.accounts.ensure("dev")[0] == ACCOUNT


def test_email_already_exists_outside_the_organization_is_permanent(rig: Rig) -> None:
    nothing_yet(rig)
    rig.organizations.add_response("create_account", status("IN_PROGRESS"))
    rig.organizations.add_response(
        "describe_create_account_status", status("FAILED", FailureReason="EMAIL_ALREADY_EXISTS")
    )
    rig.organizations.add_response("list_accounts_for_parent", {"Accounts": []})
    rig.organizations.add_response("list_accounts", {"Accounts": []})
    with pytest.raises(PermanentError, match="outside this organization"):
        rig.driver.accounts.ensure("dev")


def test_a_closed_account_is_skipped_and_the_next_email_is_used(rig: Rig) -> None:
    closed = account(state="SUSPENDED")
    rig.organizations.add_response("list_accounts", {"Accounts": [closed]})
    rig.organizations.add_response("list_create_account_status", {"CreateAccountStatuses": []})
    rig.organizations.add_response(
        "create_account",
        status("IN_PROGRESS"),
        {"AccountName": "acme-dev", "Email": "aws+acme-dev-2@example.com", "Tags": ANY},
    )
    rig.organizations.add_response(
        "describe_create_account_status", status("SUCCEEDED", AccountId="999999999999")
    )
    rig.organizations.add_response(
        "describe_account", {"Account": account(email="aws+acme-dev-2@example.com")}
    )
    assert rig.driver.accounts.ensure("dev")[0] == "999999999999"


# -- error translation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status_code", "kind"),
    [
        ("TooManyRequestsException", 400, TemporaryError),
        ("ConcurrentModificationException", 400, TemporaryError),
        ("ServiceException", 500, TemporaryError),
        ("SomethingNew", 503, TemporaryError),
        ("AccessDeniedException", 400, PermanentError),
        ("InvalidInputException", 400, PermanentError),
        ("ConstraintViolationException", 400, PermanentError),
    ],
)
def test_client_errors_become_temporary_or_permanent(
    rig: Rig, code: str, status_code: int, kind: type[Exception]
) -> None:
    nothing_yet(rig)
    rig.organizations.add_client_error("create_account", code, "no", http_status_code=status_code)
    with pytest.raises(kind) as caught:
        rig.driver.accounts.ensure("dev")
    assert isinstance(caught.value.__cause__, ClientError)
    assert code in str(caught.value)
    if code == "TooManyRequestsException":
        assert isinstance(caught.value, TemporaryError) and caught.value.retry_after_s == 30.0


def test_sdk_errors_without_a_response() -> None:
    down = EndpointConnectionError(endpoint_url="https://organizations.us-east-1.amazonaws.com")
    assert isinstance(translate(down, "x"), TemporaryError)
    bad = ParamValidationError(report="AccountName is required")
    assert isinstance(translate(bad, "x"), PermanentError)


def test_move_account_tolerates_an_earlier_move_and_fails_on_access_denied(rig: Rig) -> None:
    rig.organizations.add_response("list_parents", {"Parents": [{"Id": "r-root", "Type": "ROOT"}]})
    rig.organizations.add_client_error("move_account", "DuplicateAccountException", "moved")
    rig.driver.accounts.place(ACCOUNT)

    rig.organizations.add_response(
        "list_parents", {"Parents": [{"Id": OU, "Type": "ORGANIZATIONAL_UNIT"}]}
    )
    rig.driver.accounts.place(ACCOUNT)  # already in the OU: no MoveAccount

    rig.organizations.add_client_error("list_parents", "AccessDeniedException", "denied")
    with pytest.raises(PermanentError, match="AccessDenied"):
        rig.driver.accounts.place(ACCOUNT)


# -- CloseAccount --------------------------------------------------------------------------

HANDLE = {"driver": "aws", "kind": "enclave", "enclave_id": "dev", "account_id": ACCOUNT}


def test_the_close_account_quota_queues_the_teardown(rig: Rig) -> None:
    rig.organizations.add_client_error(
        "close_account",
        "ConstraintViolationException",
        "You have exceeded close account quota for the past 30 days.",
        modeled_fields={"Reason": "CLOSE_ACCOUNT_QUOTA_EXCEEDED"},
        expected_params={"AccountId": ACCOUNT},
    )
    with pytest.raises(WaitingError, match="queued") as caught:
        rig.driver.teardown_enclave(DEV, HANDLE)
    assert caught.value.retry_after_s == 86_400.0


def test_too_many_closures_at_once_is_retried_sooner(rig: Rig) -> None:
    rig.organizations.add_client_error(
        "close_account",
        "ConstraintViolationException",
        "too many at a time",
        modeled_fields={"Reason": "CLOSE_ACCOUNT_REQUESTS_LIMIT_EXCEEDED"},
    )
    with pytest.raises(WaitingError) as caught:
        rig.driver.teardown_enclave(DEV, HANDLE)
    assert caught.value.retry_after_s == 900.0


def test_other_constraints_and_closed_accounts(rig: Rig) -> None:
    rig.organizations.add_client_error(
        "close_account",
        "ConstraintViolationException",
        "management account",
        modeled_fields={"Reason": "MASTER_ACCOUNT_MISSING_CONTACT_INFO"},
    )
    with pytest.raises(PermanentError, match="MASTER_ACCOUNT_MISSING_CONTACT_INFO"):
        rig.driver.teardown_enclave(DEV, HANDLE)
    rig.organizations.add_client_error("close_account", "AccountAlreadyClosedException", "closed")
    rig.driver.teardown_enclave(DEV, HANDLE)
    rig.organizations.add_client_error("close_account", "AccountNotFoundException", "gone")
    rig.driver.teardown_enclave(DEV, HANDLE)


# -- roles and credentials -------------------------------------------------------------------


def test_partition_roles_get_administrator_access_by_default(rig: Rig) -> None:
    rig.sts.add_response(
        "get_caller_identity",
        {
            "Arn": "arn:aws:sts::111122223333:assumed-role/nclav-server/task",
            "Account": "111122223333",
            "UserId": "x",
        },
    )
    rig.sts.add_response(
        "assume_role",
        creds(),
        {
            "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/OrganizationAccountAccessRole",
            "RoleSessionName": "nclav-session",
            "DurationSeconds": 3600,
        },
    )
    rig.iam.add_response(
        "create_role",
        {"Role": role("nclav-partition-api")},
        {
            "RoleName": "nclav-partition-api",
            "AssumeRolePolicyDocument": ANY,
            "Description": ANY,
            "MaxSessionDuration": 3600,
            "Tags": ANY,
        },
    )
    rig.iam.add_response(
        "attach_role_policy", {}, {"RoleName": "nclav-partition-api", "PolicyArn": ADMIN_POLICY}
    )

    handle = rig.driver.provision_partition(
        DEV, PartitionConfig(id="api", name="api"), None, enclave_handle=ENCLAVE_HANDLE
    )
    assert handle["partition_role_arn"] == f"arn:aws:iam::{ACCOUNT}:role/nclav-partition-api"


class Trust:
    """Matches a trust policy document (JSON text) naming exactly ``principals``."""

    def __init__(self, *principals: str) -> None:
        self.principals = sorted(principals)

    def __eq__(self, other: object) -> bool:
        statement = json.loads(str(other))["Statement"][0]
        found = statement["Principal"]["AWS"]
        return sorted([found] if isinstance(found, str) else found) == self.principals

    __hash__ = None  # type: ignore[assignment]


def test_an_existing_role_gets_the_current_trust_policy(rig: Rig) -> None:
    rig.sts.add_response(
        "get_caller_identity",
        {"Arn": "arn:aws:iam::111122223333:user/ops", "Account": "111122223333", "UserId": "x"},
    )
    rig.sts.add_response("assume_role", creds())
    rig.iam.add_client_error("create_role", "EntityAlreadyExists", "exists", http_status_code=409)
    rig.iam.add_response("get_role", {"Role": role("nclav-partition-api")})
    trust = Trust(
        "arn:aws:iam::111122223333:user/ops",
        f"arn:aws:iam::{ACCOUNT}:role/OrganizationAccountAccessRole",
    )
    rig.iam.add_response(
        "update_assume_role_policy",
        {},
        {"RoleName": "nclav-partition-api", "PolicyDocument": trust},
    )
    rig.iam.add_response("tag_role", {}, {"RoleName": "nclav-partition-api", "Tags": ANY})
    rig.iam.add_response("attach_role_policy", {})
    handle = rig.driver.provision_partition(
        DEV, PartitionConfig(id="api", name="api"), None, enclave_handle=ENCLAVE_HANDLE
    )
    assert handle["role_name"] == "nclav-partition-api"


def role(name: str) -> dict[str, Any]:
    return {
        "Path": "/",
        "RoleName": name,
        "RoleId": "AROAEXAMPLE000000000",
        "Arn": f"arn:aws:iam::{ACCOUNT}:role/{name}",
        "CreateDate": datetime.now(UTC),
    }


PARTITION_HANDLE = {
    "driver": "aws",
    "kind": "partition",
    "partition_id": "api",
    "account_id": ACCOUNT,
    "partition_role_arn": f"arn:aws:iam::{ACCOUNT}:role/nclav-partition-api",
}
ENCLAVE_HANDLE = {**HANDLE, "region": "us-east-1"}


def young(rig: Rig, age_s: float) -> dict[str, Any]:
    """The partition handle of a role whose trust policy is ``age_s`` old."""
    since = datetime.fromtimestamp(rig.clock.now - age_s, UTC).isoformat()
    return {**PARTITION_HANDLE, "role_trusted_since": since}


def test_a_new_partition_role_that_refuses_is_waited_for_in_the_queue(rig: Rig) -> None:
    rig.sts.add_response("assume_role", creds())  # the cross-account role
    rig.sts.add_client_error("assume_role", "AccessDenied", "not authorized", http_status_code=403)
    with pytest.raises(WaitingError, match="propagating") as caught:
        rig.driver.auth_env(ENCLAVE_HANDLE, young(rig, 5.0))
    assert caught.value.retry_after_s == 20.0

    # Delivered again: the role is assumable now (the cross-account session is cached).
    rig.sts.add_response(
        "assume_role",
        creds(),
        {
            "RoleArn": PARTITION_HANDLE["partition_role_arn"],
            "RoleSessionName": "nclav-api",
            "DurationSeconds": 3600,
        },
    )
    env = rig.driver.auth_env(ENCLAVE_HANDLE, young(rig, 25.0))
    assert env["AWS_ACCESS_KEY_ID"] == "ASIAPARTITION0000000"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"


def test_an_old_role_that_refuses_uses_an_attempt_and_no_date_is_a_real_denial(rig: Rig) -> None:
    rig.sts.add_response("assume_role", creds())
    rig.sts.add_client_error("assume_role", "AccessDenied", "not authorized", http_status_code=403)
    with pytest.raises(TemporaryError, match="assumable") as caught:
        rig.driver.auth_env(ENCLAVE_HANDLE, young(rig, 600.0))
    assert not isinstance(caught.value, WaitingError)
    rig.sts.add_client_error("assume_role", "AccessDenied", "not authorized", http_status_code=403)
    with pytest.raises(PermanentError):
        rig.driver.auth_env(ENCLAVE_HANDLE, PARTITION_HANDLE)


def test_no_call_starts_that_the_invocation_cannot_see_through(rig: Rig) -> None:
    left = [30.0]
    rig.driver.set_time_left(lambda: left[0])
    rig.sts.add_response("assume_role", creds())
    rig.driver.auth_env(ENCLAVE_HANDLE, None)  # 30 s left: fine
    rig.driver.sessions.forget(ACCOUNT)
    left[0] = 3.0
    with pytest.raises(TemporaryError, match="only 3.0 s left"):
        rig.driver.auth_env(ENCLAVE_HANDLE, None)  # no call was made (the Stubber has none)


def test_clients_get_standard_retries_and_short_timeouts() -> None:
    driver = AwsDriver(CONFIG)
    client = driver.sessions.management("sts")
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert client.meta.config.connect_timeout == 5.0
    assert client.meta.config.read_timeout == 20.0


def test_a_role_attached_again_during_delete_is_retried(rig: Rig) -> None:
    iam = rig.iam
    iam.add_response("list_instance_profiles_for_role", {"InstanceProfiles": []})
    iam.add_response(
        "list_attached_role_policies", {"AttachedPolicies": [{"PolicyArn": ADMIN_POLICY}]}
    )
    iam.add_response("detach_role_policy", {}, {"RoleName": "r", "PolicyArn": ADMIN_POLICY})
    iam.add_response("list_role_policies", {"PolicyNames": ["inline"]})
    iam.add_response("delete_role_policy", {}, {"RoleName": "r", "PolicyName": "inline"})
    iam.add_client_error("delete_role", "DeleteConflict", "in use", http_status_code=409)
    with pytest.raises(TemporaryError, match="still in use"):
        delete_role(rig.clients["iam"], "r")
    iam.add_client_error(
        "list_instance_profiles_for_role", "NoSuchEntity", "gone", http_status_code=404
    )
    delete_role(rig.clients["iam"], "r")


# -- Route 53 and PrivateLink ----------------------------------------------------------------


def test_a_retried_create_hosted_zone_finds_the_first_zone(rig: Rig) -> None:
    r53 = rig.route53
    r53.add_response("list_hosted_zones_by_vpc", {"HostedZoneSummaries": [], "MaxItems": "100"})
    r53.add_client_error(
        "create_hosted_zone",
        "HostedZoneAlreadyExists",
        "same caller reference",
        http_status_code=409,
    )
    summary = {"HostedZoneId": "Z123", "Name": "dev.internal.", "Owner": {"OwningAccount": ACCOUNT}}
    r53.add_response(
        "list_hosted_zones_by_vpc", {"HostedZoneSummaries": [summary], "MaxItems": "100"}
    )
    r53.add_response(
        "change_tags_for_resource",
        {},
        {"ResourceType": "hostedzone", "ResourceId": "Z123", "AddTags": ANY},
    )
    assert (
        ensure_zone(rig.clients["route53"], "dev", "dev.internal", "vpc-1", "us-east-1") == "Z123"
    )


def test_an_endpoint_waiting_for_acceptance_is_accepted_by_the_exporter(rig: Rig) -> None:
    ec2 = rig.ec2
    ec2.add_response("describe_vpcs", {"Vpcs": [{"VpcId": "vpc-1", "CidrBlock": "10.1.0.0/16"}]})
    ec2.add_response(
        "describe_subnets",
        {"Subnets": [{"SubnetId": "subnet-1", "AvailabilityZone": "us-east-1a"}]},
    )
    ec2.add_response(
        "modify_vpc_endpoint_service_permissions",
        {"ReturnValue": True},
        {"ServiceId": "vpce-svc-1", "AddAllowedPrincipals": [f"arn:aws:iam::{ACCOUNT}:root"]},
    )
    ec2.add_response("describe_security_groups", {"SecurityGroups": []})
    ec2.add_response("create_security_group", {"GroupId": "sg-1"})
    ec2.add_response("authorize_security_group_ingress", {"Return": True})
    ec2.add_response("describe_vpc_endpoints", {"VpcEndpoints": []})
    endpoint = {
        "VpcEndpointId": "vpce-1",
        "State": "pendingAcceptance",
        "DnsEntries": [{"DnsName": "vpce-1.vpce-svc-1.us-east-1.vpce.amazonaws.com"}],
    }
    ec2.add_response("create_vpc_endpoint", {"VpcEndpoint": endpoint})
    ec2.add_response(
        "accept_vpc_endpoint_connections",
        {"Unsuccessful": []},
        {"ServiceId": "vpce-svc-1", "VpcEndpointIds": ["vpce-1"]},
    )
    export = {
        "driver": "aws",
        "kind": "export",
        "type": "tcp",
        "mode": "privatelink",
        "account_id": "333333333333",
        "region": "us-east-1",
        "service_id": "vpce-svc-1",
        "service_name": "com.amazonaws.vpce.us-east-1.vpce-svc-1",
        "port": 5432,
        "outputs": {"hostname": "10.9.1.10", "port": "5432"},
    }
    imp = Import(**{"from": "prod", "export_name": "db", "alias": "db"})
    handle = provision_import(rig.factory, ACCOUNT, DEV, imp, export)  # type: ignore[arg-type]
    assert handle["vpc_endpoint_id"] == "vpce-1"
    assert handle["outputs"]["hostname"] == "vpce-1.vpce-svc-1.us-east-1.vpce.amazonaws.com"


# -- names -------------------------------------------------------------------------------------


def test_names() -> None:
    assert account_name(CONFIG, "product-a-dev") == "acme-product-a-dev"
    # Lossy sanitizing would let 'a.b' and 'a_b' share an account: a hash keeps them apart.
    dotted, underscored = account_name(CONFIG, "a.b"), account_name(CONFIG, "a_b")
    assert dotted != underscored and dotted.startswith("acme-a-b-")
    long_id = "x" * 63
    assert len(account_name(CONFIG, long_id)) <= 50
    assert all(len(e) <= 64 for e in account_emails(CONFIG, long_id, 3))
    assert account_emails(CONFIG, "dev", 2) == [
        "aws+acme-dev@example.com",
        "aws+acme-dev-2@example.com",
    ]
    assert partition_role_name("api") == "nclav-partition-api"
    long_role = partition_role_name("p" * 63)
    assert len(long_role) == 64 and long_role != partition_role_name("p" * 62 + "q")
    assert (
        principal_for("arn:aws:sts::1:assumed-role/nclav-server/task-1")
        == "arn:aws:iam::1:role/nclav-server"
    )
    assert principal_for("arn:aws:sts::1:federated-user/bob") == "arn:aws:iam::1:root"
