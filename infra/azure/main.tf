# The whole nclav deployment on Azure: a Flex Consumption function app (the API, the steps
# queue's worker, the sweeper's timer), the terraform worker as the same function app in an
# image with terraform on Container Apps (scaled by KEDA on the IaC queue), Storage queues and
# a blob container, Cosmos DB state, Key Vault secrets and one user-assigned identity per
# deployment. Split by concern: storage.tf, state.tf, secrets.tf, identities.tf, app.tf, iac.tf.

resource "azurerm_resource_group" "nclav" {
  name     = var.resource_group_name
  location = var.location
}

locals {
  # Storage, Cosmos DB, Key Vault and the app's host name are global names: a suffix derived
  # from the subscription and resource group keeps two deployments from colliding, and is
  # the same on every apply (no random provider).
  suffix = substr(sha256("${var.subscription_id}/${var.resource_group_name}/${var.name}"), 0, 8)
  names = {
    data     = "${var.name}${local.suffix}data" # queues, nclav's blobs, the app's package
    host     = "${var.name}${local.suffix}host" # the Functions hosts' own storage
    cosmos   = "${var.name}-${local.suffix}"
    vault    = "${var.name}-${local.suffix}"
    registry = "${var.name}${local.suffix}"
    app      = "${var.name}-${local.suffix}"
  }

  queues = {
    steps = "${var.name}-steps"
    iac   = "${var.name}-iac"
  }
  # The host moves a message to <queue>-poison after maxDequeueCount dequeues; the delivery
  # policy gives up (records the step failed, deletes the message) one dequeue before that.
  host_queues  = jsondecode(file(var.host_json)).extensions.queues
  max_receives = local.host_queues.maxDequeueCount - 1

  # Every NCLAV_* variable functions_azure/settings.py (and core's runtime settings) reads.
  common_settings = {
    NCLAV_CLOUD            = "azure"
    NCLAV_STORAGE_ACCOUNT  = azurerm_storage_account.data.name
    NCLAV_BLOB_CONTAINER   = azurerm_storage_container.blobs.name
    NCLAV_STEPS_QUEUE      = azurerm_storage_queue.q["steps"].name
    NCLAV_IAC_QUEUE        = azurerm_storage_queue.q["iac"].name
    NCLAV_COSMOS_ENDPOINT  = azurerm_cosmosdb_account.state.endpoint
    NCLAV_COSMOS_DATABASE  = azurerm_cosmosdb_sql_database.nclav.name
    NCLAV_COSMOS_CONTAINER = azurerm_cosmosdb_sql_container.state.name
    NCLAV_KEY_VAULT_URL    = azurerm_key_vault.nclav.vault_uri
    NCLAV_SECRET_PREFIX    = "nclav-"
    NCLAV_TOKEN_SECRET     = "api-token"
    NCLAV_MAX_RECEIVES     = tostring(local.max_receives)

    NCLAV_AZURE_TENANT_ID            = var.tenant_id
    NCLAV_AZURE_MANAGEMENT_GROUP_ID  = var.management_group_id
    NCLAV_AZURE_BILLING_ACCOUNT_NAME = var.billing_account_name
    NCLAV_AZURE_BILLING_PROFILE_NAME = var.billing_profile_name
    NCLAV_AZURE_INVOICE_SECTION_NAME = var.invoice_section_name
    NCLAV_AZURE_DEFAULT_LOCATION     = var.default_location
    NCLAV_AZURE_SUBSCRIPTION_PREFIX  = var.subscription_prefix

    NCLAV_NOTIFY_URL        = var.notify_url
    NCLAV_DRIFT_INTERVAL_S  = tostring(var.drift_interval_s)
    NCLAV_DRIFT_CONCURRENCY = tostring(var.drift_concurrency)
  }

  # The git source (core/nclav/gitsource): empty values mean "not set" to GitSettings.
  git_settings = {
    NCLAV_GIT_URL              = var.git_url
    NCLAV_GIT_BRANCH           = var.git_branch
    NCLAV_GIT_PATH             = var.git_path
    NCLAV_GIT_POLL_S           = tostring(var.git_poll_s)
    NCLAV_GIT_PREVIEW_BRANCHES = tostring(var.git_preview_branches)
    NCLAV_GIT_PROVIDER         = var.git_provider
    NCLAV_GIT_API_URL          = var.git_api_url
  }

  # How a Functions host reaches storage with a user-assigned identity, no key: its own
  # (AzureWebJobsStorage, on the host account) and the queue triggers' connection
  # (NCLAV_STORAGE in functions_azure/function_app.py, on the data account).
  host_storage_common = {
    AzureWebJobsStorage__accountName = azurerm_storage_account.host.name
    AzureWebJobsStorage__credential  = "managedidentity"
    NCLAV_STORAGE__queueServiceUri   = azurerm_storage_account.data.primary_queue_endpoint
    NCLAV_STORAGE__credential        = "managedidentity"
  }
  # ...as which identity (AZURE_CLIENT_ID: DefaultAzureCredential's choice too).
  host_identity = {
    app = {
      AZURE_CLIENT_ID                           = azurerm_user_assigned_identity.app.client_id
      AzureWebJobsStorage__clientId             = azurerm_user_assigned_identity.app.client_id
      NCLAV_STORAGE__clientId                   = azurerm_user_assigned_identity.app.client_id
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=${azurerm_user_assigned_identity.app.client_id};Authorization=AAD"
    }
    iac = {
      AZURE_CLIENT_ID                           = azurerm_user_assigned_identity.iac.client_id
      AzureWebJobsStorage__clientId             = azurerm_user_assigned_identity.iac.client_id
      NCLAV_STORAGE__clientId                   = azurerm_user_assigned_identity.iac.client_id
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=${azurerm_user_assigned_identity.iac.client_id};Authorization=AAD"
    }
  }
}

# -- logs -----------------------------------------------------------------------------------------

resource "azurerm_log_analytics_workspace" "nclav" {
  name                = "${var.name}-logs"
  location            = azurerm_resource_group.nclav.location
  resource_group_name = azurerm_resource_group.nclav.name
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
}

# Entra ID ingestion only (no instrumentation key accepted): the identities publish metrics.
resource "azurerm_application_insights" "nclav" {
  name                         = "${var.name}-insights"
  location                     = azurerm_resource_group.nclav.location
  resource_group_name          = azurerm_resource_group.nclav.name
  workspace_id                 = azurerm_log_analytics_workspace.nclav.id
  application_type             = "other"
  local_authentication_enabled = false
}
