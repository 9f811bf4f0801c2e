"""The AWS driver: enclaves as AWS accounts vended through Organizations.

``make_driver`` is the ``nclav.drivers`` entry point (``aws``): the core's runtime finds it
through importlib.metadata, so ``core/`` never imports this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions_aws.driver.config import AwsDriverConfig
from functions_aws.driver.driver import AwsDriver
from nclav.errors import Issue, SpecError

if TYPE_CHECKING:
    from collections.abc import Mapping

# option name -> the serve flag that sets it (for error messages)
OPTIONS = {
    "org_unit_id": "--aws-org-unit-id",
    "email_domain": "--aws-email-domain",
    "default_region": "--aws-default-region",
    "account_prefix": "--aws-account-prefix",
    "cross_account_role": "--aws-cross-account-role",
    "role_arn": "--aws-role-arn",
}
REQUIRED = ("org_unit_id", "email_domain")


def config_from_options(options: Mapping[str, str | None]) -> AwsDriverConfig:
    """``AwsDriverConfig`` from serve's generic options (empty values mean "not given")."""
    given = {k: v for k, v in options.items() if v}
    issues = [
        Issue(OPTIONS[k], None, k, f"required with --cloud aws (env NCLAV_AWS_{k.upper()})")
        for k in REQUIRED
        if k not in given
    ]
    issues += [
        Issue(k, None, k, f"unknown AWS driver option; expected one of {', '.join(OPTIONS)}")
        for k in given
        if k not in OPTIONS
    ]
    if issues:
        raise SpecError(issues)
    return AwsDriverConfig(
        org_unit_id=given["org_unit_id"],
        email_domain=given["email_domain"].lstrip("@"),
        default_region=given.get("default_region", "us-east-1"),
        account_prefix=given.get("account_prefix"),
        cross_account_role=given.get("cross_account_role", "OrganizationAccountAccessRole"),
        role_arn=given.get("role_arn"),
    )


def make_driver(options: Mapping[str, str | None]) -> AwsDriver:
    """Entry point ``nclav.drivers: aws``."""
    return AwsDriver(config_from_options(options))


__all__ = ["AwsDriver", "AwsDriverConfig", "config_from_options", "make_driver"]
