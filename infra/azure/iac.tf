# -- the terraform worker: function_app in an image with terraform, on Container Apps ------------

# Why (functions_azure/README.md, "The terraform worker"): a Flex Consumption execution is cut
# at its functionTimeout and has no terraform; the same function app in a container image
# runs only iac_worker, with functionTimeout raised to var.iac_function_timeout, and KEDA
# starts replicas from the IaC queue's length (zero when it is empty). A terraform step longer
# than that goes to `nclav serve --cloud azure` on a long-running host (README).
resource "azurerm_container_registry" "iac" {
  name                          = local.names.registry
  location                      = azurerm_resource_group.nclav.location
  resource_group_name           = azurerm_resource_group.nclav.name
  sku                           = "Basic"
  admin_enabled                 = false
  anonymous_pull_enabled        = false
  public_network_access_enabled = true
}

resource "azurerm_container_app_environment" "iac" {
  name                       = "${var.name}-env"
  location                   = azurerm_resource_group.nclav.location
  resource_group_name        = azurerm_resource_group.nclav.name
  logs_destination           = "log-analytics"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.nclav.id
}

locals {
  iac_settings = merge(
    local.common_settings,
    local.host_storage_common,
    local.host_identity.iac,
    {
      FUNCTIONS_EXTENSION_VERSION            = "~4"
      FUNCTIONS_WORKER_RUNTIME               = "python"
      AzureFunctionsJobHost__functionTimeout = var.iac_function_timeout
      "AzureWebJobs.http_api.Disabled"       = "true"
      "AzureWebJobs.steps_worker.Disabled"   = "true"
      "AzureWebJobs.sweeper.Disabled"        = "true"
      # One terraform per replica: its CPU, memory and disk (host.json's batch is for the app).
      AzureFunctionsJobHost__extensions__queues__batchSize         = "1"
      AzureFunctionsJobHost__extensions__queues__newBatchThreshold = "0"
    },
  )
}

resource "azurerm_container_app" "iac" {
  name                         = "${var.name}-iac"
  container_app_environment_id = azurerm_container_app_environment.iac.id
  resource_group_name          = azurerm_resource_group.nclav.name
  revision_mode                = "Single"

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.iac.id]
  }

  registry {
    server   = azurerm_container_registry.iac.login_server
    identity = azurerm_user_assigned_identity.iac.id
  }

  # The connection string carries no key (Entra ID ingestion), but the provider marks it
  # sensitive: a Container Apps secret, kept out of local.iac_settings (a sensitive value
  # there would make the whole map unusable as for_each).
  secret {
    name  = "appinsights"
    value = azurerm_application_insights.nclav.connection_string
  }

  template {
    min_replicas                     = 0
    max_replicas                     = var.iac_max_concurrency
    polling_interval_in_seconds      = 15
    cooldown_period_in_seconds       = 300
    termination_grace_period_seconds = 600

    # KEDA's azure-queue scaler, as the iac identity (no connection string). Counting every
    # message, the invisible ones being worked on included (queueLengthStrategy "all"), keeps
    # a replica running terraform from being scaled in under it.
    custom_scale_rule {
      name             = "iac-queue"
      custom_rule_type = "azure-queue"
      identity_id      = azurerm_user_assigned_identity.iac.id
      metadata = {
        accountName         = azurerm_storage_account.data.name
        queueName           = azurerm_storage_queue.q["iac"].name
        queueLength         = "1"
        queueLengthStrategy = "all"
      }
    }

    container {
      name   = "iac"
      image  = var.iac_image
      cpu    = 2.0
      memory = "4Gi"

      dynamic "env" {
        for_each = local.iac_settings
        content {
          name  = env.key
          value = env.value
        }
      }
      env {
        name        = "APPLICATIONINSIGHTS_CONNECTION_STRING"
        secret_name = "appinsights"
      }
    }
  }

  depends_on = [azurerm_role_assignment.grant, azurerm_cosmosdb_sql_role_assignment.state]
}
