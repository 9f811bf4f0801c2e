"""Core's bootstrap parts (``nclav.runtime.cloud_parts``): built once, on first use only."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from nclav.api.auth import TOKEN_PATTERN
from nclav.local import FileSecretStore
from nclav.runtime.cloud_parts import Lazy, Parts, ProcessSlot, SecretToken, build_git_source

if TYPE_CHECKING:
    from pathlib import Path


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_part_is_built_once_even_when_asked_for_at_once() -> None:
    built: list[int] = []
    parts = Parts({"given": "kept", "absent": None})
    barrier = threading.Barrier(8)

    def build() -> int:
        built.append(1)
        return len(built)

    def ask() -> None:
        barrier.wait()
        assert parts.once("part", build) == 1

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert built == [1]
    assert parts.once("given", lambda: "built") == "kept"
    assert "absent" not in parts  # a None given part is built as usual
    assert parts.once("absent", lambda: "built") == "built"


def test_a_lazy_client_is_made_on_its_first_attribute_use() -> None:
    made: list[str] = []

    class Client:
        def call(self) -> str:
            return "answer"

    def make() -> Client:
        made.append("client")
        return Client()

    lazy = Lazy(make)
    assert made == []
    assert lazy.call() == "answer"
    assert made == ["client"]


def test_the_process_slot_builds_on_first_use_and_can_be_replaced() -> None:
    slot: ProcessSlot[list[str]] = ProcessSlot(lambda: ["fresh"])
    first = slot.get()
    assert slot.get() is first
    assert slot.install(["installed"]) is first
    assert slot.get() == ["installed"]
    slot.install(None)
    assert slot.get() == ["fresh"] and slot.get() is not first


def test_the_token_is_generated_when_the_secret_has_none(tmp_path: Path) -> None:
    store = FileSecretStore(tmp_path)
    token = SecretToken(store, "api-token")()
    assert TOKEN_PATTERN.fullmatch(token)
    assert store.get("api-token") == token  # written: the operator reads it from there


def test_a_rotated_token_is_read_after_the_ttl_and_not_before(tmp_path: Path) -> None:
    store = FileSecretStore(tmp_path)
    store.put("api-token", "a" * 64)
    clock = Clock()
    token = SecretToken(store, "api-token", ttl_s=300, clock=clock)
    assert token() == "a" * 64
    store.put("api-token", "b" * 64)  # rotated
    clock.now = 299
    assert token() == "a" * 64
    clock.now = 300
    assert token() == "b" * 64


def test_a_generating_instance_uses_what_the_secret_holds_after_its_write(tmp_path: Path) -> None:
    """Two cold instances generating at once: the second write wins, and the first instance,
    reading the secret back, uses the winner's token instead of its own."""

    class Racing(FileSecretStore):
        def put(self, name: str, value: str) -> None:
            super().put(name, value)
            super().put(name, "w" * 64)  # the other instance's write lands right after

    assert SecretToken(Racing(tmp_path), "api-token")() == "w" * 64


def test_the_git_source_settings_errors_name_the_variable(tmp_path: Path) -> None:
    from nclav.errors import ConfigurationError

    env = {"NCLAV_GIT_URL": "not a url"}
    with pytest.raises(ConfigurationError, match="git source settings are invalid"):
        build_git_source(
            None,  # type: ignore[arg-type]
            secrets=FileSecretStore(tmp_path),
            blobs=None,  # type: ignore[arg-type]
            queue=None,  # type: ignore[arg-type]
            secret_hint="here",
            environ=env,
        )
