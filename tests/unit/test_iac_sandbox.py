"""A saved workspace is extracted with tarfile's ``data`` filter: nothing lands outside it."""

from __future__ import annotations

import io
import tarfile
from typing import TYPE_CHECKING

import pytest

from nclav.errors import PermanentError
from nclav.iac.sandbox import TimeLimit, restore_workspace, workspace_blob
from nclav.local import DirectoryBlobStore

if TYPE_CHECKING:
    from pathlib import Path


def archive(member: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return buffer.getvalue()


def test_a_member_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    blobs.put(workspace_blob("e", "p"), archive(tarfile.TarInfo("../escaped.tf")))
    with pytest.raises(PermanentError, match="cannot be restored"):
        restore_workspace(blobs, tmp_path / "ws" / "e" / "p", "e", "p")
    assert not (tmp_path / "ws" / "e" / "escaped.tf").exists()


def test_an_absolute_member_lands_inside_the_workspace(tmp_path: Path) -> None:
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    target = tmp_path / "outside.tf"
    blobs.put(workspace_blob("e", "p"), archive(tarfile.TarInfo(str(target))))
    workdir = tmp_path / "ws"
    assert restore_workspace(blobs, workdir, "e", "p")
    assert not target.exists()
    assert (workdir / str(target).lstrip("/")).read_bytes() == b"x"


def test_a_link_out_of_the_workspace_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("main.tf")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    blobs.put(workspace_blob("e", "p"), archive(link))
    with pytest.raises(PermanentError):
        restore_workspace(blobs, tmp_path / "ws", "e", "p")
    assert not (tmp_path / "ws" / "main.tf").is_symlink()


def test_time_limit_words_name_the_setting_and_the_alternative() -> None:
    limit = TimeLimit(where="this job", limit="the job's 60 minutes", alternative="nclav serve")
    text = str(limit.not_started("apply", "e/p", 30))
    assert "30 s left" in text and "NCLAV_IAC_MIN_REMAINING_S" in text and "nclav serve" in text
    stopped = str(limit.stopped("destroy", "e/p", 900))
    assert "cannot finish within the job's 60 minutes" in stopped and "900 s" in stopped
