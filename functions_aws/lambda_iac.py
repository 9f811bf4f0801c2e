"""Terraform inside a Lambda invocation: a time budget, and workspaces that outlive a sandbox.

``LambdaIac`` is the ``IacRunner`` the AWS runtime gives the engine. It wraps core's
``PartitionIac`` (workspace, IaC run record, streamed log, per-partition mutex) with the two
things a Lambda function changes.

**The long-apply design.** Lambda stops a function 15 minutes after it starts at the latest,
and a stopped function records nothing: the step would keep its lease until the sweeper hands
it out again, to be stopped again. So terraform is never allowed to reach that point:

1. Before terraform starts, the time the invocation has left (the IaC worker passes
   ``context.get_remaining_time_in_millis``) is compared with ``NCLAV_IAC_MIN_REMAINING_S``
   (default 120 s). With less left, terraform is not started and the step fails at once with
   ``NotEnoughTimeError``, which says so and names the alternative below.
2. Otherwise the step's budget is the time left minus ``NCLAV_IAC_MARGIN_S`` (default 60 s),
   and each terraform command of the step (init, apply, output; or init, destroy) is stopped
   once it has run that long: SIGTERM, so terraform saves its state and releases its lock,
   then SIGKILL 5 s later (core's ``TerraformRunner``). The step then fails with
   ``LambdaBudgetError``: the apply cannot finish within Lambda's 15 minutes, and the error
   names the alternative. A state lock the killed terraform left behind (its ``Who`` is this
   sandbox and it was taken after the step started) is released, under the partition mutex,
   so the next apply of the partition is not refused. The margin must cover the commands
   around the apply (init with providers from the image's mirror, output), the kill grace
   and recording the outcome.
3. The alternative runtime: a partition whose terraform needs more than about 13 minutes is
   applied by ``nclav serve --cloud aws`` (the same engine and AWS driver, with no time limit
   on a step) on a long-running host such as an ECS/Fargate task or an EC2 instance. Nothing
   is handed over automatically; the failed step, the partition's error and its IaC run log
   (which ends with the stop) say which partition needs it.

With no invocation (``invocation`` not entered) there is no budget: core's timeout applies.

**Workspaces.** A terraform working directory lives in the sandbox's ``/tmp``, and the
destroy of a partition usually runs in another sandbox than its apply. After a successful
apply the files nclav wrote (its manifest) and terraform's dependency lock file are kept in
the blob store under ``iac-workspaces/<enclave>/<partition>.tar.gz``; a destroy that finds no
working directory restores them first (core's ``PartitionIac.destroy`` skips a partition
whose working directory does not exist), and the blob goes once the destroy succeeded.
"""

from __future__ import annotations

import getpass
import io
import json
import logging
import socket
import tarfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from nclav.errors import NotFoundError, PermanentError
from nclav.iac import MANIFEST_FILE, IacTimeoutError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

    from nclav.engine import PartitionIac
    from nclav.model import PartitionConfig
    from nclav.ports import BlobStore

logger = logging.getLogger(__name__)

ALTERNATIVE = "nclav serve --cloud aws"
LOCK_FILE = ".terraform.lock.hcl"


class NotEnoughTimeError(PermanentError):
    """The invocation has too little time left to start terraform."""


class LambdaBudgetError(PermanentError):
    """A terraform command ran out of the invocation's budget and was stopped."""


def workspace_blob(enclave_id: str, partition_id: str) -> str:
    return f"iac-workspaces/{enclave_id}/{partition_id}.tar.gz"


