"""The GCP runtime's settings: core's ``NCLAV_*`` settings plus the names of its resources."""

from __future__ import annotations

from dataclasses import dataclass

from nclav.runtime.settings import HostedSettings


@dataclass(frozen=True, kw_only=True)
class Settings(HostedSettings):
    """Core's settings plus the GCP resource names (each ``NCLAV_<FIELD>``; infra/gcp sets them)."""

    project: str  # the platform's own project (Firestore, bucket, queues, secrets)
    bucket: str  # GCS bucket: bundles, IaC logs, Terraform state versions
    steps_queue: str  # Cloud Tasks queue of driver steps: projects/<p>/locations/<l>/queues/<q>
    iac_queue: str  # Cloud Tasks queue of terraform steps (same form)
    worker_url: str  # HTTPS URL the steps queue's tasks are POSTed to
    iac_worker_url: str  # HTTPS URL the terraform queue's tasks are POSTed to
    cloud: str = "gcp"
    database: str = "(default)"  # Firestore database id (native mode)
    collection_prefix: str = ""  # prefix of every top-level Firestore collection
    tasks_service_account: str = ""  # OIDC identity Cloud Tasks calls the workers as
    # A local Secret Manager stand-in's base URL, called without credentials (as the SDKs
    # call their *_EMULATOR_HOST); never set in a deployment.
    secrets_emulator_url: str = ""
    # How long Cloud Tasks waits for a worker's answer (its dispatch deadline, 15-1800 s);
    # a terraform step has the IaC worker's deadline as its time limit (functions_gcp.iac).
    worker_deadline_s: float = 600.0
    iac_deadline_s: float = 1800.0


__all__ = ["Settings"]
