"""infra/azure against the code it deploys: fmt-clean; every setting functions_azure reads is
set on both hosts, and only names some code reads; the delivery policy gives up before the host
poisons a message (host.json); the queues, their -poison queues and the trigger connection;
which host runs which function; KEDA on the IaC queue; every grant scoped to its container,
queue, database or vault, none broad; Key Vault without secrets; every reference declared.

``terraform validate`` cannot run here: hashicorp/azurerm is not in the offline provider mirror
(``test_validate_where_the_azurerm_provider_is_mirrored`` skips and says so), so these checks
read the configuration (tests/infra_hcl.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from functions_azure.settings import Settings
from infra_hcl import (
    ROOT,
    Root,
    evaluate,
    fmt_check,
    load,
    nclav_names_in_code,
    validate_offline,
    walk,
)
from nclav.errors import TemporaryError
from nclav.runtime.delivery import DeliveryPolicy, GaveUp, Retry, decide
from nclav.runtime.drivers import env_name
from nclav.runtime.settings import env_var

INFRA = ROOT / "infra" / "azure"
FUNCTION_APP = ROOT / "functions_azure" / "function_app.py"
SEED_OPTIONS = (
    "TENANT_ID",
    "MANAGEMENT_GROUP_ID",
    "BILLING_ACCOUNT_NAME",
    "BILLING_PROFILE_NAME",
    "INVOICE_SECTION_NAME",
    "DEFAULT_LOCATION",
    "SUBSCRIPTION_PREFIX",
)
BROAD_ROLES = {"Owner", "Contributor", "User Access Administrator", "Storage Account Contributor"}


def driver_options() -> tuple[set[str], set[str]]:
    """(every NCLAV_AZURE_* option, the required ones): the driver plugin's declaration, or
    where the driver is not in this tree yet, the seed README's --azure-* table."""
    try:
        from functions_azure.driver import OPTIONS
    except ImportError:
        names = {f"NCLAV_AZURE_{o}" for o in SEED_OPTIONS}
        return names, names - {"NCLAV_AZURE_DEFAULT_LOCATION", "NCLAV_AZURE_SUBSCRIPTION_PREFIX"}
    found = {env_name("azure", o.name): o.required for o in OPTIONS}
    return set(found), {n for n, required in found.items() if required}


@pytest.fixture(scope="module")
def azure() -> Root:
    return load("azure")


def settings(azure: Root) -> dict[str, dict[str, Any]]:
    """The app settings of the Flex Consumption app and the container's environment."""
    app = azure.resource("azurerm_function_app_flex_consumption", "app")
    container = azure.resource("azurerm_container_app", "iac")["template"][0]["container"][0]
    env = {e["name"]: e.get("value", f"secret:{e.get('secret_name')}") for e in container["env"]}
    dynamic = container["dynamic"][0]["env"]
    # No sensitive value in that map (the provider refuses one in for_each): the Application
    # Insights connection string comes from a Container Apps secret.
    assert dynamic["for_each"] == "${local.iac_settings}"
    assert "connection_string" not in azure.locals["iac_settings"]
    iac = {**azure.mapping("${local.iac_settings}"), **env}
    assert iac["APPLICATIONINSIGHTS_CONNECTION_STRING"] == "secret:appinsights"
    return {"app": azure.mapping(app["app_settings"]), "iac": iac}


def function_app_source() -> str:
    if not FUNCTION_APP.exists():
        pytest.skip("functions_azure/function_app.py is not in this tree yet (the Azure functions)")
    return FUNCTION_APP.read_text()


def host_json() -> dict[str, Any]:
    path = ROOT / "functions_azure" / "host.json"
    if not path.exists():
        pytest.skip("functions_azure/host.json is not in this tree yet (the Azure function app)")
    found: dict[str, Any] = json.loads(path.read_text())
    return found


def console(azure: Root, expression: str, local_names: list[str], **values: str) -> Any:
    """``expression`` evaluated by terraform over this root's variables and ``local_names``:
    the required variables get placeholders, ``values`` win."""
    required = {k: "x" for k, body in azure.variables.items() if "default" not in body}
    return evaluate(azure, local_names, expression, {**required, **values})


def test_infra_azure_is_terraform_fmt_clean() -> None:
    fmt_check(INFRA)


def test_validate_where_the_azurerm_provider_is_mirrored() -> None:
    assert "Success" in validate_offline(INFRA, "azurerm")


