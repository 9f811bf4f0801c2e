# -- blobs: bundles, IaC logs, every Terraform state version ----------------------------------

resource "google_storage_bucket" "blobs" {
  name                        = "${var.project}-${var.name}-blobs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # A replaced or deleted object stays as a noncurrent version (rules below): the state
  # backend writes each Terraform state version under a key of its own, versioning keeps the
  # rest recoverable.
  versioning {
    enabled = true
  }

  # IaC logs are appended by rewriting the object (a generation precondition each time): the
  # noncurrent generations that leaves are dropped after a day.
  lifecycle_rule {
    condition {
      matches_prefix             = ["iac-logs/"]
      with_state                 = "ARCHIVED"
      days_since_noncurrent_time = 1
    }
    action {
      type = "Delete"
    }
  }

  # Bundles are content-addressed: a noncurrent one was deleted or replaced.
  lifecycle_rule {
    condition {
      matches_prefix             = ["bundles/"]
      with_state                 = "ARCHIVED"
      days_since_noncurrent_time = var.bundle_version_days
    }
    action {
      type = "Delete"
    }
  }

  # Signed bundle uploads (POST /bundles/uploads) that were never completed.
  lifecycle_rule {
    condition {
      matches_prefix = ["uploads/"]
      age            = 1
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# -- the functions' source archive ----------------------------------------------------------

# Apart from the blobs bucket: the functions may write there, never here (their code).
resource "google_storage_bucket" "source" {
  name                        = "${var.project}-${var.name}-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  depends_on                  = [google_project_service.apis]
}

# Named by content: a new archive is a new object, which redeploys the functions. Old ones
# stay (a runtime's automatic security update rebuilds from the current one).
resource "google_storage_bucket_object" "source" {
  name   = "functions-${filesha256(var.source_zip)}.zip"
  bucket = google_storage_bucket.source.name
  source = var.source_zip
}
