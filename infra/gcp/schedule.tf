# -- the sweeper: Cloud Scheduler calls the schedule function every minute ----------------------

# The schedule function sweeps (stuck steps, expired leases), sends due drift checks and polls
# the git source; a missed tick is caught by the next, so no retries.
resource "google_cloud_scheduler_job" "sweep" {
  name             = "${var.name}-sweep"
  region           = var.region
  schedule         = "* * * * *"
  time_zone        = "Etc/UTC"
  attempt_deadline = "${local.functions.schedule.timeout}s"

  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.fn["schedule"].service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.sa["cron"].email
      audience              = google_cloudfunctions2_function.fn["schedule"].service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.cron_invokes_schedule]
}
