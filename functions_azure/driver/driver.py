"""``AzureDriver``: enclaves as Azure subscriptions (cloud-drivers-spec §3), the core's Driver port.

Every method is idempotent: names are functions of ids (``config``), every create is a PUT that
an ARM service answers the same way twice, and a long operation still running is a
``WaitingError`` (``arm``), so a redelivered step repeats the PUT and looks at the operation
again instead of sleeping in a worker.

Fixes of the original driver (behaviour spec §12, drivers spec §3): partition and import steps
take the subscription from the enclave's handle or its alias (never from a partition input
named ``nclav_subscription_id``); the partition handle keeps its identity ids; terraform runs as
the partition's managed identity through a federated credential, never as the platform identity;
a private endpoint without an address fails instead of answering ``10.0.0.0``; Resource Graph
pages are followed and its errors surface; imports can be torn down.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import TYPE_CHECKING, Any

from functions_azure.driver import links, orphans
from functions_azure.driver.arm import Arm, default_credential
from functions_azure.driver.config import (
    ALIAS_API,
    AUTHORIZATION_API,
    CONTRIBUTOR,
    DEFAULT_VNET_CIDR,
    DNS_API,
    DNS_LINK,
    ENCLAVE_IDENTITY,
    EXCHANGE_AUDIENCE,
    EXCHANGE_SCOPE,
    FEDERATION,
    MG_API,
    MSI_API,
    NETWORK_API,
    PROVIDERS,
    RESOURCE_GROUP,
    RESOURCES_API,
    SUBSCRIPTIONS_API,
    AzureDriverConfig,
    alias_name,
    identity_id,
    partition_identity_name,
    rg_id,
    role_assignment_name,
    role_definition_id,
    tags,
    vnet_id,
    zone_id,
)
from nclav.errors import ConflictError, NotFoundError, PermanentError, TemporaryError, WaitingError
from nclav.model import Cloud
from nclav.state import Status, handle_of

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from nclav.engine.driver import Orphan
    from nclav.model import EnclaveConfig, Export, Import, PartitionConfig
    from nclav.state import EnclaveState, Handle

logger = logging.getLogger(__name__)

# A new principal takes a while to reach every directory replica; its role assignment waits.
PRINCIPAL_WAIT_S = 10.0
MOVE_WAIT_S = 30.0
REGISTER_WAIT_S = 15.0


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified: only ever our own token's issuer and subject."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise PermanentError("the platform credential's token is not a JWT") from exc
    return claims if isinstance(claims, dict) else {}


class AzureDriver:
    cloud = Cloud.AZURE

    def __init__(
        self,
        config: AzureDriverConfig,
        *,
        credential: Any | None = None,
        endpoint: str | None = None,
        transport: Any | None = None,
        partition_roles: tuple[str, ...] = (CONTRIBUTOR,),
    ) -> None:
        self.config = config
        # Role definition ids (GUIDs) each partition identity gets on its subscription.
        self.partition_roles = partition_roles
        self._credential = credential
        self._endpoint = endpoint
        self._transport = transport
        self._arm: Arm | None = None
        self._subscriptions: dict[str, str] = {}  # enclave id -> subscription id

    @property
    def arm(self) -> Arm:
        # Made on first use: building a driver (nclav serve) reaches no network or credentials.
        if self._arm is None:
            credential = self._credential or default_credential(
                self.config.tenant_id, self.config.client_id, self.config.client_secret
            )
            self._credential = credential
            options: dict[str, Any] = {"transport": self._transport}
            if self._endpoint:
                options["endpoint"] = self._endpoint
            self._arm = Arm(credential, **options)
        return self._arm

    def _location(self, enclave: EnclaveConfig) -> str:
        return enclave.region or self.config.default_location

    # -- enclaves ----------------------------------------------------------------------------

    def provision_enclave(
        self, enclave: EnclaveConfig, handle: Handle | None
    ) -> tuple[Handle, dict[str, str]]:
        old = handle_of(handle, "azure", "enclave")
        alias = alias_name(self.config, enclave.id)
        if old and old.get("subscription_id"):
            sub = str(old["subscription_id"])
        else:
            sub = self._create_subscription(enclave, alias)
            self._register_providers(sub)
        self._subscriptions[enclave.id] = sub
        self._place(sub)
        location = self._location(enclave)
        base_tags = tags(enclave.id)
        self.arm.put(
            rg_id(sub),
            RESOURCES_API,
            {"location": location, "tags": base_tags},
            f"resource group {RESOURCE_GROUP}",
        )
        name = enclave.identity or ENCLAVE_IDENTITY
        identity = self.arm.put(
            identity_id(sub, name),
            MSI_API,
            {"location": location, "tags": base_tags},
            f"enclave identity {name}",
        )
        new: Handle = {
            "driver": "azure",
            "kind": "enclave",
            "enclave_id": enclave.id,
            "tenant_id": self.config.tenant_id,
            "subscription_id": sub,
            "subscription_alias": alias,
            "resource_group": RESOURCE_GROUP,
            "location": location,
            "identity_resource_id": identity["id"],
            "identity_principal_id": identity["properties"]["principalId"],
            "identity_client_id": identity["properties"]["clientId"],
            "vnet_resource_id": "",
            "subnet_ids": [],
            "dns_zone_name": "",
        }
        if enclave.network is not None:
            vnet = self._vnet(sub, enclave, location, base_tags)
            new["vnet_resource_id"] = vnet["id"]
            new["subnet_ids"] = [s["id"] for s in vnet["properties"].get("subnets", [])]
        zone = enclave.dns.zone if enclave.dns else None
        if zone:
            self._zone(sub, zone, base_tags, new["vnet_resource_id"])
            new["dns_zone_name"] = zone
        new["provisioning_complete"] = True
        return new, self.context_vars(new)

    def _create_subscription(self, enclave: EnclaveConfig, alias: str) -> str:
        """The alias's subscription: 200/201 done, 202 followed once, 409 read back."""
        path = f"/providers/Microsoft.Subscription/aliases/{alias}"
        body = {
            "properties": {
                "displayName": enclave.name,
                "billingScope": self.config.billing_scope,
                "workload": "Production",
            }
        }
        what = f"subscription alias {alias}"
        try:
            done = self.arm.put(path, ALIAS_API, body, what)
        except ConflictError:
            done = self.arm.get(path, ALIAS_API, what) or {}
        sub = done.get("properties", {}).get("subscriptionId")
        if not sub:
            state = done.get("properties", {}).get("provisioningState", "unknown")
            raise WaitingError(f"{what} is {state}: no subscription yet", retry_after_s=30.0)
        return str(sub)

    def _place(self, sub: str) -> None:
        """Under the management group; a 409 (a move in progress) is checked, not assumed."""
        mg = self.config.management_group_id
        path = f"/providers/Microsoft.Management/managementGroups/{mg}/subscriptions/{sub}"
        what = f"move subscription {sub} to management group {mg}"
        try:
            self.arm.put(path, MG_API, None, what)
        except ConflictError as exc:
            if self.arm.get(path, MG_API, what) is None:
                raise WaitingError(
                    f"{exc}; checking again later", retry_after_s=MOVE_WAIT_S
                ) from exc
        except NotFoundError as exc:  # a new subscription not yet known to management groups
            raise WaitingError(str(exc), retry_after_s=MOVE_WAIT_S) from exc

    def _register_providers(self, sub: str) -> None:
        """A new subscription may use only registered namespaces (409 otherwise)."""
        waiting = []
        for ns in PROVIDERS:
            path = f"/subscriptions/{sub}/providers/{ns}"
            state = (self.arm.get(path, RESOURCES_API) or {}).get("registrationState")
            if state == "Registered":
                continue
            self.arm.post(f"{path}/register", RESOURCES_API, None, f"register {ns}")
            if (self.arm.get(path, RESOURCES_API) or {}).get("registrationState") != "Registered":
                waiting.append(ns)
        if waiting:
            raise WaitingError(
                f"subscription {sub}: registering {', '.join(waiting)}",
                retry_after_s=REGISTER_WAIT_S,
            )

    def _vnet(
        self, sub: str, enclave: EnclaveConfig, location: str, base_tags: dict[str, str]
    ) -> dict[str, Any]:
        assert enclave.network is not None
        cidr = enclave.network.vpc_cidr or DEFAULT_VNET_CIDR
        subnets = enclave.network.subnets or (cidr,)
        body = {
            "location": location,
            "tags": base_tags,
            "properties": {
                "addressSpace": {"addressPrefixes": [cidr]},
                "subnets": [
                    {"name": f"subnet-{i}", "properties": {"addressPrefix": prefix}}
                    for i, prefix in enumerate(subnets)
                ],
            },
        }
        return self.arm.put(vnet_id(sub), NETWORK_API, body, f"virtual network of {enclave.id}")

    def _zone(self, sub: str, zone: str, base_tags: dict[str, str], vnet: str) -> None:
        path = zone_id(sub, zone)
        self.arm.put(path, DNS_API, {"location": "global", "tags": base_tags}, f"zone {zone}")
        if vnet:
            body = {
                "location": "global",
                "tags": base_tags,
                "properties": {"virtualNetwork": {"id": vnet}, "registrationEnabled": False},
            }
            self.arm.put(
                f"{path}/virtualNetworkLinks/{DNS_LINK}", DNS_API, body, f"link of zone {zone}"
            )

    def context_vars(self, handle: Handle) -> dict[str, str]:
        sub, location = str(handle["subscription_id"]), str(handle["location"])
        return {
            "nclav_project_id": sub,
            "nclav_region": location,
            "nclav_subscription_id": sub,
            "nclav_resource_group": str(handle.get("resource_group") or RESOURCE_GROUP),
            "nclav_location": location,
            "nclav_identity_client_id": str(handle.get("identity_client_id") or ""),
            "nclav_enclave": str(handle["enclave_id"]),
        }

    def teardown_enclave(self, enclave: EnclaveConfig | None, handle: Handle | None) -> None:
        """Cancel the subscription (Azure deletes it after ~90 days) and drop its alias, so
        the enclave made again gets a new subscription instead of the cancelled one."""
        old = handle_of(handle, "azure", "enclave") or {}
        enclave_id = str(old.get("enclave_id") or (enclave.id if enclave else ""))
        alias = str(old.get("subscription_alias") or alias_name(self.config, enclave_id))
        alias_path = f"/providers/Microsoft.Subscription/aliases/{alias}"
        sub = old.get("subscription_id")
        if not sub:  # a first provision that failed after the alias: find it
            found = self.arm.get(alias_path, ALIAS_API) or {}
            sub = found.get("properties", {}).get("subscriptionId")
        if not sub:
            logger.warning("enclave %s has no Azure subscription to cancel", enclave_id)
            return
        try:
            self.arm.post(
                f"/subscriptions/{sub}/providers/Microsoft.Subscription/cancel",
                ALIAS_API,
                None,
                f"cancel subscription {sub}",
            )
        except NotFoundError:
            logger.info("subscription %s of enclave %s is gone already", sub, enclave_id)
        self.arm.delete(alias_path, ALIAS_API, f"delete alias {alias}")
        self._subscriptions.pop(enclave_id, None)

    def observe_enclave(self, handle: Handle | None) -> dict[str, Any]:
        """Read-only: the subscription's state, and whether the VNet and identity are there.

        The AWS driver's shape (``exists``, ``healthy``, ``state``) plus ``missing`` and the
        status it maps to: Enabled -> active, Warned/PastDue or a missing VNet/identity ->
        degraded, Disabled (cancelled, deleted within ~90 days) -> deleting, Deleted or no
        subscription -> deleted."""
        old = handle_of(handle, "azure", "enclave")
        sub = old.get("subscription_id") if old else None
        found = self.arm.get(f"/subscriptions/{sub}", SUBSCRIPTIONS_API) if sub else None
        state = (found or {}).get("state")
        if old is None or found is None or state == "Deleted":
            return {
                "exists": False,
                "healthy": False,
                "state": state,
                "missing": [],
                "status": Status.DELETED.value,
            }
        if state == "Disabled":  # its resources may be unreadable; nothing to compare
            return {
                "exists": True,
                "healthy": False,
                "state": state,
                "missing": [],
                "status": Status.DELETING.value,
            }
        missing = [
            resource
            for resource, api in (
                (old.get("vnet_resource_id"), NETWORK_API),
                (old.get("identity_resource_id"), MSI_API),
            )
            if resource and self.arm.get(str(resource), api) is None
        ]
        for resource in missing:
            logger.warning("enclave %s: drift detected, %s is missing", old["enclave_id"], resource)
        healthy = state == "Enabled" and not missing
        return {
            "exists": True,
            "healthy": healthy,
            "state": state,
            "missing": missing,
            "status": (Status.ACTIVE if healthy else Status.DEGRADED).value,
        }

    # -- partitions --------------------------------------------------------------------------

    def provision_partition(
        self,
        enclave: EnclaveConfig,
        partition: PartitionConfig,
        handle: Handle | None,
        *,
        enclave_handle: Handle | None = None,
    ) -> Handle:
        """The partition's managed identity, its roles, and its federated credential.

        The credential trusts the platform identity's token for ``api://AzureADTokenExchange``
        (its issuer and subject read from that token), so ``auth_env`` can hand terraform that
        token to exchange for the partition identity's own: terraform never holds the
        platform identity's ARM token.
        """
        sub = _subscription_of(enclave.id, enclave_handle, handle)
        location = str((enclave_handle or {}).get("location") or self._location(enclave))
        name = partition_identity_name(partition.id)
        path = identity_id(sub, name)
        identity = self.arm.put(
            path,
            MSI_API,
            {"location": location, "tags": tags(enclave.id, nclav_partition=partition.id)},
            f"partition identity {name}",
        )
        principal = str(identity["properties"]["principalId"])
        claims = jwt_claims(self.arm.credential.get_token(EXCHANGE_SCOPE).token)
        federation = {
            "properties": {
                "issuer": str(claims.get("iss", "")),
                "subject": str(claims.get("sub", "")),
                "audiences": [EXCHANGE_AUDIENCE],
            }
        }
        self.arm.put(
            f"{path}/federatedIdentityCredentials/{FEDERATION}",
            MSI_API,
            federation,
            f"federated credential of {name}",
        )
        assignments = [self.assign_role(sub, role, principal) for role in self.partition_roles]
        return {
            "driver": "azure",
            "kind": "partition",
            "type": "iac",
            "enclave_id": enclave.id,
            "partition_id": partition.id,
            "tenant_id": self.config.tenant_id,
            "subscription_id": sub,
            "resource_group": RESOURCE_GROUP,
            "identity_name": name,
            "partition_identity_resource_id": identity["id"],
            "partition_identity_principal_id": principal,
            "partition_identity_client_id": identity["properties"]["clientId"],
            "role_assignment_ids": assignments,
            "federation_subject": federation["properties"]["subject"],
        }

    def assign_role(self, sub: str, role: str, principal: str, scope: str | None = None) -> str:
        """``role`` (a definition GUID of subscription ``sub``) for ``principal`` at ``scope``
        (default: the subscription); the assignment's id."""
        scope = scope or f"/subscriptions/{sub}"
        path = (
            f"{scope}/providers/Microsoft.Authorization/roleAssignments/"
            f"{role_assignment_name(scope, role, principal)}"
        )
        body = {
            "properties": {
                "roleDefinitionId": role_definition_id(sub, role),
                "principalId": principal,
                "principalType": "ServicePrincipal",
            }
        }
        try:
            self.arm.put(path, AUTHORIZATION_API, body, f"role {role} for {principal}")
        except ConflictError:
            pass  # RoleAssignmentExists: this one (same name) or an equal one made by hand
        except TemporaryError as exc:
            if "PrincipalNotFound" not in str(exc):
                raise
            raise WaitingError(
                f"{exc} (a new identity is still replicating)", retry_after_s=PRINCIPAL_WAIT_S
            ) from exc
        return path

    def teardown_partition(
        self,
        enclave_id: str,
        partition_id: str,
        handle: Handle | None,
        *,
        enclave_handle: Handle | None = None,
    ) -> None:
        """Its role assignments (they would stay as 'Identity not found'), then its identity
        (the federated credential goes with it)."""
        old = handle_of(handle, "azure", "partition") or {}
        try:
            sub = _subscription_of(enclave_id, enclave_handle, handle)
        except PermanentError:
            logger.warning("partition %s/%s: no Azure subscription in its handles", enclave_id,
                           partition_id)  # fmt: skip
            return
        for assignment in old.get("role_assignment_ids") or []:
            self.arm.delete(str(assignment), AUTHORIZATION_API, f"role assignment {assignment}")
        name = str(old.get("identity_name") or partition_identity_name(partition_id))
        self.arm.delete(identity_id(sub, name), MSI_API, f"partition identity {name}")

    def observe_partition(self, handle: Handle | None) -> dict[str, Any]:
        old = handle_of(handle, "azure", "partition")
        found = (
            self.arm.get(str(old["partition_identity_resource_id"]), MSI_API)
            if old and old.get("partition_identity_resource_id")
            else None
        )
        return {"exists": found is not None, "healthy": found is not None}

    def auth_env(
        self, enclave_handle: Handle | None, partition_handle: Handle | None
    ) -> dict[str, str]:
        """The azurerm provider's settings to run as the partition identity (OIDC federation).

        ``ARM_OIDC_TOKEN`` is the platform identity's token for ``api://AzureADTokenExchange``
        only (what the partition identity's federated credential trusts, good for about an
        hour), never an ARM token. Without a partition identity terraform gets no credentials
        at all, and CLI/managed-identity lookups are switched off so it cannot fall back to
        the platform's own.
        """
        enclave = handle_of(enclave_handle, "azure", "enclave")
        if not enclave or not enclave.get("subscription_id"):
            raise PermanentError(
                "the enclave has no Azure subscription handle (provision it first)"
            )
        env = {
            "ARM_TENANT_ID": str(enclave.get("tenant_id") or self.config.tenant_id),
            "ARM_SUBSCRIPTION_ID": str(enclave["subscription_id"]),
            "ARM_USE_CLI": "false",
            "ARM_USE_MSI": "false",
        }
        partition = handle_of(partition_handle, "azure", "partition")
        if partition and partition.get("partition_identity_client_id"):
            env["ARM_CLIENT_ID"] = str(partition["partition_identity_client_id"])
            env["ARM_USE_OIDC"] = "true"
            env["ARM_OIDC_TOKEN"] = self.arm.credential.get_token(EXCHANGE_SCOPE).token
        return env

    # -- exports and imports -----------------------------------------------------------------

    def subscription_of(self, enclave_id: str) -> str:
        """The subscription of an enclave provisioned before, from its alias (the engine hands
        export and import steps the enclave's config, not its handle)."""
        known = self._subscriptions.get(enclave_id)
        if known:
            return known
        alias = alias_name(self.config, enclave_id)
        found = self.arm.get(f"/providers/Microsoft.Subscription/aliases/{alias}", ALIAS_API)
        sub = (found or {}).get("properties", {}).get("subscriptionId")
        if not sub:
            raise PermanentError(f"enclave {enclave_id} has no Azure subscription (alias {alias})")
        self._subscriptions[enclave_id] = str(sub)
        return str(sub)

    def provision_export(
        self, enclave: EnclaveConfig, export: Export, outputs: Mapping[str, str]
    ) -> Handle:
        return links.provision_export(self, enclave, export, outputs)

    def teardown_export(self, enclave_id: str, name: str, handle: Handle | None) -> None:
        """Nothing of the driver's: the private link service is the partition's terraform's."""
        return None

    def provision_import(
        self, enclave: EnclaveConfig, imp: Import, export_handle: Handle | None
    ) -> Handle:
        return links.provision_import(self, enclave, imp, export_handle)

    def teardown_import(self, enclave_id: str, alias: str, handle: Handle | None) -> None:
        old = handle_of(handle, "azure", "import")
        if old:
            links.teardown_import(self, old)

    # -- leak checks -------------------------------------------------------------------------

    def list_orphans(self, applied: Sequence[EnclaveState]) -> list[Orphan]:
        """``OrphanScanner``: one Resource Graph query over every applied Azure enclave's
        subscription for nclav-tagged resources of partitions the enclave no longer has."""
        return orphans.list_orphans(self.arm, applied)

    def partition_resources(self, enclave_handle: Handle | None, partition_id: str) -> list[str]:
        """Resource ids still tagged with the partition (after its destroy: empty is clean)."""
        enclave = handle_of(enclave_handle, "azure", "enclave")
        if not enclave or not enclave.get("subscription_id"):
            return []
        return orphans.tagged(
            self.arm, str(enclave["subscription_id"]), str(enclave["enclave_id"]), partition_id
        )


def _subscription_of(enclave_id: str, enclave_handle: Handle | None, handle: Handle | None) -> str:
    for found in (
        handle_of(enclave_handle, "azure", "enclave"),
        handle_of(handle, "azure", "partition"),
    ):
        if found and found.get("subscription_id"):
            return str(found["subscription_id"])
    raise PermanentError(
        f"enclave {enclave_id} has no Azure subscription handle (provision it first)"
    )


__all__ = ["AzureDriver", "jwt_claims"]
