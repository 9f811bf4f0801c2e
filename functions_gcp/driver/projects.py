"""Enclave projects: Resource Manager v3, Cloud Billing, Service Usage (spec §2.4, §2.5).

Resource Manager **v3** fields only (the original read v1's ``projectNumber`` and
``lifecycleState`` from v3 answers, behaviour-spec §12): a project is created with
``projectId``, ``parent`` (a string, ``folders/<n>``), ``displayName`` and ``labels``; it
answers ``name = projects/<number>`` and ``state`` ``ACTIVE`` | ``DELETE_REQUESTED``.

Google answers 403 (not 404) for a project that does not exist or that the caller may not
see, so "absent" is 403 or 404. A create refused with 409 whose project stays invisible is an
id taken elsewhere (project ids are global) or a creation still under way: a
``TemporaryError``, so the step is retried and fails, naming the cause, only if it persists.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from functions_gcp._rest import settle
from nclav.errors import PermanentError, TemporaryError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from functions_gcp._rest import Rest

logger = logging.getLogger(__name__)
API = "cloudresourcemanager"
BATCH = 20  # serviceusage batchEnable takes at most 20 services per call
PROJECT_RETRY_S = 30.0


def get_project(rest: Rest, project: str) -> dict[str, Any] | None:
    reply = rest.call(
        "GET", API, f"v3/projects/{project}", f"get project {project}", expect=(403, 404)
    )
    return reply.body if reply.ok else None


def project_number(project: Mapping[str, Any]) -> str:
    return str(project.get("name", "")).removeprefix("projects/")


def ensure_project(
    rest: Rest, project: str, parent: str, display: str, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The ACTIVE project ``project`` under ``parent``, created or undeleted as needed."""
    found = get_project(rest, project)
    if found is None:
        body = {"projectId": project, "parent": parent, "displayName": display, "labels": labels}
        what = f"create project {project} under {parent}"
        reply = rest.call("POST", API, "v3/projects", what, body=body, expect=(409,))
        if reply.ok:
            settle(rest, API, reply.body, what, f"v3/{reply.body.get('name')}")
        found = get_project(rest, project)
        if found is None:
            # 409 and still invisible: being created by an earlier attempt (not visible until
            # done), or taken elsewhere. Retried: the first clears up, the second fails after
            # the step's attempts with this text.
            raise TemporaryError(
                f"project id {project} is taken (project ids are global) or still being "
                "created: if it stays so, choose another --gcp-project-prefix",
                retry_after_s=PROJECT_RETRY_S,
            )
    if found.get("state") == "DELETE_REQUESTED":
        # Deleted within the last 30 days (an enclave torn down, then declared again): its
        # old resources, IAM and billing history come back with it.
        logger.warning("project %s was pending deletion: undeleting it", project)
        what = f"undelete project {project}"
        op = rest.json("POST", API, f"v3/projects/{project}:undelete", what, body={})
        settle(rest, API, op, what, f"v3/{op.get('name')}")
        found = get_project(rest, project) or found
    state = found.get("state")
    if state != "ACTIVE":
        raise PermanentError(f"project {project} is {state}, expected ACTIVE")
    if found.get("parent") != parent:
        logger.warning("project %s is under %s, not %s", project, found.get("parent"), parent)
    current = dict(found.get("labels") or {})
    if any(current.get(k) != v for k, v in labels.items()):
        what = f"label project {project}"
        op = rest.json(
            "PATCH",
            API,
            f"v3/projects/{project}",
            what,
            params={"updateMask": "labels"},
            body={"labels": {**current, **labels}},
        )
        settle(rest, API, op, what, f"v3/{op.get('name')}")
    return found


def link_billing(rest: Rest, project: str, billing_account: str) -> None:
    rest.call(
        "PUT",
        "cloudbilling",
        f"v1/projects/{project}/billingInfo",
        f"link project {project} to {billing_account}",
        body={"billingAccountName": billing_account},
    )


def enable_services(rest: Rest, project: str, services: Sequence[str]) -> None:
    """``services:batchEnable`` in batches of 20; enabling an enabled API is a no-op."""
    for start in range(0, len(services), BATCH):
        batch = list(services[start : start + BATCH])
        what = f"enable {len(batch)} APIs in project {project}"
        op = rest.json(
            "POST",
            "serviceusage",
            f"v1/projects/{project}/services:batchEnable",
            what,
            body={"serviceIds": batch},
        )
        settle(rest, "serviceusage", op, what, f"v1/{op.get('name')}")


def delete_project(rest: Rest, project: str) -> None:
    """To ``DELETE_REQUESTED`` (30 days, recoverable); gone or already deleting: done."""
    found = get_project(rest, project)
    if found is None or found.get("state") != "ACTIVE":
        return
    rest.call(
        "DELETE", API, f"v3/projects/{project}", f"delete project {project}", expect=(403, 404)
    )


__all__ = [
    "delete_project",
    "enable_services",
    "ensure_project",
    "get_project",
    "link_billing",
    "project_number",
]
