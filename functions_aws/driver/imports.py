"""Imports: the consumer side of a bridge (spec §4.7, the proposed PrivateLink wiring).

http/tcp over PrivateLink: the exporter's endpoint service allows the importer account, an
interface endpoint in the importer VPC (with a security group opening the port to the VPC)
connects to it, connections waiting for acceptance are accepted with the exporter's
credentials, and ``{alias}.{zone}`` in the importer's private zone points at the endpoint.
Queues: the exporter's queue policy gets a statement for the importer account, and the
importer VPC gets the regional SQS interface endpoint (shared by all its queue imports and
left in place with the account). The handle's ``outputs`` hold what the importer should use.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from functions_aws.driver.config import IMPORT, client_token, short_hash, tag_dict, tags
from functions_aws.driver.errors import aws_errors, error_code
from functions_aws.driver.network import enclave_subnets, find_vpc, find_zone
from nclav.errors import PermanentError

if TYPE_CHECKING:
    from functions_aws.driver.sessions import Sessions
    from nclav.model import EnclaveConfig, Import
    from nclav.state import Handle

_LIVE = ("pendingAcceptance", "pending", "available")
_SHARED_SQS = "shared-sqs"


def provision_import(
    sessions: Sessions, account_id: str, importer: EnclaveConfig, imp: Import, export: Handle
) -> Handle:
    handle: Handle = {
        "driver": "aws",
        "kind": "import",
        "type": export.get("type"),
        "enclave_id": importer.id,
        "alias": imp.alias,
        "account_id": account_id,
        "region": export.get("region"),
        "mode": export.get("mode", "pass-through"),
        "exporter_account_id": export.get("account_id"),
        "outputs": dict(export.get("outputs", {})),
    }
    mode = handle["mode"]
    if mode not in ("privatelink", "queue-policy"):
        return handle
    region = str(export["region"])
    if (importer.region or region) != region:
        raise PermanentError(
            f"import {imp.alias}: PrivateLink is regional; enclave {importer.id} is in "
            f"{importer.region}, the export in {region}"
        )
    ec2 = sessions.account(account_id, "ec2", region)
    vpc = find_vpc(ec2, importer.id)
    if vpc is None:
        raise PermanentError(f"import {imp.alias}: enclave {importer.id} has no VPC")
    subnets = enclave_subnets(ec2, vpc["VpcId"])
    if mode == "queue-policy":
        return _queue(sessions, ec2, vpc, subnets, importer, imp, export, handle)
    if not subnets:
        raise PermanentError(
            f"import {imp.alias}: enclave {importer.id} needs network.subnets for the "
            "interface endpoint"
        )
    exporter_ec2 = sessions.account(export["account_id"], "ec2", region)
    principal = f"arn:aws:iam::{account_id}:root"
    with aws_errors(f"ec2:ModifyVpcEndpointServicePermissions {export['service_id']}"):
        exporter_ec2.modify_vpc_endpoint_service_permissions(
            ServiceId=export["service_id"], AddAllowedPrincipals=[principal]
        )
    port = int(export.get("port") or 0)
    group = _ensure_group(ec2, importer.id, imp.alias, vpc, port)
    endpoint = _ensure_endpoint(
        ec2, importer.id, imp.alias, vpc["VpcId"], export["service_name"], subnets, [group]
    )
    if endpoint.get("State") == "pendingAcceptance":
        with aws_errors(f"ec2:AcceptVpcEndpointConnections {endpoint['VpcEndpointId']}"):
            exporter_ec2.accept_vpc_endpoint_connections(
                ServiceId=export["service_id"], VpcEndpointIds=[endpoint["VpcEndpointId"]]
            )
    entries = endpoint.get("DnsEntries") or []
    dns_name = str(entries[0]["DnsName"]) if entries else ""
    hostname = dns_name
    zone = importer.dns.zone if importer.dns else None
    if zone and dns_name:
        r53 = sessions.account(account_id, "route53", region)
        zone_id = find_zone(r53, zone, vpc["VpcId"], region)
        if zone_id:
            hostname = f"{imp.alias}.{zone.rstrip('.')}"
            _change_record(r53, zone_id, "UPSERT", hostname, dns_name)
            handle.update(zone_id=zone_id, record_name=hostname, record_value=dns_name)
    handle.update(
        service_id=export["service_id"],
        service_name=export["service_name"],
        vpc_endpoint_id=endpoint["VpcEndpointId"],
        security_group_id=group,
        endpoint_dns_name=dns_name,
    )
    handle["outputs"] = {**handle["outputs"], "hostname": hostname, "port": str(port)}
    return handle


def _ensure_group(ec2: Any, enclave_id: str, alias: str, vpc: dict[str, Any], port: int) -> str:
    name = f"nclav-import-{alias}"
    with aws_errors(f"ec2 security group {name}"):
        found = ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc["VpcId"]]},
                {"Name": "group-name", "Values": [name]},
            ]
        )["SecurityGroups"]
        if found:
            group = str(found[0]["GroupId"])
        else:
            group = ec2.create_security_group(
                GroupName=name,
                Description=f"nclav import {alias}",
                VpcId=vpc["VpcId"],
                TagSpecifications=[
                    {"ResourceType": "security-group", "Tags": tags(enclave_id, Name=name)}
                ],
            )["GroupId"]
        try:
            ec2.authorize_security_group_ingress(
                GroupId=group,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": port,
                        "ToPort": port,
                        "IpRanges": [{"CidrIp": vpc["CidrBlock"]}],
                    }
                ],
            )
        except ClientError as exc:
            if error_code(exc) != "InvalidPermission.Duplicate":
                raise
    return group


def _ensure_endpoint(
    ec2: Any,
    enclave_id: str,
    alias: str,
    vpc_id: str,
    service_name: str,
    subnets: list[str],
    groups: list[str],
    private_dns: bool = False,
) -> dict[str, Any]:
    """The interface endpoint of this import, found by its tag before one is created."""
    with aws_errors(f"ec2 interface endpoint to {service_name}"):
        found = ec2.describe_vpc_endpoints(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "service-name", "Values": [service_name]},
            ]
        )["VpcEndpoints"]
        for endpoint in found:
            mine = tag_dict(endpoint.get("Tags")).get(IMPORT) == alias
            # Only one endpoint per VPC may own the SQS private DNS name: adopt any.
            if endpoint.get("State") in _LIVE and (mine or private_dns):
                return dict(endpoint)
        extra = {"SecurityGroupIds": groups} if groups else {}
        return dict(
            ec2.create_vpc_endpoint(
                VpcEndpointType="Interface",
                VpcId=vpc_id,
                ServiceName=service_name,
                SubnetIds=subnets,
                PrivateDnsEnabled=private_dns,
                TagSpecifications=[
                    {"ResourceType": "vpc-endpoint", "Tags": tags(enclave_id, nclav_import=alias)}
                ],
                ClientToken=client_token(enclave_id, alias, service_name),
                **extra,
            )["VpcEndpoint"]
        )


def _change_record(r53: Any, zone_id: str, action: str, name: str, value: str) -> None:
    with aws_errors(f"route53:ChangeResourceRecordSets {name}"):
        try:
            r53.change_resource_record_sets(
                HostedZoneId=zone_id,
                ChangeBatch={
                    "Comment": "nclav import",
                    "Changes": [
                        {
                            "Action": action,
                            "ResourceRecordSet": {
                                "Name": name,
                                "Type": "CNAME",
                                "TTL": 60,
                                "ResourceRecords": [{"Value": value}],
                            },
                        }
                    ],
                },
            )
        except ClientError as exc:
            # DELETE of a record that is gone (or already changed by hand): nothing to do.
            if action != "DELETE" or error_code(exc) not in (
                "InvalidChangeBatch",
                "NoSuchHostedZone",
            ):
                raise


def _statement_id(importer_id: str, alias: str) -> str:
    return f"nclav{short_hash(f'{importer_id}/{alias}', 16)}"


def _queue(
    sessions: Sessions,
    ec2: Any,
    vpc: dict[str, Any],
    subnets: list[str],
    importer: EnclaveConfig,
    imp: Import,
    export: Handle,
    handle: Handle,
) -> Handle:
    region = str(export["region"])
    sid = _statement_id(importer.id, imp.alias)
    statement = {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{handle['account_id']}:root"},
        "Action": [
            "sqs:SendMessage",
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
            "sqs:GetQueueAttributes",
            "sqs:GetQueueUrl",
        ],
        "Resource": export["queue_arn"],
    }
    _edit_policy(sessions, export, lambda stmts: [*stmts, statement], sid)
    endpoint_id = None
    if subnets:
        endpoint = _ensure_endpoint(
            ec2,
            importer.id,
            _SHARED_SQS,
            vpc["VpcId"],
            f"com.amazonaws.{region}.sqs",
            subnets,
            [],
            private_dns=True,
        )
        endpoint_id = endpoint["VpcEndpointId"]
    handle.update(queue_url=export["queue_url"], statement_sid=sid, sqs_endpoint_id=endpoint_id)
    return handle


def _edit_policy(sessions: Sessions, export: Handle, change: Any, sid: str) -> None:
    sqs = sessions.account(export["account_id"], "sqs", export["region"])
    url = export["queue_url"]
    with aws_errors(f"sqs queue policy of {url}"):
        try:
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])
        except ClientError as exc:
            if "NonExistentQueue" in error_code(exc) or error_code(exc) == "QueueDoesNotExist":
                return
            raise
        raw = attrs.get("Attributes", {}).get("Policy")
        policy: dict[str, Any] = (
            json.loads(raw) if raw else {"Version": "2012-10-17", "Statement": []}
        )
        kept = [s for s in policy.get("Statement", []) if s.get("Sid") != sid]
        policy["Statement"] = change(kept)
        # A policy without statements is rejected: an empty value removes the policy.
        text = json.dumps(policy) if policy["Statement"] else ""
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": text})


def teardown_import(sessions: Sessions, handle: Handle) -> None:
    mode = handle.get("mode")
    if mode == "queue-policy":
        export = {
            "account_id": handle["exporter_account_id"],
            "region": handle["region"],
            "queue_url": handle["queue_url"],
        }
        _edit_policy(sessions, export, lambda stmts: stmts, handle["statement_sid"])
        return
    if mode != "privatelink":
        return
    account, region = handle["account_id"], handle["region"]
    if handle.get("record_name"):
        r53 = sessions.account(account, "route53", region)
        _change_record(
            r53, handle["zone_id"], "DELETE", handle["record_name"], handle["record_value"]
        )
    ec2 = sessions.account(account, "ec2", region)
    with aws_errors(f"ec2:DeleteVpcEndpoints {handle['vpc_endpoint_id']}"):
        ec2.delete_vpc_endpoints(VpcEndpointIds=[handle["vpc_endpoint_id"]])
        try:
            # DependencyViolation while the endpoint's interfaces go away: retried later.
            ec2.delete_security_group(GroupId=handle["security_group_id"])
        except ClientError as exc:
            if error_code(exc) != "InvalidGroup.NotFound":
                raise
        others = [
            e
            for e in ec2.describe_vpc_endpoints(
                Filters=[{"Name": "service-name", "Values": [handle["service_name"]]}]
            )["VpcEndpoints"]
            if e.get("State") in _LIVE and e["VpcEndpointId"] != handle["vpc_endpoint_id"]
        ]
    if others:
        return  # another import of this account still uses the service
    exporter_ec2 = sessions.account(handle["exporter_account_id"], "ec2", region)
    with aws_errors(f"ec2:ModifyVpcEndpointServicePermissions {handle['service_id']}"):
        try:
            exporter_ec2.modify_vpc_endpoint_service_permissions(
                ServiceId=handle["service_id"],
                RemoveAllowedPrincipals=[f"arn:aws:iam::{account}:root"],
            )
        except ClientError as exc:
            if "NotFound" not in error_code(exc):
                raise


__all__ = ["provision_import", "teardown_import"]
