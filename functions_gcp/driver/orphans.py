"""Leak checks through Cloud Asset Inventory (spec §2.10, with its FIX).

``searchAllResources`` is a GET with ``query`` and ``pageToken`` query parameters (the
original POSTed a JSON body) and is paginated: every page is read. Service accounts carry no
labels, so the partitions' own accounts (``partition-*`` with the description
``partition_marker`` writes) are read from IAM itself. Only resources carrying
``nclav-partition`` can be orphans (enclave-level ones carry ``nclav-enclave`` alone). Label
values are nclav ids as ``config.label_value`` writes them. The inventory is eventually
consistent (minutes): a resource destroyed a moment ago may still be listed.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from functions_gcp.driver.config import ENCLAVE, MANAGED, PARTITION, label_value
from nclav.model import Cloud

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from functions_gcp._rest import Rest
    from nclav.engine.driver import Orphan

PAGE_SIZE = "500"
SA_TYPE = "iam.googleapis.com/ServiceAccount"
_MARKER = re.compile(r"^nclav partition (?P<enclave>\S+)/(?P<partition>\S+)$")


def partition_marker(enclave_id: str, partition_id: str) -> str:
    """The description of a partition's service account: who it belongs to."""
    return f"nclav partition {enclave_id}/{partition_id}"


def partition_accounts(rest: Rest, project: str) -> Iterator[tuple[str, str, str]]:
    """(resource name, enclave id, partition id) of every partition service account."""
    params = {"pageSize": "100"}
    while True:
        page = rest.json(
            "GET",
            "iam",
            f"v1/projects/{project}/serviceAccounts",
            f"iam list service accounts of {project}",
            params=params,
        )
        for account in page.get("accounts", []):
            found = _MARKER.fullmatch(str(account.get("description", "")))
            if found and str(account.get("email", "")).startswith("partition-"):
                name = f"//iam.googleapis.com/projects/{project}/serviceAccounts/{account['email']}"
                yield name, found["enclave"], found["partition"]
        token = page.get("nextPageToken")
        if not token:
            return
        params = {**params, "pageToken": token}


def search(
    rest: Rest, project: str, enclave_id: str, partition: str | None
) -> Iterator[dict[str, Any]]:
    """nclav's resources of the enclave's project (or of one partition), every page."""
    terms = [f"labels.{MANAGED}=true", f"labels.{ENCLAVE}={label_value(enclave_id)}"]
    if partition is not None:
        terms.append(f"labels.{PARTITION}={label_value(partition)}")
    params = {"query": " AND ".join(terms), "pageSize": PAGE_SIZE}
    while True:
        page = rest.json(
            "GET",
            "cloudasset",
            f"v1/projects/{project}:searchAllResources",
            f"cloudasset search {project}",
            params=params,
        )
        yield from page.get("results", [])
        token = page.get("nextPageToken")
        if not token:
            return
        params = {**params, "pageToken": token}


def orphans(
    rest: Rest, project: str, enclave_id: str, active_partitions: Iterable[str]
) -> list[Orphan]:
    from nclav.engine.driver import Orphan  # the engine package: loaded when scanning only

    active = {label_value(p) for p in active_partitions}
    found = []
    for item in search(rest, project, enclave_id, None):
        labels = item.get("labels") or {}
        owner = labels.get(PARTITION)
        if not owner or owner in active:
            continue
        found.append(
            Orphan(
                cloud=Cloud.GCP,
                resource_id=str(item.get("name", "")),
                resource_type=str(item.get("assetType", "")),
                enclave_id=enclave_id,
                partition_id=owner,
                tags={k: v for k, v in labels.items() if k.startswith("nclav-")},
                reason=f"labelled {PARTITION}={owner}, a partition enclave {enclave_id} "
                f"(project {project}) no longer has",
            )
        )
    for name, enclave, partition in partition_accounts(rest, project):
        if enclave == enclave_id and label_value(partition) not in active:
            found.append(
                Orphan(
                    cloud=Cloud.GCP,
                    resource_id=name,
                    resource_type=SA_TYPE,
                    enclave_id=enclave_id,
                    partition_id=partition,
                    reason=f"the service account of partition {partition}, which enclave "
                    f"{enclave_id} (project {project}) no longer has",
                )
            )
    return sorted(found, key=lambda o: o.resource_id)


def partition_resources(rest: Rest, project: str, enclave_id: str, partition: str) -> list[str]:
    """Names of what still belongs to the partition: labelled resources, its account."""
    found = [str(r.get("name", "")) for r in search(rest, project, enclave_id, partition)]
    found += [
        name
        for name, enclave, owner in partition_accounts(rest, project)
        if enclave == enclave_id and owner == partition
    ]
    return sorted(found)


__all__ = [
    "SA_TYPE",
    "orphans",
    "partition_accounts",
    "partition_marker",
    "partition_resources",
    "search",
]
