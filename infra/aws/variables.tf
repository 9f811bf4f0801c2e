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
  description = "Path of the deployment package of the api, worker and schedule functions (`make aws-package`)."
  type        = string
  default     = "../../dist/nclav-aws-lambda.zip"
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

variable "max_receives" {
  description = "Deliveries of a step message before it goes to the dead-letter queue."
  type        = number
  default     = 6
}

variable "log_retention_days" {
  type    = number
  default = 30
}
