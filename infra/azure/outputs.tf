output "api_url" {
  description = "Point the CLI here: export NCLAV_URL=<api_url>."
  value       = "https://${azurerm_function_app_flex_consumption.app.default_hostname}"
}

output "key_vault_url" {
  description = "The API generates the token on its first request: curl <api_url>/health once, then export NCLAV_TOKEN=$(az keyvault secret show --vault-name <vault> --name nclav-api-token --query value -o tsv)."
  value       = azurerm_key_vault.nclav.vault_uri
}

output "function_app" {
  description = "Deploy the function app's zip here: az functionapp deployment source config-zip -g <resource group> -n <function_app> --src <zip>."
  value       = azurerm_function_app_flex_consumption.app.name
}

output "registry" {
  description = "Push the terraform worker image (functions_azure/Dockerfile) here, then set iac_image to it by digest."
  value       = azurerm_container_registry.iac.login_server
}

output "storage_account" {
  value = azurerm_storage_account.data.name
}

output "cosmos_endpoint" {
  value = azurerm_cosmosdb_account.state.endpoint
}

output "queues" {
  value = { for k, q in azurerm_storage_queue.q : k => q.name }
}

output "identities" {
  description = "Principal ids of the app and terraform worker identities (for the driver's roles, README)."
  value = {
    app = azurerm_user_assigned_identity.app.principal_id
    iac = azurerm_user_assigned_identity.iac.principal_id
  }
}
