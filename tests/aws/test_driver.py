"""The AWS driver against moto in server mode: real boto3 calls over HTTP, accounts included.

moto's CreateAccount succeeds at once and its AssumeRole switches the account of every call
made with the returned credentials, so vending, the role chain and the per-account resources
are real here. What moto cannot produce is in test_driver_stubbed.py.
"""

from __future__ import annotations

import importlib.metadata
import json
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError

from functions_aws.driver import AwsDriver, AwsDriverConfig, make_driver
from nclav.engine.driver import OrphanScanner
from nclav.errors import ConfigurationError, PermanentError, SpecError
from nclav.model import (
    Cloud,
    Dns,
    EnclaveConfig,
    EnclaveTarget,
    Export,
    ExportType,
    Import,
    Network,
    PartitionConfig,
)
from nclav.runtime.drivers import drivers_for
from nclav.state import EnclaveState, PartitionState

if TYPE_CHECKING:
    from nclav.engine.driver import Driver

REGION = "us-east-1"
MANAGEMENT = "123456789012"  # moto's default account


@pytest.fixture
def org(aws: str) -> dict[str, str]:
    """An organization with an OU for enclaves (moto needs both before CreateAccount)."""
    client = boto3.client("organizations")
    client.create_organization(FeatureSet="ALL")
    root = client.list_roots()["Roots"][0]["Id"]
    ou = client.create_organizational_unit(ParentId=root, Name="enclaves")
    return {"root": root, "ou": ou["OrganizationalUnit"]["Id"]}


# moto loads AWS-managed policies (AdministratorAccess) only when its server starts with
# MOTO_IAM_LOAD_MANAGED_POLICIES, which makes every account it creates ~2 s slower: partition
# roles get a customer-managed stand-in instead, made in each enclave account by ``admin``.
# The default (AdministratorAccess) is checked in test_driver_stubbed.py.
STAND_IN_POLICY = "arn:aws:iam::{account_id}:policy/nclav-admin"


def admin(account_id: str) -> None:
    document = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    iam = in_account(account_id, "iam")
    try:
        iam.create_policy(PolicyName="nclav-admin", PolicyDocument=json.dumps(document))
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "EntityAlreadyExists"


def make(org: dict[str, str], **extra: Any) -> AwsDriver:
    config = AwsDriverConfig(
        org_unit_id=org["ou"], email_domain="example.com", account_prefix="acme", **extra
    )
    return AwsDriver(config, partition_policy_arns=(STAND_IN_POLICY,))


@pytest.fixture
def driver(org: dict[str, str]) -> AwsDriver:
    return make(org)


