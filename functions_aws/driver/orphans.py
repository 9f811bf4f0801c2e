"""Leak checks in an enclave account (cloud-drivers-spec §4.10, with its FIX).

The Resource Groups Tagging API is regional and paginated: every page is read, and us-east-1
is scanned as well as the enclave's region because global services (CloudFront, Route 53)
report there. IAM roles never show up in it, so roles named ``nclav-partition-*`` are read
from IAM itself. Only resources carrying ``nclav-partition`` can be orphans: enclave-level
resources (VPC, subnets, zone) carry ``nclav-enclave`` alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions_aws.driver.config import ENCLAVE, MANAGED, PARTITION, tag_dict
from functions_aws.driver.errors import aws_errors
from nclav.engine.driver import Orphan
from nclav.model import Cloud

if TYPE_CHECKING:
    from collections.abc import Iterable

    from functions_aws.driver.sessions import Sessions

GLOBAL_REGION = "us-east-1"
_ROLE_PREFIX = "nclav-partition-"


def tagged(
    sessions: Sessions, account_id: str, region: str, enclave_id: str, partition: str | None
) -> dict[str, dict[str, str]]:
    """ARN -> tags of every nclav resource of the enclave (or of one partition)."""
    filters = [
        {"Key": MANAGED, "Values": ["true"]},
        {"Key": ENCLAVE, "Values": [enclave_id]},
    ]
    if partition is not None:
        filters.append({"Key": PARTITION, "Values": [partition]})
    found: dict[str, dict[str, str]] = {}
    for scan_region in dict.fromkeys((region, GLOBAL_REGION)):
        client = sessions.account(account_id, "resourcegroupstaggingapi", scan_region)
        with aws_errors(f"tagging:GetResources {scan_region}"):
            for page in client.get_paginator("get_resources").paginate(TagFilters=filters):
                for item in page.get("ResourceTagMappingList", []):
                    found[item["ResourceARN"]] = tag_dict(item.get("Tags"))
    for arn, role_tags in _partition_roles(sessions, account_id, region):
        if role_tags.get(ENCLAVE) == enclave_id and (
            partition is None or role_tags.get(PARTITION) == partition
        ):
            found[arn] = role_tags
    return found


def _partition_roles(
    sessions: Sessions, account_id: str, region: str
) -> Iterable[tuple[str, dict[str, str]]]:
    iam = sessions.account(account_id, "iam", region)
    with aws_errors("iam:ListRoles"):
        for page in iam.get_paginator("list_roles").paginate():
            for role in page.get("Roles", []):
                if not role["RoleName"].startswith(_ROLE_PREFIX):
                    continue
                role_tags = tag_dict(iam.list_role_tags(RoleName=role["RoleName"]).get("Tags"))
                if role_tags.get(MANAGED) == "true":
                    yield role["Arn"], role_tags


def resource_type(arn: str) -> str:
    """``arn:aws:ec2:us-east-1:1:vpc/vpc-1`` -> ``ec2:vpc``; the service alone if no type."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return arn
    kind = parts[5].split("/", 1)[0].split(":", 1)[0] if "/" in parts[5] else ""
    return f"{parts[2]}:{kind}" if kind else parts[2]


def orphans(
    sessions: Sessions,
    account_id: str,
    region: str,
    enclave_id: str,
    active_partitions: Iterable[str],
) -> list[Orphan]:
    """Resources of the enclave's account tagged with a partition that is not active."""
    active = set(active_partitions)
    out = []
    for arn, found_tags in sorted(tagged(sessions, account_id, region, enclave_id, None).items()):
        owner = found_tags.get(PARTITION)
        if owner is None or owner in active:
            continue
        out.append(
            Orphan(
                cloud=Cloud.AWS,
                resource_id=arn,
                resource_type=resource_type(arn),
                enclave_id=enclave_id,
                partition_id=owner,
                tags={k: v for k, v in found_tags.items() if k.startswith("nclav-")},
                reason=f"tagged {PARTITION}={owner}, a partition enclave {enclave_id} "
                f"(account {account_id}) no longer has",
            )
        )
    return out


__all__ = ["GLOBAL_REGION", "orphans", "resource_type", "tagged"]
