# -- storage: two accounts, keys off -------------------------------------------------------------

# data: the step queues (and their -poison queues), nclav's blobs (bundles, IaC logs, every
# Terraform state version) and the app's deployment package. Each identity is granted the
# containers and queues it uses, one by one (identities.tf).
resource "azurerm_storage_account" "data" {
  name                            = local.names.data
  resource_group_name             = azurerm_resource_group.nclav.name
  location                        = azurerm_resource_group.nclav.location
  account_kind                    = "StorageV2"
  account_tier                    = "Standard"
  account_replication_type        = "ZRS"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  shared_access_key_enabled       = false
  default_to_oauth_authentication = true
  allow_nested_items_to_be_public = false

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }
}

# host: what the Functions hosts keep for themselves (timer and singleton leases, keys). The
# host library asks for Storage Blob Data Owner on its account, so it gets an account of its
# own holding nothing of nclav's.
resource "azurerm_storage_account" "host" {
  name                            = local.names.host
  resource_group_name             = azurerm_resource_group.nclav.name
  location                        = azurerm_resource_group.nclav.location
  account_kind                    = "StorageV2"
  account_tier                    = "Standard"
  account_replication_type        = "LRS"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  shared_access_key_enabled       = false
  default_to_oauth_authentication = true
  allow_nested_items_to_be_public = false
}

resource "azurerm_storage_container" "blobs" {
  name                  = "${var.name}-blobs"
  storage_account_id    = azurerm_storage_account.data.id
  container_access_type = "private"
}

# The Flex Consumption app's deployment package (az functionapp deployment source config-zip).
resource "azurerm_storage_container" "package" {
  name                  = "${var.name}-package"
  storage_account_id    = azurerm_storage_account.data.id
  container_access_type = "private"
}

# The work queues and, created here rather than by the host, their -poison queues: the host
# moves a message there after host.json's maxDequeueCount; the queue-scoped grants need them
# to exist.
resource "azurerm_storage_queue" "q" {
  for_each           = local.queues
  name               = each.value
  storage_account_id = azurerm_storage_account.data.id
}

resource "azurerm_storage_queue" "poison" {
  for_each           = local.queues
  name               = "${each.value}-poison"
  storage_account_id = azurerm_storage_account.data.id
}

# Signed bundle uploads (POST /bundles/uploads) that were never completed.
resource "azurerm_storage_management_policy" "data" {
  storage_account_id = azurerm_storage_account.data.id

  rule {
    name    = "nclav-abandoned-uploads"
    enabled = true
    filters {
      prefix_match = ["${azurerm_storage_container.blobs.name}/uploads/"]
      blob_types   = ["blockBlob"]
    }
    actions {
      base_blob {
        delete_after_days_since_modification_greater_than = 1
      }
    }
  }
}
