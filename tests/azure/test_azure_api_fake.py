"""The strict ARM / Key Vault fake itself: what it refuses, and the behaviours tests rely on.

These call ``handle`` directly (the HTTP layer is exercised by the driver and secret tests), and
clear ``violations`` where a violation is what the test provokes.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import pytest

from azure_api_fake import ARM_TOKEN, KV_TOKEN, AzureApiFake, Reply, Specs, validate

if TYPE_CHECKING:
    from collections.abc import Iterator

ARM = {"Authorization": f"Bearer {ARM_TOKEN}"}
SUB = "11111111-0000-0000-0000-000000000001"
RG = f"/subscriptions/{SUB}/resourceGroups/nclav-rg"
VNET = f"{RG}/providers/Microsoft.Network/virtualNetworks/nclav-vnet"


@pytest.fixture(scope="module")
def server() -> Iterator[AzureApiFake]:
    with AzureApiFake() as fake:  # started: operation URLs carry its port
        yield fake


@pytest.fixture
def fake(server: AzureApiFake) -> Iterator[AzureApiFake]:
    server.reset()
    server.seed_subscription(SUB)
    yield server
    assert server.violations == []


def call(fake: AzureApiFake, method: str, path: str, body: Any = None, **headers: str) -> Reply:
    raw = b"" if body is None else json.dumps(body).encode()
    return fake.handle(method, path, headers or ARM, raw)


def refused(fake: AzureApiFake, reply: Reply, text: str) -> None:
    assert reply.status in (400, 401, 405), reply
    assert any(text in v for v in fake.violations), fake.violations
    fake.violations.clear()


def rg(fake: AzureApiFake) -> None:
    reply = call(fake, "PUT", f"{RG}?api-version=2021-04-01", {"location": "westeurope"})
    assert reply.status == 201


def vnet_body(**extra: Any) -> dict[str, Any]:
    return {
        "location": "westeurope",
        "properties": {
            "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
            "subnets": [{"name": "subnet-0", "properties": {"addressPrefix": "10.0.1.0/24"}}],
            **extra,
        },
    }


def test_every_spec_file_loads_and_names_its_source() -> None:
    specs = Specs()
    assert len(specs.operations) > 30
    for doc in specs.docs.values():
        assert doc["x-nclav-source"]["repo"] == "Azure/azure-rest-api-specs"


def test_the_body_is_checked_against_the_spec(fake: AzureApiFake) -> None:
    rg(fake)
    url = f"{VNET}?api-version=2023-11-01"
    refused(fake, call(fake, "PUT", url, vnet_body(adressSpace={})), "adressSpace: unknown")
    refused(
        fake,
        call(fake, "PUT", url, vnet_body(provisioningState="Succeeded")),
        "provisioningState: read-only property sent",
    )
    bad = vnet_body()
    bad["properties"]["subnets"][0]["properties"]["privateLinkServiceNetworkPolicies"] = "Off"
    refused(fake, call(fake, "PUT", url, bad), "'Off' is not one of")
    refused(fake, call(fake, "PUT", url, {"location": 3}), "body.location: expected string")
    rg_url = f"{RG}?api-version=2021-04-01"
    refused(fake, call(fake, "PUT", rg_url, {"tags": {}}), "body.location: required property")
    refused(fake, call(fake, "PUT", rg_url), "required body missing")
    assert call(fake, "PUT", url, vnet_body()).status == 201


def test_paths_versions_and_queries_are_checked(fake: AzureApiFake) -> None:
    refused(fake, call(fake, "GET", f"{VNET}?api-version=2020-01-01"), "the spec is 2023-11-01")
    refused(fake, call(fake, "GET", VNET), "api-version None")
    refused(fake, call(fake, "GET", f"{VNET}?api-version=2023-11-01&x=1"), "undeclared query")
    refused(
        fake,
        call(fake, "GET", f"{RG}/providers/Microsoft.Nope/things/x?api-version=1"),
        "no spec path matches",
    )
    refused(fake, call(fake, "PATCH", f"{VNET}?api-version=2023-11-01", {}), "method not in")
    mg = f"/providers/Microsoft.Management/managementGroups/mg/subscriptions/{SUB}"
    refused(fake, call(fake, "PUT", f"{mg}?api-version=2020-05-01", {}), "takes no body")
    zone = (
        f"{RG}/providers/Microsoft.Network/privateDnsZones/z.internal/MX/x?api-version=2020-06-01"
    )
    refused(fake, call(fake, "DELETE", zone.replace("/MX/", "/SOA/")), "not in")
    # Literal segments compare case-insensitively, as ARM's do.
    assert call(fake, "GET", f"{VNET.upper()}?api-version=2023-11-01").status == 404


def test_arm_requires_the_token_and_key_vault_challenges(fake: AzureApiFake) -> None:
    refused(
        fake,
        call(fake, "GET", f"{VNET}?api-version=2023-11-01", Authorization="Bearer x"),
        "not authenticated",
    )
    challenge = fake.handle("GET", "/secrets/x/?api-version=2025-07-01", {}, b"")
    assert challenge.status == 401 and fake.violations == []
    assert f'resource="https://0.0.1:{fake.port}"' in challenge.headers["WWW-Authenticate"]
    kv = {"Authorization": f"Bearer {KV_TOKEN}"}
    assert fake.handle("GET", "/secrets/x/?api-version=2025-07-01", kv, b"").status == 404


def test_long_running_operations(fake: AzureApiFake) -> None:
    rg(fake)
    fake.lro_pending_polls = 1
    put = call(fake, "PUT", f"{VNET}?api-version=2023-11-01", vnet_body())
    assert put.status == 201 and put.body["properties"]["provisioningState"] == "Updating"
    operation = put.headers["Azure-AsyncOperation"].removeprefix(fake.url)
    again = call(fake, "PUT", f"{VNET}?api-version=2023-11-01", vnet_body())
    assert again.headers["Azure-AsyncOperation"] == put.headers["Azure-AsyncOperation"]
    assert call(fake, "GET", operation).body == {"status": "InProgress"}
    assert call(fake, "GET", operation).body == {"status": "Succeeded"}
    assert fake.resource(VNET)["properties"]["provisioningState"] == "Succeeded"  # type: ignore[index]
    fake.fail_next_lro("virtualNetworks", "Boom", "it broke")
    failed = call(fake, "PUT", f"{VNET}?api-version=2023-11-01", vnet_body())
    op = failed.headers["Azure-AsyncOperation"].removeprefix(fake.url)
    call(fake, "GET", op)
    assert call(fake, "GET", op).body == {
        "status": "Failed",
        "error": {"code": "Boom", "message": "it broke"},
    }


def test_alias_modes_and_role_assignment_conflicts(fake: AzureApiFake) -> None:
    alias = "/providers/Microsoft.Subscription/aliases/a1?api-version=2021-10-01"
    body = {"properties": {"displayName": "a1", "workload": "Production", "billingScope": "/x"}}
    refused(fake, call(fake, "PUT", alias, {"properties": {"workload": "Prod"}}), "not one of")
    assert call(fake, "PUT", alias, body).status == 201
    assert call(fake, "PUT", alias, body).status == 200
    fake.alias_mode = "409"
    assert call(fake, "PUT", alias, body).status == 409
    fake.alias_mode = "202"
    second = call(fake, "PUT", alias.replace("a1", "a2"), body)
    assert second.status == 202 and "Azure-AsyncOperation" in second.headers
    rg(fake)
    fake.providers[(SUB, "microsoft.managedidentity")] = ["Registered", 0]
    mi = f"{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/p?api-version=2023-01-31"
    principal = call(fake, "PUT", mi, {"location": "westeurope"}).body["properties"]["principalId"]
    ra = (
        f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/%s"
        "?api-version=2022-04-01"
    )
    grant = {
        "properties": {
            "roleDefinitionId": "/r/c",
            "principalId": principal,
            "principalType": "ServicePrincipal",
        }
    }
    assert call(fake, "PUT", ra % "n1", grant).status == 201
    assert call(fake, "PUT", ra % "n2", grant).body["error"]["code"] == "RoleAssignmentExists"
    other = {"properties": {**grant["properties"], "principalId": "nobody"}}
    assert call(fake, "PUT", ra % "n3", other).body["error"]["code"] == "PrincipalNotFound"


def test_resource_graph_pages_and_refuses_what_it_cannot_evaluate(fake: AzureApiFake) -> None:
    for i in range(3):
        fake.add_resource(
            f"/subscriptions/{SUB}/resourceGroups/w/providers/A.B/c/r{i}",
            "A.B/c",
            {"nclav-managed": "true", "nclav-partition": "p"},
        )
    url = "/providers/Microsoft.ResourceGraph/resources?api-version=2021-03-01"
    query = (
        "Resources | where tags['nclav-managed'] == 'true' and isnotempty(tags['nclav-partition'])"
    )
    fake.graph_page_size = 2
    body: dict[str, Any] = {
        "subscriptions": [SUB],
        "query": query,
        "options": {"resultFormat": "objectArray"},
    }
    first = call(fake, "POST", url, body).body
    assert first["count"] == 2 and first["totalRecords"] == 3
    assert base64.b64decode(first["$skipToken"]) == b"2"
    body["options"]["$skipToken"] = first["$skipToken"]
    last = call(fake, "POST", url, body).body
    assert last["count"] == 1 and "$skipToken" not in last
    refused(
        fake,
        call(fake, "POST", url, {**body, "query": "Resources | where name =~ 'x'"}),
        "does not understand",
    )
    refused(fake, call(fake, "POST", url, {**body, "options": {}}), "objectArray")
    refused(fake, call(fake, "POST", url, {"subscriptions": [SUB]}), "body.query: required")


def test_validate_follows_refs_allof_and_trimmed_refs() -> None:
    specs = Specs()
    msi = next(p for p in specs.docs if p.name == "ManagedIdentity.json")
    identity = {"$ref": "#/definitions/Identity"}
    assert validate(specs, identity, msi, {"location": "x", "tags": {"a": "b"}}, "b") == []
    assert validate(specs, identity, msi, {"location": "x", "id": "/x"}, "b") == [
        "b.id: read-only property sent"
    ]
    assert validate(specs, identity, msi, {}, "b") == ["b.location: required property missing"]
    vnet = next(p for p in specs.docs if p.name == "virtualNetwork.json")
    subnet = {"$ref": "#/definitions/SubnetPropertiesFormat"}
    assert validate(specs, subnet, vnet, {"routeTable": {"anything": 1}}, "b") == []
