output "api_url" {
  description = "Point the CLI here: export NCLAV_URL=<api_url>."
  value       = google_cloudfunctions2_function.fn["api"].service_config[0].uri
}

output "token_secret" {
  description = "The API generates the token on its first request: curl <api_url>/health once, then export NCLAV_TOKEN=$(gcloud secrets versions access latest --secret <token_secret>)."
  value       = google_secret_manager_secret.s["api-token"].secret_id
}

output "git_token_secret" {
  description = "Add the git token as a version of this secret (or `nclav source set --token-file`)."
  value       = google_secret_manager_secret.s["git-token"].secret_id
}

output "iac_repository" {
  description = "Push the terraform worker image here, then set iac_image to it by digest."
  value       = "${var.region}-docker.pkg.dev/${var.project}/${google_artifact_registry_repository.images.repository_id}"
}

output "bucket" {
  value = google_storage_bucket.blobs.name
}

output "database" {
  value = google_firestore_database.state.name
}

output "queues" {
  value = { for k, q in google_cloud_tasks_queue.q : k => q.id }
}

output "parent_grants" {
  description = "What an administrator grants when grant_parent_roles is false."
  value = concat(
    [for g in local.parent_grants : "${var.parent}: ${g.role} to ${google_service_account.sa[g.sa].email}"],
    ["${var.parent}: ${local.partition_grant.role} to ${google_service_account.sa["iac"].email}, condition: ${local.partition_grant.expression}"],
    ["billingAccounts/${local.billing_account}: roles/billing.user to ${google_service_account.sa["worker"].email}"],
  )
}