def in_account(account_id: str, service: str) -> Any:
    """A client acting in ``account_id`` (moto switches accounts on assumed credentials)."""
    creds = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/OrganizationAccountAccessRole",
        RoleSessionName="test",
    )["Credentials"]
    return boto3.client(
        service,
        region_name=REGION,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def enclave(eid: str = "dev", cidr: str = "10.1", **extra: Any) -> EnclaveConfig:
    fields: dict[str, Any] = {
        "id": eid,
        "name": eid,
        "region": REGION,
        "network": Network(vpc_cidr=f"{cidr}.0.0/16", subnets=(f"{cidr}.1.0/24", f"{cidr}.2.0/24")),
        "dns": Dns(zone=f"{eid}.internal"),
        **extra,
    }
    return EnclaveConfig(**fields)


def partition(pid: str = "api") -> PartitionConfig:
    return PartitionConfig(id=pid, name=pid)


def tags_of(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


# -- accounts ------------------------------------------------------------------------------


def test_the_driver_is_a_driver(driver: AwsDriver) -> None:
    port: Driver = driver
    assert port.cloud == Cloud.AWS


def test_provision_enclave_vends_an_account_in_the_ou(
    driver: AwsDriver, org: dict[str, str]
) -> None:
    handle, context = driver.provision_enclave(enclave(), None)

    account = handle["account_id"]
    orgs = boto3.client("organizations")
    described = orgs.describe_account(AccountId=account)["Account"]
    assert described["Name"] == "acme-dev"
    assert described["Email"] == "aws+acme-dev@example.com"
    assert orgs.list_parents(ChildId=account)["Parents"][0]["Id"] == org["ou"]
    assert tags_of(orgs.list_tags_for_resource(ResourceId=account)["Tags"]) == {
        "nclav-managed": "true",
        "nclav-enclave": "dev",
    }
    assert handle["provisioning_complete"] is True
    assert handle["driver"] == "aws" and handle["kind"] == "enclave"
    assert context == {
        "nclav_project_id": account,
        "nclav_account_id": account,
        "nclav_region": REGION,
        "nclav_role_arn": f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole",
        "nclav_enclave": "dev",
    }


def test_enclave_network_zone_and_identity_live_in_the_new_account(driver: AwsDriver) -> None:
    handle, context = driver.provision_enclave(enclave(identity="dev-identity"), None)
    account = handle["account_id"]
    assert account != MANAGEMENT

    ec2 = in_account(account, "ec2")
    (vpc,) = ec2.describe_vpcs(VpcIds=[handle["vpc_id"]])["Vpcs"]
    assert vpc["CidrBlock"] == "10.1.0.0/16"
    assert tags_of(vpc["Tags"]) == {
        "nclav-managed": "true",
        "nclav-enclave": "dev",
        "Name": "nclav-dev",
    }
    for attribute in ("enableDnsSupport", "enableDnsHostnames"):
        value = ec2.describe_vpc_attribute(VpcId=vpc["VpcId"], Attribute=attribute)
        assert next(v for k, v in value.items() if k.lower() == attribute.lower())["Value"]
    subnets = ec2.describe_subnets(SubnetIds=handle["subnet_ids"])["Subnets"]
    assert sorted(s["CidrBlock"] for s in subnets) == ["10.1.1.0/24", "10.1.2.0/24"]
    names = sorted(tags_of(s["Tags"])["Name"] for s in subnets)
    assert names == ["nclav-dev-subnet-0", "nclav-dev-subnet-1"]
    assert len({s["AvailabilityZone"] for s in subnets}) == 2  # PrivateLink wants one per AZ
    # Nothing was made in the management account.
    assert (
        boto3.client("ec2").describe_vpcs(
            Filters=[{"Name": "tag:nclav-enclave", "Values": ["dev"]}]
        )["Vpcs"]
        == []
    )

    r53 = in_account(account, "route53")
    zone = r53.get_hosted_zone(Id=handle["route53_zone_id"])
    assert zone["HostedZone"]["Name"] == "dev.internal."
    assert zone["HostedZone"]["Config"]["PrivateZone"] is True
    assert [v["VPCId"] for v in zone["VPCs"]] == [vpc["VpcId"]]
    zone_tags = r53.list_tags_for_resource(
        ResourceType="hostedzone", ResourceId=zone["HostedZone"]["Id"].split("/")[-1]
    )
    assert tags_of(zone_tags["ResourceTagSet"]["Tags"])["nclav-enclave"] == "dev"

    role = in_account(account, "iam").get_role(RoleName="dev-identity")["Role"]
    assert handle["identity_role_arn"] == role["Arn"] == context["nclav_role_arn"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    principal = trust["Statement"][0]["Principal"]["AWS"]
    assert principal == f"arn:aws:iam::{MANAGEMENT}:user/moto"  # concrete, never a wildcard


def test_provision_enclave_again_finds_what_the_first_attempt_made(driver: AwsDriver) -> None:
    config = enclave()
    first, _ = driver.provision_enclave(config, None)
    # A retry that lost the first handle (the engine stores it only on success) ...
    again, _ = make_fresh(driver).provision_enclave(config, None)
    # ... and a normal re-run with the stored handle.
    third, _ = driver.provision_enclave(config, first)

    assert first == again == third
    accounts = boto3.client("organizations").list_accounts()["Accounts"]
    assert [a["Name"] for a in accounts].count("acme-dev") == 1
    ec2 = in_account(first["account_id"], "ec2")
    assert (
        len(ec2.describe_vpcs(Filters=[{"Name": "tag:nclav-enclave", "Values": ["dev"]}])["Vpcs"])
        == 1
    )
    assert (
        len(
            ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [first["vpc_id"]]}])[
                "Subnets"
            ]
        )
        == 2
    )
    zones = in_account(first["account_id"], "route53").list_hosted_zones()["HostedZones"]
    assert len(zones) == 1


