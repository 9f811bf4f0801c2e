"""Service accounts and IAM policy edits (cloud-drivers-spec §2.6, with its FIXes).

A policy is edited read-modify-write: ``getIamPolicy`` (asking for version 3, so conditional
bindings are read whole and written back), change the bindings, ``setIamPolicy`` with the
``etag`` read; a concurrent change (409 ``ABORTED``) reads again, up to ``EDIT_ATTEMPTS``
times. A failed read aborts (the original wrote an empty policy over the real one). A new
service account is eventually consistent: a binding refused because it "does not exist" yet is
a ``WaitingError``, tried again later.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from functions_gcp._rest import GcpApiError
from nclav.errors import TemporaryError, WaitingError

if TYPE_CHECKING:
    from collections.abc import Callable

    from functions_gcp._rest import Rest

EDIT_ATTEMPTS = 3
PROPAGATION_RETRY_S = 10.0
Bindings = list[dict[str, Any]]


def ensure_service_account(
    rest: Rest, project: str, account: str, display: str, description: str = ""
) -> str:
    """The account's email; created if missing (409: already there, which is fine)."""
    email = f"{account}@{project}.iam.gserviceaccount.com"
    rest.call(
        "POST",
        "iam",
        f"v1/projects/{project}/serviceAccounts",
        f"iam create service account {email}",
        body={
            "accountId": account,
            "serviceAccount": {"displayName": display[:100], "description": description[:256]},
        },
        expect=(409,),
    )
    return email


def get_service_account(rest: Rest, project: str, email: str) -> dict[str, Any] | None:
    """The account, or None when IAM answers 404."""
    reply = rest.call(
        "GET",
        "iam",
        f"v1/projects/{project}/serviceAccounts/{email}",
        f"iam get service account {email}",
        expect=(404,),
    )
    return reply.body if reply.ok else None


def delete_service_account(rest: Rest, project: str, email: str) -> None:
    rest.call(
        "DELETE",
        "iam",
        f"v1/projects/{project}/serviceAccounts/{email}",
        f"iam delete service account {email}",
        expect=(404,),
    )


def add_member(role: str, member: str) -> Callable[[Bindings], Bindings]:
    def change(bindings: Bindings) -> Bindings:
        for binding in bindings:
            if binding.get("role") == role and "condition" not in binding:
                if member not in binding.setdefault("members", []):
                    binding["members"].append(member)
                return bindings
        return [*bindings, {"role": role, "members": [member]}]

    return change


def remove_member(member: str) -> Callable[[Bindings], Bindings]:
    def change(bindings: Bindings) -> Bindings:
        kept = []
        for binding in bindings:
            members = [
                m for m in binding.get("members", []) if m not in (member, f"deleted:{member}")
            ]
            if members:
                kept.append({**binding, "members": members})
        return kept

    return change


def remove_binding(role: str, member: str) -> Callable[[Bindings], Bindings]:
    """``member`` out of the unconditional binding of ``role`` only (it may hold others)."""

    def change(bindings: Bindings) -> Bindings:
        kept = []
        for binding in bindings:
            members = binding.get("members", [])
            if binding.get("role") == role and "condition" not in binding:
                members = [m for m in members if m not in (member, f"deleted:{member}")]
            if members:
                kept.append({**binding, "members": members})
        return kept

    return change


def edit_policy(
    rest: Rest, api: str, resource: str, change: Callable[[Bindings], Bindings], what: str
) -> None:
    """Apply ``change`` to the bindings of ``resource`` (a path such as
    ``v3/projects/p``, ``v1/projects/p/serviceAccounts/e`` or a Cloud Run v2 service),
    keeping everything else."""
    # Resource Manager takes the version in a body; IAM's service accounts in the query;
    # Cloud Run (v2) and Pub/Sub read with a GET.
    body_read = api == "cloudresourcemanager"
    for _ in range(EDIT_ATTEMPTS):
        policy = rest.json(
            "GET" if api in ("run", "pubsub") else "POST",
            api,
            f"{resource}:getIamPolicy",
            f"{what}: getIamPolicy {resource}",
            body={"options": {"requestedPolicyVersion": 3}} if body_read else None,
            params=None if body_read else {"options.requestedPolicyVersion": "3"},
        )
        before = policy.get("bindings", [])
        after = change(copy.deepcopy(before))
        if after == before:
            return
        new = {k: v for k, v in policy.items() if k in ("version", "etag", "auditConfigs")}
        new["bindings"] = after
        if any("condition" in b for b in after):
            new["version"] = 3
        try:
            reply = rest.call(
                "POST",
                api,
                f"{resource}:setIamPolicy",
                f"{what}: setIamPolicy {resource}",
                body={"policy": new},
                expect=(409,),  # ABORTED: the etag is stale, someone else changed it
            )
        except GcpApiError as exc:
            if exc.status == 400 and "does not exist" in str(exc):
                raise WaitingError(
                    f"{what}: {exc} (a new service account is not visible to IAM yet)",
                    retry_after_s=PROPAGATION_RETRY_S,
                ) from exc
            raise
        if reply.ok:
            return
    raise TemporaryError(f"{what}: the IAM policy of {resource} kept changing under us")


__all__ = [
    "add_member",
    "delete_service_account",
    "edit_policy",
    "ensure_service_account",
    "get_service_account",
    "remove_binding",
    "remove_member",
]
