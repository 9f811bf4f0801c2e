"""Private Link exports and imports (cloud-drivers-spec §3.7, with its FIXes).

An http/tcp export is a Private Link Service the partition's terraform made (output ``pls_id``);
the driver checks it exists and records it. An import of it is a private endpoint ``{alias}-pe``
in the importer's ``subnet-0`` plus, when the importer has a private zone, an A record
``{alias}`` pointing at the endpoint's address. Both are PUTs of fixed names, so a re-run finds
what it made; the endpoint's address comes from its network interface, and an endpoint without
one fails instead of answering a made-up address. Imports store their outputs in the handle,
and ``teardown_import`` deletes the record and the endpoint by the names in the handle.

A queue export is the partition's Service Bus topic: output ``queue_url``, and the namespace's
resource id as ``service_bus_resource_id`` (spec §3.7). Its import grants the importer's
identity (the enclave's managed identity, ``identity:`` or ``nclav-identity``: workloads that
read an import run as it) ``Azure Service Bus Data Receiver`` on the namespace (the original
left the principal empty and granted nothing), then, when the importer has a network, a private
endpoint ``{alias}-sb-pe`` to the namespace (``groupIds: ["namespace"]``, premium tier). An
``auth: native`` queue export without the namespace id is refused at import; other auth types
without it pass ``queue_url`` through. ``teardown_import`` deletes the assignment too.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from functions_azure.driver.config import (
    AUTHORIZATION_API,
    DNS_API,
    ENCLAVE_IDENTITY,
    MSI_API,
    NETWORK_API,
    SERVICE_BUS_RECEIVER,
    identity_id,
    rg_id,
    tags,
    vnet_id,
    zone_id,
)
from nclav.errors import PermanentError, WaitingError
from nclav.model import ExportType

if TYPE_CHECKING:
    from collections.abc import Mapping

    from functions_azure.driver.driver import AzureDriver
    from nclav.model import EnclaveConfig, Export, Import
    from nclav.state import Handle

PLS_OUTPUT = "pls_id"
NAMESPACE_OUTPUT = "service_bus_resource_id"
_NAMESPACE = re.compile(
    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ServiceBus/namespaces/[^/]+",
    re.IGNORECASE,
)
APPROVAL_WAIT_S = 60.0


def _port(export: Export, outputs: Mapping[str, str]) -> str:
    default = 443 if export.export_type == ExportType.HTTP else 0
    return str(outputs.get("port") or export.port or default)


def provision_export(
    driver: AzureDriver, enclave: EnclaveConfig, export: Export, outputs: Mapping[str, str]
) -> Handle:
    handle: Handle = {
        "driver": "azure",
        "kind": "export",
        "type": export.export_type.value,
        "enclave_id": enclave.id,
        "export_name": export.name,
        "auth": str(export.auth),
        "pls_resource_id": "",
    }
    if export.export_type == ExportType.QUEUE:
        if not outputs.get("queue_url"):
            raise PermanentError(f"export {export.name}: the partition has no queue_url output")
        namespace = outputs.get(NAMESPACE_OUTPUT, "")
        if namespace and not _NAMESPACE.fullmatch(namespace):
            raise PermanentError(
                f"export {export.name}: output {NAMESPACE_OUTPUT} must be a Service Bus "
                "namespace id (/subscriptions/<s>/resourceGroups/<g>/providers/"
                f"Microsoft.ServiceBus/namespaces/<n>), got {namespace!r}"
            )
        handle["service_bus_resource_id"] = namespace
        return {**handle, "outputs": {"queue_url": outputs["queue_url"]}}
    pls = outputs.get(PLS_OUTPUT, "")
    hostname = outputs.get("hostname") or export.hostname or ""
    handle["outputs"] = {"hostname": hostname, "port": _port(export, outputs)}
    if not pls:
        if export.export_type == ExportType.TCP:
            raise PermanentError(
                f"export {export.name}: a tcp export needs the partition output {PLS_OUTPUT!r} "
                "(the resource id of its Private Link Service)"
            )
        return handle  # an http export reached by its hostname
    handle["subscription_id"] = driver.subscription_of(enclave.id)
    if driver.arm.get(pls, NETWORK_API, f"private link service {pls}") is None:
        raise PermanentError(
            f"export {export.name}: output {PLS_OUTPUT} names {pls}, which does not exist"
        )
    handle["pls_resource_id"] = pls
    return handle


def provision_import(
    driver: AzureDriver, enclave: EnclaveConfig, imp: Import, export_handle: Handle | None
) -> Handle:
    if export_handle is None:
        raise PermanentError(
            f"import {imp.alias}: export {imp.from_}/{imp.export_name} is not wired yet"
        )
    outputs = dict(export_handle.get("outputs") or {})
    handle: Handle = {
        "driver": "azure",
        "kind": "import",
        "enclave_id": enclave.id,
        "alias": imp.alias,
        "mode": "pass-through",
        "outputs": outputs,
    }
    ours = export_handle.get("driver") == "azure"
    if ours and export_handle.get("type") == ExportType.QUEUE.value:
        return _import_queue(driver, enclave, imp, export_handle, handle)
    pls = export_handle.get("pls_resource_id") if ours else None
    if not pls:
        return handle  # another cloud's export, or an http export by hostname
    if enclave.network is None:
        raise PermanentError(
            f"import {imp.alias}: a Private Link import needs the importer's network "
            f"(enclave {enclave.id} declares none)"
        )
    sub = driver.subscription_of(enclave.id)
    location = enclave.region or driver.config.default_location
    body = {
        "location": location,
        "tags": tags(enclave.id, nclav_import=imp.alias),
        "properties": {
            "subnet": {"id": f"{vnet_id(sub)}/subnets/subnet-0"},
            "privateLinkServiceConnections": [
                {
                    "name": f"{imp.alias}-connection",
                    "properties": {
                        "privateLinkServiceId": pls,
                        "requestMessage": f"nclav import {imp.alias}",
                    },
                }
            ],
        },
    }
    made, address = _endpoint(driver, enclave, sub, f"{imp.alias}-pe", body)
    hostname, record = address, ""
    zone = enclave.dns.zone if enclave.dns else None
    if zone:
        record = f"{zone_id(sub, zone)}/A/{imp.alias}"
        driver.arm.put(
            record,
            DNS_API,
            {"properties": {"ttl": 300, "aRecords": [{"ipv4Address": address}]}},
            f"record {imp.alias}.{zone}",
        )
        hostname = f"{imp.alias}.{zone}"
    outputs.update({"hostname": hostname, "port": str(outputs.get("port") or "443")})
    return {
        **handle,
        "mode": "private-endpoint",
        "subscription_id": sub,
        "private_endpoint_resource_id": made["id"],
        "private_ip": address,
        "dns_record_id": record,
        "outputs": outputs,
    }


def _endpoint(
    driver: AzureDriver, enclave: EnclaveConfig, sub: str, name: str, body: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """The private endpoint ``name`` in the importer's resource group (approved), its address."""
    path = f"{rg_id(sub)}/providers/Microsoft.Network/privateEndpoints/{name}"
    made = driver.arm.put(path, NETWORK_API, body, f"private endpoint {name}")
    made.setdefault("id", path)
    target = body["properties"]["privateLinkServiceConnections"][0]["properties"]
    _approved(made, name, str(target["privateLinkServiceId"]))
    return made, _address(driver, made, name)


