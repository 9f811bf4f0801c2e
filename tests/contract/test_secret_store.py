"""The SecretStore contract, and the file store's permissions."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

import pytest

from nclav.local import FileSecretStore
from nclav.ports import InvalidKeyError, SecretStore

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def test_missing_secret_is_none(secrets: SecretStore) -> None:
    assert secrets.get("api-token") is None


def test_put_get_and_replace(secrets: SecretStore) -> None:
    secrets.put("api-token", "a" * 64)
    assert secrets.get("api-token") == "a" * 64
    secrets.put("api-token", "b" * 64)
    assert secrets.get("api-token") == "b" * 64


def test_values_are_kept_exactly(secrets: SecretStore) -> None:
    value = "  multi\nline\tvalue ünïcødé\n"
    secrets.put("webhook.github", value)
    assert secrets.get("webhook.github") == value


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 129, "a b"])
def test_bad_names_are_rejected(secrets: SecretStore, name: str) -> None:
    with pytest.raises(InvalidKeyError):
        secrets.put(name, "v")
    with pytest.raises(InvalidKeyError):
        secrets.get(name)


# -- file store only ------------------------------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask, so modes come from the store, not from the umask."""
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_file_modes(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    store = FileSecretStore(directory)
    store.put("api-token", "t")
    store.put("api-token", "u")
    assert mode(directory) == 0o700
    assert mode(directory / "api-token") == 0o600
    assert os.listdir(directory) == ["api-token"]  # no temporary file left


@pytest.mark.usefixtures("open_umask")
def test_an_existing_directory_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    directory.mkdir(mode=0o755)
    FileSecretStore(directory)
    assert mode(directory) == 0o700