def make_fresh(driver: AwsDriver) -> AwsDriver:
    """Another process: no cached account ids or sessions."""
    return AwsDriver(driver.config, partition_policy_arns=(STAND_IN_POLICY,))


def test_a_new_subnet_is_added_in_place(driver: AwsDriver) -> None:
    first, _ = driver.provision_enclave(enclave(), None)
    wider = enclave(
        network=Network(
            vpc_cidr="10.1.0.0/16", subnets=("10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24")
        )
    )
    second, _ = driver.provision_enclave(wider, first)
    assert second["vpc_id"] == first["vpc_id"]
    assert second["subnet_ids"][:2] == first["subnet_ids"] and len(second["subnet_ids"]) == 3


def test_changing_the_vpc_cidr_is_a_permanent_error(driver: AwsDriver) -> None:
    first, _ = driver.provision_enclave(enclave(), None)
    with pytest.raises(PermanentError, match="cannot change in place"):
        driver.provision_enclave(enclave(cidr="10.9"), first)


def test_an_enclave_without_network_still_gets_a_vpc(driver: AwsDriver) -> None:
    bare = EnclaveConfig(id="bare", name="bare", region=REGION)
    handle, _ = driver.provision_enclave(bare, None)
    (vpc,) = in_account(handle["account_id"], "ec2").describe_vpcs(VpcIds=[handle["vpc_id"]])[
        "Vpcs"
    ]
    assert vpc["CidrBlock"] == "10.0.0.0/16"
    assert handle["subnet_ids"] == [] and "route53_zone_id" not in handle


def test_a_management_role_is_assumed_for_organizations_calls(org: dict[str, str]) -> None:
    mgmt = f"arn:aws:iam::{MANAGEMENT}:role/nclav-server"
    driver = make(org, role_arn=mgmt)
    handle, _ = driver.provision_enclave(enclave(identity="dev-identity"), None)
    caller = driver.sessions.management("sts").get_caller_identity()["Arn"]
    assert caller.startswith(f"arn:aws:sts::{MANAGEMENT}:assumed-role/nclav-server/")
    role = in_account(handle["account_id"], "iam").get_role(RoleName="dev-identity")["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"]["AWS"] == mgmt


# -- partitions ----------------------------------------------------------------------------


def test_partition_role_and_its_credentials(driver: AwsDriver) -> None:
    config = enclave()
    enclave_handle, _ = driver.provision_enclave(config, None)
    account = enclave_handle["account_id"]
    admin(account)
    # A fresh process (the terraform function): the account comes from the enclave's handle.
    handle = make_fresh(driver).provision_partition(
        config, partition(), None, enclave_handle=enclave_handle
    )

    assert handle["partition_role_arn"] == f"arn:aws:iam::{account}:role/nclav-partition-api"
    assert handle["account_id"] == account
    iam = in_account(account, "iam")
    role = iam.get_role(RoleName="nclav-partition-api")["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert set(trust["Statement"][0]["Principal"]["AWS"]) == {
        f"arn:aws:iam::{MANAGEMENT}:user/moto",
        f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole",
    }
    assert tags_of(iam.list_role_tags(RoleName="nclav-partition-api")["Tags"]) == {
        "nclav-managed": "true",
        "nclav-enclave": "dev",
        "nclav-partition": "api",
    }
    attached = iam.list_attached_role_policies(RoleName="nclav-partition-api")
    assert [p["PolicyArn"] for p in attached["AttachedPolicies"]] == [
        STAND_IN_POLICY.format(account_id=account)
    ]

    env = driver.auth_env(enclave_handle, handle)
    assert set(env) == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    }
    assert env["AWS_ACCESS_KEY_ID"] != "testing"  # never the server's own credentials
    who = boto3.client(
        "sts",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=env["AWS_SESSION_TOKEN"],
        region_name=env["AWS_REGION"],
    ).get_caller_identity()
    assert who["Account"] == account
    assert ":assumed-role/nclav-partition-api/nclav-api" in who["Arn"]


