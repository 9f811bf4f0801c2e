variable "nclav_enclave" { type = string }
variable "nclav_partition" { type = string }
variable "api_endpoint" { type = string }

resource "terraform_data" "site" {
  input = var.api_endpoint
}

output "hostname" {
  value = "www.${var.nclav_enclave}.local"
}

output "port" {
  value = 443
}

output "upstream" {
  value = terraform_data.site.output
}
