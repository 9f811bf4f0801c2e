variable "nclav_enclave" { type = string }
variable "nclav_partition" { type = string }
variable "queue_url" { type = string }
variable "enclave" { type = string }

resource "terraform_data" "consumer" {
  input = "${var.enclave}/${var.nclav_partition} <- ${var.queue_url}"
}

output "consumer" { value = terraform_data.consumer.output }
