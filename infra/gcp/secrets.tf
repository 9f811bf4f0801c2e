# -- secrets: created empty, their values never in Terraform state ------------------------------

# No google_secret_manager_secret_version here: the API generates its token on its first
# request, the first function to need the webhook or notification secret generates it, and
# the operator adds the git token (`nclav source set --token-file`, or
# `gcloud secrets versions add <name>-git-token --data-file=-`). Each is read and written by
# name (NCLAV_SECRET_PREFIX + the name) and granted per secret in identities.tf.
resource "google_secret_manager_secret" "s" {
  for_each  = toset(["api-token", "git-webhook-secret", "git-token", "notify-secret"])
  secret_id = "${var.name}-${each.key}"
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}
