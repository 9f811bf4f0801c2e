"""The GCP driver: enclaves as Google Cloud projects under a folder or organization.

``PLUGIN`` is the ``nclav.drivers`` entry point (``gcp``): its options are declared here once,
and core builds ``nclav serve --gcp-*`` flags and reads ``NCLAV_GCP_*`` from them; core never
imports this package. Importing it loads no Google client library (REST through google-auth).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions_gcp.driver.config import DEFAULT_PARTITION_ROLES, DEFAULT_REGION, GcpDriverConfig
from functions_gcp.driver.driver import GcpDriver
from nclav.runtime.drivers import DriverOption, DriverPlugin

if TYPE_CHECKING:
    from collections.abc import Mapping

OPTIONS = (
    DriverOption(
        "parent",
        "Resource parent of enclave projects: folders/123 or organizations/456.",
        required=True,
    ),
    DriverOption(
        "billing_account", "Billing account: billingAccounts/XXXXXX-YYYYYY-ZZZZZZ.", required=True
    ),
    DriverOption("project_prefix", "Prefix for GCP project ids (acme -> acme-<enclave id>)."),
    DriverOption("default_region", "Default region for enclave projects.", DEFAULT_REGION),
    DriverOption(
        "partition_roles",
        "Comma-separated roles each partition's service account gets on its project.",
        ",".join(DEFAULT_PARTITION_ROLES),
    ),
)


def config_from_options(values: Mapping[str, str | None]) -> GcpDriverConfig:
    """``GcpDriverConfig`` from the option values ``DriverPlugin.make_driver`` checked."""
    roles = values.get("partition_roles") or ",".join(DEFAULT_PARTITION_ROLES)
    return GcpDriverConfig(
        parent=str(values["parent"]),
        billing_account=str(values["billing_account"]),
        default_region=values.get("default_region") or DEFAULT_REGION,
        project_prefix=values.get("project_prefix") or None,
        partition_roles=tuple(r.strip() for r in roles.split(",") if r.strip()),
    )


def _make(values: Mapping[str, str | None]) -> GcpDriver:
    return GcpDriver(config_from_options(values))


PLUGIN = DriverPlugin("gcp", OPTIONS, _make)

__all__ = ["OPTIONS", "PLUGIN", "GcpDriver", "GcpDriverConfig", "config_from_options"]