class Recorder:
    """A session factory whose sessions record every AWS call (``service:Operation``)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.assumed: list[str] = []

    def __call__(self, **kwargs: Any) -> boto3.Session:
        session = boto3.Session(**kwargs)
        session.events.register("before-call", self._record)
        return session

    def _record(self, model: Any, params: Any = None, **_: Any) -> None:
        self.calls.append(f"{model.service_model.endpoint_prefix}:{model.name}")
        if model.name == "AssumeRole":
            self.assumed.append(str((params or {}).get("body", {}).get("RoleArn", "")))


@pytest.mark.parametrize("outside", [False, True], ids=["management-account", "role-arn"])
def test_the_terraform_function_never_calls_organizations(
    org: dict[str, str], outside: bool
) -> None:
    """Partition steps run in the IaC worker, whose role has no Organizations permission;
    outside the management account (NCLAV_AWS_ROLE_ARN) the chain starts with that role."""
    mgmt = f"arn:aws:iam::{MANAGEMENT}:role/nclav-management"
    driver = make(org, role_arn=mgmt) if outside else make(org)
    config = enclave()
    enclave_handle, _ = driver.provision_enclave(config, None)
    admin(enclave_handle["account_id"])
    recorder = Recorder()
    iac = AwsDriver(driver.config, recorder, partition_policy_arns=(STAND_IN_POLICY,))

    handle = iac.provision_partition(config, partition(), None, enclave_handle=enclave_handle)
    iac.auth_env(enclave_handle, handle)
    iac.teardown_partition("dev", "api", handle, enclave_handle=enclave_handle)

    assert recorder.calls  # the hook saw the calls ...
    assert "sts:AssumeRole" in recorder.calls and "iam:CreateRole" in recorder.calls
    assert not [c for c in recorder.calls if c.startswith("organizations:")]  # ... none of these
    if outside:  # the first call with the function's own credentials assumes the role
        assert recorder.assumed[0] == mgmt
    with pytest.raises(PermanentError, match="no AWS account handle"):
        iac.provision_partition(config, partition(), None)


def test_provision_partition_twice_keeps_one_role(driver: AwsDriver) -> None:
    config = enclave()
    enclave_handle = driver.provision_enclave(config, None)[0]
    admin(enclave_handle["account_id"])
    first = driver.provision_partition(config, partition(), None, enclave_handle=enclave_handle)
    again = driver.provision_partition(config, partition(), first, enclave_handle=enclave_handle)
    assert first == again
    roles = in_account(first["account_id"], "iam").list_roles()["Roles"]
    assert [r["RoleName"] for r in roles].count("nclav-partition-api") == 1


def test_auth_env_without_a_partition_role_stays_in_the_enclave_account(driver: AwsDriver) -> None:
    handle, _ = driver.provision_enclave(enclave(), None)
    env = driver.auth_env(handle, None)
    who = boto3.client(
        "sts",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=env["AWS_SESSION_TOKEN"],
    ).get_caller_identity()
    assert who["Account"] == handle["account_id"] != MANAGEMENT
    with pytest.raises(PermanentError, match="no AWS account"):
        driver.auth_env(None, None)


def test_teardown_partition_deletes_the_role_and_what_pins_it(driver: AwsDriver) -> None:
    config = enclave()
    enclave_handle = driver.provision_enclave(config, None)[0]
    admin(enclave_handle["account_id"])
    handle = driver.provision_partition(config, partition(), None, enclave_handle=enclave_handle)
    iam = in_account(handle["account_id"], "iam")
    iam.put_role_policy(
        RoleName="nclav-partition-api",
        PolicyName="extra",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    iam.create_instance_profile(InstanceProfileName="api-profile")
    iam.add_role_to_instance_profile(
        InstanceProfileName="api-profile", RoleName="nclav-partition-api"
    )

    driver.teardown_partition("dev", "api", handle)

    with pytest.raises(ClientError) as caught:
        iam.get_role(RoleName="nclav-partition-api")
    assert caught.value.response["Error"]["Code"] == "NoSuchEntity"
    driver.teardown_partition("dev", "api", handle)  # again: already gone is fine
    # No partition handle (a first apply that failed after making the role): by name.
    driver.teardown_partition("dev", "api", None, enclave_handle=enclave_handle)
    driver.teardown_partition("dev", "api", None)  # nothing to locate it by: nothing to do


# -- exports and imports -------------------------------------------------------------------


def http_export(to: Any = "any_enclave") -> Export:
    return Export(name="api-http", target_partition="api", type=ExportType.HTTP, to=to)


def test_http_export_and_import_over_privatelink(driver: AwsDriver) -> None:
    producer, consumer = enclave("prod", "10.1"), enclave("cons", "10.2")
    p_handle, _ = driver.provision_enclave(producer, None)
    c_handle, _ = driver.provision_enclave(consumer, None)
    outputs = {"hostname": "10.1.1.10", "port": "8443"}

    export = driver.provision_export(producer, http_export({"enclave": "cons"}), outputs)
    assert export["mode"] == "privatelink" and export["service_owned"] and export["nlb_owned"]
    p_ec2 = in_account(p_handle["account_id"], "ec2")
    (service,) = p_ec2.describe_vpc_endpoint_service_configurations(
        ServiceIds=[export["service_id"]]
    )["ServiceConfigurations"]
    assert service["NetworkLoadBalancerArns"] == [export["nlb_arn"]]
    assert tags_of(service["Tags"])["nclav-export"] == "api-http"
    elb = in_account(p_handle["account_id"], "elbv2")
    (lb,) = elb.describe_load_balancers(LoadBalancerArns=[export["nlb_arn"]])["LoadBalancers"]
    assert lb["Scheme"] == "internal"
    health = elb.describe_target_health(TargetGroupArn=export["target_group_arn"])
    assert [t["Target"]["Id"] for t in health["TargetHealthDescriptions"]] == ["10.1.1.10"]
    assert export["outputs"]["vpce_service_name"] == service["ServiceName"]
    # Wired again (a redelivered step): the same service and load balancer.
    assert driver.provision_export(producer, http_export({"enclave": "cons"}), outputs) == export

    imp = Import(**{"from": "prod", "export_name": "api-http", "alias": "api"})
    handle = driver.provision_import(consumer, imp, export)
    c_ec2 = in_account(c_handle["account_id"], "ec2")
    (endpoint,) = c_ec2.describe_vpc_endpoints(VpcEndpointIds=[handle["vpc_endpoint_id"]])[
        "VpcEndpoints"
    ]
    assert endpoint["VpcId"] == c_handle["vpc_id"]
    assert endpoint["ServiceName"] == service["ServiceName"]
    assert endpoint["VpcEndpointType"] == "Interface"
    allowed = p_ec2.describe_vpc_endpoint_service_permissions(ServiceId=export["service_id"])
    assert [p["Principal"] for p in allowed["AllowedPrincipals"]] == [
        f"arn:aws:iam::{c_handle['account_id']}:root"
    ]
    assert handle["outputs"] == {
        "hostname": "api.cons.internal",
        "port": "8443",
        "vpce_service_name": service["ServiceName"],
    }
    records = in_account(c_handle["account_id"], "route53").list_resource_record_sets(
        HostedZoneId=c_handle["route53_zone_id"]
    )["ResourceRecordSets"]
    cname = next(r for r in records if r["Type"] == "CNAME")
    assert cname["Name"].rstrip(".") == "api.cons.internal"
    assert cname["ResourceRecords"][0]["Value"] == endpoint["DnsEntries"][0]["DnsName"]
    again = driver.provision_import(consumer, imp, export)
    assert again["vpc_endpoint_id"] == handle["vpc_endpoint_id"]

    driver.teardown_import("cons", "api", handle)
    live = [
        e
        for e in c_ec2.describe_vpc_endpoints()["VpcEndpoints"]
        if e["State"] not in ("deleted", "deleting")
    ]
    assert live == []
    records = in_account(c_handle["account_id"], "route53").list_resource_record_sets(
        HostedZoneId=c_handle["route53_zone_id"]
    )["ResourceRecordSets"]
    assert [r for r in records if r["Type"] == "CNAME"] == []
    allowed = p_ec2.describe_vpc_endpoint_service_permissions(ServiceId=export["service_id"])
    assert allowed["AllowedPrincipals"] == []

    driver.teardown_export("prod", "api-http", export)
    services = p_ec2.describe_vpc_endpoint_service_configurations()["ServiceConfigurations"]
    assert [s["ServiceId"] for s in services] == []
    assert elb.describe_load_balancers()["LoadBalancers"] == []
    driver.teardown_export("prod", "api-http", export)  # again: nothing left, no error


def test_an_export_on_a_terraform_made_nlb(driver: AwsDriver) -> None:
    producer = enclave("prod")
    p_handle, _ = driver.provision_enclave(producer, None)
    elb = in_account(p_handle["account_id"], "elbv2")
    lb = elb.create_load_balancer(
        Name="tf-nlb", Type="network", Scheme="internal", Subnets=p_handle["subnet_ids"][:1]
    )
    arn = lb["LoadBalancers"][0]["LoadBalancerArn"]

    export = driver.provision_export(
        producer, http_export(), {"hostname": "api.prod", "port": "443", "nlb_arn": arn}
    )
    assert export["nlb_arn"] == arn and not export["nlb_owned"] and export["service_owned"]
    driver.teardown_export("prod", "api-http", export)
    assert [lb["LoadBalancerArn"] for lb in elb.describe_load_balancers()["LoadBalancers"]] == [arn]


def test_a_dns_hostname_without_an_nlb_is_a_permanent_error(driver: AwsDriver) -> None:
    producer = enclave("prod")
    driver.provision_enclave(producer, None)
    with pytest.raises(PermanentError, match="nlb_arn"):
        driver.provision_export(producer, http_export(), {"hostname": "api.example", "port": "443"})


def test_a_public_export_passes_its_outputs_through(driver: AwsDriver) -> None:
    producer = enclave("prod")
    driver.provision_enclave(producer, None)
    export = driver.provision_export(
        producer, http_export("public"), {"hostname": "api.example.com", "port": "443"}
    )
    assert export["mode"] == "pass-through"
    consumer = enclave("cons", "10.2")
    driver.provision_enclave(consumer, None)
    imp = Import(**{"from": "prod", "export_name": "api-http", "alias": "api"})
    handle = driver.provision_import(consumer, imp, export)
    assert handle["outputs"] == {"hostname": "api.example.com", "port": "443"}
    driver.teardown_import("cons", "api", handle)
    driver.teardown_export("prod", "api-http", export)


def test_queue_export_and_import(driver: AwsDriver) -> None:
    producer, consumer = enclave("prod", "10.1"), enclave("cons", "10.2")
    p_handle, _ = driver.provision_enclave(producer, None)
    c_handle, _ = driver.provision_enclave(consumer, None)
    sqs = in_account(p_handle["account_id"], "sqs")
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    spec = Export(
        name="jobs",
        target_partition="worker",
        type=ExportType.QUEUE,
        to=EnclaveTarget(enclave="cons"),
    )

    export = driver.provision_export(producer, spec, {"queue_url": url})
    assert export["queue_arn"].endswith(f":{p_handle['account_id']}:jobs")
    imp = Import(**{"from": "prod", "export_name": "jobs", "alias": "jobs"})
    handle = driver.provision_import(consumer, imp, export)
    assert handle["outputs"] == {"queue_url": url}

    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]
    )
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"AWS": f"arn:aws:iam::{c_handle['account_id']}:root"}
    assert "sqs:SendMessage" in statement["Action"]
    driver.provision_import(consumer, imp, export)  # again: still one statement
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]
    )
    assert len(policy["Statement"]) == 1
    (endpoint,) = in_account(c_handle["account_id"], "ec2").describe_vpc_endpoints(
        VpcEndpointIds=[handle["sqs_endpoint_id"]]
    )["VpcEndpoints"]
    assert endpoint["ServiceName"] == f"com.amazonaws.{REGION}.sqs"

    driver.teardown_import("cons", "jobs", handle)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"]).get(
        "Attributes", {}
    )
    assert not attributes.get("Policy")


def test_an_import_of_an_unwired_export_is_a_permanent_error(driver: AwsDriver) -> None:
    imp = Import(**{"from": "prod", "export_name": "api-http", "alias": "api"})
    with pytest.raises(PermanentError, match="not wired"):
        driver.provision_import(enclave("cons"), imp, None)


# -- enclave teardown and observation -------------------------------------------------------


def test_teardown_enclave_closes_the_account(driver: AwsDriver) -> None:
    config = enclave()
    handle, _ = driver.provision_enclave(config, None)
    assert driver.observe_enclave(handle) == {"exists": True, "healthy": True, "state": "ACTIVE"}

    driver.teardown_enclave(config, handle)

    account = boto3.client("organizations").describe_account(AccountId=handle["account_id"])
    assert account["Account"]["Status"] == "SUSPENDED"
    assert driver.observe_enclave(handle) == {
        "exists": True,
        "healthy": False,
        "state": "SUSPENDED",
    }
    driver.teardown_enclave(config, handle)  # AccountAlreadyClosedException: fine
    driver.teardown_enclave(None, None)  # nothing known: fine


def test_teardown_without_a_handle_finds_the_account(driver: AwsDriver) -> None:
    config = enclave()
    handle, _ = driver.provision_enclave(config, None)
    make_fresh(driver).teardown_enclave(config, None)
    account = boto3.client("organizations").describe_account(AccountId=handle["account_id"])
    assert account["Account"]["Status"] == "SUSPENDED"


def test_an_enclave_made_again_after_teardown_gets_a_new_account(driver: AwsDriver) -> None:
    config = enclave()
    first, _ = driver.provision_enclave(config, None)
    driver.teardown_enclave(config, first)
    second, _ = driver.provision_enclave(config, None)
    assert second["account_id"] != first["account_id"]
    # The closed account keeps its email for 90 days: the next one of the family is used.
    assert second["account_email"] == "aws+acme-dev-2@example.com"


# -- orphans -------------------------------------------------------------------------------


def test_orphans_are_tagged_resources_of_partitions_no_longer_active(driver: AwsDriver) -> None:
    config = enclave()
    handle, _ = driver.provision_enclave(config, None)
    account = handle["account_id"]
    admin(account)
    driver.provision_partition(config, partition("api"), None, enclave_handle=handle)
    driver.provision_partition(config, partition("old"), None, enclave_handle=handle)
    ec2, sqs = in_account(account, "ec2"), in_account(account, "sqs")

    def tagged(pid: str) -> list[dict[str, str]]:
        return [
            {"Key": "nclav-managed", "Value": "true"},
            {"Key": "nclav-enclave", "Value": "dev"},
            {"Key": "nclav-partition", "Value": pid},
        ]

    group = ec2.create_security_group(
        GroupName="old-sg",
        Description="x",
        VpcId=handle["vpc_id"],
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tagged("old")}],
    )["GroupId"]
    sqs.create_queue(QueueName="old-q", tags={t["Key"]: t["Value"] for t in tagged("old")})
    sqs.create_queue(QueueName="api-q", tags={t["Key"]: t["Value"] for t in tagged("api")})

    found = driver.enclave_orphans(handle, ["api"])

    by_name = {o.resource_id.rsplit(":", 1)[-1].rsplit("/", 1)[-1]: o for o in found}
    assert set(by_name) == {group, "old-q", "nclav-partition-old"}
    assert by_name[group].resource_type == "ec2:security-group"
    assert by_name["old-q"].resource_type == "sqs"
    assert by_name["nclav-partition-old"].resource_type == "iam:role"
    assert all(o.partition_id == "old" and o.enclave_id == "dev" for o in found)
    assert all(o.cloud == Cloud.AWS and o.tags["nclav-partition"] == "old" for o in found)
    assert all("no longer has" in o.reason for o in found)
    # The enclave's own VPC, subnets and zone carry no partition tag: never orphans.
    assert driver.enclave_orphans(handle, ["api", "old"]) == []
    assert driver.enclave_orphans(None, []) == []

    left = driver.partition_resources(handle, "api")
    assert any(arn.endswith(":api-q") for arn in left)
    assert any(arn.endswith("role/nclav-partition-api") for arn in left)


def test_the_driver_is_an_orphan_scanner_over_applied_state(driver: AwsDriver) -> None:
    """The port ``GET /orphans`` calls: every applied AWS enclave's account, nothing else."""
    assert isinstance(driver, OrphanScanner)
    config = enclave()
    handle, _ = driver.provision_enclave(config, None)
    sqs = in_account(handle["account_id"], "sqs")
    for pid in ("api", "gone"):
        tags = {"nclav-managed": "true", "nclav-enclave": "dev", "nclav-partition": pid}
        sqs.create_queue(QueueName=f"{pid}-q", tags=tags)
    applied = [
        EnclaveState(enclave_id="dev", enclave_handle=handle, partitions={"api": PartitionState()}),
        EnclaveState(enclave_id="local-one", enclave_handle={"driver": "local", "id": "x"}),
    ]
    found = driver.list_orphans(applied)
    assert [(o.resource_id.rsplit(":", 1)[-1], o.partition_id) for o in found] == [
        ("gone-q", "gone")
    ]
    assert found[0].to_json()["cloud"] == "aws"
    assert driver.list_orphans([]) == []


