"""The AWS driver's settings and the names it gives things (cloud-drivers-spec §4.2, §4.3).

Every name is a pure function of the enclave / partition / export id, so a retried step
computes the same name and finds what an earlier attempt created.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nclav.naming import ENCLAVE, EXPORT, IMPORT, MANAGED, PARTITION, nclav_tags, short_hash

ADMIN_POLICY = "arn:aws:iam::aws:policy/AdministratorAccess"
SESSION_NAME = "nclav-session"
DEFAULT_VPC_CIDR = "10.0.0.0/16"

_MAX_ACCOUNT_NAME = 50
_MAX_EMAIL = 64
_MAX_ROLE_NAME = 64


@dataclass(frozen=True)
class AwsDriverConfig:
    """``nclav serve --aws-*`` (env ``NCLAV_AWS_*``)."""

    org_unit_id: str
    email_domain: str
    default_region: str = "us-east-1"
    account_prefix: str | None = None
    cross_account_role: str = "OrganizationAccountAccessRole"
    # Management role: assumed for every Organizations call and as the start of the chain into
    # enclave accounts; without it the default boto3 credential chain is used as is.
    role_arn: str | None = None


def tags(enclave_id: str, **extra: str) -> list[dict[str, str]]:
    """nclav's tag set (``nclav.naming``) in boto3's ``[{"Key", "Value"}]`` shape."""
    return [{"Key": k, "Value": v} for k, v in nclav_tags(enclave_id, **extra).items()]


def tag_dict(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or ()}


def _sanitize(raw: str) -> str:
    name = re.sub(r"[^A-Za-z0-9 -]", "-", raw)
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", name)


def account_name(config: AwsDriverConfig, enclave_id: str) -> str:
    """``{prefix}-{enclave_id}`` sanitized, at most 50 characters.

    The spec's sanitizer is lossy ('a.b' and 'a_b' both become 'a-b') and the email it feeds
    is lowercased: two enclaves must never share an account, so any name the sanitizer or the
    lowercasing changed gets a hash of the raw id.
    """
    raw = f"{config.account_prefix}-{enclave_id}" if config.account_prefix else enclave_id
    name = _sanitize(raw)
    if name == raw and name == name.lower() and len(name) <= _MAX_ACCOUNT_NAME:
        return name
    suffix = short_hash(raw, 6)
    return f"{_sanitize(name[: _MAX_ACCOUNT_NAME - 7])}-{suffix}"


def account_emails(config: AwsDriverConfig, enclave_id: str, count: int) -> list[str]:
    """The email family of an enclave: ``aws+{name}@domain``, then ``aws+{name}-2@``...

    An email stays bound to a closed account for 90 days, so an enclave created again after a
    teardown takes the next free member of its family.
    """
    slug = account_name(config, enclave_id).replace(" ", "").lower()
    out = []
    for n in range(1, count + 1):
        tail = "" if n == 1 else f"-{n}"
        room = _MAX_EMAIL - len(f"aws+{tail}@{config.email_domain}")
        local = slug if len(slug) <= room else f"{slug[: room - 9]}-{short_hash(slug)}"
        out.append(f"aws+{local}{tail}@{config.email_domain}".lower())
    return out


def email_pattern(config: AwsDriverConfig, enclave_id: str) -> re.Pattern[str]:
    first = account_emails(config, enclave_id, 1)[0]
    local, domain = first.split("@", 1)
    return re.compile(rf"^{re.escape(local)}(-[0-9]+)?@{re.escape(domain)}$", re.IGNORECASE)


def partition_role_name(partition_id: str) -> str:
    name = f"nclav-partition-{partition_id}"
    if len(name) <= _MAX_ROLE_NAME:
        return name
    keep = _MAX_ROLE_NAME - len("nclav-partition--") - 8
    return f"nclav-partition-{partition_id[:keep]}-{short_hash(partition_id)}"


def role_arn(account_id: str, role_name: str) -> str:
    return f"arn:aws:iam::{account_id}:role/{role_name}"


def elb_name(enclave_id: str, export_name: str) -> str:
    # Load balancer and target group names: at most 32 alphanumerics and hyphens.
    return f"nclav-{short_hash(f'{enclave_id}/{export_name}', 20)}"


def client_token(*parts: str) -> str:
    return short_hash("/".join(parts), 48)


__all__ = [
    "ADMIN_POLICY",
    "DEFAULT_VPC_CIDR",
    "ENCLAVE",
    "EXPORT",
    "IMPORT",
    "MANAGED",
    "PARTITION",
    "SESSION_NAME",
    "AwsDriverConfig",
    "account_emails",
    "account_name",
    "client_token",
    "elb_name",
    "email_pattern",
    "partition_role_name",
    "role_arn",
    "short_hash",
    "tag_dict",
    "tags",
]
