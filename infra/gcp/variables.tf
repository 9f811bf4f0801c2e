variable "project" {
  description = "The platform's own project (NCLAV_PROJECT): Firestore, the bucket, the queues, the secrets and the functions live here."
  type        = string
}

variable "region" {
  description = "Region of the functions, the queues, the scheduler job and the bucket."
  type        = string
  default     = "us-central1"
}

variable "name" {
  description = "Prefix of every resource name (one nclav deployment per name): lowercase letters, digits and dashes, at most 18 characters (service account ids are <name>-<role>, 30 at most)."
  type        = string
  default     = "nclav"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,16}[a-z0-9]$", var.name))
    error_message = "name: 3-18 characters, lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "source_zip" {
  description = "Path of the source archive of the api, worker and schedule functions (functions_gcp/, core's nclav package and a requirements.txt at its root); the default is relative to this directory."
  type        = string
  default     = "../../dist/nclav-gcp-functions.zip"
}

variable "function_source" {
  description = "The file inside source_zip holding the functions-framework targets (api, worker, schedule): the buildpack's GOOGLE_FUNCTION_SOURCE."
  type        = string
  default     = "functions_gcp/main.py"
}

variable "runtime" {
  description = "Cloud Functions runtime of the zip functions (the Python the package was built for)."
  type        = string
  default     = "python311"
}

variable "iac_image" {
  description = "The terraform worker's image (functions_gcp's Dockerfile), pushed to the Artifact Registry repository this root creates, by digest: <region>-docker.pkg.dev/<project>/<name>/iac@sha256:..."
  type        = string
}

variable "firestore_location" {
  description = "Location of the Firestore database (a region such as us-central1, or a multi-region such as nam5)."
  type        = string
  default     = "nam5"
}

variable "parent" {
  description = "NCLAV_GCP_PARENT: where enclave projects are created, folders/<digits> or organizations/<digits>."
  type        = string
  validation {
    condition     = can(regex("^(folders|organizations)/[0-9]+$", var.parent))
    error_message = "parent must be folders/<digits> or organizations/<digits>."
  }
}

variable "billing_account" {
  description = "NCLAV_GCP_BILLING_ACCOUNT: the billing account enclave projects are linked to (XXXXXX-YYYYYY-ZZZZZZ, with or without billingAccounts/)."
  type        = string
}

variable "project_prefix" {
  description = "NCLAV_GCP_PROJECT_PREFIX: prefix of enclave project ids (acme -> acme-product-a-dev)."
  type        = string
  default     = ""
}

variable "default_region" {
  description = "NCLAV_GCP_DEFAULT_REGION: region of enclaves that name none (empty: the driver's default)."
  type        = string
  default     = ""
}

variable "partition_roles" {
  description = "NCLAV_GCP_PARTITION_ROLES: the roles each partition's service account gets on its enclave project (the driver grants them at run time, inside enclave projects; terraform runs as that account). The terraform worker may grant these roles and no others (identities.tf)."
  type        = list(string)
  default     = ["roles/editor"]
}

variable "grant_parent_roles" {
  description = "Grant the worker and iac identities their roles on var.parent and the billing account (needs an operator allowed to set IAM there). False: an administrator grants them; `terraform output parent_grants` lists them."
  type        = bool
  default     = true
}

variable "worker_parent_roles" {
  description = "Roles of the step worker's identity on var.parent: it creates enclave projects (and, as their creator, owns them), searches assets for orphans. Never roles/owner or roles/editor."
  type        = list(string)
  default     = ["roles/resourcemanager.projectCreator", "roles/cloudasset.viewer"]
}

variable "iac_parent_roles" {
  description = "Roles of the terraform worker's identity on var.parent: partition steps run there, so it creates each partition's service account in the enclave project, impersonates it to run terraform (never its own credentials), searches a partition's assets. Granting partition_roles on enclave projects is a separate, conditional grant. Never roles/owner or roles/editor."
  type        = list(string)
  default     = ["roles/iam.serviceAccountAdmin", "roles/iam.serviceAccountTokenCreator", "roles/cloudasset.viewer"]
}

variable "api_invoker" {
  description = "Who may reach the API function (Cloud Run invoker). allUsers: anyone, every request then meets nclav's own bearer token (constant-time compare); a domain-restricted organization needs a group or an IAP/load balancer in front."
  type        = string
  default     = "allUsers"
}

variable "max_attempts" {
  description = "Cloud Tasks attempts of a task (first delivery included). The worker gives up (records the step failed, answers 2xx) at attempt max_attempts - 1 (NCLAV_MAX_RECEIVES), one before the queue drops the task."
  type        = number
  default     = 6
  validation {
    condition     = var.max_attempts >= 2
    error_message = "max_attempts must be at least 2: the worker gives up one attempt before the queue does."
  }
}

variable "redelivery_backoff_s" {
  description = "First retry delay of a task answered 5xx (the queue's min_backoff and NCLAV_REDELIVERY_BACKOFF_S: the sweeper's idea of how long a task may wait between deliveries)."
  type        = number
  default     = 5
}

variable "redelivery_max_s" {
  description = "Longest retry delay (the queue's max_backoff and NCLAV_REDELIVERY_MAX_S)."
  type        = number
  default     = 900
}

variable "steps_max_concurrency" {
  description = "Most step tasks dispatched at once (queue max_concurrent_dispatches; the worker function's max instances)."
  type        = number
  default     = 10
}

variable "iac_max_concurrency" {
  description = "Most concurrent terraform runs (queue max_concurrent_dispatches; the iac service's max instances, one request each)."
  type        = number
  default     = 5
}

variable "iac_timeout_s" {
  description = "The terraform worker's request limit and its tasks' dispatch deadline (NCLAV_IAC_DEADLINE_S): Cloud Tasks waits 30 min at most, so is this (1800); terraform is not started with too little of it left, and an apply that needs longer goes elsewhere (README, Long applies)."
  type        = number
  default     = 1800
  validation {
    condition     = var.iac_timeout_s >= 300 && var.iac_timeout_s <= 1800
    error_message = "iac_timeout_s: between 300 and 1800 (Cloud Tasks' longest dispatch deadline)."
  }
}

variable "worker_deadline_s" {
  description = "The step worker's request limit, and the dispatch deadline of its tasks (NCLAV_WORKER_DEADLINE_S, 15-1800 s)."
  type        = number
  default     = 600
  validation {
    condition     = var.worker_deadline_s >= 15 && var.worker_deadline_s <= 1800
    error_message = "worker_deadline_s: between 15 and 1800 (Cloud Tasks' dispatch deadline range)."
  }
}

variable "bundle_version_days" {
  description = "Days a noncurrent (deleted or replaced) bundle version is kept. Terraform state versions are always kept."
  type        = number
  default     = 30
}

variable "git_url" {
  description = "NCLAV_GIT_URL: the https URL of the repository to deploy from (no credentials in it; the token goes to the secret <name>-git-token). Empty: no source until one is set with `nclav source set`."
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
  description = "NCLAV_NOTIFY_URL: webhook URLs notified of run and drift events, comma-separated. Empty: no notifications. Signed with the secret <name>-notify-secret."
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
