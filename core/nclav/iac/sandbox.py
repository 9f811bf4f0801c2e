"""Terraform in a short-lived sandbox: a time limit, and workspaces kept in the blob store.

A Lambda invocation, a Cloud Run job and a Container Apps job all stop a process at a hard
time limit and give it an ephemeral disk. Neither is AWS's alone, so both rules live here and
``PartitionIac`` applies them for every runtime; a runtime only says how much time it has left
and how to word the limit (``TimeLimit``).

**The time limit.** A stopped sandbox records nothing: the step would keep its lease until the
sweeper hands it out again, to be stopped again. So terraform never reaches the limit:

1. Before terraform starts, the time left is compared with ``min_remaining_s``. With less,
   terraform is not started and the step fails at once (``NotEnoughTimeError``).
2. Otherwise the step gets one deadline, the time left minus ``margin_s`` (and at most the
   runner's own timeout), shared by all its commands and checked before each (see
   ``nclav.iac.runner``). A command still running at the deadline is stopped (SIGTERM, so
   terraform saves its state and releases its lock, then SIGKILL after the grace) and the step
   fails with ``OutOfTimeError``, naming the runtime without a limit (``alternative``). The
   margin must cover the kill grace and recording the outcome.

**Workspaces.** The destroy of a partition usually runs in another sandbox than its apply.
After each apply (succeeded or not) the files nclav wrote (its manifest, inputs included) and
terraform's dependency lock file are kept under ``iac-workspaces/<enclave>/<partition>.tar.gz``;
a destroy that finds no working directory restores them (``restore_workspace``), and the blob
goes once the destroy succeeded. Extraction uses tarfile's ``data`` filter: no absolute paths,
no ``..``, no links or devices.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nclav.errors import NotFoundError, PermanentError
from nclav.iac.workspace import MANIFEST_FILE

if TYPE_CHECKING:
    from pathlib import Path

    from nclav.ports import BlobStore

LOCK_FILE = ".terraform.lock.hcl"


class NotEnoughTimeError(PermanentError):
    """The sandbox has too little time left to start terraform."""


class OutOfTimeError(PermanentError):
    """Terraform ran out of the sandbox's time and was stopped."""


@dataclass(frozen=True)
class TimeLimit:
    """How a runtime with a hard time limit words it (defaults: a generic sandbox).

    ``where`` names what has the time ("this Lambda invocation"); ``limit`` the limit itself
    ("Lambda's 15 minutes"); ``min_setting`` the setting of ``min_remaining_s``; ``advice`` what
    to configure; ``alternative`` the runtime without a limit.
    """

    min_remaining_s: float = 120.0
    margin_s: float = 60.0
    where: str = "this sandbox"
    limit: str = "the sandbox's time limit"
    min_setting: str = "NCLAV_IAC_MIN_REMAINING_S"
    advice: str = ""
    alternative: str = "nclav serve"

    def not_started(self, command: str, partition: str, left_s: float) -> NotEnoughTimeError:
        advice = f"{self.advice} " if self.advice else ""
        return NotEnoughTimeError(
            f"terraform {command} of {partition} was not started: {self.where} has "
            f"{left_s:.0f} s left and the IaC worker needs at least {self.min_remaining_s:.0f} s "
            f"({self.min_setting}). {advice}Terraform that needs longer than {self.limit} runs "
            f"on the long-running runtime: {self.alternative}"
        )

    def stopped(self, command: str, partition: str, budget_s: float) -> OutOfTimeError:
        return OutOfTimeError(
            f"terraform {command} of {partition} cannot finish within {self.limit}: it was "
            f"stopped after {budget_s:.0f} s, the budget {self.where} left it. Apply this "
            f"partition with the long-running runtime instead: {self.alternative} "
            "(no time limit on a step)"
        )


def workspace_blob(enclave_id: str, partition_id: str) -> str:
    return f"iac-workspaces/{enclave_id}/{partition_id}.tar.gz"


def save_workspace(blobs: BlobStore, workdir: Path, enclave_id: str, partition_id: str) -> None:
    """Keep the files nclav wrote (by its manifest) and terraform's dependency lock file."""
    names = _manifest(workdir)
    if not names:
        return
    if (workdir / LOCK_FILE).is_file():
        names.append(LOCK_FILE)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in sorted(set(names)):
            path = workdir / name
            if path.is_file() and not path.is_symlink():
                archive.add(path, arcname=name, recursive=False)
    blobs.put(workspace_blob(enclave_id, partition_id), buffer.getvalue())


def restore_workspace(blobs: BlobStore, workdir: Path, enclave_id: str, partition_id: str) -> bool:
    """Bring back a saved workspace; False when none was saved."""
    try:
        data = blobs.get(workspace_blob(enclave_id, partition_id))
    except NotFoundError:
        return False
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            archive.extractall(workdir, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PermanentError(
            f"the saved workspace {workspace_blob(enclave_id, partition_id)} cannot be "
            f"restored: {exc}"
        ) from exc
    return True


def _manifest(workdir: Path) -> list[str]:
    try:
        doc = json.loads((workdir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    files = doc.get("files") if isinstance(doc, dict) else None
    names = [f for f in files if isinstance(f, str)] if isinstance(files, list) else []
    return [MANIFEST_FILE, *names]


__all__ = [
    "LOCK_FILE",
    "NotEnoughTimeError",
    "OutOfTimeError",
    "TimeLimit",
    "restore_workspace",
    "save_workspace",
    "workspace_blob",
]
