# -- secrets: Key Vault in RBAC mode, its secrets never in Terraform --------------------------------

# No azurerm_key_vault_secret here (a Key Vault secret cannot exist without a value, and a
# value here would sit in the state): the API generates its token (nclav-api-token) on its
# first request, the first function to need the webhook or notification secret generates it,
# the operator sets the git token (`nclav source set --token-file`, or
# `az keyvault secret set --vault-name <vault> --name nclav-git-token --file <file>`).
data "azurerm_client_config" "current" {}

resource "azurerm_key_vault" "nclav" {
  name                       = local.names.vault
  location                   = azurerm_resource_group.nclav.location
  resource_group_name        = azurerm_resource_group.nclav.name
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  rbac_authorization_enabled = true
  purge_protection_enabled   = true
  soft_delete_retention_days = 7
}