def test_every_reference_is_declared(azure: Root) -> None:
    assert azure.unresolved() == []


def test_both_hosts_get_every_setting_the_runtime_requires(azure: Root) -> None:
    required = {
        env_var(f.name)
        for f in dataclasses.fields(Settings)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    # Optional to Settings, needed by the secrets (bootstrap refuses to build them without).
    required |= {"NCLAV_KEY_VAULT_URL"}
    required |= driver_options()[1]  # the driver's required options, on both hosts
    for host, values in settings(azure).items():
        assert required <= set(values), (host, sorted(required - set(values)))
        assert values["NCLAV_CLOUD"] == "azure"
        # No key anywhere: the stand-ins' connection string and Cosmos key stay unset.
        assert "NCLAV_STORAGE_CONNECTION" not in values and "NCLAV_COSMOS_KEY" not in values
        assert "NCLAV_AZURE_CLIENT_SECRET" not in values and "NCLAV_AZURE_CLIENT_ID" not in values
        # DefaultAzureCredential picks the host's user-assigned identity.
        assert values["AZURE_CLIENT_ID"] == f"${{azurerm_user_assigned_identity.{host}.client_id}}"
        assert values["NCLAV_STEPS_QUEUE"] == '${azurerm_storage_queue.q["steps"].name}'
        assert values["NCLAV_IAC_QUEUE"] == '${azurerm_storage_queue.q["iac"].name}'
    assert "NCLAV_GIT_URL" in settings(azure)["app"]


def test_every_nclav_name_set_is_one_some_code_reads(azure: Root) -> None:
    fields = {env_var(f.name) for f in dataclasses.fields(Settings)}
    read = nclav_names_in_code(ROOT / "core" / "nclav", ROOT / "functions_azure")
    known = fields | read | driver_options()[0]
    for host, values in settings(azure).items():
        # NCLAV_STORAGE__* is the queue triggers' connection (below), not a setting.
        names = {k for k in values if k.startswith("NCLAV_") and "__" not in k}
        assert not names - known, (host, sorted(names - known))


def test_the_policy_gives_up_before_the_host_poisons_a_message(azure: Root) -> None:
    """The host moves a message to <queue>-poison after maxDequeueCount dequeues (the attempt
    is the message's dequeue_count); terraform computes NCLAV_MAX_RECEIVES from that same
    host.json, and the policy with it gives up first."""
    assert azure.default("host_json") == "../../functions_azure/host.json"
    host = ROOT / "functions_azure" / "host.json"
    assert (INFRA / azure.default("host_json")).resolve() == host
    for values in settings(azure).values():
        assert values["NCLAV_MAX_RECEIVES"] == "${tostring(local.max_receives)}"
    dequeues = int(host_json()["extensions"]["queues"]["maxDequeueCount"])
    names = ["host_queues", "max_receives"]
    give_up = console(azure, "tostring(local.max_receives)", names, host_json=str(host))
    policy = DeliveryPolicy(max_receives=int(give_up))
    assert 1 <= policy.max_receives < dequeues
    error = TemporaryError("Cosmos DB is throttling")
    assert isinstance(decide(error, policy.max_receives, policy), GaveUp)
    for attempt in range(1, policy.max_receives):
        assert isinstance(decide(error, attempt, policy), Retry)


def test_queues_poison_queues_and_the_trigger_connection(azure: Root) -> None:
    assert azure.locals["queues"] == {"steps": "${var.name}-steps", "iac": "${var.name}-iac"}
    poison = azure.resource("azurerm_storage_queue", "poison")
    assert poison["for_each"] == "${local.queues}"
    assert poison["name"] == "${each.value}-poison"
    source = function_app_source()
    connection = re.search(r'STORAGE_CONNECTION = "(\w+)"', source)
    assert connection, "function_app.py names no STORAGE_CONNECTION"
    for host, values in settings(azure).items():
        name = connection.group(1)
        assert (
            values[f"{name}__queueServiceUri"]
            == "${azurerm_storage_account.data.primary_queue_endpoint}"
        )
        assert values[f"{name}__credential"] == "managedidentity"
        assert (
            values[f"{name}__clientId"] == f"${{azurerm_user_assigned_identity.{host}.client_id}}"
        )
        assert values["AzureWebJobsStorage__credential"] == "managedidentity"
    # The triggers read the queue names from the same settings the runtime sends to.
    assert '"%NCLAV_STEPS_QUEUE%"' in source and '"%NCLAV_IAC_QUEUE%"' in source


def test_each_host_runs_its_own_functions(azure: Root) -> None:
    functions = set(re.findall(r'@app\.function_name\("(\w+)"\)', function_app_source()))
    assert "iac_worker" in functions and len(functions) >= 3
    values = settings(azure)
    disabled = {
        host: {k.split(".")[1] for k, v in found.items() if k.endswith(".Disabled") and v == "true"}
        for host, found in values.items()
    }
    assert disabled["app"] == {"iac_worker"}
    assert disabled["iac"] == functions - {"iac_worker"}
    # Terraform gets the container's long execution limit, one message at a time.
    iac = values["iac"]
    assert iac["AzureFunctionsJobHost__functionTimeout"] == "${var.iac_function_timeout}"
    assert azure.default("iac_function_timeout") > "00:30:00"
    assert iac["AzureFunctionsJobHost__extensions__queues__batchSize"] == "1"
    assert iac["AzureFunctionsJobHost__extensions__queues__newBatchThreshold"] == "0"
    app = azure.resource("azurerm_function_app_flex_consumption", "app")
    assert (app["runtime_name"], app["runtime_version"]) == ("python", "3.11")


def test_keda_scales_the_terraform_worker_on_the_iac_queue_as_its_identity(azure: Root) -> None:
    template = azure.resource("azurerm_container_app", "iac")["template"][0]
    assert template["min_replicas"] == 0
    (rule,) = template["custom_scale_rule"]
    assert rule["custom_rule_type"] == "azure-queue"
    assert rule["identity_id"] == "${azurerm_user_assigned_identity.iac.id}"
    assert rule["metadata"]["queueName"] == '${azurerm_storage_queue.q["iac"].name}'
    assert rule["metadata"]["accountName"] == "${azurerm_storage_account.data.name}"
    # Messages being worked on count: a replica running terraform is not scaled in.
    assert rule["metadata"]["queueLengthStrategy"] == "all"
    assert "authentication" not in rule  # no connection string


def test_every_grant_is_scoped_and_none_is_broad(azure: Root) -> None:
    roles = [v for k, v in walk(azure.resources) if k in ("role", "role_definition_name")]
    grants = re.findall(
        r'role\s*=\s*"([^"]+)",\s*scope\s*=\s*([^\s}]+)', azure.locals["role_grants"]
    )
    assert grants, "no role grants found"
    assert not BROAD_ROLES & ({r for r, _ in grants} | set(roles))
    for role, scope in grants:
        if role.startswith("Storage Queue"):
            assert scope.startswith("local.queue_scopes["), (role, scope)
        elif role == "Storage Blob Data Owner":  # the Functions host's own account only
            assert scope == "azurerm_storage_account.host.id", scope
        elif role == "Storage Blob Delegator":  # a user delegation key is asked of the account
            assert scope == "local.data_id", scope
        elif role.startswith("Storage Blob"):
            assert scope.startswith("local.container_scope."), (role, scope)
        elif role.startswith("Key Vault"):
            assert scope == "azurerm_key_vault.nclav.id", (role, scope)
    scopes = azure.locals["queue_scopes"]
    assert "/queueServices/default/queues/" in scopes
    assert "/blobServices/default/containers/" in str(azure.locals["container_scope"])
    assert {r for r, _ in grants if r.startswith("Key Vault")} == {
        "Key Vault Secrets Officer",
        "Key Vault Secrets User",
    }
    cosmos = azure.resource("azurerm_cosmosdb_sql_role_assignment", "state")
    assert cosmos["scope"].endswith("/dbs/${azurerm_cosmosdb_sql_database.nclav.name}")
    assert cosmos["role_definition_id"].endswith(
        "/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002"
    )


def test_no_keys_and_no_secret_values(azure: Root) -> None:
    kinds = {kind for kind, _ in azure.resources}
    assert "azurerm_key_vault_secret" not in kinds
    vault = azure.resource("azurerm_key_vault", "nclav")
    assert vault["rbac_authorization_enabled"] is True
    for name in ("data", "host"):
        account = azure.resource("azurerm_storage_account", name)
        assert account["shared_access_key_enabled"] is False
        assert account["allow_nested_items_to_be_public"] is False
    assert (
        azure.resource("azurerm_cosmosdb_account", "state")["local_authentication_enabled"] is False
    )
    assert azure.resource("azurerm_container_registry", "iac")["admin_enabled"] is False


def test_the_cosmos_container_is_the_one_the_store_documents(azure: Root) -> None:
    readme = (ROOT / "functions_azure" / "README.md").read_text()
    assert "partition key path `/pk`" in readme
    container = azure.resource("azurerm_cosmosdb_sql_container", "state")
    assert container["partition_key_paths"] == ["/pk"]
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    assert container["name"] == defaults["cosmos_container"]
    assert (
        azure.resource("azurerm_cosmosdb_sql_database", "nclav")["name"]
        == defaults["cosmos_database"]
    )


def test_every_derived_name_fits_at_the_lengths_name_allows(azure: Root) -> None:
    """Storage accounts: 3-24 lowercase letters and digits; Key Vault: 3-24; a Flex
    Consumption app: at most 32 (host id collisions); container apps: 2-32."""
    condition = azure.variables["name"]["validation"][0]["condition"]
    pattern = re.fullmatch(r'\$\{can\(regex\("(.+)", var\.name\)\)\}', condition)
    assert pattern, condition
    regex = pattern.group(1).replace("\\\\", "\\")
    fits = [("a" + "b" * k) for k in range(40) if re.fullmatch(regex, "a" + "b" * k)]
    assert fits
    suffix = re.fullmatch(r"\$\{substr\(sha256\(.*\), 0, (\d+)\)\}", azure.locals["suffix"])
    assert suffix, azure.locals["suffix"]
    limits = {
        "data": r"[a-z0-9]{3,24}",
        "host": r"[a-z0-9]{3,24}",
        "cosmos": r"[a-z0-9][a-z0-9-]{1,42}[a-z0-9]",
        "vault": r"[a-z][a-z0-9-]{1,22}[a-z0-9]",
        "registry": r"[a-z0-9]{5,50}",
        "app": r"[a-z][a-z0-9-]{0,30}[a-z0-9]",
    }
    assert set(azure.locals["names"]) == set(limits)
    for name in (fits[0], fits[-1]):
        for key, template in azure.locals["names"].items():
            value = template.replace("${var.name}", name).replace(
                "${local.suffix}", "f" * int(suffix.group(1))
            )
            assert re.fullmatch(limits[key], value), (key, value)
        app = azure.resource("azurerm_container_app", "iac")["name"].replace("${var.name}", name)
        assert re.fullmatch(r"[a-z][a-z0-9-]{0,30}[a-z0-9]", app), app


def test_on_the_management_group_the_terraform_worker_assigns_partition_roles_only(
    azure: Root,
) -> None:
    grants = azure.locals["management_group_grants"]
    assert not BROAD_ROLES & {g["role"] for g in grants.values()}
    for key, grant in grants.items():
        # The one role that can assign roles carries the condition; the others need none.
        conditioned = grant["role"] == "Role Based Access Control Administrator"
        assert (grant["condition"] == "${local.assign_partition_roles_only}") == conditioned, key
    # Writing an assignment (the role requested) and deleting one (the role it holds): each
    # allowed for the partition roles only, as terraform renders the condition.
    ids = ["b24988ac-6180-42a0-ab88-20f7382dd24c", "acdd72a7-3385-48ef-bd42-f606fba81ae7"]
    rendered = console(
        azure,
        "local.assign_partition_roles_only",
        ["partition_roles", "assign_partition_roles_only"],
        partition_role_ids=json.dumps(ids),
    )
    guids = ", ".join(ids)
    clauses = {
        f"((!(ActionMatches{{'Microsoft.Authorization/roleAssignments/{action}'}})) OR "
        f"(@{source}[Microsoft.Authorization/roleAssignments:RoleDefinitionId] "
        f"ForAnyOfAnyValues:GuidEquals {{{guids}}}))"
        for action, source in (("write", "Request"), ("delete", "Resource"))
    }
    assert set(rendered.split(" AND ")) == clauses
    resource = azure.resource("azurerm_role_assignment", "management_group")
    assert resource["scope"] == "${local.management_group}"
    assert resource["condition_version"] == '${each.value.condition == null ? null : "2.0"}'
    try:
        from functions_azure.driver.config import CONTRIBUTOR
    except ImportError:
        return  # the driver is not in this tree yet
    assert azure.default("partition_role_ids") == [CONTRIBUTOR]