def _import_queue(
    driver: AzureDriver, enclave: EnclaveConfig, imp: Import, export: Handle, handle: Handle
) -> Handle:
    namespace = str(export.get("service_bus_resource_id") or "")
    if not namespace:
        if export.get("auth") == "native":
            raise PermanentError(
                f"import {enclave.id}/{imp.alias} (export {imp.from_}/{imp.export_name}, auth "
                "native): native auth grants the importer's identity Azure Service Bus Data "
                f"Receiver on the namespace: the exporting partition must output {NAMESPACE_OUTPUT}"
            )
        return handle
    sub = driver.subscription_of(enclave.id)
    name = enclave.identity or ENCLAVE_IDENTITY
    identity = driver.arm.get(identity_id(sub, name), MSI_API, f"identity {name}")
    if identity is None:
        raise PermanentError(
            f"import {enclave.id}/{imp.alias}: enclave identity {name} is missing (provision "
            "the enclave again)"
        )
    principal = str(identity["properties"]["principalId"])
    exporter_sub = namespace.split("/")[2]
    assignment = driver.assign_role(exporter_sub, SERVICE_BUS_RECEIVER, principal, namespace)
    new: Handle = {
        **handle,
        "mode": "service-bus",
        "subscription_id": sub,
        "service_bus_resource_id": namespace,
        "role_assignment_ids": [assignment],
        "private_endpoint_resource_id": "",
        "private_ip": "",
        "dns_record_id": "",
    }
    if enclave.network is None:
        return new  # reached over the namespace's public endpoint, with RBAC
    body = {
        "location": enclave.region or driver.config.default_location,
        "tags": tags(enclave.id, nclav_import=imp.alias),
        "properties": {
            "subnet": {"id": f"{vnet_id(sub)}/subnets/subnet-0"},
            "privateLinkServiceConnections": [
                {
                    "name": f"{imp.alias}-sb-connection",
                    "properties": {
                        "privateLinkServiceId": namespace,
                        "groupIds": ["namespace"],
                        "requestMessage": f"nclav import {imp.alias}",
                    },
                }
            ],
        },
    }
    made, address = _endpoint(driver, enclave, sub, f"{imp.alias}-sb-pe", body)
    return {**new, "private_endpoint_resource_id": made["id"], "private_ip": address}


