"""Writing a file so that a reader sees the old content or the new, never half of either, and
creating files and directories that only their owner can read (0600 and 0700, whatever the
process umask: Terraform state and logs hold secrets)."""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

TMP_PREFIX = ".nclav-tmp-"
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dirs(path: Path) -> None:
    """``mkdir -p path`` where every directory created is 0700 (``Path.mkdir(parents=True)``
    gives the parents it creates the default mode, and any mode passes through the umask)."""
    missing = []
    for directory in (path, *path.parents):
        if directory.is_dir():
            break
        missing.append(directory)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # created meanwhile by another writer
            directory.mkdir(mode=PRIVATE_DIR)
            os.chmod(directory, PRIVATE_DIR)


def private_file(path: Path) -> None:
    """Create ``path`` empty at 0600 if it is missing, and narrow it to 0600 if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, durable: bool = True) -> None:
    """Write ``data`` to a private temporary file beside ``path``, then rename it over ``path``.

    The file is created with ``mode`` and never wider (``fchmod`` undoes the umask), so a
    secret is never briefly readable by others. ``durable`` fsyncs the file and its directory
    so the rename survives a crash.
    """
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    # Makes a rename durable across a crash; some filesystems refuse, which is harmless.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "TMP_PREFIX",
    "atomic_write",
    "fsync_dir",
    "private_dirs",
    "private_file",
]
