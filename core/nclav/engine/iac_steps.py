"""Terraform for one partition: workspace, IaC run record, streamed log, per-partition mutex.

The IaC run record exists from the moment terraform starts (status running); the combined log
is appended to the blob store line by line, so it is readable while the command runs.
Two terraform processes never run on one partition at once: a lease in the state store guards
each (enclave, partition) across processes; Terraform's own state lock is the last defence.
"""

from __future__ import annotations

import shutil
import threading
from collections import deque
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from nclav.errors import TemporaryError
from nclav.iac import HttpBackend, TerraformRunner, prepare_workspace, select_tool
from nclav.records import IacOperation, IacRun, IacStatus, iso_time, new_id

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

    from nclav.model import PartitionConfig
    from nclav.ports import BlobStore, Clock, StateStore

LOG_TAIL = 4000  # characters of log kept on the record itself


class PartitionIac:
    def __init__(
        self,
        store: StateStore,
        blobs: BlobStore,
        clock: Clock,
        workspaces: Path,
        *,
        api_base: str | None = None,
        token: str | None = None,
        timeout_s: float = 1800.0,
        owner: str = "local",
        lease_s: float = 60.0,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.clock = clock
        self.workspaces = workspaces
        self.api_base = api_base
        self.token = token
        self.timeout_s = timeout_s
        self.owner = owner
        # The per-partition mutex's lease; no longer than the engine's step lease, or a step
        # taken over after its worker died finds the partition still "busy" and gives up.
        self.lease_s = lease_s

    def workdir(self, enclave_id: str, partition_id: str) -> Path:
        return self.workspaces / enclave_id / partition_id

    def _backend(self, enclave_id: str, partition_id: str) -> HttpBackend | None:
        if self.api_base is None:
            return None  # state stays in the workspace (tests of the engine alone)
        return HttpBackend(self.api_base, enclave_id, partition_id, self.token or "")

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
        workdir = self.workdir(enclave_id, config.id)
        tool = select_tool(config.backend, config.terraform.tool if config.terraform else None)
        backend = self._backend(enclave_id, config.id)
        op = IacOperation.UPDATE if update else IacOperation.PROVISION
        with (
            self._exclusive(enclave_id, config.id),
            self._recorded(run_id, enclave_id, config.id, op) as log,
        ):
            prepare_workspace(
                workdir,
                files=files,
                source=config.terraform.source if config.terraform else None,
                enclave_id=enclave_id,
                partition_id=config.id,
                inputs=inputs,
                declared_outputs=config.declared_outputs,
                backend=backend,
            )
            runner = TerraformRunner(tool, timeout_s=self.timeout_s)
            return runner.apply(
                workdir, env=env, backend=backend, declared_outputs=config.declared_outputs, log=log
            )

    def destroy(
        self,
        run_id: str | None,
        enclave_id: str,
        config: PartitionConfig | None,
        files: Mapping[str, bytes],
        env: Mapping[str, str],
    ) -> bool:
        """Run ``terraform destroy`` for the partition; False when there is nothing to run.

        Without a workspace on this machine, and with state in the state store, it is rebuilt
        from ``files`` (the files the partition's last apply started with) and the inputs
        recorded with them. After a successful destroy the workspace goes, and the enclave's
        directory once it is empty.
        """
        partition_id = config.id if config else ""
        workdir = self.workdir(enclave_id, partition_id)
        if config is None:
            return False
        backend = self._backend(enclave_id, partition_id)
        if not workdir.is_dir() and not (
            files and backend and self.store.get_tf_state(f"{enclave_id}/{partition_id}")
        ):
            return False  # no state anywhere (an apply that failed before terraform ran)
        tool = select_tool(config.backend, config.terraform.tool if config.terraform else None)
        with (
            self._exclusive(enclave_id, partition_id),
            self._recorded(run_id, enclave_id, partition_id, IacOperation.TEARDOWN) as log,
        ):
            if not workdir.is_dir():
                prepare_workspace(
                    workdir,
                    files=files,
                    source=config.terraform.source if config.terraform else None,
                    enclave_id=enclave_id,
                    partition_id=partition_id,
                    inputs=self._started_inputs(enclave_id, partition_id),
                    declared_outputs=config.declared_outputs,
                    backend=backend,
                )
            TerraformRunner(tool, timeout_s=self.timeout_s).destroy(
                workdir, env=env, backend=backend, log=log
            )
        shutil.rmtree(workdir, ignore_errors=True)
        with suppress(OSError):
            workdir.parent.rmdir()  # only when no other partition's workspace is left
        return True

    def _started_inputs(self, enclave_id: str, partition_id: str) -> dict[str, str]:
        found = self.store.get_enclave(enclave_id)
        part = found[0].partitions.get(partition_id) if found else None
        return dict(part.started_inputs) if part else {}

    # -- helpers ---------------------------------------------------------------------------

    @contextmanager
    def _exclusive(self, enclave_id: str, partition_id: str) -> Iterator[None]:
        key, lease = f"{enclave_id}/{partition_id}", self.lease_s
        owner = f"{self.owner}:{new_id()}"  # one holder per call, even among a process's threads
        if not self.store.acquire_partition(key, owner, lease, self.clock.now()):
            raise TemporaryError(f"partition {key} is busy with another run", retry_after_s=5)
        stop = threading.Event()

        def renew() -> None:  # keep the lease alive while terraform runs
            while not stop.wait(lease / 3):
                self.store.acquire_partition(key, owner, lease, self.clock.now())

        renewer = threading.Thread(target=renew, daemon=True)
        renewer.start()
        try:
            self._recover_abandoned(enclave_id, partition_id)
            yield
        finally:
            stop.set()
            renewer.join()
            self.store.release_partition(key, owner)

    def _recover_abandoned(self, enclave_id: str, partition_id: str) -> None:
        """Clean up after a terraform whose nclav process died (kill -9, power loss).

        Called holding the partition mutex, so an IaC run still marked running belongs to a
        process that no longer holds it: mark it failed and force-release the Terraform state
        lock it left behind, or every later apply would fail with "state already locked".
        A lock with no abandoned run (someone's manual ``terraform`` session) is left alone.
        """
        stale = [
            r
            for r in self.store.list_iac_runs(enclave_id, partition_id)
            if r.status == IacStatus.RUNNING
        ]
        if not stale:
            return
        note = "abandoned: the nclav process running it stopped before it finished"
        for run in stale:
            if run.log_blob:
                self.blobs.append(run.log_blob, f"{note}\n".encode())
            done = {
                "status": IacStatus.FAILED,
                "finished_at": iso_time(self.clock.now()),
                "log": f"{run.log}\n{note}"[-LOG_TAIL:] if run.log else note,
            }
            self.store.put_iac_run(run.model_copy(update=done))
        self.store.unlock(f"{enclave_id}/{partition_id}", None)

    @contextmanager
    def _recorded(
        self, run_id: str | None, enc: str, part: str, op: IacOperation
    ) -> Iterator[Callable[[str], None]]:
        record = IacRun(
            enclave_id=enc,
            partition_id=part,
            operation=op,
            started_at=iso_time(self.clock.now()),
            reconcile_run_id=run_id,
        )
        blob = f"iac-logs/{enc}/{part}/{record.id}.log"
        record = record.model_copy(update={"log_blob": blob})
        tail: deque[str] = deque(maxlen=200)
        self.blobs.put(blob, b"")
        self.store.put_iac_run(record)

        def log(line: str) -> None:
            self.blobs.append(blob, (line + "\n").encode())
            tail.append(line)

        status, exit_code = IacStatus.SUCCEEDED, 0
        try:
            yield log
        except BaseException as exc:
            code = getattr(exc, "exit_code", None)
            status, exit_code = IacStatus.FAILED, code if isinstance(code, int) else 1
            raise
        finally:
            done = {
                "status": status,
                "finished_at": iso_time(self.clock.now()),
                "exit_code": exit_code,
                "log": "\n".join(tail)[-LOG_TAIL:],
            }
            self.store.put_iac_run(record.model_copy(update=done))


__all__ = ["PartitionIac"]
