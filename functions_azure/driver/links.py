"""Private Link exports and imports (cloud-drivers-spec §3.7, with its FIXes).

An http/tcp export is a Private Link Service the partition's terraform made (output ``pls_id``);
the driver checks it exists and records it. An import of it is a private endpoint ``{alias}-pe``
in the importer's ``subnet-0`` plus, when the importer has a private zone, an A record
``{alias}`` pointing at the endpoint's address. Both are PUTs of fixed names, so a re-run finds
what it made; the endpoint's address comes from its network interface, and an endpoint without
one fails instead of answering a made-up address. Imports store their outputs in the handle,
and ``teardown_import`` deletes the record and the endpoint by the names in the handle.

Queue exports pass their outputs through (Service Bus Private Link needs the premium tier and
an RBAC grant to a principal the import does not name: not done here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions_azure.driver.config import DNS_API, NETWORK_API, rg_id, tags, vnet_id, zone_id
from nclav.errors import PermanentError, WaitingError
from nclav.model import ExportType

if TYPE_CHECKING:
    from collections.abc import Mapping

    from functions_azure.driver.driver import AzureDriver
    from nclav.model import EnclaveConfig, Export, Import
    from nclav.state import Handle

PLS_OUTPUT = "pls_id"
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
        "pls_resource_id": "",
    }
    if export.export_type == ExportType.QUEUE:
        if not outputs.get("queue_url"):
            raise PermanentError(f"export {export.name}: the partition has no queue_url output")
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
    pls = export_handle.get("pls_resource_id") if export_handle.get("driver") == "azure" else None
    if not pls:
        return handle  # another cloud's export, a queue, or an http export by hostname
    if enclave.network is None:
        raise PermanentError(
            f"import {imp.alias}: a Private Link import needs the importer's network "
            f"(enclave {enclave.id} declares none)"
        )
    sub = driver.subscription_of(enclave.id)
    location = enclave.region or driver.config.default_location
    endpoint = f"{rg_id(sub)}/providers/Microsoft.Network/privateEndpoints/{imp.alias}-pe"
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
    made = driver.arm.put(endpoint, NETWORK_API, body, f"private endpoint {imp.alias}-pe")
    _approved(made, imp.alias, pls)
    address = _address(driver, made, imp.alias)
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
        "private_endpoint_resource_id": made.get("id", endpoint),
        "private_ip": address,
        "dns_record_id": record,
        "outputs": outputs,
    }


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
            f"private endpoint {alias}-pe: the connection to {pls} awaits the exporter's "
            "approval (or its autoApproval subscriptions)",
            retry_after_s=APPROVAL_WAIT_S,
        )
    if status in ("Rejected", "Disconnected"):
        raise PermanentError(
            f"private endpoint {alias}-pe: the connection to {pls} is {status}: "
            f"{state.get('description') or 'no reason given'}"
        )


def _address(driver: AzureDriver, endpoint: dict[str, Any], alias: str) -> str:
    nics = endpoint.get("properties", {}).get("networkInterfaces") or []
    if not nics:
        raise WaitingError(f"private endpoint {alias}-pe has no network interface yet")
    nic = driver.arm.get(str(nics[0]["id"]), NETWORK_API, f"interface of {alias}-pe") or {}
    configs = nic.get("properties", {}).get("ipConfigurations") or []
    address = configs[0].get("properties", {}).get("privateIPAddress") if configs else None
    if not address:
        raise PermanentError(f"private endpoint {alias}-pe: its interface has no private address")
    return str(address)


def teardown_import(driver: AzureDriver, handle: Handle) -> None:
    if handle.get("dns_record_id"):
        driver.arm.delete(str(handle["dns_record_id"]), DNS_API, f"record of {handle['alias']}")
    if handle.get("private_endpoint_resource_id"):
        endpoint = str(handle["private_endpoint_resource_id"])
        driver.arm.delete(endpoint, NETWORK_API, f"private endpoint {handle['alias']}-pe")


__all__ = ["PLS_OUTPUT", "provision_export", "provision_import", "teardown_import"]
