"""IAM roles in enclave accounts: the enclave identity and one role per partition.

Spec §4.4 step 10 and §4.6, with its FIXes: trust policies name concrete principals (IAM
rejects ``arn:aws:iam::*:root``), and a role is deleted with everything that pins it
(instance profiles, managed and inline policies), or DeleteRole answers DeleteConflict.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import ClientError

from functions_aws.driver.config import tags
from functions_aws.driver.errors import aws_errors, error_code
from nclav.errors import TemporaryError


def trust_policy(principals: list[str]) -> str:
    unique = sorted(set(principals))
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": unique[0] if len(unique) == 1 else unique},
                    "Action": "sts:AssumeRole",
                }
            ],
        },
        sort_keys=True,
    )


def ensure_role(
    iam: Any,
    name: str,
    principals: list[str],
    role_tags: list[dict[str, str]],
    policies: tuple[str, ...] = (),
) -> tuple[str, float]:
    """Create the role or bring an existing one back to this trust and these policies.

    Returns its ARN and since when (epoch seconds) its trust policy has been what it is:
    its creation, or now when an existing role's trust had to change. IAM takes a while to
    propagate either, so a refusal shortly after is waited out (``Sessions.assume``).
    """
    trust = trust_policy(principals)
    with aws_errors(f"iam:CreateRole {name}"):
        try:
            role = iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=trust,
                Description="Managed by nclav",
                MaxSessionDuration=3600,
                Tags=role_tags,
            )["Role"]
            since = _epoch(role.get("CreateDate"))
        except ClientError as exc:
            if error_code(exc) != "EntityAlreadyExists":
                raise
            # A retry (or a drifted role): keep it, but make trust and tags what we want now.
            role = iam.get_role(RoleName=name)["Role"]
            since = _epoch(role.get("CreateDate"))
            current = _normal(_document(role.get("AssumeRolePolicyDocument")))
            if current != _normal(json.loads(trust)):
                iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
                since = time.time()
            iam.tag_role(RoleName=name, Tags=role_tags)
    for policy in policies:
        with aws_errors(f"iam:AttachRolePolicy {name} {policy}"):
            iam.attach_role_policy(RoleName=name, PolicyArn=policy)  # idempotent in IAM
    return str(role["Arn"]), since


def _epoch(value: Any) -> float:
    return float(value.timestamp()) if hasattr(value, "timestamp") else time.time()


def _normal(value: Any) -> Any:
    """Order-free form of a policy document (IAM may list principals in another order)."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_normal(v) for v in value]
        return items[0] if len(items) == 1 else sorted(items, key=json.dumps)
    return value


def _document(value: Any) -> Any:
    """A policy document as IAM returns it: a dict (boto3 decodes it) or URL-encoded JSON."""
    if isinstance(value, str):
        try:
            return json.loads(unquote(value))
        except ValueError:
            return None
    return value


def delete_role(iam: Any, name: str) -> None:
    """Delete the role and what pins it; a role that is already gone is fine."""
    with aws_errors(f"iam:DeleteRole {name}"):
        try:
            _delete_role(iam, name)
        except ClientError as exc:
            code = error_code(exc)
            if code == "NoSuchEntity":
                return
            if code == "DeleteConflict":
                # Something attached to it between our listing and the delete: try again.
                raise TemporaryError(f"iam:DeleteRole {name}: still in use") from exc
            raise


def _delete_role(iam: Any, name: str) -> None:
    profiles = iam.list_instance_profiles_for_role(RoleName=name)["InstanceProfiles"]
    for profile in profiles:
        iam.remove_role_from_instance_profile(
            InstanceProfileName=profile["InstanceProfileName"], RoleName=name
        )
    for policy in _all(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=name):
        iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
    for policy_name in _all(iam, "list_role_policies", "PolicyNames", RoleName=name):
        iam.delete_role_policy(RoleName=name, PolicyName=policy_name)
    iam.delete_role(RoleName=name)


def _all(client: Any, operation: str, key: str, **kwargs: Any) -> list[Any]:
    pages = client.get_paginator(operation).paginate(**kwargs)
    return [item for page in pages for item in page.get(key, [])]


def role_tags(enclave_id: str, partition_id: str | None = None) -> list[dict[str, str]]:
    return tags(enclave_id, nclav_partition=partition_id) if partition_id else tags(enclave_id)


__all__ = ["delete_role", "ensure_role", "role_tags", "trust_policy"]
