"""The GCP runtime's wiring: its adapters over core's ``HostedRuntime`` (which calls ``compose``).

The one module that names the GCP adapters: Firestore state, GCS blobs, Secret Manager
secrets, two Cloud Tasks queues behind one ``WorkQueue`` (``StepQueues``: terraform steps to
the IaC queue, whose tasks go to the IaC worker, the rest to the steps queue).

Nothing happens at import. ``runtime()`` builds the ``GcpRuntime`` on first use and keeps it
for the instance's later requests; each part (a client, an adapter, the API token, the
composed engine and router) is built the first time an entry point asks for it (core's
``Parts``): the step worker never reads the API token, ``/health`` builds nothing, and each
Google SDK is imported on the first call of its client, so importing ``main`` stays cheap and
a request loads only the SDKs it calls (``scripts/bench_gcp.py`` measures it).

Emulators: the SDKs' own variables point Firestore and GCS at theirs
(``FIRESTORE_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST``); ``CLOUD_TASKS_EMULATOR_HOST``
(``host:port``) points the Cloud Tasks client at gcloud-tasks-emulator over plain gRPC, and
``NCLAV_SECRETS_EMULATOR_URL`` the Secret Manager adapter at a local stand-in.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from functions_gcp.settings import Settings
from nclav.errors import ConfigurationError
from nclav.runtime.hosted import HostedRuntime
from nclav.runtime.routing import StepQueues
from nclav.runtime.slot import ProcessSlot

if TYPE_CHECKING:
    from functions_gcp.gcs_blobs import GcsBlobStore
    from functions_gcp.tasks_queue import CloudTasksWorkQueue
    from nclav.iac.sandbox import TimeLimit
    from nclav.ports import SecretStore, StateStore

TASKS_EMULATOR = "CLOUD_TASKS_EMULATOR_HOST"
ALTERNATIVE = "nclav serve --cloud gcp"


def iac_time_limit(min_remaining_s: float = 120.0, margin_s: float = 60.0) -> TimeLimit:
    """Core's sandbox time limit in Cloud Tasks' words: the IaC worker answers within the
    task's dispatch deadline (30 minutes at most) or Cloud Tasks calls it failed."""
    from nclav.iac.sandbox import TimeLimit

    return TimeLimit(
        min_remaining_s=min_remaining_s,
        margin_s=margin_s,
        where="this Cloud Tasks dispatch",
        limit="Cloud Tasks' 30-minute dispatch deadline",
        min_setting="NCLAV_IAC_MIN_REMAINING_S",
        advice="Give the IaC queue's tasks the 1800 s deadline (NCLAV_IAC_DEADLINE_S).",
        alternative=ALTERNATIVE,
    )


class GcpRuntime(HostedRuntime[Settings]):
    """The GCP adapters over core's ``HostedRuntime`` (each part built on first use;
    keyword arguments replace parts, ``clients`` the SDK clients by service name:
    "firestore", "storage", "tasks")."""

    secret_service = "Secret Manager"

    @property
    def secret_hint(self) -> str:
        return f"{super().secret_hint} in {self.settings.project}"

    def client(self, service: str) -> Any:
        """One client per service ("firestore", "storage", "tasks"), shared by the adapters,
        made (and its SDK imported) on its first call."""
        s = self.settings

        def build() -> Any:
            if service == "firestore":
                from google.cloud import firestore

                return firestore.Client(project=s.project, database=s.database)
            if service == "storage":
                from google.cloud import storage

                return storage.Client(project=s.project)
            if service == "tasks":
                from functions_gcp.tasks_queue import tasks_client

                return tasks_client(s.environ.get(TASKS_EMULATOR) or None)
            raise ValueError(f"no client {service!r}")

        return self._parts.lazy(service, build)

    # -- adapters ------------------------------------------------------------------------------

    @property
    def store(self) -> StateStore:
        def build() -> StateStore:
            from functions_gcp.firestore_store import FirestoreStateStore

            return FirestoreStateStore(self.client("firestore"), self.settings.collection_prefix)

        return self._once("store", build)

    @property
    def blobs(self) -> GcsBlobStore:
        def build() -> GcsBlobStore:
            from functions_gcp.gcs_blobs import GcsBlobStore

            s = self.settings
            return GcsBlobStore(s.bucket, s.blob_prefix, client=self.client("storage"))

        return self._once("blobs", build)

    @property
    def secrets(self) -> SecretStore:
        def build() -> SecretStore:
            from functions_gcp.secrets import SecretManagerSecretStore

            s = self.settings
            if not s.secrets_emulator_url:
                return SecretManagerSecretStore(s.project, s.secret_prefix)
            from google.auth.credentials import AnonymousCredentials
            from google.auth.transport.requests import AuthorizedSession

            anonymous = AuthorizedSession(AnonymousCredentials())  # type: ignore[no-untyped-call]
            return SecretManagerSecretStore(
                s.project, s.secret_prefix, session=anonymous, endpoint=s.secrets_emulator_url
            )

        return self._once("secrets", build)

    @property
    def queues(self) -> StepQueues[CloudTasksWorkQueue]:
        def build() -> StepQueues[CloudTasksWorkQueue]:
            from functions_gcp.tasks_queue import CloudTasksWorkQueue

            s, client = self.settings, self.client("tasks")
            return StepQueues(
                CloudTasksWorkQueue(
                    s.steps_queue,
                    s.worker_url,
                    client,
                    service_account=s.tasks_service_account,
                    dispatch_deadline_s=s.worker_deadline_s,
                ),
                CloudTasksWorkQueue(
                    s.iac_queue,
                    s.iac_worker_url,
                    client,
                    service_account=s.tasks_service_account,
                    dispatch_deadline_s=s.iac_deadline_s,
                ),
            )

        return self._once("queues", build)

    def time_limit(self) -> TimeLimit:
        """Terraform held to the IaC task's dispatch deadline (``iac_time_limit``)."""
        return iac_time_limit(self.settings.iac_min_remaining_s, self.settings.iac_margin_s)


_slot: ProcessSlot[GcpRuntime] = ProcessSlot(lambda: GcpRuntime(Settings.from_env()))
# runtime(): this process's runtime, built from the environment on first use, then reused;
# install(new) replaces it (tests; None: the next use builds a fresh one), returning the old.
runtime, install = _slot.get, _slot.install
_logs_routed = False


def route_logs() -> None:
    """Once per process, on Cloud Run only (``K_SERVICE`` set): every log line as JSON on
    stderr (core's formatter), with the ``severity`` field Cloud Logging reads the level from;
    ``message`` and the ``extra`` fields become the entry's JSON payload."""
    global _logs_routed
    if _logs_routed or not os.environ.get("K_SERVICE"):
        return
    import logging

    from nclav.runtime.logs import use_json_logs

    use_json_logs("nclav")

    def severity(record: logging.LogRecord) -> bool:
        record.severity = record.levelname  # the field Cloud Logging reads the level from
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(severity)
    _logs_routed = True


__all__ = [
    "ALTERNATIVE",
    "ConfigurationError",
    "GcpRuntime",
    "Settings",
    "StepQueues",
    "iac_time_limit",
    "install",
    "route_logs",
    "runtime",
]
