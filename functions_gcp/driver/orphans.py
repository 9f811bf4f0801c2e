"""Leak checks through Cloud Asset Inventory (spec §2.10, with its FIX).

``searchAllResources`` is a GET with ``query`` and ``pageToken`` query parameters (the
original POSTed a JSON body) and is paginated: every page is read. Only resources carrying
``nclav-partition`` can be orphans (enclave-level ones carry ``nclav-enclave`` alone). Label
values are nclav ids as ``config.label_value`` writes them. The inventory is eventually
consistent (minutes): a resource destroyed a moment ago may still be listed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions_gcp.driver.config import ENCLAVE, MANAGED, PARTITION, label_value
from nclav.engine.driver import Orphan
from nclav.model import Cloud

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from functions_gcp._rest import Rest

PAGE_SIZE = "500"


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
    return sorted(found, key=lambda o: o.resource_id)


__all__ = ["orphans", "search"]
