variable "nclav_enclave" { type = string }
variable "nclav_partition" { type = string }
variable "enclave" { type = string }
variable "db_host" { type = string }
variable "db_port" { type = string }

resource "terraform_data" "service" {
  input = {
    database = "${var.db_host}:${var.db_port}"
  }
}

output "hostname" {
  value = "api.${var.enclave}.local"
}

output "port" {
  value = 8443
}

output "database_url" {
  value = "postgres://${terraform_data.service.output.database}"
}
