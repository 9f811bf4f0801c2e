"""Exports: the producer side of a cross-enclave bridge, as a PrivateLink endpoint service.

The original driver made no API calls here (spec §4.7: pass-through, Terraform's job), which
left nothing that crosses accounts. An http or tcp export reachable by other enclaves becomes
a VPC endpoint service on a Network Load Balancer in the exporter account:

- the partition outputs ``vpce_service_id``: Terraform made the service, it is used as is;
- it outputs ``nlb_arn``: the driver puts an endpoint service on that NLB;
- otherwise its ``hostname`` must be an IP address in the enclave VPC: the driver makes an
  internal NLB in the enclave subnets with an IP target group and a TCP listener on ``port``.

Importers are allowed per account when they import (imports.py). ``to: public`` and ``vpn``
exports, and queue exports, need no service: their handle only carries the outputs. Every
handle keeps what its teardown needs, since teardown_export gets nothing else.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from functions_aws.driver.config import client_token, elb_name, tags
from functions_aws.driver.errors import aws_errors, error_code
from functions_aws.driver.network import enclave_subnets, find_vpc
from nclav.errors import PermanentError, TemporaryError
from nclav.model import ExportType

if TYPE_CHECKING:
    from collections.abc import Mapping

    from functions_aws.driver.sessions import Sessions
    from nclav.model import EnclaveConfig, Export
    from nclav.state import Handle

PASS_THROUGH_TARGETS = ("public", "vpn")


def export_port(export: Export, outputs: Mapping[str, str]) -> int:
    raw = outputs.get("port") or (str(export.port) if export.port else "")
    if raw:
        try:
            return int(raw)
        except ValueError:
            raise PermanentError(
                f"export {export.name}: port output {raw!r} is not a number"
            ) from None
    return 443 if export.export_type == ExportType.HTTP else 0


def provision_export(
    sessions: Sessions,
    account_id: str,
    region: str,
    enclave: EnclaveConfig,
    export: Export,
    outputs: Mapping[str, str],
) -> Handle:
    handle: Handle = {
        "driver": "aws",
        "kind": "export",
        "type": export.export_type.value,
        "enclave_id": enclave.id,
        "export_name": export.name,
        "account_id": account_id,
        "region": region,
        "mode": "pass-through",
    }
    if export.export_type == ExportType.QUEUE:
        queue_url = outputs.get("queue_url", "")
        if not queue_url:
            raise PermanentError(f"export {export.name}: the partition has no queue_url output")
        sqs = sessions.account(account_id, "sqs", region)
        with aws_errors(f"sqs:GetQueueAttributes {queue_url}"):
            attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        queue_arn = attrs["Attributes"]["QueueArn"]
        return {
            **handle,
            "mode": "queue-policy",
            "queue_url": queue_url,
            "queue_arn": queue_arn,
            "outputs": {"queue_url": queue_url},
        }
    port = export_port(export, outputs)
    hostname = outputs.get("hostname") or export.hostname or ""
    handle["port"] = port
    handle["outputs"] = {"hostname": hostname, "port": str(port)}
    if export.to in PASS_THROUGH_TARGETS:
        return handle
    ec2 = sessions.account(account_id, "ec2", region)
    service_id = outputs.get("vpce_service_id")
    if service_id:
        service = _describe_service(ec2, service_id)
        if service is None:
            raise PermanentError(f"export {export.name}: endpoint service {service_id} not found")
        nlb: dict[str, Any] = {"nlb_owned": False}
        owned = False
    else:
        if port <= 0:
            raise PermanentError(f"export {export.name}: a tcp export needs a port output")
        elb = sessions.account(account_id, "elbv2", region)
        nlb = _ensure_nlb(ec2, elb, enclave, export, outputs, hostname, port)
        service = _ensure_service(ec2, enclave.id, export.name, nlb["nlb_arn"])
        owned = True
    service_name = str(service["ServiceName"])
    handle["outputs"]["vpce_service_name"] = service_name
    return {
        **handle,
        **nlb,
        "mode": "privatelink",
        "service_id": service["ServiceId"],
        "service_name": service_name,
        "service_owned": owned,
        "acceptance_required": bool(service.get("AcceptanceRequired")),
    }


def _describe_service(ec2: Any, service_id: str) -> dict[str, Any] | None:
    with aws_errors(f"ec2:DescribeVpcEndpointServiceConfigurations {service_id}"):
        try:
            found = ec2.describe_vpc_endpoint_service_configurations(ServiceIds=[service_id])
        except ClientError as exc:
            if "NotFound" in error_code(exc):
                return None
            raise
    configs = found.get("ServiceConfigurations", [])
    return dict(configs[0]) if configs else None


def _ensure_nlb(
    ec2: Any,
    elb: Any,
    enclave: EnclaveConfig,
    export: Export,
    outputs: Mapping[str, str],
    hostname: str,
    port: int,
) -> dict[str, Any]:
    if outputs.get("nlb_arn"):
        return {"nlb_arn": outputs["nlb_arn"], "nlb_owned": False}
    try:
        target = str(ipaddress.ip_address(hostname))
    except ValueError:
        raise PermanentError(
            f"export {export.name}: PrivateLink needs a Network Load Balancer: output nlb_arn "
            f"(or vpce_service_id) from partition {export.target_partition}, or a hostname "
            f"that is an IP address in the enclave VPC (got {hostname!r})"
        ) from None
    vpc = find_vpc(ec2, enclave.id)
    subnets = enclave_subnets(ec2, vpc["VpcId"]) if vpc else []
    if vpc is None or not subnets:
        raise PermanentError(
            f"export {export.name}: enclave {enclave.id} needs network.subnets for the load "
            "balancer of its endpoint service"
        )
    name = elb_name(enclave.id, export.name)
    lb_tags = tags(enclave.id, nclav_export=export.name)
    with aws_errors(f"elbv2 load balancer {name}"):
        # CreateLoadBalancer is idempotent by name in AWS but not in moto: look first.
        lb_arn = _find(elb.describe_load_balancers, "LoadBalancers", "LoadBalancerArn", name)
        if lb_arn is None:
            lb_arn = elb.create_load_balancer(
                Name=name, Type="network", Scheme="internal", Subnets=subnets, Tags=lb_tags
            )["LoadBalancers"][0]["LoadBalancerArn"]
        tg_arn = _find(elb.describe_target_groups, "TargetGroups", "TargetGroupArn", name)
        if tg_arn is None:
            tg_arn = elb.create_target_group(
                Name=name,
                Protocol="TCP",
                Port=port,
                VpcId=vpc["VpcId"],
                TargetType="ip",
                Tags=lb_tags,
            )["TargetGroups"][0]["TargetGroupArn"]
        elb.register_targets(TargetGroupArn=tg_arn, Targets=[{"Id": target, "Port": port}])
        listeners = elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]
        listener = next((li["ListenerArn"] for li in listeners if li["Port"] == port), None)
        if listener is None:
            listener = elb.create_listener(
                LoadBalancerArn=lb_arn,
                Protocol="TCP",
                Port=port,
                DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
            )["Listeners"][0]["ListenerArn"]
    return {
        "nlb_arn": lb_arn,
        "nlb_owned": True,
        "target_group_arn": tg_arn,
        "listener_arn": listener,
    }


def _find(describe: Any, key: str, field: str, name: str) -> str | None:
    try:
        found = describe(Names=[name])[key]
    except ClientError as exc:
        if error_code(exc) in ("LoadBalancerNotFound", "TargetGroupNotFound"):
            return None
        raise
    return str(found[0][field]) if found else None


def _ensure_service(ec2: Any, enclave_id: str, export_name: str, nlb_arn: str) -> dict[str, Any]:
    """The endpoint service on ``nlb_arn`` (ClientToken is not honoured by moto: look first)."""
    with aws_errors(f"ec2 endpoint service for {nlb_arn}"):
        pages = ec2.get_paginator("describe_vpc_endpoint_service_configurations").paginate()
        for page in pages:
            for config in page.get("ServiceConfigurations", []):
                if nlb_arn in config.get("NetworkLoadBalancerArns", []) and config.get(
                    "ServiceState"
                ) not in ("Deleting", "Deleted", "Failed"):
                    return dict(config)
        # Acceptance off: who may connect is decided by the allowed principals, which an
        # import adds for its own account only.
        out = ec2.create_vpc_endpoint_service_configuration(
            NetworkLoadBalancerArns=[nlb_arn],
            AcceptanceRequired=False,
            TagSpecifications=[
                {
                    "ResourceType": "vpc-endpoint-service",
                    "Tags": tags(enclave_id, nclav_export=export_name),
                }
            ],
            ClientToken=client_token(enclave_id, export_name, nlb_arn),
        )
    return dict(out["ServiceConfiguration"])


def teardown_export(sessions: Sessions, handle: Handle) -> None:
    if handle.get("mode") != "privatelink":
        return
    account, region = handle["account_id"], handle["region"]
    ec2 = sessions.account(account, "ec2", region)
    if handle.get("service_owned"):
        with aws_errors(f"ec2:DeleteVpcEndpointServiceConfigurations {handle['service_id']}"):
            out = ec2.delete_vpc_endpoint_service_configurations(ServiceIds=[handle["service_id"]])
        for failure in out.get("Unsuccessful", []):
            code = str(failure.get("Error", {}).get("Code", ""))
            if "NotFound" not in code:
                # Endpoints of importers still connected: their teardown comes first.
                raise TemporaryError(
                    f"export {handle['export_name']}: endpoint service {handle['service_id']} "
                    f"not deleted yet: {code} {failure.get('Error', {}).get('Message', '')}"
                )
    if not handle.get("nlb_owned"):
        return
    elb = sessions.account(account, "elbv2", region)
    gone = ("ListenerNotFound", "LoadBalancerNotFound", "TargetGroupNotFound")
    for what, call, kwargs in (
        ("listener", elb.delete_listener, {"ListenerArn": handle.get("listener_arn")}),
        ("load balancer", elb.delete_load_balancer, {"LoadBalancerArn": handle.get("nlb_arn")}),
        (
            "target group",
            elb.delete_target_group,
            {"TargetGroupArn": handle.get("target_group_arn")},
        ),
    ):
        if not next(iter(kwargs.values())):
            continue
        with aws_errors(f"elbv2: delete {what}"):
            try:
                call(**kwargs)
            except ClientError as exc:
                if error_code(exc) not in gone:
                    raise


__all__ = ["PASS_THROUGH_TARGETS", "export_port", "provision_export", "teardown_export"]
