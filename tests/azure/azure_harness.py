"""The Azure runtime in a test: Azurite and cosmosdb-server resources, the v2 app's functions
called in-process, and a pump doing the Functions host's queue processing.

``AzureDeployment`` creates what infra/azure creates (the blob container, the two queues with
their poison queues, the Cosmos container), sets the ``NCLAV_*`` app settings and installs a
fresh runtime. Key Vault has no emulator: the runtime's secrets are a local ``FileSecretStore``
holding the API token (the Key Vault adapter has its own tests against a strict fake).

``HostPump`` stands in for the Functions host's queue listener (the WebJobs queue processor),
calling the queue-trigger functions as the host does: a message is received invisible for
``visibility_s`` and its visibility is renewed at half of that while the function runs (the
host's renewal); a function that returns has its message deleted, a pop receipt that changed
meanwhile (the function set its own backoff) is left alone; a function that raises has its
message put back after host.json's ``visibilityTimeout``, or copied to ``<queue>-poison`` and
deleted when its ``dequeue_count`` reached ``maxDequeueCount``.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueServiceClient

from azure_stand_ins import COSMOS_KEY, DEV_ACCOUNT, unique_name
from functions_azure import bootstrap, function_app, host
from functions_azure.blob_store import AzureBlobStore, create_container
from functions_azure.queue import RECEIPT_SEPARATOR, StorageWorkQueue, create_queues
from nclav.errors import ConflictError, NotFoundError
from nclav.local import FileSecretStore

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    import pytest
    from azure.cosmos import DatabaseProxy

    from functions_azure.queue import Received

_INDEXED: list[Any] = []


def indexed() -> list[Any]:
    """The app's ``Function`` objects: ``app.get_functions()`` once per process, as the host
    indexes the app (a second call refuses the names it has seen)."""
    if not _INDEXED:
        _INDEXED.extend(function_app.app.get_functions())
    return _INDEXED


def functions() -> dict[str, Callable[..., Any]]:
    """The app's functions by name (each ``get_user_function()``)."""
    return {f.get_function_name(): f.get_user_function() for f in indexed()}


def http_request(
    method: str,
    target: str,
    *,
    token: str | None = None,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
) -> func.HttpRequest:
    sent = {"authorization": f"Bearer {token}"} if token else {}
    sent.update({k.lower(): v for k, v in (headers or {}).items()})
    return func.HttpRequest(
        method, f"http://nclav.azurewebsites.net{target}", headers=sent, body=body
    )


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class AzureDeployment:
    """One deployment's resources on the stand-ins, and the app settings pointing at them."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        storage: str,
        cosmos: DatabaseProxy,
        cosmos_endpoint: str,
        **env: str,
    ) -> None:
        from functions_azure._cosmos_docs import create_container as create_cosmos_container

        suffix = unique_name("x")[2:]
        self.storage = storage
        self.service = QueueServiceClient.from_connection_string(storage)
        self.container_name = f"nclav-{suffix}"
        blobs = AzureBlobStore.from_connection_string(storage, self.container_name)
        create_container(blobs.container)
        steps, steps_poison = create_queues(self.service, f"steps-{suffix}")
        iac, iac_poison = create_queues(self.service, f"iac-{suffix}")
        self.steps, self.iac = StorageWorkQueue(steps), StorageWorkQueue(iac)
        self.poison = {
            self.steps.name: StorageWorkQueue(steps_poison),
            self.iac.name: StorageWorkQueue(iac_poison),
        }
        create_cosmos_container(cosmos, "state")
        self.token = secrets.token_hex(32)
        self.secrets = FileSecretStore(tmp_path / "secrets")
        self.secrets.put("api-token", self.token)
        self.env = {
            "NCLAV_STORAGE_ACCOUNT": DEV_ACCOUNT,
            "NCLAV_STORAGE_CONNECTION": storage,
            "NCLAV_STORAGE": storage,  # the triggers' connection (the host reads it)
            "NCLAV_COSMOS_ENDPOINT": cosmos_endpoint,
            "NCLAV_COSMOS_KEY": COSMOS_KEY,
            "NCLAV_COSMOS_DATABASE": cosmos.id,
            "NCLAV_COSMOS_CONTAINER": "state",
            "NCLAV_BLOB_CONTAINER": self.container_name,
            "NCLAV_STEPS_QUEUE": self.steps.name,
            "NCLAV_IAC_QUEUE": self.iac.name,
            "NCLAV_WORKSPACES": str(tmp_path / "workspaces"),
            "NCLAV_CLOUD": "local",
            "NCLAV_MAX_RECEIVES": "3",
            "NCLAV_REDELIVERY_BACKOFF_S": "0",
            "NCLAV_BACKOFF_S": "0",
            **env,
        }
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        self.install()

    def install(self, **parts: Any) -> bootstrap.AzureRuntime:
        """A fresh runtime from the environment (``parts`` replace some), as the host's."""
        parts.setdefault("secrets", self.secrets)
        built = bootstrap.AzureRuntime(bootstrap.Settings.from_env(), **parts)
        bootstrap.install(built)
        return built

    @property
    def runtime(self) -> bootstrap.AzureRuntime:
        return bootstrap.runtime()

    def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        token: str | None = "",
    ) -> Reply:
        req = http_request(
            method, target, token=self.token if token == "" else token, body=body, headers=headers
        )
        result = functions()["http_api"](req)
        return Reply(result.status_code, dict(result.headers), result.get_body())

    def send_raw(self, queue: StorageWorkQueue, body: str) -> None:
        queue.send_body(body)


