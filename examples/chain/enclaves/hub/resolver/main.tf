variable "nclav_enclave" { type = string }
variable "nclav_partition" { type = string }
variable "zone" { type = string }

resource "terraform_data" "resolver" {
  input = "ns1.${var.zone}"
}

output "hostname" { value = terraform_data.resolver.output }
output "port" { value = 53 }
