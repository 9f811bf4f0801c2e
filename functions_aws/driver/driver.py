"""``AwsDriver``: enclaves as AWS accounts (cloud-drivers-spec §4), the core's Driver port.

Every method is idempotent: a step delivered twice, or retried after a partial failure, looks
up what the first attempt made (the account by its email, the VPC by its tags, subnets by
CIDR, the zone by name, roles by name, endpoint services by NLB) instead of making another.
SDK errors leave through ``errors.aws_errors`` only, as TemporaryError or PermanentError.

Partition steps run in the terraform function, whose role may not call Organizations: they
take the account id from the enclave's applied handle (``enclave_handle``), never from a
lookup, and reach the account through the cross-account role only.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3

from functions_aws.driver import endpoints, imports, orphans
from functions_aws.driver.accounts import Accounts, account_state
from functions_aws.driver.config import (
    ADMIN_POLICY,
    AwsDriverConfig,
    partition_role_name,
    role_arn,
    tags,
)
from functions_aws.driver.identity import delete_role, ensure_role, role_tags
from functions_aws.driver.network import ensure_subnets, ensure_vpc, ensure_zone
from functions_aws.driver.sessions import SETTLE_S, Credentials, SessionFactory, Sessions
from nclav.errors import PermanentError
from nclav.model import Cloud
from nclav.state import handle_of

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from botocore.config import Config

    from nclav.engine.driver import Orphan
    from nclav.model import EnclaveConfig, Export, Import, PartitionConfig
    from nclav.state import EnclaveState, Handle

logger = logging.getLogger(__name__)


class AwsDriver:
    cloud = Cloud.AWS

    def __init__(
        self,
        config: AwsDriverConfig,
        session_factory: SessionFactory = boto3.Session,
        *,
        clock: Callable[[], float] = time.time,
        close_quota_retry_s: float = 6 * 3600.0,
        partition_policy_arns: tuple[str, ...] = (ADMIN_POLICY,),
        botocore_config: Config | None = None,
    ) -> None:
        self.config = config
        # Managed policies of every partition role; ``{account_id}`` is the enclave account
        # (for a customer-managed policy kept in each enclave account instead of admin).
        self.partition_policy_arns = partition_policy_arns
        self.sessions = Sessions(
            config, session_factory, clock=clock, botocore_config=botocore_config
        )
        self.accounts = Accounts(
            config, self.sessions, clock, close_quota_retry_s=close_quota_retry_s
        )

    def set_time_left(self, time_left: Callable[[], float | None]) -> None:
        """Seconds the current invocation has left (the handler sets it per invocation, e.g.
        ``lambda: context.get_remaining_time_in_millis() / 1000``); no AWS call starts that
        the invocation could not see through (``Sessions._check_time``)."""
        self.sessions.time_left = time_left

    def _region(self, enclave: EnclaveConfig) -> str:
        return enclave.region or self.config.default_region

    # -- enclaves ----------------------------------------------------------------------

    def provision_enclave(
        self, enclave: EnclaveConfig, handle: Handle | None
    ) -> tuple[Handle, dict[str, str]]:
        region = self._region(enclave)
        old = handle_of(handle, "aws", "enclave")
        if old and old.get("account_id"):
            account = str(old["account_id"])
            name, email = str(old.get("account_name", "")), str(old.get("account_email", ""))
            self.accounts.remember(enclave.id, account)
        else:
            account, name, email = self.accounts.ensure(enclave.id)
        self.accounts.place(account)
        # The first AssumeRole into a new account can be refused while its role propagates.
        joined = self.accounts.joined.get(account, 0.0)
        self.sessions.account_credentials(account, settle_until=joined and joined + SETTLE_S)
        ec2 = self.sessions.account(account, "ec2", region)
        vpc = ensure_vpc(ec2, enclave)
        subnets = ensure_subnets(ec2, enclave, vpc["VpcId"])
        new: Handle = {
            "driver": "aws",
            "kind": "enclave",
            "enclave_id": enclave.id,
            "account_id": account,
            "account_name": name,
            "account_email": email,
            "region": region,
            "cross_account_role_arn": role_arn(account, self.config.cross_account_role),
            "vpc_id": vpc["VpcId"],
            "vpc_cidr": vpc["CidrBlock"],
            "subnet_ids": subnets,
        }
        zone = enclave.dns.zone if enclave.dns else None
        if zone:
            r53 = self.sessions.account(account, "route53", region)
            new["route53_zone"] = zone
            new["route53_zone_id"] = ensure_zone(r53, enclave.id, zone, vpc["VpcId"], region)
        if enclave.identity:
            iam = self.sessions.account(account, "iam", region)
            principal = self.sessions.management_principal()
            new["identity_role_arn"], _ = ensure_role(
                iam, enclave.identity, [principal], tags(enclave.id)
            )
        new["provisioning_complete"] = True
        return new, self.context_vars(new)

    def context_vars(self, handle: Handle) -> dict[str, str]:
        """Template values of an enclave (``nclav_role_arn``: its identity role, if any,
        else the cross-account role; partition roles are per partition, not per enclave)."""
        account = str(handle["account_id"])
        return {
            "nclav_project_id": account,
            "nclav_account_id": account,
            "nclav_region": str(handle["region"]),
            "nclav_role_arn": str(
                handle.get("identity_role_arn") or handle.get("cross_account_role_arn") or ""
            ),
            "nclav_enclave": str(handle["enclave_id"]),
        }

    def teardown_enclave(self, enclave: EnclaveConfig | None, handle: Handle | None) -> None:
        """Close the account (suspended for 90 days, then gone), within the CloseAccount quota."""
        old = handle_of(handle, "aws", "enclave") or {}
        enclave_id = str(old.get("enclave_id") or (enclave.id if enclave else ""))
        account = old.get("account_id")
        if not account and enclave_id:
            # A first provision that failed after CreateAccount stored no handle: find it.
            found = self.accounts.find(enclave_id)
            account = found["Id"] if found else None
        if not account:
            logger.warning("enclave %s has no AWS account to close", enclave_id)
            return
        self.accounts.close(enclave_id, str(account))

    def observe_enclave(self, handle: Handle | None) -> dict[str, Any]:
        """Read-only: SUSPENDED counts as existing but unhealthy (the PRD's reading, §4.8)."""
        old = handle_of(handle, "aws", "enclave")
        account = self.accounts.describe(str(old["account_id"])) if old else None
        if account is None:
            return {"exists": False, "healthy": False, "state": None}
        state = account_state(account)
        return {"exists": state != "CLOSED", "healthy": state == "ACTIVE", "state": state}

    # -- partitions --------------------------------------------------------------------

    def provision_partition(
        self,
        enclave: EnclaveConfig,
        partition: PartitionConfig,
        handle: Handle | None,
        *,
        enclave_handle: Handle | None = None,
    ) -> Handle:
        """The partition's IAM role in the enclave account, AdministratorAccess there by default.

        It trusts the enclave's cross-account role (the chain auth_env uses) and the concrete
        management principal, never a wildcard. The account comes from the enclave's handle
        (or the partition's own): this runs in the terraform function, which never calls
        Organizations.
        """
        account = _account_of(enclave.id, enclave_handle, handle)
        region = self._region(enclave)
        name = partition_role_name(partition.id)
        principals = [
            role_arn(account, self.config.cross_account_role),
            self.sessions.management_principal(),
        ]
        iam = self.sessions.account(account, "iam", region)
        policies = tuple(p.format(account_id=account) for p in self.partition_policy_arns)
        arn, since = ensure_role(
            iam, name, principals, role_tags(enclave.id, partition.id), policies
        )
        return {
            "driver": "aws",
            "kind": "partition",
            "type": "iac",
            "enclave_id": enclave.id,
            "partition_id": partition.id,
            "account_id": account,
            "region": region,
            "role_name": name,
            "partition_role_arn": arn,
            # Since when its trust policy holds (IAM time): auth_env waits out propagation.
            "role_trusted_since": datetime.fromtimestamp(since).astimezone().isoformat(),
        }

    def teardown_partition(
        self,
        enclave_id: str,
        partition_id: str,
        handle: Handle | None,
        *,
        enclave_handle: Handle | None = None,
    ) -> None:
        old = handle_of(handle, "aws", "partition") or {}
        try:
            account = _account_of(enclave_id, enclave_handle, handle)
        except PermanentError:
            logger.warning(
                "partition %s/%s: no AWS account in its handles", enclave_id, partition_id
            )
            return
        region = str(old.get("region") or self.config.default_region)
        try:
            iam = self.sessions.account(str(account), "iam", region)
        except PermanentError as exc:
            # The account is closed or the role unreachable: nothing of ours can remain.
            logger.warning("partition %s/%s: %s; role not deleted", enclave_id, partition_id, exc)
            return
        delete_role(iam, str(old.get("role_name") or partition_role_name(partition_id)))

    def auth_env(
        self, enclave_handle: Handle | None, partition_handle: Handle | None
    ) -> dict[str, str]:
        """Temporary credentials of the partition role (chained through the enclave account).

        Never the server's own credentials: without a partition role (a partition whose
        identity was never made) terraform gets the enclave's cross-account role, which
        reaches that account only. Chained sessions last one hour (spec §4.9).
        """
        enclave = handle_of(enclave_handle, "aws", "enclave")
        if not enclave or not enclave.get("account_id"):
            raise PermanentError("the enclave has no AWS account handle (provision it first)")
        account, region = str(enclave["account_id"]), str(enclave["region"])
        partition = handle_of(partition_handle, "aws", "partition")
        if partition and partition.get("partition_role_arn"):
            sts = self.sessions.account(account, "sts", region)
            session = f"nclav-{partition.get('partition_id', 'partition')}"
            since = _epoch(partition.get("role_trusted_since"))
            creds = self.sessions.assume(
                sts,
                str(partition["partition_role_arn"]),
                session,
                settle_until=since + SETTLE_S if since else 0.0,
            )
        else:
            creds = self.sessions.account_credentials(account)
        return _env(creds, region)

    # -- exports and imports -----------------------------------------------------------

    def provision_export(
        self, enclave: EnclaveConfig, export: Export, outputs: Mapping[str, str]
    ) -> Handle:
        account = self.accounts.account_id(enclave.id)
        return endpoints.provision_export(
            self.sessions, account, self._region(enclave), enclave, export, outputs
        )

    def teardown_export(self, enclave_id: str, name: str, handle: Handle | None) -> None:
        old = handle_of(handle, "aws", "export")
        if old:
            endpoints.teardown_export(self.sessions, old)

    def provision_import(
        self, enclave: EnclaveConfig, imp: Import, export_handle: Handle | None
    ) -> Handle:
        if export_handle is None:
            raise PermanentError(
                f"import {imp.alias}: export {imp.from_}/{imp.export_name} is not wired yet"
            )
        export = handle_of(export_handle, "aws", "export")
        if export is None:  # an export on another cloud: its outputs are all there is
            return {
                "driver": "aws",
                "kind": "import",
                "enclave_id": enclave.id,
                "alias": imp.alias,
                "mode": "pass-through",
                "outputs": dict(export_handle.get("outputs", {})),
            }
        account = self.accounts.account_id(enclave.id)
        return imports.provision_import(self.sessions, account, enclave, imp, export)

    def teardown_import(self, enclave_id: str, alias: str, handle: Handle | None) -> None:
        old = handle_of(handle, "aws", "import")
        if old:
            imports.teardown_import(self.sessions, old)

    # -- leak checks -------------------------------------------------------------------

    def list_orphans(self, applied: Sequence[EnclaveState]) -> list[Orphan]:
        """``OrphanScanner``: in the account of every applied AWS enclave, the nclav-tagged
        resources of partitions the enclave no longer has. (An enclave nclav no longer holds
        at all has no account to look in: its account was closed by its teardown.)"""
        found: list[Orphan] = []
        for state in applied:
            found += self.enclave_orphans(state.enclave_handle, state.partitions)
        return found

    def enclave_orphans(
        self, enclave_handle: Handle | None, active_partitions: Iterable[str]
    ) -> list[Orphan]:
        """nclav-tagged resources of the enclave whose partition is not active any more."""
        enclave = handle_of(enclave_handle, "aws", "enclave")
        if not enclave or not enclave.get("account_id"):
            return []
        return orphans.orphans(
            self.sessions,
            str(enclave["account_id"]),
            str(enclave["region"]),
            str(enclave["enclave_id"]),
            active_partitions,
        )

    def partition_resources(self, enclave_handle: Handle | None, partition_id: str) -> list[str]:
        """ARNs still tagged with the partition (after its destroy: empty means clean)."""
        enclave = handle_of(enclave_handle, "aws", "enclave")
        if not enclave or not enclave.get("account_id"):
            return []
        found = orphans.tagged(
            self.sessions,
            str(enclave["account_id"]),
            str(enclave["region"]),
            str(enclave["enclave_id"]),
            partition_id,
        )
        return sorted(found)


def _account_of(enclave_id: str, enclave_handle: Handle | None, handle: Handle | None) -> str:
    for found in (
        handle_of(enclave_handle, "aws", "enclave"),
        handle_of(handle, "aws", "partition"),
    ):
        if found and found.get("account_id"):
            return str(found["account_id"])
    raise PermanentError(f"enclave {enclave_id} has no AWS account handle (provision it first)")


def _epoch(value: Any) -> float:
    """An ISO timestamp from a handle as epoch seconds (0 when absent or unreadable)."""
    try:
        return datetime.fromisoformat(str(value)).timestamp() if value else 0.0
    except ValueError:
        return 0.0


def _env(creds: Credentials, region: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": creds.access_key_id,
        "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
        "AWS_SESSION_TOKEN": creds.session_token,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }


__all__ = ["AwsDriver"]