def _approved(endpoint: dict[str, Any], alias: str, pls: str) -> None:
    """A connection to a service in another subscription waits for the exporter's approval
    (or its ``autoApproval`` list); a rejected one will not change by itself."""
    connections = endpoint.get("properties", {}).get("privateLinkServiceConnections") or []
    state = (
        connections[0].get("properties", {}).get("privateLinkServiceConnectionState", {})
        if connections
        else {}
    )
    status = str(state.get("status") or "")
    if status == "Pending":
        raise WaitingError(
            f"private endpoint {alias}: the connection to {pls} awaits the exporter's "
            "approval (or its autoApproval subscriptions)",
            retry_after_s=APPROVAL_WAIT_S,
        )
    if status in ("Rejected", "Disconnected"):
        raise PermanentError(
            f"private endpoint {alias}: the connection to {pls} is {status}: "
            f"{state.get('description') or 'no reason given'}"
        )


def _address(driver: AzureDriver, endpoint: dict[str, Any], alias: str) -> str:
    nics = endpoint.get("properties", {}).get("networkInterfaces") or []
    if not nics:
        raise WaitingError(f"private endpoint {alias} has no network interface yet")
    nic = driver.arm.get(str(nics[0]["id"]), NETWORK_API, f"interface of {alias}") or {}
    configs = nic.get("properties", {}).get("ipConfigurations") or []
    address = configs[0].get("properties", {}).get("privateIPAddress") if configs else None
    if not address:
        raise PermanentError(f"private endpoint {alias}: its interface has no private address")
    return str(address)


def teardown_import(driver: AzureDriver, handle: Handle) -> None:
    for assignment in handle.get("role_assignment_ids") or []:
        driver.arm.delete(str(assignment), AUTHORIZATION_API, f"role assignment {assignment}")
    if handle.get("dns_record_id"):
        driver.arm.delete(str(handle["dns_record_id"]), DNS_API, f"record of {handle['alias']}")
    if handle.get("private_endpoint_resource_id"):
        endpoint = str(handle["private_endpoint_resource_id"])
        driver.arm.delete(endpoint, NETWORK_API, f"private endpoint of {handle['alias']}")


__all__ = [
    "NAMESPACE_OUTPUT",
    "PLS_OUTPUT",
    "provision_export",
    "provision_import",
    "teardown_import",
]
