# The whole nclav deployment on GCP: the API, the step worker and the scheduler's target as
# Cloud Functions (2nd gen), the terraform worker as a Cloud Run service, Cloud Tasks queues
# in front of both workers, Firestore state, GCS blobs, Secret Manager secrets and a Cloud
# Scheduler job. Split by concern: state.tf, storage.tf, queues.tf, secrets.tf, identities.tf,
# functions.tf, schedule.tf.

data "google_project" "this" {
  project_id = var.project
}

locals {
  project_number = data.google_project.this.number

  # Resource names the functions are told before the resources exist: the queue ids and the
  # workers' URLs are deterministic, so every function (the workers included, which enqueue
  # to their own queue) gets them without a dependency cycle. The queues themselves pin the
  # real run.app host and the OIDC identity of every task (queues.tf), and the checks at the
  # end of functions.tf warn if a URL below differs from the deployed one.
  queue_ids = {
    for q in ["steps", "iac"] : q => "projects/${var.project}/locations/${var.region}/queues/${var.name}-${q}"
  }
  worker_url = "https://${var.region}-${var.project}.cloudfunctions.net/${var.name}-worker"
  iac_url    = "https://${var.name}-iac-${local.project_number}.${var.region}.run.app"

  # Every NCLAV_* variable functions_gcp/settings.py (and core's runtime settings) reads.
  common_env = {
    NCLAV_CLOUD                 = "gcp"
    NCLAV_PROJECT               = var.project
    NCLAV_DATABASE              = google_firestore_database.state.name
    NCLAV_BUCKET                = google_storage_bucket.blobs.name
    NCLAV_STEPS_QUEUE           = local.queue_ids.steps
    NCLAV_IAC_QUEUE             = local.queue_ids.iac
    NCLAV_WORKER_URL            = local.worker_url
    NCLAV_IAC_WORKER_URL        = local.iac_url
    NCLAV_TASKS_SERVICE_ACCOUNT = google_service_account.sa["tasks"].email
    NCLAV_SECRET_PREFIX         = "${var.name}-"
    NCLAV_TOKEN_SECRET          = "api-token"

    # The delivery policy against the queues' retry config: the worker records a step failed
    # at attempt max_attempts - 1, one before Cloud Tasks drops the task; the backoff the
    # sweeper allows for between deliveries is the queues' own.
    NCLAV_MAX_RECEIVES         = tostring(var.max_attempts - 1)
    NCLAV_REDELIVERY_BACKOFF_S = tostring(var.redelivery_backoff_s)
    NCLAV_REDELIVERY_MAX_S     = tostring(var.redelivery_max_s)
    # How long Cloud Tasks waits for each worker's answer (the tasks' dispatch deadline): the
    # worker function's and the terraform service's request limits are the same numbers.
    NCLAV_WORKER_DEADLINE_S = tostring(var.worker_deadline_s)
    NCLAV_IAC_DEADLINE_S    = tostring(var.iac_timeout_s)

    NCLAV_GCP_PARENT          = var.parent
    NCLAV_GCP_BILLING_ACCOUNT = var.billing_account
    NCLAV_GCP_PROJECT_PREFIX  = var.project_prefix
    NCLAV_GCP_DEFAULT_REGION  = var.default_region
    NCLAV_GCP_PARTITION_ROLES = join(",", var.partition_roles)

    NCLAV_NOTIFY_URL        = var.notify_url
    NCLAV_DRIFT_INTERVAL_S  = tostring(var.drift_interval_s)
    NCLAV_DRIFT_CONCURRENCY = tostring(var.drift_concurrency)
  }

  # The git source (core/nclav/gitsource): the API serves its routes, the worker fetches and
  # starts runs, the schedule function polls. Empty values mean "not set" to GitSettings.
  git_env = {
    NCLAV_GIT_URL              = var.git_url
    NCLAV_GIT_BRANCH           = var.git_branch
    NCLAV_GIT_PATH             = var.git_path
    NCLAV_GIT_POLL_S           = tostring(var.git_poll_s)
    NCLAV_GIT_PREVIEW_BRANCHES = tostring(var.git_preview_branches)
    NCLAV_GIT_PROVIDER         = var.git_provider
    NCLAV_GIT_API_URL          = var.git_api_url
  }
}

# The APIs the deployment uses, and those the driver calls with the platform's identities
# (their quota is charged to this project).
resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "cloudasset.googleapis.com",
    "cloudbilling.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtasks.googleapis.com",
    "compute.googleapis.com",
    "dns.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "serviceusage.googleapis.com",
    "storage.googleapis.com",
  ])
  service            = each.value
  disable_on_destroy = false
}

# -- images: the terraform worker's, and the functions' builds --------------------------------

# The terraform worker's image, pushed by the operator and deployed by digest: tags never move.
resource "google_artifact_registry_repository" "images" {
  repository_id = var.name
  location      = var.region
  format        = "DOCKER"
  description   = "nclav: the terraform worker image (functions_gcp/Dockerfile)"
  docker_config {
    immutable_tags = true
  }
  depends_on = [google_project_service.apis]
}

# What Cloud Build makes of the functions' source (it re-tags these images on every build).
resource "google_artifact_registry_repository" "functions" {
  repository_id = "${var.name}-functions"
  location      = var.region
  format        = "DOCKER"
  description   = "nclav: the api, worker and schedule functions' builds"
  depends_on    = [google_project_service.apis]
}
