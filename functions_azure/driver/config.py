"""The Azure driver's settings, api-versions and the names it gives things (spec §3.2, §3.3).

Every name is a pure function of an enclave / partition / alias id, so a retried step computes
the same name and finds what an earlier attempt created: the subscription alias, the partition
identity, role assignment names (uuid5 of scope, role and principal, so a repeated assignment is
the same one and answers 409 ``RoleAssignmentExists``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from nclav.naming import ENCLAVE, MANAGED, PARTITION, nclav_tags, short_hash

ARM = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
# The audience of the platform identity's token that a partition identity's federated
# credential trusts: terraform exchanges it for the partition identity's own token.
EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"
EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"

# The api-versions every call uses; each has its spec in tests/data/azure-specs.
ALIAS_API = "2021-10-01"
MG_API = "2020-05-01"
RESOURCES_API = "2021-04-01"
SUBSCRIPTIONS_API = "2022-12-01"
MSI_API = "2023-01-31"
AUTHORIZATION_API = "2022-04-01"
NETWORK_API = "2023-11-01"
DNS_API = "2020-06-01"
GRAPH_API = "2021-03-01"

RESOURCE_GROUP = "nclav-rg"
VNET = "nclav-vnet"
DNS_LINK = "nclav-link"
ENCLAVE_IDENTITY = "nclav-identity"
FEDERATION = "nclav-platform"
DEFAULT_VNET_CIDR = "10.0.0.0/16"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
# "Azure Service Bus Data Receiver": what a queue import grants the importer (spec §3.7).
SERVICE_BUS_RECEIVER = "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
PROVIDERS = ("Microsoft.ManagedIdentity", "Microsoft.Network")

_MAX_ALIAS = 63
_MAX_IDENTITY = 64


@dataclass(frozen=True)
class AzureDriverConfig:
    """``nclav serve --azure-*`` (env ``NCLAV_AZURE_*``)."""

    tenant_id: str
    management_group_id: str
    billing_account_name: str
    billing_profile_name: str
    invoice_section_name: str
    default_location: str = "eastus2"
    subscription_prefix: str | None = None
    client_id: str | None = None
    client_secret: str | None = None

    def __repr__(self) -> str:  # the secret never reaches a log line
        secret = "***" if self.client_secret else None
        return (
            f"AzureDriverConfig(tenant_id={self.tenant_id!r}, "
            f"management_group_id={self.management_group_id!r}, client_id={self.client_id!r}, "
            f"client_secret={secret!r})"
        )

    @property
    def billing_scope(self) -> str:
        return (
            f"/providers/Microsoft.Billing/billingAccounts/{self.billing_account_name}"
            f"/billingProfiles/{self.billing_profile_name}"
            f"/invoiceSections/{self.invoice_section_name}"
        )


def alias_name(config: AzureDriverConfig, enclave_id: str) -> str:
    """``{prefix}-{enclave_id}``: characters outside ``[A-Za-z0-9-_.]`` become '-', at most 63.

    The sanitizer is lossy (two ids could meet): a name it changed gets a hash of the raw id.
    """
    raw = f"{config.subscription_prefix}-{enclave_id}" if config.subscription_prefix else enclave_id
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-")
    if name == raw and len(name) <= _MAX_ALIAS:
        return name
    cut = re.sub(r"[^A-Za-z0-9]+$", "", name[: _MAX_ALIAS - 9])
    return f"{cut}-{short_hash(raw)}"


def partition_identity_name(partition_id: str) -> str:
    name = f"partition-{partition_id}"
    if len(name) <= _MAX_IDENTITY:
        return name
    return f"pt-{partition_id[:19]}-{short_hash(partition_id, 6)}"


def role_definition_id(subscription_id: str, role: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{role}"
    )


def role_assignment_name(scope: str, role: str, principal_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"nclav:{scope.lower()}|{role}|{principal_id}"))


def rg_id(subscription_id: str) -> str:
    return f"/subscriptions/{subscription_id}/resourceGroups/{RESOURCE_GROUP}"


def identity_id(subscription_id: str, name: str) -> str:
    kind = "Microsoft.ManagedIdentity/userAssignedIdentities"
    return f"{rg_id(subscription_id)}/providers/{kind}/{name}"


def vnet_id(subscription_id: str) -> str:
    return f"{rg_id(subscription_id)}/providers/Microsoft.Network/virtualNetworks/{VNET}"


def zone_id(subscription_id: str, zone: str) -> str:
    return f"{rg_id(subscription_id)}/providers/Microsoft.Network/privateDnsZones/{zone}"


def tags(enclave_id: str, **extra: str) -> dict[str, str]:
    return nclav_tags(enclave_id, **extra)


__all__ = [
    "ALIAS_API",
    "ARM",
    "ARM_SCOPE",
    "AUTHORIZATION_API",
    "CONTRIBUTOR",
    "SERVICE_BUS_RECEIVER",
    "DNS_API",
    "ENCLAVE",
    "EXCHANGE_AUDIENCE",
    "EXCHANGE_SCOPE",
    "GRAPH_API",
    "MANAGED",
    "MG_API",
    "MSI_API",
    "NETWORK_API",
    "PARTITION",
    "RESOURCES_API",
    "RESOURCE_GROUP",
    "SUBSCRIPTIONS_API",
    "AzureDriverConfig",
    "alias_name",
    "identity_id",
    "partition_identity_name",
    "rg_id",
    "role_assignment_name",
    "role_definition_id",
    "tags",
    "vnet_id",
    "zone_id",
]
