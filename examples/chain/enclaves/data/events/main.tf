variable "nclav_enclave" { type = string }
variable "nclav_partition" { type = string }
variable "resolver" { type = string }
variable "retention_hours" { type = number }

resource "terraform_data" "queue" {
  input = {
    name      = "${var.nclav_enclave}-${var.nclav_partition}"
    resolver  = var.resolver
    retention = var.retention_hours
  }
}

output "queue_url" {
  value = "queue://${terraform_data.queue.output.name}?via=${terraform_data.queue.output.resolver}"
}
