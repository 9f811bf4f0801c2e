variable "name" {
  description = "Prefix of every resource name (one nclav deployment per name)."
  type        = string
  default     = "nclav"
}

variable "region" {
  description = "Region of the nclav deployment itself."
  type        = string
  default     = "us-east-1"
}

variable "lambda_zip" {
  description = "Path of the deployment package of the api, worker and schedule functions, built by `make aws-package` (dist/nclav-aws-lambda.zip at the repository root; the default is relative to this directory)."
  type        = string
  default     = "../../dist/nclav-aws-lambda.zip"
}

variable "runtime" {
  description = "Lambda runtime of the zip functions: must match the Python version `make aws-package` built for (AWS_PYTHON in the Makefile)."
  type        = string
  default     = "python3.11"
}

variable "architecture" {
  description = "Architecture of the zip functions: must match the platform `make aws-package` built for (x86_64: manylinux2014_x86_64; arm64: manylinux2014_aarch64)."
  type        = string
  default     = "x86_64"
  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be x86_64 or arm64."
  }
}

variable "iac_architecture" {
  description = "Architecture of the terraform worker image (the platform it was built for)."
  type        = string
  default     = "x86_64"
}

variable "iac_image_uri" {
  description = "ECR image URI (with digest) of the terraform worker, built from functions_aws/Dockerfile and pushed to the repository this root creates."
  type        = string
}

variable "org_unit_id" {
  description = "Organizations OU where new enclave accounts are placed (NCLAV_AWS_ORG_UNIT_ID)."
  type        = string
}

variable "email_domain" {
  description = "Email domain for new account registration (NCLAV_AWS_EMAIL_DOMAIN)."
  type        = string
}

variable "account_prefix" {
  description = "Prefix of enclave account names (NCLAV_AWS_ACCOUNT_PREFIX)."
  type        = string
  default     = ""
}

variable "cross_account_role" {
  description = "Role assumed in enclave accounts (NCLAV_AWS_CROSS_ACCOUNT_ROLE)."
  type        = string
  default     = "OrganizationAccountAccessRole"
}

variable "management_role_arn" {
  description = "NCLAV_AWS_ROLE_ARN: run nclav outside the Organizations management account. A role the operator creates in the management account (trusting this account's worker and iac function roles) with the Organizations and sts:AssumeRole permissions of the vending policy in main.tf; the functions assume it first. Empty: the functions run in the management account and call Organizations themselves."
  type        = string
  default     = ""
}

variable "retention_days" {
  description = "Runs, steps, events and IaC records expire (DynamoDB TTL) this many days after they were written; 0 keeps them. Enclave and partition records never expire."
  type        = number
  default     = 90
}

variable "bundle_version_days" {
  description = "Days a noncurrent (deleted or replaced) bundle version is kept. Terraform state versions are always kept."
  type        = number
  default     = 30
}

variable "api_reserved_concurrency" {
  description = "Concurrent executions reserved for the API function (the workers cannot starve it); -1 for none. AWS keeps 100 of the account's concurrency unreserved: a new account with a limit of 10 needs -1 until its quota is raised."
  type        = number
  default     = 5
}

variable "steps_max_concurrency" {
  description = "Most concurrent step workers the steps queue invokes (2-1000)."
  type        = number
  default     = 10
}

variable "iac_max_concurrency" {
  description = "Most concurrent terraform runs (2-1000)."
  type        = number
  default     = 5
}

variable "alarm_actions" {
  description = "ARNs notified when a dead-letter queue receives a message (e.g. an SNS topic)."
  type        = list(string)
  default     = []
}

variable "max_receives" {
  description = "Deliveries of a step message before it goes to the dead-letter queue."
  type        = number
  default     = 6
}

variable "log_retention_days" {
  type    = number
  default = 30
}

variable "git_url" {
  description = "NCLAV_GIT_URL: the https URL of the repository to deploy from (no credentials in it; the token goes to the Secrets Manager secret <name>/git-token). Empty: no source until one is set with `nclav source set`."
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
  description = "NCLAV_GIT_API_URL: the host's API base for commit statuses (GitHub Enterprise, self-managed GitLab; empty: the public one)."
  type        = string
  default     = ""
}

variable "notify_url" {
  description = "NCLAV_NOTIFY_URL: webhook URLs notified of run and drift events, comma-separated (slack+https://... for Slack). Empty: no notifications. Signed with the secret <name>/notify-secret, generated on first use."
  type        = string
  default     = ""
}

variable "drift_interval_s" {
  description = "NCLAV_DRIFT_INTERVAL_S: seconds between drift checks of a partition (a partition's `drift:` may change it)."
  type        = number
  default     = 21600
}

variable "drift_concurrency" {
  description = "NCLAV_DRIFT_CONCURRENCY: most drift checks in flight at once."
  type        = number
  default     = 2
}
