"""``FileSecretStore``: one file per secret in a directory only the owner can enter.

The directory is kept at mode 0700 and every file is created at 0600 (never widened by the
umask, never briefly readable), then renamed into place so a reader never sees half a value.
"""

from __future__ import annotations

import os
from pathlib import Path

from nclav._fs import atomic_write
from nclav.ports import check_secret_name

_DIR_MODE = 0o700
_FILE_MODE = 0o600


class FileSecretStore:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self.directory, _DIR_MODE)

    def get(self, name: str) -> str | None:
        try:
            return (self.directory / check_secret_name(name)).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def put(self, name: str, value: str) -> None:
        path = self.directory / check_secret_name(name)
        atomic_write(path, value.encode("utf-8"), mode=_FILE_MODE)


__all__ = ["FileSecretStore"]
