"""nclav.runtime.parts and .hosted: a runtime's parts built once, on first use, by one thread,
and the cloud-neutral half of a function runtime's bootstrap."""

from __future__ import annotations

import importlib
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from nclav.gitsource.source import WEBHOOK_SECRET
from nclav.local.dir_blobs import DirectoryBlobStore
from nclav.local.file_secrets import FileSecretStore
from nclav.local.memory_store import InMemoryStateStore
from nclav.ports import ManualClock
from nclav.runtime.hosted import HostedRuntime
from nclav.runtime.parts import Lazy, Parts
from nclav.runtime.schedule import scheduled_tick
from nclav.runtime.settings import HostedSettings

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from nclav.ports import BlobStore, StateStore, WorkQueue


def test_a_part_is_built_once_however_many_threads_ask() -> None:
    parts, builds = Parts(), []

    def build() -> object:
        builds.append(1)
        time.sleep(0.05)  # long enough for the other threads to arrive meanwhile
        return object()

    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(parts.once("x", build))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert len({id(g) for g in got}) == 1


def test_a_given_part_is_never_built_and_none_is_not_given() -> None:
    given = object()
    parts = Parts(store=given, clock=None)
    assert parts.once("store", lambda: object()) is given
    assert not parts.built("clock")
    assert parts.once("clock", lambda: "built") == "built"


def test_a_builder_may_ask_for_other_parts() -> None:
    parts = Parts()
    assert parts.once("outer", lambda: parts.once("inner", lambda: 2) + 1) == 3


def test_a_lazy_part_is_built_by_its_first_attribute_use() -> None:
    parts = Parts()
    proxy = parts.lazy("client", lambda: "made")
    assert parts.lazy("client", lambda: "other") is proxy
    assert not parts.built("client")
    assert proxy.upper() == "MADE"
    assert parts.built("client")


def test_a_lazy_object_is_made_once_on_first_use() -> None:
    made: list[int] = []

    def make() -> str:
        made.append(1)
        return "client"

    lazy = Lazy(make)
    assert made == []
    assert lazy.upper() == "CLIENT" and lazy.title() == "Client"
    assert made == [1]


class Sent:
    """A work queue that keeps what is sent (nothing consumes it here)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None:
        self.messages.append(dict(message))

    def close(self) -> None:
        pass


class Hosted(HostedRuntime):
    """A hosted runtime over local adapters: what a cloud's bootstrap writes, and no more."""

    def __init__(self, root: Path, **parts: Any) -> None:
        super().__init__(HostedSettings(workspaces=root / "ws"), **parts)
        self.root = root

    @property
    def store(self) -> StateStore:
        return self._once("store", InMemoryStateStore)

    @property
    def queues(self) -> WorkQueue:
        return self._once("queues", Sent)

    @property
    def blobs(self) -> BlobStore:
        return self._once("blobs", lambda: DirectoryBlobStore(self.root / "blobs"))

    @property
    def secrets(self) -> FileSecretStore:
        return self._once("secrets", lambda: FileSecretStore(self.root / "secrets"))

    @property
    def token(self) -> str:
        return "a" * 64


def test_a_hosted_runtime_composes_core_over_the_clouds_adapters(tmp_path: Path) -> None:
    clock = ManualClock()
    runtime = Hosted(tmp_path, clock=clock, drivers={})
    assert runtime.clock is clock and runtime.drivers == {}
    engine = runtime.engine
    assert engine.store is runtime.store and engine.queue is runtime.queues
    assert runtime.iac.owner == engine.owner  # one worker id for leases and mutexes
    assert runtime.router is runtime.router
    git = runtime.git
    assert git is not None and git.secret_hint == "the runtime's secret store"
    assert runtime.secrets.get(WEBHOOK_SECRET) == git.webhook_secret
    assert scheduled_tick(runtime.composition).resent == 0


class Hinted(Hosted):
    """Counts the reads of its secret hint (a cloud's imports ``nclav.gitsource.source``)."""

    hints = 0

    @property
    def secret_hint(self) -> str:
        self.hints += 1
        return "the test's vault"


def test_a_request_without_the_git_source_does_not_read_its_secret_hint(tmp_path: Path) -> None:
    from nclav.api.http import ApiRequest

    runtime = Hinted(tmp_path, clock=ManualClock(), drivers={})
    auth = {"authorization": "Bearer " + "a" * 64}
    assert runtime.router.dispatch(ApiRequest.build("GET", "/runs", headers=auth)).status == 200
    assert runtime.hints == 0  # before: read when the engine was composed
    git = runtime.git
    assert git is not None and git.secret_hint == "the test's vault"
    assert runtime.hints == 1
    runtime.close()  # the loopback the composition started


def test_closing_a_hosted_runtime_that_composed_nothing_builds_nothing(tmp_path: Path) -> None:
    runtime = Hosted(tmp_path)
    runtime.close()
    assert not runtime._parts.built("composition")  # noqa: SLF001


@pytest.mark.parametrize(
    ("cloud", "environ", "hint"),
    [
        (
            "aws",
            {"TABLE": "t", "BUCKET": "b", "STEPS_QUEUE_URL": "s", "IAC_QUEUE_URL": "i"},
            "Secrets Manager secret nclav/git-webhook-secret",
        ),
        (
            "gcp",
            {
                "PROJECT": "p",
                "BUCKET": "b",
                "STEPS_QUEUE": "s",
                "IAC_QUEUE": "i",
                "WORKER_URL": "https://w",
                "IAC_WORKER_URL": "https://i",
                "SECRET_PREFIX": "x-",
            },
            "Secret Manager secret x-git-webhook-secret in p",
        ),
        (
            "azure",
            {"STORAGE_ACCOUNT": "a", "COSMOS_ENDPOINT": "e"},
            "Key Vault secret nclav-git-webhook-secret",
        ),
    ],
)
def test_each_cloud_names_its_webhook_secret_in_its_own_words(
    cloud: str, environ: dict[str, str], hint: str
) -> None:
    bootstrap = importlib.import_module(f"functions_{cloud}.bootstrap")
    settings = bootstrap.Settings.from_env({f"NCLAV_{k}": v for k, v in environ.items()})
    runtime_class = getattr(bootstrap, f"{cloud.capitalize()}Runtime")
    assert runtime_class(settings).secret_hint == hint
