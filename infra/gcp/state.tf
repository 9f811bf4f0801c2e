# -- state: one Firestore database in native mode (layout: functions_gcp/_firestore_docs.py) ----

# A database of its own (not "(default)"): the functions' access is granted on it alone
# (identities.tf), and it never shares indexes or limits with another application.
resource "google_firestore_database" "state" {
  name                              = "${var.name}-state"
  location_id                       = var.firestore_location
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "PESSIMISTIC"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  deletion_policy                   = "ABANDON"
  depends_on                        = [google_project_service.apis]
}

# The listings that filter on one field and order on another (functions_gcp/README.md).
locals {
  composite_indexes = {
    runs_by_status    = { collection = "runs", filter = "status", order = "seq" }
    events_by_enclave = { collection = "events", filter = "enclave_id", order = "seq" }
    events_by_run     = { collection = "events", filter = "run_id", order = "seq" }
    iac_runs_by_part  = { collection = "iac_runs", filter = "partition", order = "sort" }
  }
  # Collections whose records carry the encoded record in doc (or docz, compressed): never
  # queried, so never indexed (an index entry of a large value only costs writes and storage).
  record_collections = ["enclaves", "runs", "steps", "events", "iac_runs", "drift"]
}

resource "google_firestore_index" "listing" {
  for_each    = local.composite_indexes
  database    = google_firestore_database.state.name
  collection  = each.value.collection
  query_scope = "COLLECTION"
  fields {
    field_path = each.value.filter
    order      = "ASCENDING"
  }
  fields {
    field_path = each.value.order
    order      = "DESCENDING"
  }
}

# The sweeper's queries over every run's steps: stuck ready steps (ready_at <= t) and expired
# leases (lease_at <= now) on the steps collection group. Both fields are sparse (set only
# while a step is ready or running), so these indexes hold only the steps that matter.
resource "google_firestore_field" "step_times" {
  for_each   = toset(["ready_at", "lease_at"])
  database   = google_firestore_database.state.name
  collection = "steps"
  field      = each.value
  index_config {
    indexes {
      query_scope = "COLLECTION"
      order       = "ASCENDING"
    }
    indexes {
      query_scope = "COLLECTION_GROUP"
      order       = "ASCENDING"
    }
  }
}

# An empty index_config exempts the field from every automatic index.
resource "google_firestore_field" "unindexed" {
  for_each   = { for pair in setproduct(local.record_collections, ["doc", "docz"]) : "${pair[0]}.${pair[1]}" => pair }
  database   = google_firestore_database.state.name
  collection = each.value[0]
  field      = each.value[1]
  index_config {}
}