def test_orphan_scan_follows_pagination(driver: AwsDriver) -> None:
    config = enclave()
    handle, _ = driver.provision_enclave(config, None)
    sqs = in_account(handle["account_id"], "sqs")
    for i in range(120):  # the tagging API pages at 100
        sqs.create_queue(
            QueueName=f"gone-{i}",
            tags={"nclav-managed": "true", "nclav-enclave": "dev", "nclav-partition": "gone"},
        )
    assert len(driver.enclave_orphans(handle, [])) == 120


# -- registration --------------------------------------------------------------------------


def test_the_core_finds_the_driver_through_its_entry_point(
    org: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"org_unit_id": org["ou"], "email_domain": "example.com", "default_region": None}
    drivers = drivers_for(Cloud.AWS, (Cloud.LOCAL,), {"aws": options})
    assert isinstance(drivers[Cloud.AWS], AwsDriver)
    assert drivers[Cloud.AWS].config.default_region == "us-east-1"
    assert drivers[Cloud.LOCAL].cloud == Cloud.LOCAL
    with pytest.raises(SpecError, match="--aws-org-unit-id"):
        drivers_for(Cloud.AWS, (), {"aws": {"email_domain": "example.com"}})
    # a cloud whose plugin is not installed (gcp's hidden: this installation may have it)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda **kw: importlib.metadata.EntryPoints(e for e in real(**kw) if e.name != "gcp"),
    )
    with pytest.raises(ConfigurationError, match="no gcp driver in this installation"):
        drivers_for(Cloud.GCP, ())
    assert (
        make_driver({"org_unit_id": "ou-1", "email_domain": "@x.org"}).config.email_domain
        == "x.org"
    )
