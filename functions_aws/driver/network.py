"""The enclave's VPC, subnets and Route 53 private zone (cloud-drivers-spec §4.4 steps 6-9).

CreateVpc and CreateSubnet take no idempotency token and Route 53 gives a second zone for a
repeated caller reference in moto, so each resource is looked up first: the VPC by its nclav
tags, subnets by CIDR inside that VPC, the zone by name among the VPC's zones.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from functions_aws.driver.config import DEFAULT_VPC_CIDR, ENCLAVE, MANAGED, tags
from functions_aws.driver.errors import aws_errors, error_code
from nclav.errors import PermanentError

if TYPE_CHECKING:
    from nclav.model import EnclaveConfig

logger = logging.getLogger(__name__)


def find_vpc(ec2: Any, enclave_id: str) -> dict[str, Any] | None:
    with aws_errors(f"ec2:DescribeVpcs {enclave_id}"):
        vpcs = ec2.describe_vpcs(
            Filters=[
                {"Name": f"tag:{ENCLAVE}", "Values": [enclave_id]},
                {"Name": f"tag:{MANAGED}", "Values": ["true"]},
            ]
        )["Vpcs"]
    if len(vpcs) > 1:
        # Only a race between two first attempts can do this; always pick the same one.
        logger.warning("enclave %s has %d nclav VPCs; using the first by id", enclave_id, len(vpcs))
    return min(vpcs, key=lambda v: v["VpcId"]) if vpcs else None


def ensure_vpc(ec2: Any, enclave: EnclaveConfig) -> dict[str, Any]:
    """The enclave's VPC (always created, even without ``network:``), DNS support on."""
    cidr = (enclave.network.vpc_cidr if enclave.network else None) or DEFAULT_VPC_CIDR
    vpc = find_vpc(ec2, enclave.id)
    if vpc is not None and vpc["CidrBlock"] != cidr:
        raise PermanentError(
            f"enclave {enclave.id}: network.vpc_cidr is {cidr} but its VPC {vpc['VpcId']} has "
            f"{vpc['CidrBlock']}; a VPC's CIDR cannot change in place"
        )
    if vpc is None:
        with aws_errors(f"ec2:CreateVpc {enclave.id}"):
            vpc = ec2.create_vpc(
                CidrBlock=cidr,
                TagSpecifications=[
                    {"ResourceType": "vpc", "Tags": tags(enclave.id, Name=f"nclav-{enclave.id}")}
                ],
            )["Vpc"]
    vpc_id = vpc["VpcId"]
    # One attribute per call (an API rule); private zones resolve only with both on.
    with aws_errors(f"ec2:ModifyVpcAttribute {vpc_id}"):
        ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsSupport={"Value": True})
        ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    return dict(vpc)


def ensure_subnets(ec2: Any, enclave: EnclaveConfig, vpc_id: str) -> list[str]:
    """One subnet per ``network.subnets`` CIDR, spread over the region's zones.

    Spreading matters for PrivateLink: a load balancer or interface endpoint takes at most one
    subnet per availability zone. Subnets dropped from the config are left in place (they may
    hold workloads); they go with the account.
    """
    wanted = list(enclave.network.subnets) if enclave.network else []
    if not wanted:
        return []
    with aws_errors(f"ec2:DescribeSubnets {vpc_id}"):
        existing = {
            s["CidrBlock"]: s["SubnetId"]
            for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
                "Subnets"
            ]
        }
        zones = [
            z["ZoneName"]
            for z in ec2.describe_availability_zones(
                Filters=[{"Name": "state", "Values": ["available"]}]
            )["AvailabilityZones"]
            if z.get("ZoneType", "availability-zone") == "availability-zone"
        ]
    out = []
    for i, cidr in enumerate(wanted):
        if cidr in existing:
            out.append(existing[cidr])
            continue
        extra = {"AvailabilityZone": sorted(zones)[i % len(zones)]} if zones else {}
        name = f"nclav-{enclave.id}-subnet-{i}"
        with aws_errors(f"ec2:CreateSubnet {cidr}"):
            subnet = ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=cidr,
                TagSpecifications=[{"ResourceType": "subnet", "Tags": tags(enclave.id, Name=name)}],
                **extra,
            )["Subnet"]
        out.append(subnet["SubnetId"])
    return out


def enclave_subnets(ec2: Any, vpc_id: str) -> list[str]:
    with aws_errors(f"ec2:DescribeSubnets {vpc_id}"):
        subnets = ec2.describe_subnets(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": f"tag:{MANAGED}", "Values": ["true"]},
            ]
        )["Subnets"]
    # One per availability zone (the rule for NLBs and interface endpoints).
    by_zone: dict[str, str] = {}
    for subnet in sorted(subnets, key=lambda s: s["SubnetId"]):
        by_zone.setdefault(subnet.get("AvailabilityZone", subnet["SubnetId"]), subnet["SubnetId"])
    return sorted(by_zone.values())


def _zones_of_vpc(r53: Any, vpc_id: str, region: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"VPCId": vpc_id, "VPCRegion": region}
    with aws_errors(f"route53:ListHostedZonesByVPC {vpc_id}"):
        while True:
            page = r53.list_hosted_zones_by_vpc(**kwargs)
            out.extend(page.get("HostedZoneSummaries", []))
            if not page.get("NextToken"):
                return out
            kwargs["NextToken"] = page["NextToken"]


def find_zone(r53: Any, zone: str, vpc_id: str, region: str) -> str | None:
    want = zone.rstrip(".").lower() + "."
    for summary in _zones_of_vpc(r53, vpc_id, region):
        if str(summary.get("Name", "")).lower() == want:
            return str(summary["HostedZoneId"]).removeprefix("/hostedzone/")
    return None


def ensure_zone(r53: Any, enclave_id: str, zone: str, vpc_id: str, region: str) -> str:
    """The private hosted zone ``zone`` associated with the VPC; its id without the prefix."""
    found = find_zone(r53, zone, vpc_id, region)
    if found is None:
        found = _create_zone(r53, enclave_id, zone, vpc_id, region)
    with aws_errors(f"route53:ChangeTagsForResource {found}"):
        r53.change_tags_for_resource(
            ResourceType="hostedzone", ResourceId=found, AddTags=tags(enclave_id)
        )
    return found


def _create_zone(r53: Any, enclave_id: str, zone: str, vpc_id: str, region: str) -> str:
    # A deterministic caller reference makes a retried CreateHostedZone answer
    # HostedZoneAlreadyExists instead of making a second zone (spec §4.4 FIX).
    reference = f"nclav-{enclave_id}-{zone}"[:128]
    for attempt in range(2):
        with aws_errors(f"route53:CreateHostedZone {zone}"):
            try:
                out = r53.create_hosted_zone(
                    Name=zone,
                    CallerReference=reference,
                    HostedZoneConfig={"Comment": "Managed by nclav", "PrivateZone": True},
                    VPC={"VPCRegion": region, "VPCId": vpc_id},
                )
                return str(out["HostedZone"]["Id"]).removeprefix("/hostedzone/")
            except ClientError as exc:
                if error_code(exc) != "HostedZoneAlreadyExists" or attempt:
                    raise
        found = find_zone(r53, zone, vpc_id, region)
        if found is not None:
            return found
        # The reference belongs to a zone deleted since (references are never reused).
        reference = f"{reference[:110]}-{int(time.time() * 1000)}"
    raise AssertionError("unreachable")


__all__ = [
    "enclave_subnets",
    "ensure_subnets",
    "ensure_vpc",
    "ensure_zone",
    "find_vpc",
    "find_zone",
]
