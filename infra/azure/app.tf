# -- the function app: API, steps worker and sweeper (Flex Consumption, Python 3.11) -------------

resource "azurerm_service_plan" "app" {
  name                = "${var.name}-plan"
  location            = azurerm_resource_group.nclav.location
  resource_group_name = azurerm_resource_group.nclav.name
  os_type             = "Linux"
  sku_name            = "FC1"
}

# functions_azure/function_app.py (v2 model) deployed as a zip package (README). It holds
# four functions; iac_worker is disabled here: terraform steps run on Container Apps (iac.tf).
resource "azurerm_function_app_flex_consumption" "app" {
  name                = local.names.app
  location            = azurerm_resource_group.nclav.location
  resource_group_name = azurerm_resource_group.nclav.name
  service_plan_id     = azurerm_service_plan.app.id
  https_only          = true

  runtime_name           = "python"
  runtime_version        = "3.11"
  maximum_instance_count = var.app_max_instances
  instance_memory_in_mb  = 2048

  storage_container_type            = "blobContainer"
  storage_container_endpoint        = "${azurerm_storage_account.data.primary_blob_endpoint}${azurerm_storage_container.package.name}"
  storage_authentication_type       = "UserAssignedIdentity"
  storage_user_assigned_identity_id = azurerm_user_assigned_identity.app.id

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }

  site_config {
    application_insights_connection_string = azurerm_application_insights.nclav.connection_string
  }

  app_settings = merge(
    local.common_settings,
    local.git_settings,
    local.host_storage_common,
    local.host_identity.app,
    { "AzureWebJobs.iac_worker.Disabled" = "true" },
  )

  depends_on = [azurerm_role_assignment.grant]
}
