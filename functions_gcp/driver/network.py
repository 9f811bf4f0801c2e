"""The enclave network: a custom-mode VPC, a subnet per CIDR, a private DNS zone (spec §2.4).

Compute inserts answer an operation (``status == "DONE"``, errors in ``error.errors[]``);
``settle`` looks at it once more and otherwise leaves a ``WaitingError``. A 409 means the
resource is there: a subnet found with another range than declared is refused (nclav never
changes a subnet's range in place).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions_gcp._rest import settle
from functions_gcp.driver.config import VPC, ZONE
from nclav.errors import PermanentError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from functions_gcp._rest import Rest

COMPUTE = "https://www.googleapis.com/compute/v1/"


def vpc_link(project: str) -> str:
    return f"{COMPUTE}projects/{project}/global/networks/{VPC}"


def subnet_path(project: str, region: str, index: int) -> str:
    return f"projects/{project}/regions/{region}/subnetworks/subnet-{index}"


def compute_insert(
    rest: Rest, project: str, region: str | None, collection: str, body: Mapping[str, Any]
) -> bool:
    """Insert a Compute resource and wait for it; False when it existed already (409)."""
    scope = f"regions/{region}" if region else "global"
    what = f"compute insert {scope}/{collection}/{body['name']} in {project}"
    reply = rest.call(
        "POST",
        "compute",
        f"compute/v1/projects/{project}/{scope}/{collection}",
        what,
        body=dict(body),
        expect=(409,),
    )
    if reply.status == 409:
        return False
    op = reply.body
    settle(
        rest, "compute", op, what, f"compute/v1/projects/{project}/{scope}/operations/{op['name']}"
    )
    return True


def compute_get(rest: Rest, project: str, path: str) -> dict[str, Any] | None:
    reply = rest.call(
        "GET",
        "compute",
        f"compute/v1/projects/{project}/{path}",
        f"compute get {path}",
        expect=(404,),
    )
    return reply.body if reply.ok else None


def compute_delete(rest: Rest, project: str, region: str | None, path: str) -> None:
    """Delete and wait; a resource that is gone already is fine."""
    what = f"compute delete {path} in {project}"
    reply = rest.call(
        "DELETE", "compute", f"compute/v1/projects/{project}/{path}", what, expect=(404,)
    )
    if reply.ok:
        scope = f"regions/{region}" if region else "global"
        op = reply.body
        settle(
            rest,
            "compute",
            op,
            what,
            f"compute/v1/projects/{project}/{scope}/operations/{op['name']}",
        )


def ensure_network(rest: Rest, project: str, region: str, subnets: Sequence[str]) -> list[str]:
    """The VPC and its subnets ``subnet-<i>``; their self links."""
    compute_insert(rest, project, None, "networks", {"name": VPC, "autoCreateSubnetworks": False})
    links = []
    for i, cidr in enumerate(subnets):
        body = {
            "name": f"subnet-{i}",
            "network": vpc_link(project),
            "ipCidrRange": cidr,
            "region": region,
            "privateIpGoogleAccess": True,
        }
        if not compute_insert(rest, project, region, "subnetworks", body):
            found = compute_get(rest, project, f"regions/{region}/subnetworks/subnet-{i}") or {}
            if found.get("ipCidrRange") not in (None, cidr):
                raise PermanentError(
                    f"subnet-{i} of project {project} has range {found['ipCidrRange']}, the "
                    f"enclave declares {cidr}: nclav does not change a subnet's range"
                )
        links.append(f"{COMPUTE}{subnet_path(project, region, i)}")
    return links


def ensure_zone(
    rest: Rest, project: str, zone: str, labels: Mapping[str, str], description: str
) -> str:
    """The private zone ``nclav-zone`` for ``zone`` bound to the VPC; its DNS name."""
    dns_name = zone.rstrip(".") + "."
    body = {
        "name": ZONE,
        "dnsName": dns_name,
        "description": description,
        "visibility": "private",
        "labels": dict(labels),
        "privateVisibilityConfig": {
            "kind": "dns#managedZonePrivateVisibilityConfig",
            "networks": [{"networkUrl": vpc_link(project)}],
        },
    }
    reply = rest.call(
        "POST",
        "dns",
        f"dns/v1/projects/{project}/managedZones",
        f"create private zone {dns_name} in {project}",
        body=body,
        expect=(409,),
    )
    if reply.status == 409:
        found = rest.json(
            "GET", "dns", f"dns/v1/projects/{project}/managedZones/{ZONE}", f"get zone {ZONE}"
        )
        if found.get("dnsName") != dns_name:
            raise PermanentError(
                f"zone {ZONE} of project {project} serves {found.get('dnsName')}, the enclave "
                f"declares {dns_name}: nclav does not rename a zone"
            )
    return dns_name


__all__ = [
    "COMPUTE",
    "compute_delete",
    "compute_get",
    "compute_insert",
    "ensure_network",
    "ensure_zone",
    "subnet_path",
    "vpc_link",
]
