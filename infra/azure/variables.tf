variable "subscription_id" {
  description = "The platform's own subscription (the function app, storage, Cosmos DB, Key Vault)."
  type        = string
}

variable "location" {
  description = "Region of the deployment."
  type        = string
  default     = "eastus2"
}

variable "resource_group_name" {
  description = "Resource group created for the deployment."
  type        = string
  default     = "nclav"
}

variable "name" {
  description = "Prefix of every resource name (one nclav deployment per name): 2-10 lowercase letters and digits (storage account names allow nothing else)."
  type        = string
  default     = "nclav"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,9}$", var.name))
    error_message = "name: 2-10 lowercase letters and digits, starting with a letter."
  }
}

variable "host_json" {
  description = "The function app's host.json (functions_azure/host.json; the default is relative to this directory): NCLAV_MAX_RECEIVES is derived from its queues.maxDequeueCount, so the delivery policy gives up one dequeue before the host moves a message to <queue>-poison."
  type        = string
  default     = "../../functions_azure/host.json"
}

variable "iac_image" {
  description = "The terraform worker's image (functions_azure/Dockerfile: the Functions host, function_app and terraform), pushed to the registry this root creates, by digest: <registry>.azurecr.io/nclav-iac@sha256:..."
  type        = string
}

variable "app_max_instances" {
  description = "Most instances of the Flex Consumption app (API, steps worker, sweeper)."
  type        = number
  default     = 40
}

variable "iac_max_concurrency" {
  description = "Most terraform worker replicas (one terraform at a time each: host.json batchSize applies per replica, see README)."
  type        = number
  default     = 5
}

variable "iac_function_timeout" {
  description = "The terraform worker's functionTimeout (AzureFunctionsJobHost__functionTimeout, hh:mm:ss): the longest terraform step it runs (NCLAV_IAC_MIN_REMAINING_S and NCLAV_IAC_MARGIN_S are taken from it)."
  type        = string
  default     = "02:00:00"
  validation {
    condition     = can(regex("^[0-9]{2}:[0-5][0-9]:[0-5][0-9]$", var.iac_function_timeout))
    error_message = "iac_function_timeout: hh:mm:ss."
  }
}

variable "cosmos_consistency" {
  description = "Cosmos DB consistency level. Strong by default: the sweeper and the workers read one another's writes from different sessions (every compare-and-swap is etag-conditioned whatever the level)."
  type        = string
  default     = "Strong"
}

variable "cosmos_serverless" {
  description = "Serverless Cosmos DB (billed per request unit): right for nclav's bursty, small load."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  type    = number
  default = 30
}

# -- the Azure driver (NCLAV_AZURE_*): see README for the roles its identity needs --------------

variable "tenant_id" {
  description = "NCLAV_AZURE_TENANT_ID: the tenant of the enclave subscriptions."
  type        = string
}

variable "management_group_id" {
  description = "NCLAV_AZURE_MANAGEMENT_GROUP_ID: where enclave subscriptions are placed."
  type        = string
}

variable "billing_account_name" {
  description = "NCLAV_AZURE_BILLING_ACCOUNT_NAME: the MCA billing account."
  type        = string
}

variable "billing_profile_name" {
  description = "NCLAV_AZURE_BILLING_PROFILE_NAME: the MCA billing profile."
  type        = string
}

variable "invoice_section_name" {
  description = "NCLAV_AZURE_INVOICE_SECTION_NAME: the MCA invoice section new subscriptions are billed to."
  type        = string
}

variable "default_location" {
  description = "NCLAV_AZURE_DEFAULT_LOCATION: region of enclaves that name none (empty: the driver's default)."
  type        = string
  default     = ""
}

variable "subscription_prefix" {
  description = "NCLAV_AZURE_SUBSCRIPTION_PREFIX: prefix of enclave subscription aliases."
  type        = string
  default     = ""
}

variable "grant_management_group_roles" {
  description = "Grant the identities their roles on the management group (the applying identity must be allowed to assign roles there). False: an administrator grants what identities.tf lists. The MCA billing role that creates subscriptions is granted apart either way (README)."
  type        = bool
  default     = true
}

variable "partition_role_ids" {
  description = "Role definition ids (GUIDs) the driver gives each partition's identity on its subscription (the driver's default: Contributor). The terraform worker may assign these roles and no others."
  type        = list(string)
  default     = ["b24988ac-6180-42a0-ab88-20f7382dd24c"]
}

# -- the git source and notifications (as infra/aws) ----------------------------------------

variable "git_url" {
  description = "NCLAV_GIT_URL: the https URL of the repository to deploy from (no credentials in it; the token goes to the Key Vault secret nclav-git-token). Empty: no source until one is set with `nclav source set`."
  type        = string
  default     = ""
}

variable "git_branch" {
  description = "NCLAV_GIT_BRANCH: the branch that is reconciled (empty: main)."
  type        = string
  default     = ""
}

variable "git_path" {
  description = "NCLAV_GIT_PATH: the enclaves directory inside the repository (empty: enclaves)."
  type        = string
  default     = ""
}

variable "git_poll_s" {
  description = "NCLAV_GIT_POLL_S: seconds between polls for missed pushes (0 turns the poll off)."
  type        = number
  default     = 300
}

variable "git_preview_branches" {
  description = "NCLAV_GIT_PREVIEW_BRANCHES: plan the other branches pushed (commit statuses), never apply them."
  type        = bool
  default     = false
}

variable "git_provider" {
  description = "NCLAV_GIT_PROVIDER: github or gitlab, for commit statuses (empty: guessed from the host)."
  type        = string
  default     = ""
}

variable "git_api_url" {
  description = "NCLAV_GIT_API_URL: the host's API base for commit statuses (empty: the public one)."
  type        = string
  default     = ""
}

variable "notify_url" {
  description = "NCLAV_NOTIFY_URL: webhook URLs notified of run and drift events, comma-separated. Empty: no notifications. Signed with the Key Vault secret nclav-notify-secret."
  type        = string
  default     = ""
}

variable "drift_interval_s" {
  description = "NCLAV_DRIFT_INTERVAL_S: seconds between drift checks of a partition."
  type        = number
  default     = 21600
}

variable "drift_concurrency" {
  description = "NCLAV_DRIFT_CONCURRENCY: most drift checks in flight at once."
  type        = number
  default     = 2
}
