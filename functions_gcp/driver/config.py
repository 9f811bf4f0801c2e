"""The GCP driver's settings and the names it gives things (cloud-drivers-spec §2.2, §2.3).

Every name is a pure function of the enclave / partition / alias id, so a retried step
computes the same name and finds what an earlier attempt created. Where Google's rules force
a change of the id (case, ``.``, length), a sha256 suffix (``nclav.naming.short_hash``) keeps
two ids that sanitize alike from ever sharing a project, account or endpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nclav.errors import Issue, PermanentError, SpecError
from nclav.naming import ENCLAVE, MANAGED, PARTITION, nclav_tags, short_hash

DEFAULT_REGION = "us-central1"
DEFAULT_PARTITION_ROLES = ("roles/editor",)
# APIs every enclave project gets (cloud-drivers-spec §2.4 step 4); cloudasset for the
# orphan scan, iamcredentials for the partition's short-lived tokens.
SERVICES = (
    "compute.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "dns.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "servicenetworking.googleapis.com",
    "cloudbilling.googleapis.com",
    "cloudasset.googleapis.com",
)
VPC = "nclav-vpc"
ZONE = "nclav-zone"
TOKEN_LIFETIME_S = 3600  # Google's maximum without the org policy that lengthens it

_PARENT = re.compile(r"^(folders|organizations)/\d+$")
_BILLING = re.compile(r"^(billingAccounts/)?([0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6})$", re.IGNORECASE)
_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_ROLE = re.compile(r"^(roles|projects/[a-z0-9-]+/roles|organizations/\d+/roles)/[A-Za-z0-9_.]+$")


@dataclass(frozen=True)
class GcpDriverConfig:
    """``nclav serve --gcp-*`` (env ``NCLAV_GCP_*``), checked when made."""

    parent: str  # folders/<n> or organizations/<n>: where enclave projects are created
    billing_account: str  # normalized to billingAccounts/XXXXXX-YYYYYY-ZZZZZZ
    default_region: str = DEFAULT_REGION
    project_prefix: str | None = None
    partition_roles: tuple[str, ...] = DEFAULT_PARTITION_ROLES

    def __post_init__(self) -> None:
        issues = []
        if not _PARENT.fullmatch(self.parent):
            issues.append(
                Issue("--gcp-parent", None, "parent", "folders/<digits> or organizations/<digits>")
            )
        billing = _BILLING.fullmatch(self.billing_account.strip())
        if billing is None:
            issues.append(
                Issue(
                    "--gcp-billing-account",
                    None,
                    "billing_account",
                    "billingAccounts/XXXXXX-YYYYYY-ZZZZZZ (three groups of 6 hex digits)",
                )
            )
        else:
            normal = f"billingAccounts/{billing.group(2).upper()}"
            object.__setattr__(self, "billing_account", normal)
        if self.project_prefix and not _PREFIX.fullmatch(self.project_prefix):
            issues.append(
                Issue(
                    "--gcp-project-prefix",
                    None,
                    "project_prefix",
                    "1-15 lowercase letters, digits or '-', starting with a letter",
                )
            )
        for role in self.partition_roles:
            if not _ROLE.fullmatch(role):
                issues.append(
                    Issue(
                        "--gcp-partition-roles",
                        None,
                        "partition_roles",
                        f"{role!r} is not a role name (roles/...)",
                    )
                )
        if issues:
            raise SpecError(issues)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def project_id(config: GcpDriverConfig, enclave_id: str) -> str:
    """``{prefix}-{enclave_id}``: lowercase, other characters as ``-``, at most 30.

    Used as is when that changed nothing; otherwise (case, dots, length) cut to leave room
    for ``-`` and 6 hex of the raw text, so two enclave ids never share a project. Project ids
    are global: one taken elsewhere is refused at creation (then choose a prefix).
    """
    raw = f"{config.project_prefix}-{enclave_id}" if config.project_prefix else enclave_id
    slug = _slug(raw)
    pid = (
        slug if slug == raw and len(slug) <= 30 else f"{slug[:23].rstrip('-')}-{short_hash(raw, 6)}"
    )
    if not _PROJECT_ID.fullmatch(pid):
        raise PermanentError(
            f"enclave {enclave_id}: project id {pid!r} breaks Google's rule (6-30 lowercase "
            "letters, digits or '-', starting with a letter): set --gcp-project-prefix"
        )
    return pid


def display_name(name: str, fallback: str) -> str:
    """Letters, digits, space and ``-'"!`` (others as a space), 4-30 characters."""
    text = re.sub(r"\s+", " ", re.sub(r"[^A-Za-z0-9 '\"!-]", " ", name)).strip()[:30].strip()
    return text if len(text) >= 4 else fallback[:30]


def account_id(base: str) -> str:
    """A service account id (6-30 chars, ``^[a-z][-a-z0-9]*[a-z0-9]$``) for ``base``."""
    slug = _slug(base)
    if slug == base and 6 <= len(slug) <= 30 and slug[0].isalpha():
        return slug
    head = slug[:21].rstrip("-") or "sa"
    if not head[0].isalpha():
        head = f"sa-{head}"[:21].rstrip("-")
    return f"{head}-{short_hash(base)}"


def partition_account_id(partition_id: str) -> str:
    return account_id(f"partition-{partition_id}")


def sa_email(account: str, project: str) -> str:
    return f"{account}@{project}.iam.gserviceaccount.com"


def resource_name(prefix: str, text: str) -> str:
    """A Compute/DNS resource name (``[a-z]([-a-z0-9]{0,61}[a-z0-9])?``) ``prefix-text``."""
    slug = _slug(text)
    if slug == text and len(prefix) + len(slug) <= 63:
        return prefix + slug
    return f"{prefix}{slug[: 63 - len(prefix) - 9].rstrip('-')}-{short_hash(text)}"


def label_value(text: str) -> str:
    """Label values: lowercase letters, digits, ``_`` and ``-``, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "_", text.lower())[:63]


def labels(enclave_id: str, **extra: str) -> dict[str, str]:
    """nclav's tag set (``nclav.naming``) as Google labels."""
    return {k: label_value(v) for k, v in nclav_tags(enclave_id, **extra).items()}


__all__ = [
    "DEFAULT_PARTITION_ROLES",
    "DEFAULT_REGION",
    "ENCLAVE",
    "MANAGED",
    "PARTITION",
    "SERVICES",
    "TOKEN_LIFETIME_S",
    "VPC",
    "ZONE",
    "GcpDriverConfig",
    "account_id",
    "display_name",
    "label_value",
    "labels",
    "partition_account_id",
    "project_id",
    "resource_name",
    "sa_email",
]
