"""The Blob and Queue adapters against Azurite: what the contract suites do not reach.

The contract suites (tests/contract) run both adapters as ports; these tests pin the Azure
specifics: append blobs and the block-blob rewrite path, base64 bodies as the Functions host
reads them, visibility-timeout delays, ``dequeue_count`` as the attempt, stale pop receipts.
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import timedelta

import pytest
from azure.storage.blob import BlobType
from azure.storage.queue import QueueServiceClient

from azure_stand_ins import unique_name
from functions_azure.blob_store import AzureBlobStore, create_container
from functions_azure.queue import MAX_DELAY_S, StorageWorkQueue, create_queues, whole_seconds
from nclav.errors import ConflictError, NotFoundError
from nclav.ports import InvalidKeyError

pytestmark = pytest.mark.slow


@pytest.fixture
def blobs(azure_storage: str) -> AzureBlobStore:
    store = AzureBlobStore.from_connection_string(azure_storage, unique_name("blobs"), "p/")
    create_container(store.container)
    create_container(store.container)  # again: an existing container is kept
    return store


@pytest.fixture
def queues(azure_storage: str) -> tuple[StorageWorkQueue, StorageWorkQueue]:
    service = QueueServiceClient.from_connection_string(azure_storage)
    steps, poison = create_queues(service, unique_name("steps"))
    create_queues(service, steps.queue_name)  # again: existing queues are kept
    return StorageWorkQueue(steps), StorageWorkQueue(poison)


# -- blobs -----------------------------------------------------------------------------------


def test_appends_use_one_append_blob(blobs: AzureBlobStore) -> None:
    blobs.append("logs/a.log", b"one\n")
    blobs.append("logs/a.log", b"two\n")
    props = blobs.container.get_blob_client("p/logs/a.log").get_blob_properties()
    assert props.blob_type == BlobType.APPENDBLOB
    assert blobs.get("logs/a.log") == b"one\ntwo\n"


def test_append_after_put_keeps_what_put_wrote(blobs: AzureBlobStore) -> None:
    blobs.put("k", b"head\n")
    blobs.append("k", b"tail\n")
    blobs.append("k", b"")
    assert blobs.get("k") == b"head\ntail\n"


def test_put_replaces_an_append_blob(blobs: AzureBlobStore) -> None:
    blobs.append("k", b"log\n")
    blobs.put("k", b"new")
    props = blobs.container.get_blob_client("p/k").get_blob_properties()
    assert props.blob_type == BlobType.BLOCKBLOB
    assert blobs.get("k") == b"new"


def test_concurrent_first_appends_lose_nothing(blobs: AzureBlobStore) -> None:
    lines = [f"w{i}\n".encode() for i in range(8)]
    threads = [threading.Thread(target=blobs.append, args=("race", line)) for line in lines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(blobs.get("race").splitlines(keepends=True)) == sorted(lines)


def test_the_prefix_is_the_store_namespace(blobs: AzureBlobStore, azure_storage: str) -> None:
    blobs.put("a/b", b"1")
    other = AzureBlobStore(blobs.container, "q")
    other.put("a/c", b"2")
    assert blobs.list() == ["a/b"]
    assert other.list("a/") == ["a/c"]
    names = [b.name for b in blobs.container.list_blobs()]
    assert sorted(names) == ["p/a/b", "q/a/c"]


def test_a_key_too_long_with_the_prefix_is_refused(blobs: AzureBlobStore) -> None:
    with pytest.raises(InvalidKeyError, match="too long"):
        blobs.put("x" * 1023, b"")


def test_a_missing_container_is_not_found(azure_storage: str) -> None:
    store = AzureBlobStore.from_connection_string(azure_storage, unique_name("missing"))
    with pytest.raises(NotFoundError, match="blob get k: 404 ContainerNotFound"):
        store.get("k")
    assert store.exists("k") is False


def test_a_lost_etag_condition_is_a_conflict(blobs: AzureBlobStore) -> None:
    from azure.core import MatchConditions

    from functions_azure._errors import azure_errors

    blob = blobs.container.get_blob_client("p/cas")
    blob.upload_blob(b"1")
    stale = blob.get_blob_properties().etag
    blob.upload_blob(b"2", overwrite=True)
    with pytest.raises(ConflictError, match="412"), azure_errors("cas"):
        blob.upload_blob(
            b"3", overwrite=True, etag=stale, match_condition=MatchConditions.IfNotModified
        )


def test_settings_name_the_resources_and_hide_the_connection_string() -> None:
    from functions_azure.settings import Settings

    secret = "AccountName=a;AccountKey=c2VjcmV0"
    settings = Settings.from_env(
        {
            "NCLAV_STORAGE_ACCOUNT": "acct",
            "NCLAV_COSMOS_ENDPOINT": "https://db.documents.azure.com:443/",
            "NCLAV_STORAGE_CONNECTION": secret,
            "NCLAV_IAC_QUEUE": "tf",
        }
    )
    assert (settings.cloud, settings.iac_queue, settings.steps_queue) == (
        "azure",
        "tf",
        "nclav-steps",
    )
    assert settings.account_url("blob") == "https://acct.blob.core.windows.net"
    assert settings.storage_connection == secret
    assert "c2VjcmV0" not in repr(settings)


# -- queue -----------------------------------------------------------------------------------


def test_bodies_are_base64_json_as_the_functions_host_reads_them(
    queues: tuple[StorageWorkQueue, StorageWorkQueue], azure_storage: str
) -> None:
    steps, _ = queues
    steps.send({"run_id": "r", "step_id": "s"})
    raw = QueueServiceClient.from_connection_string(azure_storage).get_queue_client(steps.name)
    (message,) = raw.peek_messages()
    assert json.loads(base64.b64decode(message.content)) == {"run_id": "r", "step_id": "s"}


def test_the_attempt_is_the_dequeue_count(
    queues: tuple[StorageWorkQueue, StorageWorkQueue],
) -> None:
    steps, _ = queues
    steps.send({"run_id": "r", "step_id": "s"})
    (first,) = steps.receive(1, wait_s=2)
    assert (first.receive_count, first.message) == (1, {"run_id": "r", "step_id": "s"})
    steps.delay(first.receipt, 0)
    (second,) = steps.receive(1, wait_s=2)
    assert second.receive_count == 2
    assert second.message_id == first.message_id
    with pytest.raises(ConflictError, match="received again"):
        steps.delay(first.receipt, 0)  # the first delivery's pop receipt is stale
    steps.delete(second.receipt)
    steps.delete(second.receipt)  # already gone: fine
    assert steps.pending() == 0


def test_a_delay_is_the_visibility_rounded_up_and_capped(
    queues: tuple[StorageWorkQueue, StorageWorkQueue],
) -> None:
    assert (whole_seconds(0.2), whole_seconds(0), whole_seconds(-3)) == (1, 0, 0)
    steps, _ = queues
    sent = steps.send_body(json.dumps({"run_id": "r", "step_id": "s"}), delay_s=30 * 86_400)
    assert sent.next_visible_on - sent.inserted_on == timedelta(seconds=MAX_DELAY_S)
    assert sent.expires_on.year == 9999  # time_to_live=-1: a delayed step never expires
    assert steps.receive(1) == []
    assert steps.pending() == 1  # counted while invisible
    soon = steps.send_body("x", delay_s=0.2)
    assert soon.next_visible_on - soon.inserted_on == timedelta(seconds=1)  # never early


def test_step_queues_send_terraform_steps_to_the_iac_queue_and_count_both_poison_queues(
    azure_storage: str,
) -> None:
    from nclav.plan import Action
    from nclav.runtime.dead_letters import dead_letter_count
    from nclav.runtime.routing import StepQueues

    service = QueueServiceClient.from_connection_string(azure_storage)
    steps_client, steps_poison = create_queues(service, unique_name("steps"))
    iac_client, iac_poison = create_queues(service, unique_name("iac"))
    steps = StorageWorkQueue(steps_client, poison=steps_poison)
    iac = StorageWorkQueue(iac_client, poison=iac_poison)
    queues = StepQueues(steps, iac)
    queues.send({"run_id": "r", "step_id": "p", "action": Action.PROVISION_PARTITION.value})
    queues.send({"run_id": "r", "step_id": "e", "action": Action.PROVISION_ENCLAVE.value})
    assert [m.message["step_id"] for m in iac.receive(wait_s=2)] == ["p"]
    assert [m.message["step_id"] for m in steps.receive(wait_s=2)] == ["e"]
    # What the host moved to <queue>-poison is counted, both queues together.
    assert dead_letter_count(queues) == 0
    steps_poison.send_message("a")
    iac_poison.send_message("b")
    iac_poison.send_message("c")
    assert (steps.dead_letter_count(), iac.dead_letter_count()) == (1, 2)
    assert dead_letter_count(queues) == 3
    assert StorageWorkQueue(steps_client).dead_letter_count() is None  # no poison queue given
