"""``GcpDriver``: enclaves as Google Cloud projects (cloud-drivers-spec §2), the core's Driver
port and an ``OrphanScanner``.

Every call is REST through one authorized session (``functions_gcp._rest``) and idempotent: a
step delivered twice, or retried after a partial failure, finds what the first attempt made
(409 on a create is "there already"). Nothing sleeps: an operation still running after one
more look is a ``WaitingError`` and the step comes back later.

Terraform never runs with the platform's credentials: ``auth_env`` gives it a short-lived
access token of the partition's own service account (``generateAccessToken``, made with the
platform's credentials, which need ``roles/iam.serviceAccountTokenCreator`` on it: granted at
the folder by the deployment) and nothing else. A partition without its service account gets
no credentials at all.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from functions_gcp._rest import CLOUD_BILLING, CLOUD_PLATFORM, GcpApiError, Rest
from functions_gcp.driver import iam, orphans, psc
from functions_gcp.driver.config import (
    SERVICES,
    TOKEN_LIFETIME_S,
    VPC,
    ZONE,
    GcpDriverConfig,
    account_id,
    display_name,
    labels,
    partition_account_id,
    project_id,
    sa_email,
)
from functions_gcp.driver.network import compute_get, ensure_network, ensure_zone, vpc_link
from functions_gcp.driver.projects import (
    delete_project,
    enable_services,
    ensure_project,
    get_project,
    link_billing,
    project_number,
)
from nclav.errors import PermanentError, WaitingError
from nclav.model import Cloud
from nclav.state import Status, handle_of

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from nclav.engine.driver import Orphan
    from nclav.model import EnclaveConfig, Export, Import, PartitionConfig
    from nclav.state import EnclaveState, Handle

logger = logging.getLogger(__name__)
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
PROPAGATION_RETRY_S = 10.0


class GcpDriver:
    cloud = Cloud.GCP

    def __init__(
        self,
        config: GcpDriverConfig,
        *,
        session: Any | None = None,
        endpoints: Mapping[str, str] | None = None,
        services: Sequence[str] = SERVICES,
    ) -> None:
        self.config = config
        self.services = tuple(services)
        self.rest = Rest(session, endpoints, scopes=(CLOUD_PLATFORM, CLOUD_BILLING))

    def _region(self, enclave: EnclaveConfig) -> str:
        return enclave.region or self.config.default_region

    def _project(self, enclave_id: str, handle: Handle | None = None) -> str:
        return str((handle or {}).get("project_id") or project_id(self.config, enclave_id))

    # -- enclaves ----------------------------------------------------------------------

    def provision_enclave(
        self, enclave: EnclaveConfig, handle: Handle | None
    ) -> tuple[Handle, dict[str, str]]:
        """Project (created or undeleted, labelled), billing, APIs, identity, network, zone:
        every step re-run each time (each is idempotent), so a changed enclave converges."""
        pid = project_id(self.config, enclave.id)
        region = self._region(enclave)
        zone = enclave.dns.zone if enclave.dns else None
        if zone and not enclave.network:
            raise PermanentError(
                f"enclave {enclave.id}: dns.zone needs network (the private zone is bound to "
                "the enclave's VPC)"
            )
        tags = labels(enclave.id)
        project = ensure_project(
            self.rest, pid, self.config.parent, display_name(enclave.name, pid), tags
        )
        link_billing(self.rest, pid, self.config.billing_account)
        enable_services(self.rest, pid, self.services)
        identity = ""
        if enclave.identity:
            identity = iam.ensure_service_account(
                self.rest, pid, account_id(enclave.identity), f"nclav enclave {enclave.id}"
            )
        new: Handle = {
            "driver": "gcp",
            "kind": "enclave",
            "enclave_id": enclave.id,
            "project_id": pid,
            "project_number": project_number(project),
            "parent": self.config.parent,
            "region": region,
            "service_account_email": identity,
            "vpc_self_link": "",
            "subnets": [],
            "dns_zone_name": "",
            "dns_zone": "",
        }
        if enclave.network:
            new["subnets"] = ensure_network(self.rest, pid, region, enclave.network.subnets)
            new["vpc_self_link"] = vpc_link(pid)
        if zone:
            new["dns_zone"] = ensure_zone(self.rest, pid, zone, tags, f"nclav enclave {enclave.id}")
            new["dns_zone_name"] = ZONE
        new["provisioning_complete"] = True
        return new, self.context_vars(new)

    def context_vars(self, handle: Handle) -> dict[str, str]:
        return {
            "nclav_project_id": str(handle["project_id"]),
            "nclav_project_number": str(handle.get("project_number", "")),
            "nclav_region": str(handle["region"]),
            "nclav_enclave": str(handle["enclave_id"]),
            "nclav_service_account": str(handle.get("service_account_email", "")),
            "nclav_network": str(handle.get("vpc_self_link", "")),
        }

    def teardown_enclave(self, enclave: EnclaveConfig | None, handle: Handle | None) -> None:
        """The project goes to DELETE_REQUESTED (recoverable for 30 days, which a later
        provision of the same enclave does through ``undelete``)."""
        old = handle_of(handle, "gcp", "enclave") or {}
        enclave_id = str(old.get("enclave_id") or (enclave.id if enclave else ""))
        if not enclave_id:
            return
        delete_project(self.rest, self._project(enclave_id, old))

    def observe_enclave(self, handle: Handle | None) -> dict[str, Any]:
        """Read-only drift check, the AWS driver's shape (``exists``, ``healthy``, ``state``)
        plus ``missing`` and the PRD's ``status``: ACTIVE -> active, DELETE_REQUESTED ->
        deleting, the VPC ``nclav-vpc`` or the enclave's service account gone -> degraded,
        no project (404/403) -> deleted."""
        old = handle_of(handle, "gcp", "enclave")
        found = get_project(self.rest, str(old["project_id"])) if old else None
        if old is None or found is None:
            return {
                "exists": False,
                "healthy": False,
                "state": None,
                "missing": [],
                "status": Status.DELETED.value,
            }
        state = found.get("state")
        if state != "ACTIVE":  # DELETE_REQUESTED: its resources are not readable any more
            status = Status.DELETING if state == "DELETE_REQUESTED" else Status.DEGRADED
            return {
                "exists": True,
                "healthy": False,
                "state": state,
                "missing": [],
                "status": status.value,
            }
        pid = str(old["project_id"])
        missing = []
        if (
            old.get("vpc_self_link")
            and compute_get(self.rest, pid, f"global/networks/{VPC}") is None
        ):
            missing.append(str(old["vpc_self_link"]))
        email = str(old.get("service_account_email") or "")
        if email and iam.get_service_account(self.rest, pid, email) is None:
            missing.append(email)
        for resource in missing:
            logger.warning("enclave %s: drift detected, %s is missing", old.get("enclave_id"),
                           resource)  # fmt: skip
        return {
            "exists": True,
            "healthy": not missing,
            "state": state,
            "missing": missing,
            "status": (Status.DEGRADED if missing else Status.ACTIVE).value,
        }

    # -- partitions --------------------------------------------------------------------

    def provision_partition(
        self,
        enclave: EnclaveConfig,
        partition: PartitionConfig,
        handle: Handle | None,
        *,
        enclave_handle: Handle | None = None,
    ) -> Handle:
        """The partition's service account with ``partition_roles`` on the project; the
        enclave identity (if any) may impersonate it."""
        pid = self._project(enclave.id, handle_of(enclave_handle, "gcp", "enclave"))
        account = partition_account_id(partition.id)
        email = iam.ensure_service_account(
            self.rest,
            pid,
            account,
            f"nclav {enclave.id}/{partition.id}",
            orphans.partition_marker(enclave.id, partition.id),
        )
        member = f"serviceAccount:{email}"
        for role in self.config.partition_roles:
            iam.edit_policy(
                self.rest,
                "cloudresourcemanager",
                f"v3/projects/{pid}",
                iam.add_member(role, member),
                f"partition {enclave.id}/{partition.id}: grant {role}",
            )
        if enclave.identity:
            identity = sa_email(account_id(enclave.identity), pid)
            iam.edit_policy(
                self.rest,
                "iam",
                f"v1/projects/{pid}/serviceAccounts/{email}",
                iam.add_member(TOKEN_CREATOR, f"serviceAccount:{identity}"),
                f"partition {enclave.id}/{partition.id}: let {identity} impersonate it",
            )
        return {
            "driver": "gcp",
            "kind": "partition",
            "type": "iac",
            "enclave_id": enclave.id,
            "partition_id": partition.id,
            "project_id": pid,
            "region": self._region(enclave),
            "service_account_email": email,
            "roles": list(self.config.partition_roles),
        }

    def teardown_partition(
        self,
        enclave_id: str,
        partition_id: str,
        handle: Handle | None,
        *,
        enclave_handle: Handle | None = None,
    ) -> None:
        """Its project bindings, then the service account (gone already: fine)."""
        old = handle_of(handle, "gcp", "partition") or {}
        pid = str(
            old.get("project_id")
            or self._project(enclave_id, handle_of(enclave_handle, "gcp", "enclave"))
        )
        email = str(
            old.get("service_account_email") or sa_email(partition_account_id(partition_id), pid)
        )
        if (get_project(self.rest, pid) or {}).get("state") != "ACTIVE":
            return  # the project is gone or going, and its service accounts with it
        iam.edit_policy(
            self.rest,
            "cloudresourcemanager",
            f"v3/projects/{pid}",
            iam.remove_member(f"serviceAccount:{email}"),
            f"partition {enclave_id}/{partition_id}: remove its bindings",
        )
        iam.delete_service_account(self.rest, pid, email)

    def observe_partition(self, handle: Handle | None) -> dict[str, Any]:
        """Read-only: the partition's service account is there and enabled (the original
        looked at the handle only)."""
        old = handle_of(handle, "gcp", "partition")
        email = str((old or {}).get("service_account_email") or "")
        found = (
            iam.get_service_account(self.rest, str(old["project_id"]), email)
            if old and email
            else None
        )
        return {"exists": found is not None, "healthy": bool(found and not found.get("disabled"))}

    def auth_env(
        self, enclave_handle: Handle | None, partition_handle: Handle | None
    ) -> dict[str, str]:
        """A one-hour access token of the partition's service account, its project and
        region: all the google provider needs, and nothing of the platform's own."""
        partition = handle_of(partition_handle, "gcp", "partition")
        enclave = handle_of(enclave_handle, "gcp", "enclave") or {}
        if not partition or not partition.get("service_account_email"):
            raise PermanentError(
                "the partition has no GCP service account handle (provision it first): "
                "terraform never runs with the platform's credentials"
            )
        email = str(partition["service_account_email"])
        what = f"generateAccessToken for {email}"
        try:
            reply = self.rest.call(
                "POST",
                "iamcredentials",
                f"v1/projects/-/serviceAccounts/{email}:generateAccessToken",
                what,
                body={"scope": [CLOUD_PLATFORM], "lifetime": f"{TOKEN_LIFETIME_S}s"},
                expect=(404,),
            )
        except GcpApiError as exc:
            if exc.status == 403:
                raise PermanentError(
                    f"{exc}: nclav's credentials need {TOKEN_CREATOR} on {email} (the "
                    "deployment grants it at the --gcp-parent folder)"
                ) from exc
            raise
        if reply.status == 404:  # a new service account is eventually consistent
            raise WaitingError(f"{what}: not found yet", retry_after_s=PROPAGATION_RETRY_S)
        project = str(partition.get("project_id") or enclave.get("project_id", ""))
        region = str(partition.get("region") or enclave.get("region", ""))
        return {
            "GOOGLE_OAUTH_ACCESS_TOKEN": str(reply.body["accessToken"]),
            "GOOGLE_PROJECT": project,
            "GOOGLE_CLOUD_PROJECT": project,
            "GOOGLE_REGION": region,
        }

    # -- exports and imports -----------------------------------------------------------

    def provision_export(
        self, enclave: EnclaveConfig, export: Export, outputs: Mapping[str, str]
    ) -> Handle:
        handle = psc.export_handle(
            project_id(self.config, enclave.id), self._region(enclave), enclave, export, outputs
        )
        if handle["type"] == "http":
            handle = psc.open_http_export(self.rest, handle, export)
        return handle

    def teardown_export(self, enclave_id: str, name: str, handle: Handle | None) -> None:
        return None  # an export makes nothing in the cloud: the attachment is Terraform's

    def provision_import(
        self, enclave: EnclaveConfig, imp: Import, export_handle: Handle | None
    ) -> Handle:
        if export_handle is None:
            raise PermanentError(
                f"import {imp.alias}: export {imp.from_}/{imp.export_name} is not wired yet"
            )
        export = handle_of(export_handle, "gcp", "export")
        if export is not None and export.get("type") == "tcp":
            pid = project_id(self.config, enclave.id)
            tags = labels(enclave.id, nclav_import=imp.alias)
            return psc.import_tcp(self.rest, pid, self._region(enclave), enclave, imp, export, tags)
        if export is not None and export.get("type") == "queue":
            pid = project_id(self.config, enclave.id)
            tags = labels(enclave.id, nclav_import=imp.alias)
            return psc.import_queue(self.rest, pid, enclave, imp, export, tags)
        if export is not None and export.get("type") == "http":
            pid = project_id(self.config, enclave.id)
            return psc.import_http(self.rest, pid, enclave, imp, export)
        # an export of another cloud: its outputs are all there is
        return {
            "driver": "gcp",
            "kind": "import",
            "type": str(export_handle.get("type", "")),
            "enclave_id": enclave.id,
            "alias": imp.alias,
            "mode": "pass-through",
            "outputs": dict(export_handle.get("outputs", {})),
        }

    def teardown_import(self, enclave_id: str, alias: str, handle: Handle | None) -> None:
        old = handle_of(handle, "gcp", "import")
        if old and old.get("type") == "tcp" and old.get("endpoint_name"):
            psc.teardown_tcp(self.rest, old)
        elif old and old.get("type") == "queue" and old.get("subscription"):
            psc.teardown_queue(self.rest, old)
        elif old:
            psc.revoke(self.rest, list(old.get("iam_grants") or []))

    # -- leak checks -------------------------------------------------------------------

    def list_orphans(self, applied: Sequence[EnclaveState]) -> list[Orphan]:
        """``OrphanScanner``: in the project of every applied GCP enclave, the nclav-labelled
        resources of partitions the enclave no longer has."""
        found: list[Orphan] = []
        for state in applied:
            found += self.enclave_orphans(state.enclave_handle, state.partitions)
        return found

    def enclave_orphans(
        self, enclave_handle: Handle | None, active_partitions: Iterable[str]
    ) -> list[Orphan]:
        enclave = handle_of(enclave_handle, "gcp", "enclave")
        if not enclave or not enclave.get("project_id"):
            return []
        return orphans.orphans(
            self.rest, str(enclave["project_id"]), str(enclave["enclave_id"]), active_partitions
        )

    def partition_resources(self, enclave_handle: Handle | None, partition_id: str) -> list[str]:
        """Names of what still belongs to the partition: resources with its labels and its
        service account (after its destroy and teardown: empty)."""
        enclave = handle_of(enclave_handle, "gcp", "enclave")
        if not enclave or not enclave.get("project_id"):
            return []
        return orphans.partition_resources(
            self.rest, str(enclave["project_id"]), str(enclave["enclave_id"]), partition_id
        )


if TYPE_CHECKING:
    from nclav.engine.driver import Driver, OrphanScanner

    def _implements(driver: GcpDriver) -> tuple[Driver, OrphanScanner]:
        return driver, driver


__all__ = ["GcpDriver"]
