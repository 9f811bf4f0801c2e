"""The Azure driver: enclaves as Azure subscriptions created through the MCA alias API.

``PLUGIN`` is the ``nclav.drivers`` entry point (``azure``): its options are declared here once,
and core builds ``nclav serve --azure-*`` flags and reads ``NCLAV_AZURE_*`` from them; core never
imports this package. Importing it loads no Azure SDK: the driver makes its ARM client (and
the credential chain) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions_azure.driver.config import AzureDriverConfig
from functions_azure.driver.driver import AzureDriver
from nclav.runtime.drivers import DriverOption, DriverPlugin

if TYPE_CHECKING:
    from collections.abc import Mapping

OPTIONS = (
    DriverOption("tenant_id", "Azure tenant ID.", required=True),
    DriverOption(
        "management_group_id", "Management group for enclave subscriptions.", required=True
    ),
    DriverOption("billing_account_name", "MCA billing account name.", required=True),
    DriverOption("billing_profile_name", "MCA billing profile name.", required=True),
    DriverOption("invoice_section_name", "MCA invoice section name.", required=True),
    DriverOption("default_location", "Default Azure region.", "eastus2"),
    DriverOption(
        "subscription_prefix", "Prefix for subscription aliases (myorg -> myorg-<enclave id>)."
    ),
    DriverOption(
        "client_id", "Service principal client ID (falls back to managed identity / Azure CLI)."
    ),
    DriverOption("client_secret", "Service principal client secret."),
)


def config_from_options(values: Mapping[str, str | None]) -> AzureDriverConfig:
    """``AzureDriverConfig`` from the option values ``DriverPlugin.make_driver`` checked."""
    return AzureDriverConfig(
        tenant_id=str(values["tenant_id"]),
        management_group_id=str(values["management_group_id"]),
        billing_account_name=str(values["billing_account_name"]),
        billing_profile_name=str(values["billing_profile_name"]),
        invoice_section_name=str(values["invoice_section_name"]),
        default_location=values.get("default_location") or "eastus2",
        subscription_prefix=values.get("subscription_prefix"),
        client_id=values.get("client_id"),
        client_secret=values.get("client_secret"),
    )


def _make(values: Mapping[str, str | None]) -> AzureDriver:
    return AzureDriver(config_from_options(values))


PLUGIN = DriverPlugin("azure", OPTIONS, _make)

__all__ = ["OPTIONS", "PLUGIN", "AzureDriver", "AzureDriverConfig", "config_from_options"]
