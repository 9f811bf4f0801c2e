"""Leak checks through Azure Resource Graph (cloud-drivers-spec §3.10, with its FIX).

One query over the subscriptions of every applied Azure enclave (up to 1000 a request), in the
``objectArray`` format set explicitly, every ``$skipToken`` page followed, errors raised (the
original swallowed them into "no orphans"). Only resources carrying ``nclav-partition`` can be
orphans: enclave-level ones (resource group, VNet, zone) carry ``nclav-enclave`` alone. The
index lags ARM by seconds to minutes, and covers ARM resources only (not role assignments).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions_azure.driver.config import ENCLAVE, GRAPH_API, MANAGED, PARTITION
from nclav.engine.driver import Orphan
from nclav.model import Cloud

if TYPE_CHECKING:
    from collections.abc import Sequence

    from functions_azure.driver.arm import Arm
    from nclav.state import EnclaveState

PAGE = 1000
_BATCH = 1000  # subscriptions a request may name
_COLUMNS = "| project id, name, type, tags, subscriptionId"


def query(arm: Arm, subscriptions: list[str], kql: str) -> list[dict[str, Any]]:
    """Every row of ``kql`` over ``subscriptions``, page after page."""
    rows: list[dict[str, Any]] = []
    for start in range(0, len(subscriptions), _BATCH):
        token: str | None = None
        while True:
            options: dict[str, Any] = {"resultFormat": "objectArray", "$top": PAGE}
            if token:
                options["$skipToken"] = token
            body = {
                "subscriptions": subscriptions[start : start + _BATCH],
                "query": kql,
                "options": options,
            }
            page = arm.post(
                "/providers/Microsoft.ResourceGraph/resources", GRAPH_API, body, "resource graph"
            ).body
            rows += page.get("data") or []
            token = page.get("$skipToken")
            if not token:
                break
    return rows


def _partition_query(partition: str | None) -> str:
    which = (
        f"tags['{PARTITION}'] == '{partition}'"
        if partition is not None
        else f"isnotempty(tags['{PARTITION}'])"
    )
    return f"Resources | where tags['{MANAGED}'] == 'true' and {which} {_COLUMNS}"


def tagged(arm: Arm, subscription: str, enclave_id: str, partition: str) -> list[str]:
    rows = query(arm, [subscription], _partition_query(partition.replace("'", "")))
    return sorted(
        str(r["id"]) for r in rows if (r.get("tags") or {}).get(ENCLAVE, enclave_id) == enclave_id
    )


def list_orphans(arm: Arm, applied: Sequence[EnclaveState]) -> list[Orphan]:
    owners: dict[str, EnclaveState] = {}
    for state in applied:
        handle = state.enclave_handle or {}
        if handle.get("driver") == "azure" and handle.get("subscription_id"):
            owners[str(handle["subscription_id"]).lower()] = state
    if not owners:
        return []
    found = []
    for row in query(arm, sorted(owners), _partition_query(None)):
        row_tags = {str(k): str(v) for k, v in (row.get("tags") or {}).items()}
        owner = owners.get(str(row.get("subscriptionId", "")).lower())
        partition = row_tags.get(PARTITION, "")
        if owner is None or partition in owner.partitions:
            continue
        found.append(
            Orphan(
                cloud=Cloud.AZURE,
                resource_id=str(row["id"]),
                resource_type=str(row.get("type", "")),
                enclave_id=row_tags.get(ENCLAVE) or owner.enclave_id,
                partition_id=partition,
                tags={k: v for k, v in row_tags.items() if k.startswith("nclav-")},
                reason=f"tagged for partition {partition!r}, which enclave "
                f"{owner.enclave_id} no longer has",
            )
        )
    return found


__all__ = ["list_orphans", "query", "tagged"]
