"""``DirectoryBlobStore``: blobs as files under a root directory (``~/.nclav/blobs``).

``put`` writes a temporary file beside the target, fsyncs it and renames it over the target,
so a reader (or a crash) sees the old bytes or the new ones, never half of them: Terraform
state versions live here. ``append`` writes in place, so a log is readable while it grows.
Files are created 0600 and directories 0700 whatever the umask: state and logs hold secrets.

Unlike an object store, a key cannot be both an object and the prefix of another key
(``a`` and ``a/b``); such a write raises ``ConflictError``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from nclav._fs import PRIVATE_FILE, TMP_PREFIX, atomic_write, private_dirs
from nclav.errors import ConflictError, NotFoundError
from nclav.ports import InvalidKeyError, check_blob_key

if TYPE_CHECKING:
    from collections.abc import Iterator

_TMP = TMP_PREFIX


class DirectoryBlobStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        private_dirs(self.root)

    def _path(self, key: str) -> Path:
        check_blob_key(key)
        if any(part.startswith(_TMP) for part in key.split("/")):
            raise InvalidKeyError(key, f"a blob key part cannot start with {_TMP!r}")
        path = self.root.joinpath(*key.split("/"))
        # A symlink planted inside the root must not lead a key outside it.
        if not path.resolve().is_relative_to(self.root):
            raise InvalidKeyError(key, "the blob key leads outside the store")
        return path

    @contextlib.contextmanager
    def _writing(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        try:
            private_dirs(path.parent)
            yield path
        except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
            raise ConflictError(f"blob key {key!r} clashes with an existing key") from exc

    def put(self, key: str, data: bytes) -> None:
        with self._writing(key) as path:
            atomic_write(path, data, mode=PRIVATE_FILE, durable=True)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFoundError(f"blob not found: {key}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if not path.is_dir():
                path.unlink()

    def append(self, key: str, data: bytes) -> None:
        with self._writing(key) as path:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
            with os.fdopen(fd, "ab") as f:
                f.write(data)

    def list(self, prefix: str = "") -> list[str]:
        # Walk only the deepest directory the prefix names, not the whole store.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = self.root.joinpath(*base.split("/")) if base else self.root
        if not top.resolve().is_relative_to(self.root) or not top.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(top):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith(_TMP):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)


__all__ = ["DirectoryBlobStore"]