class LambdaIac:
    def __init__(
        self,
        partition_iac: Callable[[], PartitionIac],
        blobs: BlobStore,
        *,
        min_remaining_s: float = 120.0,
        margin_s: float = 60.0,
    ) -> None:
        self._factory = partition_iac
        self._iac: PartitionIac | None = None
        self.blobs = blobs
        self.min_remaining_s = min_remaining_s
        self.margin_s = margin_s
        self._remaining_s: Callable[[], float] | None = None
        self._default_timeout_s: float | None = None

    @property
    def partition_iac(self) -> PartitionIac:
        """Core's runner, built on first use (it needs the API token)."""
        if self._iac is None:
            self._iac = self._factory()
            self._default_timeout_s = self._iac.timeout_s
        return self._iac

    @contextmanager
    def invocation(self, remaining_s: Callable[[], float]) -> Iterator[None]:
        """Terraform run inside the block is held to the invocation's time left."""
        self._remaining_s = remaining_s
        try:
            yield
        finally:
            self._remaining_s = None

    # -- the IacRunner port ----------------------------------------------------------------

    def apply(
        self,
        run_id: str | None,
        enclave_id: str,
        config: PartitionConfig,
        files: Mapping[str, bytes],
        inputs: Mapping[str, str],
        env: Mapping[str, str],
        *,
        update: bool,
    ) -> dict[str, str]:
        with self._budgeted(enclave_id, config.id, "apply") as iac:
            outputs = iac.apply(run_id, enclave_id, config, files, inputs, env, update=update)
        self._save_workspace(iac.workdir(enclave_id, config.id), enclave_id, config.id)
        return outputs

    def destroy(
        self,
        run_id: str | None,
        enclave_id: str,
        config: PartitionConfig | None,
        files: Mapping[str, bytes],
        env: Mapping[str, str],
    ) -> bool:
        if config is None:
            return False
        iac = self.partition_iac
        self._restore_workspace(iac.workdir(enclave_id, config.id), enclave_id, config.id)
        with self._budgeted(enclave_id, config.id, "destroy") as iac:
            destroyed = iac.destroy(run_id, enclave_id, config, files, env)
        if destroyed:
            self.blobs.delete(workspace_blob(enclave_id, config.id))
        return destroyed

    # -- the budget --------------------------------------------------------------------------

    @contextmanager
    def _budgeted(self, enclave_id: str, partition_id: str, command: str) -> Iterator[PartitionIac]:
        iac = self.partition_iac
        where = f"{enclave_id}/{partition_id}"
        if self._remaining_s is None:
            iac.timeout_s = self._default_timeout_s or iac.timeout_s
            yield iac
            return
        left = self._remaining_s()
        if left < self.min_remaining_s:
            raise NotEnoughTimeError(
                f"terraform {command} of {where} was not started: this Lambda invocation has "
                f"{left:.0f} s left and the IaC worker needs at least {self.min_remaining_s:.0f} s "
                "(NCLAV_IAC_MIN_REMAINING_S). Give the IaC function a 900 s timeout and a batch "
                f"size of 1; terraform that needs longer than Lambda's 15 minutes runs on the "
                f"long-running runtime: {ALTERNATIVE}"
            )
        budget = left - self.margin_s
        iac.timeout_s = budget
        started = time.time()
        try:
            yield iac
        except IacTimeoutError as exc:
            self._release_left_lock(iac, enclave_id, partition_id, started)
            logger.warning(
                "terraform stopped at the Lambda budget",
                extra={"enclave_id": enclave_id, "partition_id": partition_id, "budget_s": budget},
            )
            raise LambdaBudgetError(
                f"terraform {command} of {where} cannot finish within Lambda's 15 minutes: it "
                f"was stopped after {budget:.0f} s, this invocation's budget. Apply this "
                f"partition with the long-running runtime instead: {ALTERNATIVE} "
                "(no time limit on a step)"
            ) from exc

    def _release_left_lock(
        self, iac: PartitionIac, enclave_id: str, partition_id: str, started: float
    ) -> None:
        """Release the state lock of a terraform killed at the budget, if it left one.

        Under the partition mutex (no nclav terraform runs on the partition meanwhile), and
        only a lock taken by this sandbox since the step started, never someone else's.
        """
        store, key = iac.store, f"{enclave_id}/{partition_id}"
        owner = f"{iac.owner}:release-{int(started)}"
        if not store.acquire_partition(key, owner, iac.lease_s, iac.clock.now()):
            return
        try:
            held = store.get_lock(key)
            if held is not None and _taken_here_since(held.info, started):
                store.unlock(key, held.lock_id)
        finally:
            store.release_partition(key, owner)

    # -- workspaces --------------------------------------------------------------------------

    def _save_workspace(self, workdir: Path, enclave_id: str, partition_id: str) -> None:
        names = _manifest(workdir)
        if (workdir / LOCK_FILE).is_file():
            names.append(LOCK_FILE)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for name in sorted(set(names)):
                path = workdir / name
                if path.is_file() and not path.is_symlink():
                    archive.add(path, arcname=name, recursive=False)
        self.blobs.put(workspace_blob(enclave_id, partition_id), buffer.getvalue())

    def _restore_workspace(self, workdir: Path, enclave_id: str, partition_id: str) -> None:
        if (workdir / MANIFEST_FILE).is_file():
            return  # this sandbox applied it: the working directory is here
        try:
            data = self.blobs.get(workspace_blob(enclave_id, partition_id))
        except NotFoundError:
            return
        workdir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            # The "data" filter refuses absolute paths, '..', links and device files.
            archive.extractall(workdir, filter="data")


def _manifest(workdir: Path) -> list[str]:
    try:
        doc = json.loads((workdir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    files = doc.get("files") if isinstance(doc, dict) else None
    names = [f for f in files if isinstance(f, str)] if isinstance(files, list) else []
    return [MANIFEST_FILE, *names]


def terraform_who() -> str:
    """What terraform puts in a lock's ``Who`` when this process runs it: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    return f"{user}@{socket.gethostname()}"


def _taken_here_since(info: Mapping[str, object], started: float) -> bool:
    created = info.get("Created")
    if info.get("Who") != terraform_who() or not isinstance(created, str):
        return False
    since = datetime.fromtimestamp(int(started), UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return created[:19] >= since  # RFC 3339 in UTC sorts as it reads


__all__ = [
    "ALTERNATIVE",
    "LambdaBudgetError",
    "LambdaIac",
    "NotEnoughTimeError",
    "terraform_who",
    "workspace_blob",
]
