"""Exports and imports (spec §2.7): Private Service Connect for tcp, a Pub/Sub subscription
for queues, the exporter's outputs passed through for http.

Export time calls nothing, except for an http export with ``auth: none`` whose partition
outputs its Cloud Run service: ``allUsers`` gets ``roles/run.invoker`` on it. A queue import
is a subscription ``nclav-<alias>`` in the importer project on the exporter's topic (its
output ``queue_url``: ``projects/<p>/topics/<t>``). A tcp export is the PSC service
attachment the partition's Terraform made (its output ``psc_service_attachment``); its import
is the consumer side in the importer project: an internal address in ``subnet-0`` (``purpose:
GCE_ENDPOINT``), a forwarding rule to the attachment on that address, and an A record
``{alias}.{zone}`` in the importer's private zone. Every part is found before it is made, so
a re-run (redelivery, or the next apply) changes nothing; a forwarding rule pointing at an
older attachment is replaced, and a record with another address is swapped in one change.

PSC needs the producer's attachment to accept the consumer project: a rejected connection is
a ``PermanentError`` naming the project to add to its accept list, a pending one a
``WaitingError``.

IAM for imports (the PRD's, which the original never did): the importer's service account is
its enclave's ``identity`` account (workloads that call an import run as it,
``{{ nclav_service_account }}``). An http import of an ``auth: native`` export grants it
``roles/run.invoker`` on the exporter's Cloud Run service (output ``cloud_run_service``); a
queue import grants it ``roles/pubsub.subscriber`` on the topic before subscribing, and on the
subscription after. ``native`` without an identity (or without the service) is refused; other
auth types grant only when there is an identity. Each grant is added to the policy
(read-modify-write), recorded in the handle (``iam_grants``) and taken back by
``teardown_import``, that role of that member only.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from functions_gcp._rest import GcpApiError
from functions_gcp.driver.config import VPC, ZONE, account_id, resource_name, sa_email
from functions_gcp.driver.iam import add_member, edit_policy, remove_binding
from functions_gcp.driver.network import (
    compute_delete,
    compute_get,
    compute_insert,
    subnet_path,
)
from nclav.errors import PermanentError, WaitingError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from functions_gcp._rest import Rest
    from nclav.model import EnclaveConfig, Export, Import
    from nclav.state import Handle

ATTACHMENT_OUTPUT = "psc_service_attachment"
QUEUE_OUTPUT = "queue_url"
RUN_SERVICE_OUTPUT = "cloud_run_service"
INVOKER = "roles/run.invoker"
SUBSCRIBER = "roles/pubsub.subscriber"
_RUN_SERVICE = re.compile(r"projects/[^/]+/locations/[^/]+/services/[^/]+")
TTL_S = 300
ACK_DEADLINE_S = 60
PSC_RETRY_S = 30.0


def export_handle(
    project: str, region: str, enclave: EnclaveConfig, export: Export, outputs: Mapping[str, str]
) -> Handle:
    handle: Handle = {
        "driver": "gcp",
        "kind": "export",
        "type": export.export_type.value,
        "enclave_id": enclave.id,
        "export_name": export.name,
        "project_id": project,
        "region": region,
        "auth": str(export.auth),
        "outputs": dict(outputs),
    }
    if export.export_type.value == "tcp":
        attachment = outputs.get(ATTACHMENT_OUTPUT)
        if not attachment:
            raise PermanentError(
                f"export {enclave.id}/{export.name}: a tcp export on GCP is a Private Service "
                f"Connect service attachment: partition {export.target_partition} must create "
                f"one and output its self link as {ATTACHMENT_OUTPUT!r}"
            )
        handle["service_attachment"] = attachment
    elif export.export_type.value == "queue":
        handle["topic"] = outputs.get(QUEUE_OUTPUT, "")
    return handle


def open_http_export(rest: Rest, handle: Handle, export: Export) -> Handle:
    """An http export whose partition outputs its Cloud Run service (``cloud_run_service``:
    ``projects/<p>/locations/<r>/services/<s>``) records it (an ``auth: native`` import grants
    invokers on it); with ``auth: none`` ``allUsers`` may invoke it, added to the service's
    policy (never replacing it, the original's bug)."""
    service = handle["outputs"].get(RUN_SERVICE_OUTPUT)
    handle["iam_bindings_applied"] = []
    if not service:
        return handle
    if not _RUN_SERVICE.fullmatch(service):
        raise PermanentError(
            f"export {handle['enclave_id']}/{export.name}: output {RUN_SERVICE_OUTPUT!r} must "
            f"be projects/<p>/locations/<r>/services/<s>, got {service!r}"
        )
    handle["cloud_run_service"] = service
    if export.auth != "none":
        return handle
    edit_policy(
        rest,
        "run",
        f"v2/{service}",
        add_member(INVOKER, "allUsers"),
        f"export {handle['enclave_id']}/{export.name}: public invoker",
    )
    handle["iam_bindings_applied"] = [f"allUsers:{INVOKER}"]
    return handle


def importer_member(importer: EnclaveConfig, project: str) -> str | None:
    """``serviceAccount:<email>`` of the importing enclave's identity, None without one."""
    if not importer.identity:
        return None
    return f"serviceAccount:{sa_email(account_id(importer.identity), project)}"


def grant(rest: Rest, api: str, resource: str, role: str, member: str) -> dict[str, str]:
    """``role`` for ``member`` added to the policy of ``resource``; the record of it."""
    edit_policy(rest, api, resource, add_member(role, member), f"grant {role} to {member}")
    return {"api": api, "resource": resource, "role": role, "member": member}


def revoke(rest: Rest, grants: list[dict[str, str]]) -> None:
    """Take back what ``grant`` recorded; a resource gone already has nothing to take back."""
    for made in grants:
        role, member = made["role"], made["member"]
        try:
            edit_policy(
                rest,
                made["api"],
                made["resource"],
                remove_binding(role, member),
                f"revoke {role} of {member}",
            )
        except GcpApiError as exc:
            if exc.status not in (403, 404):
                raise


def import_http(
    rest: Rest, project: str, importer: EnclaveConfig, imp: Import, export: Handle
) -> Handle:
    """The exporter's outputs; for ``auth: native``, its Cloud Run service invocable by the
    importer's service account."""
    handle: Handle = {
        "driver": "gcp",
        "kind": "import",
        "type": "http",
        "enclave_id": importer.id,
        "alias": imp.alias,
        "mode": "pass-through",
        "outputs": dict(export.get("outputs", {})),
        "iam_grants": [],
    }
    if export.get("auth") != "native":
        return handle
    where = f"import {importer.id}/{imp.alias} (export {imp.from_}/{imp.export_name}, auth native)"
    service = str(export.get("cloud_run_service") or "")
    if not service:
        raise PermanentError(
            f"{where}: native auth on GCP lets the importer's service account invoke the "
            f"exporter's Cloud Run service: the exporting partition must output "
            f"{RUN_SERVICE_OUTPUT!r} (projects/<p>/locations/<r>/services/<s>)"
        )
    member = importer_member(importer, project)
    if member is None:
        raise PermanentError(
            f"{where}: native auth grants the importer enclave's service account {INVOKER} "
            f"on {service}, and enclave {importer.id} declares no identity"
        )
    handle["mode"] = "native"
    handle["iam_grants"] = [grant(rest, "run", f"v2/{service}", INVOKER, member)]
    return handle


def import_tcp(
    rest: Rest,
    project: str,
    region: str,
    importer: EnclaveConfig,
    imp: Import,
    export: Handle,
    labels: Mapping[str, str],
) -> Handle:
    alias = imp.alias
    zone = importer.dns.zone if importer.dns else None
    if not (importer.network and importer.network.subnets) or not zone:
        raise PermanentError(
            f"import {importer.id}/{alias}: a Private Service Connect endpoint needs the "
            "importer's network (with at least one subnet) and dns.zone"
        )
    if export.get("region") and export["region"] != region:
        raise PermanentError(
            f"import {importer.id}/{alias}: PSC is regional; enclave {importer.id} is in "
            f"{region}, the export's attachment in {export['region']}"
        )
    attachment = str(export["service_attachment"])
    address_name = resource_name("nclav-ep-ip-", alias)
    rule_name = resource_name("nclav-ep-", alias)
    compute_insert(
        rest,
        project,
        region,
        "addresses",
        {
            "name": address_name,
            "addressType": "INTERNAL",
            "purpose": "GCE_ENDPOINT",
            "subnetwork": subnet_path(project, region, 0),
            "labels": dict(labels),
        },
    )
    address = compute_get(rest, project, f"regions/{region}/addresses/{address_name}")
    if address is None:
        raise WaitingError(
            f"import {alias}: address {address_name} is not visible yet", retry_after_s=PSC_RETRY_S
        )
    rule_path = f"regions/{region}/forwardingRules/{rule_name}"
    rule = {
        "name": rule_name,
        "target": attachment,
        "network": f"projects/{project}/global/networks/{VPC}",
        "IPAddress": address["selfLink"],
        "labels": dict(labels),
    }
    if not compute_insert(rest, project, region, "forwardingRules", rule):
        found = compute_get(rest, project, rule_path) or {}
        if found.get("target") != attachment:  # the exporter's attachment changed
            compute_delete(rest, project, region, rule_path)
            compute_insert(rest, project, region, "forwardingRules", rule)
    found = compute_get(rest, project, rule_path) or {}
    status = found.get("pscConnectionStatus", "")
    if status == "PENDING":
        raise WaitingError(
            f"import {alias}: the PSC connection to {attachment} awaits the producer's acceptance",
            retry_after_s=PSC_RETRY_S,
        )
    if status in ("REJECTED", "CLOSED", "NEEDS_ATTENTION"):
        raise PermanentError(
            f"import {alias}: the PSC connection to {attachment} is {status}: the producer's "
            f"attachment must accept project {project} (consumerAcceptLists) or ACCEPT_AUTOMATIC"
        )
    ip = str(address["address"])
    dns_name = f"{alias.lower()}.{zone.rstrip('.')}."
    set_a_record(rest, project, dns_name, ip)
    outputs = {**dict(export.get("outputs", {})), "hostname": dns_name.rstrip(".")}
    return {
        "driver": "gcp",
        "kind": "import",
        "type": "tcp",
        "enclave_id": importer.id,
        "alias": alias,
        "importer_project": project,
        "region": region,
        "service_attachment": attachment,
        "endpoint_ip_name": address_name,
        "endpoint_name": rule_name,
        "endpoint_ip": ip,
        "dns_name": dns_name,
        "outputs": outputs,
    }


def import_queue(
    rest: Rest,
    project: str,
    importer: EnclaveConfig,
    imp: Import,
    export: Handle,
    labels: Mapping[str, str],
) -> Handle:
    """A subscription in the importer project on the exporter's topic (409: there already;
    one on another topic is refused: a subscription's topic cannot change), the importer's
    service account a subscriber of the topic (first) and of the subscription."""
    topic = str(export.get("topic") or "")
    if not re.fullmatch(r"projects/[^/]+/topics/[^/]+", topic):
        raise PermanentError(
            f"import {importer.id}/{imp.alias}: a queue export on GCP is a Pub/Sub topic: the "
            "exporting partition must output its name (projects/<p>/topics/<t>) as "
            f"{QUEUE_OUTPUT!r}"
        )
    member = importer_member(importer, project)
    if member is None and export.get("auth") == "native":
        raise PermanentError(
            f"import {importer.id}/{imp.alias} (export {imp.from_}/{imp.export_name}, auth "
            f"native): native auth grants the importer enclave's service account {SUBSCRIBER} "
            f"on {topic}, and enclave {importer.id} declares no identity"
        )
    grants = [grant(rest, "pubsub", f"v1/{topic}", SUBSCRIBER, member)] if member else []
    name = f"projects/{project}/subscriptions/{resource_name('nclav-', imp.alias)}"
    body = {"topic": topic, "ackDeadlineSeconds": ACK_DEADLINE_S, "labels": dict(labels)}
    reply = rest.call(
        "PUT", "pubsub", f"v1/{name}", f"create subscription {name}", body=body, expect=(409,)
    )
    if reply.status == 409:
        found = rest.json("GET", "pubsub", f"v1/{name}", f"get subscription {name}")
        if found.get("topic") != topic:
            raise PermanentError(
                f"import {importer.id}/{imp.alias}: subscription {name} is on "
                f"{found.get('topic')}, not {topic}: delete it (or the import) to wire the new one"
            )
    if member:
        grants.append(grant(rest, "pubsub", f"v1/{name}", SUBSCRIBER, member))
    return {
        "driver": "gcp",
        "kind": "import",
        "type": "queue",
        "enclave_id": importer.id,
        "alias": imp.alias,
        "importer_project": project,
        "subscription": name,
        "iam_grants": grants,
        "outputs": {**dict(export.get("outputs", {})), QUEUE_OUTPUT: name},
    }


def teardown_queue(rest: Rest, handle: Handle) -> None:
    revoke(rest, list(handle.get("iam_grants") or []))
    name = str(handle["subscription"])
    rest.call("DELETE", "pubsub", f"v1/{name}", f"delete subscription {name}", expect=(404,))


def _records(rest: Rest, project: str, name: str) -> list[dict[str, Any]]:
    body = rest.json(
        "GET",
        "dns",
        f"dns/v1/projects/{project}/managedZones/{ZONE}/rrsets",
        f"list record {name}",
        params={"name": name, "type": "A"},
    )
    return list(body.get("rrsets", []))


def _change(rest: Rest, project: str, change: dict[str, Any], what: str) -> None:
    rest.call(
        "POST", "dns", f"dns/v1/projects/{project}/managedZones/{ZONE}/changes", what, body=change
    )


def set_a_record(rest: Rest, project: str, name: str, ip: str) -> None:
    """``name`` A ``ip``: left alone when so already, else replaced in one change."""
    wanted = {"name": name, "type": "A", "ttl": TTL_S, "rrdatas": [ip]}
    old = _records(rest, project, name)
    if any(r.get("rrdatas") == [ip] and r.get("ttl") == TTL_S for r in old):
        return
    deletions = [{k: r[k] for k in ("name", "type", "ttl", "rrdatas") if k in r} for r in old]
    change = {"kind": "dns#change", "additions": [wanted], "deletions": deletions}
    _change(rest, project, change, f"set record {name} A {ip}")


def teardown_tcp(rest: Rest, handle: Handle) -> None:
    project, region = str(handle["importer_project"]), str(handle["region"])
    name = str(handle.get("dns_name") or "")
    if name:
        old = _records(rest, project, name)
        deletions = [{k: r[k] for k in ("name", "type", "ttl", "rrdatas") if k in r} for r in old]
        if deletions:
            _change(
                rest,
                project,
                {"kind": "dns#change", "deletions": deletions},
                f"delete record {name}",
            )
    compute_delete(
        rest, project, region, f"regions/{region}/forwardingRules/{handle['endpoint_name']}"
    )
    compute_delete(
        rest, project, region, f"regions/{region}/addresses/{handle['endpoint_ip_name']}"
    )


__all__ = [
    "ATTACHMENT_OUTPUT",
    "INVOKER",
    "SUBSCRIBER",
    "export_handle",
    "grant",
    "import_http",
    "import_queue",
    "open_http_export",
    "import_tcp",
    "importer_member",
    "revoke",
    "set_a_record",
    "teardown_queue",
    "teardown_tcp",
]
