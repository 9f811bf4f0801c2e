"""Every implementation of each port, as parametrized fixtures.

A cloud adapter joins by adding its id to the matching ``params`` (skipping when its stand-in
server is not running); the contract tests themselves do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from azure_api_fake import AzureApiFake, StaticCredential
from azure_stand_ins import unique_name
from functions_aws.dynamodb_store import DynamoStateStore, create_table
from functions_aws.s3_blobs import S3BlobStore, create_bucket
from functions_aws.secrets import SecretsManagerSecretStore
from functions_aws.sqs_queue import SqsWorkQueue, create_queues
from functions_azure._cosmos_docs import CosmosDocuments
from functions_azure._cosmos_docs import create_container as create_cosmos_container
from functions_azure.blob_store import AzureBlobStore, create_container
from functions_azure.queue import StorageWorkQueue
from functions_azure.queue import create_queues as create_storage_queues
from functions_azure.secrets import KeyVaultSecretStore
from functions_gcp.firestore_store import open_store
from functions_gcp.gcs_blobs import GcsBlobStore
from nclav.docstore import DocumentStateStore, MemoryDocuments
from nclav.local import (
    DirectoryBlobStore,
    FileSecretStore,
    InMemoryStateStore,
    SqliteStateStore,
    ThreadWorkQueue,
)
from nclav.plan import Action, Step
from nclav.ports import BlobStore, ManualClock, SecretStore, StateStore
from nclav.records import AuditEvent, EventKind, Run, StepRecord, iso_time
from sqs_pump import SqsPump
from stand_ins import FIRESTORE_PROJECT
from storage_queue_pump import StorageQueuePump
from support import chain
from tasks_pump import TasksPump

if TYPE_CHECKING:
    from pathlib import Path

    from nclav.local.thread_queue import Handler

STATE_STORES = [
    "memory",
    "documents",
    "documents-ordered",
    "sqlite",
    "dynamodb",
    pytest.param("firestore", marks=pytest.mark.slow),
    pytest.param("cosmos", marks=pytest.mark.slow),
]
T0 = 1_767_225_600.0
LEASE = 30.0


def make_run(run_id: str | None = None, **fields: object) -> Run:
    extra = {"id": run_id} if run_id else {}
    return Run(created_at=iso_time(T0), **extra, **fields)


def independent(run_id: str, count: int) -> list[StepRecord]:
    return [
        StepRecord.of(run_id, Step(f"s{i:02d}", Action.PROVISION_ENCLAVE, f"e{i:02d}", None, ()))
        for i in range(count)
    ]


def started(store: StateStore, *ids: str) -> Run:
    run = make_run()
    return store.create_run(run, chain(run.id, *ids))


def event(kind: EventKind, enclave_id: str | None = None, **fields: object) -> AuditEvent:
    return AuditEvent(kind=kind, at=iso_time(T0), enclave_id=enclave_id, **fields)


def open_state_store(kind: str, path: Path) -> StateStore:
    if kind == "memory":
        return InMemoryStateStore()
    if kind == "sqlite":
        return SqliteStateStore(path / "state.db")
    if kind == "documents":  # core's document store over its in-memory documents adapter
        return DocumentStateStore(MemoryDocuments())
    if kind == "documents-ordered":  # the same without transactions (ordered writes)
        return DocumentStateStore(MemoryDocuments(atomic=False))
    raise ValueError(kind)


@pytest.fixture(params=STATE_STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "dynamodb":
        request.getfixturevalue("aws")  # a clean moto server behind boto3
        # Room for the 20-thread contract tests without discarding pooled connections.
        client = boto3.client("dynamodb", config=Config(max_pool_connections=32))
        create_table(client, "nclav-state")
        yield DynamoStateStore("nclav-state", client=client)
        return
    if request.param == "firestore":
        request.getfixturevalue("firestore")  # an empty Firestore emulator database
        yield open_store(FIRESTORE_PROJECT)
        return
    if request.param == "cosmos":
        database = request.getfixturevalue("cosmos")  # the Cosmos DB stand-in
        yield DocumentStateStore(CosmosDocuments(create_cosmos_container(database, "state")))
        return
    opened = open_state_store(request.param, tmp_path)
    yield opened
    close = getattr(opened, "close", None)
    if close is not None:
        close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(
    params=["directory", "s3", "gcs", pytest.param("azure-blob", marks=pytest.mark.slow)]
)
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "gcs":
        bucket = request.getfixturevalue("gcs")  # a new bucket on fake-gcs-server
        client = storage.Client(project=FIRESTORE_PROJECT, credentials=AnonymousCredentials())
        return GcsBlobStore(bucket, "blobs/", client=client)
    if request.param == "azure-blob":
        connection = request.getfixturevalue("azure_storage")  # Azurite
        store = AzureBlobStore.from_connection_string(connection, unique_name("blobs"), "b/")
        create_container(store.container)
        return store
    if request.param == "s3":
        request.getfixturevalue("aws")  # a clean moto server behind boto3
        client = boto3.client("s3")
        create_bucket(client, "nclav-blobs")
        return S3BlobStore("nclav-blobs", "blobs/", client=client)
    return DirectoryBlobStore(tmp_path / "blobs")


@pytest.fixture(scope="session")
def keyvault_fake() -> Iterator[AzureApiFake]:
    with AzureApiFake() as fake:
        yield fake


@pytest.fixture(params=["file", "secretsmanager", "keyvault", "secretmanager"])
def secrets(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SecretStore]:
    if request.param == "secretsmanager":
        request.getfixturevalue("aws")
        yield SecretsManagerSecretStore("nclav/", client=boto3.client("secretsmanager"))
    elif request.param == "keyvault":  # the strict Key Vault fake (tests/azure_api_fake.py)
        fake: AzureApiFake = request.getfixturevalue("keyvault_fake")
        fake.reset()
        yield KeyVaultSecretStore(
            fake.url, credential=StaticCredential(), transport=fake.transport()
        )
        assert fake.violations == []
    elif request.param == "secretmanager":  # GCP, against the strict discovery-document fake
        from functions_gcp.secrets import SecretManagerSecretStore
        from gcp_api_fake import anonymous_session, serve_fake

        with serve_fake() as fake:
            url = fake.endpoint("secretmanager")
            yield SecretManagerSecretStore("p", session=anonymous_session(), endpoint=url)
    else:
        yield FileSecretStore(tmp_path / "secrets")


# The local queue, or SQS (moto server) consumed by the test pump: both take a handler and
# the same options, and have send / pending / wait_idle / close.
QueueFactory = Callable[..., ThreadWorkQueue | SqsPump]  # (StorageQueuePump is an SqsPump)


@pytest.fixture(
    params=[
        "thread",
        "sqs",
        pytest.param("azure-queue", marks=pytest.mark.slow),
        pytest.param("cloud-tasks", marks=pytest.mark.slow),
    ]
)
def make_queue(request: pytest.FixtureRequest) -> Iterator[QueueFactory]:
    """``make_queue(handler, **options)``; every queue made is closed after the test."""
    made: list[ThreadWorkQueue | SqsPump] = []

    def make(handler: Handler, **options: Any) -> ThreadWorkQueue | SqsPump:
        options.setdefault("retry_delay_s", 0.01)
        queue: ThreadWorkQueue | SqsPump
        if request.param == "sqs":
            request.getfixturevalue("aws")
            client = boto3.client("sqs")
            url, _dlq = create_queues(
                client, f"nclav-steps-{len(made)}", options.get("max_deliveries", 5)
            )
            queue = SqsPump(SqsWorkQueue(url, client=client), handler, **options)
        elif request.param == "azure-queue":
            from azure.storage.queue import QueueServiceClient

            connection = request.getfixturevalue("azure_storage")  # Azurite
            service = QueueServiceClient.from_connection_string(connection)
            steps, poison = create_storage_queues(service, unique_name("steps"))
            queue = StorageQueuePump(
                StorageWorkQueue(steps), StorageWorkQueue(poison), handler, **options
            )
        elif request.param == "cloud-tasks":
            client, name = request.getfixturevalue("cloud_tasks")  # the emulator, a new queue
            queue = TasksPump(client, name, handler, **options)  # type: ignore[assignment]
        else:
            queue = ThreadWorkQueue(handler, **options)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.close(timeout=5)
