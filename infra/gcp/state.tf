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

# The queries of the store's documents port (functions_gcp/README.md): every one is one
# partition field equal to a value, ordered (and bounded) on its order field. Everything lives
# in one collection, "docs" (functions_gcp/_firestore_docs.py).
locals {
  composite_indexes = {
    partition_asc  = { collection = "docs", filter = "pk", order = "sk", direction = "ASCENDING" }
    partition_desc = { collection = "docs", filter = "pk", order = "sk", direction = "DESCENDING" }
    gsi1_asc       = { collection = "docs", filter = "gsi1pk", order = "gsi1sk", direction = "ASCENDING" }
    gsi1_desc      = { collection = "docs", filter = "gsi1pk", order = "gsi1sk", direction = "DESCENDING" }
    gsi2_desc      = { collection = "docs", filter = "gsi2pk", order = "gsi2sk", direction = "DESCENDING" }
    leases         = { collection = "docs", filter = "lease_pk", order = "lease_expires_at", direction = "ASCENDING" }
    ready          = { collection = "docs", filter = "ready_pk", order = "ready_at", direction = "ASCENDING" }
  }
  # Fields that hold the encoded record in doc (or docz, compressed): never queried, so never
  # indexed (an index entry of a large value only costs writes and storage).
  record_collections = ["docs"]
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
    order      = each.value.direction
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
