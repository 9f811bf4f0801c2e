# -- functions: api, worker, schedule (Cloud Functions 2nd gen, functions-framework targets) ----

locals {
  # The functions-framework target of each function is its key (functions_gcp/main.py).
  functions = {
    # The API streams live logs (a stream ends after 15 min) and holds ?wait= requests.
    api = { memory = "1Gi", timeout = 3600, max_instances = 20, ingress = "ALLOW_ALL", env = merge(local.common_env, local.git_env) }
    # Called by Cloud Tasks only (internal ingress accepts it on the run.app URL).
    worker = { memory = "1Gi", timeout = var.worker_deadline_s, max_instances = var.steps_max_concurrency, ingress = "ALLOW_INTERNAL_ONLY", env = merge(local.common_env, local.git_env) }
    # Called by Cloud Scheduler only.
    schedule = { memory = "512Mi", timeout = 180, max_instances = 1, ingress = "ALLOW_INTERNAL_ONLY", env = merge(local.common_env, local.git_env) }
  }
}

resource "google_cloudfunctions2_function" "fn" {
  for_each = local.functions
  name     = "${var.name}-${each.key}"
  location = var.region

  build_config {
    runtime           = var.runtime
    entry_point       = each.key
    service_account   = google_service_account.sa["build"].id
    docker_repository = google_artifact_registry_repository.functions.id
    environment_variables = {
      GOOGLE_FUNCTION_SOURCE = var.function_source
    }
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.sa[each.key].email
    available_memory                 = each.value.memory
    timeout_seconds                  = each.value.timeout
    max_instance_count               = each.value.max_instances
    max_instance_request_concurrency = 1
    ingress_settings                 = each.value.ingress
    all_traffic_on_latest_revision   = true
    environment_variables            = each.value.env
  }

  depends_on = [
    google_project_iam_member.build_logs,
    google_artifact_registry_repository_iam_member.build_push,
    google_storage_bucket_iam_member.build_reads_source,
  ]
}

# -- the terraform worker: a Cloud Run service from its image -------------------------------------

# Why a service behind its own Cloud Tasks queue rather than a Cloud Run job per step: the
# queue gives it the same delivery, retry and give-up path as every other step, and a request
# (the dispatch deadline) may last 30 minutes, the limit of iac_timeout_s. An apply longer than
# that does not fit this deployment: see README.md ("Long applies").
resource "google_cloud_run_v2_service" "iac" {
  name                = "${var.name}-iac"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY" # Cloud Tasks only, on the run.app URL
  deletion_protection = false                           # stateless: the state is in Firestore/GCS

  template {
    service_account                  = google_service_account.sa["iac"].email
    timeout                          = "${var.iac_timeout_s}s"
    max_instance_request_concurrency = 1 # one terraform per instance: its CPU, memory and /tmp
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"

    scaling {
      min_instance_count = 0
      max_instance_count = var.iac_max_concurrency
    }

    containers {
      image = var.iac_image
      resources {
        limits = {
          cpu    = "2"
          memory = "4Gi" # terraform working directories live in /tmp, which is memory here
        }
      }
      # The same functions-framework target the image's entry point serves.
      env {
        name  = "FUNCTION_TARGET"
        value = "iac_worker"
      }
      # Its state backend is a loopback server inside the container: no git settings.
      dynamic "env" {
        for_each = local.common_env
        content {
          name  = env.key
          value = env.value
        }
      }
    }
  }

  depends_on = [google_project_service.apis]
}

# The URLs the functions were told (main.tf) against the deployed ones: a warning, since the
# queues send every task to the deployed host whatever the task's URL said.
check "worker_url" {
  assert {
    condition     = google_cloudfunctions2_function.fn["worker"].url == local.worker_url
    error_message = "NCLAV_WORKER_URL (${local.worker_url}) is not the worker's URL (${google_cloudfunctions2_function.fn["worker"].url})."
  }
}

check "iac_url" {
  assert {
    condition     = contains(google_cloud_run_v2_service.iac.urls, local.iac_url)
    error_message = "NCLAV_IAC_WORKER_URL (${local.iac_url}) is not among the terraform worker's URLs."
  }
}