@dataclass
class Invocation:
    function: str
    dequeue_count: int
    raised: BaseException | None
    outcome: Any = None


@dataclass
class HostPump:
    """The Functions host's queue listener for the two queues (see the module docstring)."""

    d: AzureDeployment
    visibility_s: float = 10.0
    invocations: list[Invocation] = field(default_factory=list)
    crash: type[BaseException] | None = None  # a BaseException that stands for a dead host

    def _function(self, queue: StorageWorkQueue) -> tuple[str, Callable[..., Any]]:
        name = "iac_worker" if queue is self.d.iac else "steps_worker"
        return name, functions()[name]

    def invoke(self, queue: StorageWorkQueue, received: Received) -> Invocation:
        name, function = self._function(queue)
        message_id, pop_receipt = received.receipt.split(RECEIPT_SEPARATOR, 1)
        msg = QueueMessage(
            id=message_id,
            body=received.body.encode(),
            dequeue_count=received.receive_count,
            pop_receipt=pop_receipt,
        )
        renewed = [received.receipt]
        stop = threading.Event()

        def renew() -> None:  # the host keeps a running message invisible
            while not stop.wait(self.visibility_s / 2):
                try:
                    got = queue.client.update_message(
                        message_id,
                        renewed[0].split(RECEIPT_SEPARATOR, 1)[1],
                        visibility_timeout=int(self.visibility_s),
                    )
                    renewed[0] = f"{message_id}{RECEIPT_SEPARATOR}{got.pop_receipt}"
                except Exception:  # the function took the message over (its own backoff)
                    return

        renewer = threading.Thread(target=renew, daemon=True)
        renewer.start()
        raised: BaseException | None = None
        try:
            function(msg)
        except Exception as exc:  # noqa: BLE001 - the host catches every failure
            raised = exc
        except BaseException as exc:
            if self.crash is None or not isinstance(exc, self.crash):
                raise
            stop.set()
            renewer.join()
            invocation = Invocation(name, received.receive_count, exc)
            self.invocations.append(invocation)
            return invocation  # a dead host: nothing deleted, nothing put back
        finally:
            stop.set()
            renewer.join()
        invocation = Invocation(name, received.receive_count, raised)
        self.invocations.append(invocation)
        self._complete(queue, received, renewed[0], raised)
        return invocation

    def _complete(
        self,
        queue: StorageWorkQueue,
        received: Received,
        receipt: str,
        raised: BaseException | None,
    ) -> None:
        """The host's CompleteProcessingMessageAsync: delete, poison or release."""
        try:
            if raised is None:
                queue.delete(receipt)
            elif received.receive_count >= host.max_dequeue_count():
                self.d.poison[queue.name].send_body(received.body)
                queue.delete(receipt)
            else:
                release = host.timespan_s(
                    host.value("extensions.queues.visibilityTimeout") or "00:00:00",
                    "visibilityTimeout",
                )
                queue.delay(receipt, release or 0)
        except (ConflictError, NotFoundError):
            pass  # PopReceiptMismatch / gone: someone else took the message over

    def once(self) -> int:
        handled = 0
        for queue, batch in ((self.d.steps, 8), (self.d.iac, 1)):
            for received in queue.receive(batch, visibility_s=self.visibility_s):
                self.invoke(queue, received)
                handled += 1
        return handled

    def drain(self, timeout: float = 120.0) -> None:
        """Pump until both queues are empty (nothing visible, in flight or delayed)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.once():
                continue
            if self.d.steps.pending() == 0 and self.d.iac.pending() == 0:
                return
            assert time.monotonic() < deadline, "the queues did not drain"
            time.sleep(0.1)


__all__ = [
    "AzureDeployment",
    "HostPump",
    "Invocation",
    "Reply",
    "functions",
    "http_request",
    "indexed",
]
