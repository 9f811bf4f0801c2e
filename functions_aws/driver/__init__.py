"""The AWS driver: enclaves as AWS accounts vended through Organizations.

``PLUGIN`` is the ``nclav.drivers`` entry point (``aws``): its options are declared here once,
and core builds ``nclav serve --aws-*`` flags and reads ``NCLAV_AWS_*`` from them; core never
imports this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions_aws.driver.config import AwsDriverConfig
from functions_aws.driver.driver import AwsDriver
from nclav.runtime.drivers import DriverOption, DriverPlugin

if TYPE_CHECKING:
    from collections.abc import Mapping

OPTIONS = (
    DriverOption("org_unit_id", "OU id where new account enclaves are placed.", required=True),
    DriverOption("email_domain", "Email domain for new account registration.", required=True),
    DriverOption("default_region", "Default AWS region.", "us-east-1"),
    DriverOption("account_prefix", "Prefix for account names (myorg -> myorg-<id>)."),
    DriverOption(
        "cross_account_role",
        "IAM role assumed in enclave accounts.",
        "OrganizationAccountAccessRole",
    ),
    DriverOption("role_arn", "IAM role ARN assumed for management API calls."),
)


def config_from_options(values: Mapping[str, str | None]) -> AwsDriverConfig:
    """``AwsDriverConfig`` from the option values ``DriverPlugin.make_driver`` checked."""
    return AwsDriverConfig(
        org_unit_id=str(values["org_unit_id"]),
        email_domain=str(values["email_domain"]).lstrip("@"),
        default_region=values.get("default_region") or "us-east-1",
        account_prefix=values.get("account_prefix"),
        cross_account_role=values.get("cross_account_role") or "OrganizationAccountAccessRole",
        role_arn=values.get("role_arn"),
    )


def _make(values: Mapping[str, str | None]) -> AwsDriver:
    return AwsDriver(config_from_options(values))


PLUGIN = DriverPlugin("aws", OPTIONS, _make)
# The entry point's name in metadata written before PLUGIN (``pip install -e .`` updates it);
# calling it checks the options and makes the driver, as the old factory did.
make_driver = PLUGIN

__all__ = [
    "OPTIONS",
    "PLUGIN",
    "AwsDriver",
    "AwsDriverConfig",
    "config_from_options",
    "make_driver",
]
