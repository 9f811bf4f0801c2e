variable "nclav_enclave" { type = string }
variable "nclav_partition" { type = string }
variable "engine" { type = string }
variable "storage_gb" { type = number }

resource "terraform_data" "database" {
  input = {
    name       = "${var.nclav_enclave}-${var.nclav_partition}"
    engine     = var.engine
    storage_gb = var.storage_gb
  }
}

output "hostname" {
  value = "${terraform_data.database.output.name}.${var.engine}.internal"
}

output "port" {
  value = 5432
}
