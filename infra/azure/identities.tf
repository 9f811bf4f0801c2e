# -- identities: one user-assigned identity per deployment, each granted only what it uses ------

# app: the Flex Consumption app (the API, the steps worker, the sweeper). iac: the terraform
# worker on Container Apps. Every storage grant names its container or queue; nothing is
# granted on the subscription or the resource group.
resource "azurerm_user_assigned_identity" "app" {
  name                = "${var.name}-app"
  location            = azurerm_resource_group.nclav.location
  resource_group_name = azurerm_resource_group.nclav.name
}

resource "azurerm_user_assigned_identity" "iac" {
  name                = "${var.name}-iac"
  location            = azurerm_resource_group.nclav.location
  resource_group_name = azurerm_resource_group.nclav.name
}

locals {
  data_id = azurerm_storage_account.data.id
  container_scope = {
    blobs   = "${local.data_id}/blobServices/default/containers/${azurerm_storage_container.blobs.name}"
    package = "${local.data_id}/blobServices/default/containers/${azurerm_storage_container.package.name}"
  }
  # Both identities consume, send and poison on all four queues: the API and the workers
  # enqueue to both (the engine's fan-out), each host moves its failures to <queue>-poison,
  # GET /status counts the poison queues, and KEDA reads the IaC queue's length as iac.
  queue_scopes = merge(
    { for k, q in azurerm_storage_queue.q : k => "${local.data_id}/queueServices/default/queues/${q.name}" },
    { for k, q in azurerm_storage_queue.poison : "${k}-poison" => "${local.data_id}/queueServices/default/queues/${q.name}" },
  )

  principals = {
    app = azurerm_user_assigned_identity.app.principal_id
    iac = azurerm_user_assigned_identity.iac.principal_id
  }

  role_grants = merge(
    {
      for pair in setproduct(keys(local.principals), keys(local.queue_scopes)) :
      "${pair[0]}/queue/${pair[1]}" => { who = pair[0], role = "Storage Queue Data Contributor", scope = local.queue_scopes[pair[1]] }
    },
    {
      for who in keys(local.principals) : "${who}/blobs" => { who = who, role = "Storage Blob Data Contributor", scope = local.container_scope.blobs }
    },
    {
      for who in keys(local.principals) : "${who}/host" => { who = who, role = "Storage Blob Data Owner", scope = azurerm_storage_account.host.id }
    },
    {
      for who in keys(local.principals) : "${who}/insights" => { who = who, role = "Monitoring Metrics Publisher", scope = azurerm_application_insights.nclav.id }
    },
    {
      # The Flex Consumption app's package: the deployment (config-zip) writes it there as
      # the app's identity, the app reads it. The iac image carries its own code.
      "app/package" = { who = "app", role = "Storage Blob Data Contributor", scope = local.container_scope.package }
      # Signed upload URLs (POST /bundles/uploads) are user delegation SAS: the key is asked
      # of the account (the SAS itself is limited to the blobs container by the grant above).
      "app/delegator" = { who = "app", role = "Storage Blob Delegator", scope = local.data_id }
      # The API generates its token, the app the webhook and notification secrets, and
      # stores the git token (PUT /source). Secrets cannot be granted one by one before they
      # exist: the vault holds nclav's secrets only.
      "app/secrets" = { who = "app", role = "Key Vault Secrets Officer", scope = azurerm_key_vault.nclav.id }
      # The terraform worker only reads (the notification secret exists by then: the app
      # generates it on its first start).
      "iac/secrets"  = { who = "iac", role = "Key Vault Secrets User", scope = azurerm_key_vault.nclav.id }
      "iac/registry" = { who = "iac", role = "AcrPull", scope = azurerm_container_registry.iac.id }
    },
  )
}

resource "azurerm_role_assignment" "grant" {
  for_each             = local.role_grants
  scope                = each.value.scope
  role_definition_name = each.value.role
  principal_id         = local.principals[each.value.who]
  principal_type       = "ServicePrincipal"
}

# State: Cosmos DB's built-in data contributor (items only: no account, database or container
# management), on the nclav database alone.
resource "azurerm_cosmosdb_sql_role_assignment" "state" {
  for_each            = local.principals
  resource_group_name = azurerm_resource_group.nclav.name
  account_name        = azurerm_cosmosdb_account.state.name
  role_definition_id  = "${azurerm_cosmosdb_account.state.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002"
  scope               = "${azurerm_cosmosdb_account.state.id}/dbs/${azurerm_cosmosdb_sql_database.nclav.name}"
  principal_id        = each.value
}

# -- on the management group: what the driver does in enclave subscriptions ----------------------

# The app identity places the subscriptions it creates (their creator, it owns them) under the
# management group. Partition steps run on the terraform worker: it reads what it manages
# (observe, Resource Graph orphan scans), creates each partition's managed identity and its
# federated credential (terraform runs as that identity), and assigns it partition_role_ids on
# its subscription: Role Based Access Control Administrator under a condition that lets it
# write or delete assignments of those roles only.
locals {
  management_group = "/providers/Microsoft.Management/managementGroups/${var.management_group_id}"
  partition_roles  = join(", ", var.partition_role_ids)
  assign_partition_roles_only = join(" AND ", [
    for action, attribute in { write = "Request", delete = "Resource" } :
    "((!(ActionMatches{'Microsoft.Authorization/roleAssignments/${action}'})) OR (@${attribute}[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${local.partition_roles}}))"
  ])
  management_group_grants = {
    "app/placement"  = { who = "app", role = "Management Group Contributor", condition = null }
    "iac/read"       = { who = "iac", role = "Reader", condition = null }
    "iac/identities" = { who = "iac", role = "Managed Identity Contributor", condition = null }
    "iac/partitions" = { who = "iac", role = "Role Based Access Control Administrator", condition = local.assign_partition_roles_only }
  }
}

resource "azurerm_role_assignment" "management_group" {
  for_each             = var.grant_management_group_roles ? local.management_group_grants : {}
  scope                = local.management_group
  role_definition_name = each.value.role
  principal_id         = local.principals[each.value.who]
  principal_type       = "ServicePrincipal"
  condition            = each.value.condition
  condition_version    = each.value.condition == null ? null : "2.0"
}
