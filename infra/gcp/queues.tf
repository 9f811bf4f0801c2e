# -- queues: driver steps and terraform steps (Cloud Tasks, HTTP targets) ------------------------

# The delivery policy (core/nclav/runtime/delivery.py) against Cloud Tasks: the attempt is the
# earlier generations' deliveries plus X-CloudTasks-TaskRetryCount plus one
# (functions_gcp/delivery.py). The policy's own redeliveries are new tasks the worker schedules;
# the queue's retries (after min_backoff, doubling up to max_backoff, the same numbers as the
# policy's) only pace 5xx answers and workers that died. The worker gives up at
# NCLAV_MAX_RECEIVES = max_attempts - 1 (records the step failed, answers 2xx), with one
# attempt left for when recording the failure fails. No
# max_retry_duration ("0s", unlimited): the attempts alone bound a task.
#
# Each queue pins where its tasks go and as whom: uri_override sends every task to the
# worker's run.app host (the URL Cloud Run's internal ingress accepts from Cloud Tasks),
# oidc_token signs it as the tasks identity, the only one allowed to invoke the workers. An
# enqueuer cannot aim a task, with that identity's token, anywhere else.
locals {
  queue_targets = {
    steps = {
      uri         = google_cloudfunctions2_function.fn["worker"].service_config[0].uri
      concurrency = var.steps_max_concurrency
    }
    iac = {
      uri         = google_cloud_run_v2_service.iac.uri
      concurrency = var.iac_max_concurrency
    }
  }
}

resource "google_cloud_tasks_queue" "q" {
  for_each = local.queue_targets
  name     = "${var.name}-${each.key}"
  location = var.region

  retry_config {
    max_attempts       = var.max_attempts
    min_backoff        = "${var.redelivery_backoff_s}s"
    max_backoff        = "${var.redelivery_max_s}s"
    max_doublings      = 16
    max_retry_duration = "0s"
  }

  rate_limits {
    max_concurrent_dispatches = each.value.concurrency
    max_dispatches_per_second = 50
  }

  http_target {
    http_method = "POST"
    uri_override {
      scheme                    = "HTTPS"
      host                      = trimprefix(each.value.uri, "https://")
      uri_override_enforce_mode = "ALWAYS"
    }
    oidc_token {
      service_account_email = google_service_account.sa["tasks"].email
      audience              = each.value.uri
    }
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }

  lifecycle {
    postcondition {
      condition     = self.id == local.queue_ids[each.key]
      error_message = "The queue's id differs from the NCLAV_*_QUEUE value the functions were given."
    }
  }

  depends_on = [google_project_service.apis]
}
