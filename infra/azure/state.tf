# -- state: Cosmos DB (NoSQL), one container partitioned on /pk ----------------------------------

# Layout: functions_azure/README.md ("The Cosmos store's layout"). Keys off: the identities
# reach it through the data-plane role assignment in identities.tf.
resource "azurerm_cosmosdb_account" "state" {
  name                         = local.names.cosmos
  resource_group_name          = azurerm_resource_group.nclav.name
  location                     = azurerm_resource_group.nclav.location
  offer_type                   = "Standard"
  kind                         = "GlobalDocumentDB"
  local_authentication_enabled = false
  minimal_tls_version          = "Tls12"

  consistency_policy {
    consistency_level = var.cosmos_consistency
  }

  geo_location {
    location          = azurerm_resource_group.nclav.location
    failover_priority = 0
  }

  dynamic "capabilities" {
    for_each = var.cosmos_serverless ? ["EnableServerless"] : []
    content {
      name = capabilities.value
    }
  }

  backup {
    type = "Continuous"
    tier = "Continuous7Days"
  }
}

resource "azurerm_cosmosdb_sql_database" "nclav" {
  name                = "nclav"
  resource_group_name = azurerm_resource_group.nclav.name
  account_name        = azurerm_cosmosdb_account.state.name
}

resource "azurerm_cosmosdb_sql_container" "state" {
  name                  = "state"
  resource_group_name   = azurerm_resource_group.nclav.name
  account_name          = azurerm_cosmosdb_account.state.name
  database_name         = azurerm_cosmosdb_sql_database.nclav.name
  partition_key_paths   = ["/pk"]
  partition_key_version = 2
  default_ttl           = -1 # per-item TTL on (functions_azure/_cosmos_docs.py: expires_at)
}
