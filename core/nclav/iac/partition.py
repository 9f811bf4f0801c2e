"""Terraform for one partition: the ``IacRunner`` every runtime gives the engine.

``PartitionIac`` puts together, for each apply or destroy step:

* **a per-partition mutex**: a lease in the state store guards each (enclave, partition)
  across processes, so two terraform processes never run on one partition at once
  (Terraform's own state lock is the last defence);
* **recovery** of what a dead nclav process left, under that mutex and before terraform runs:
  its IaC run still marked running is marked failed, what is left of its process group on this
  machine is stopped and waited for (``nclav.iac.procs``), and the state lock it took is broken;
* **an IaC run record** from the moment terraform starts, with the process group of the
  command that runs partition code, and **the log** shipped in chunks (``nclav.iac.logs``);
* **a scoped state credential**: terraform reaches its state through this process's loopback
  backend (``nclav.iac.loopback``) with a token valid for this partition during this run only,
  in a scrubbed environment (``nclav.iac.runner``);
* **one deadline per step** and **workspaces kept in the blob store** (``nclav.iac.sandbox``):
  ``time_limited`` holds the steps of a sandbox with a hard time limit to the time it has left.

**Stale state locks: one rule.** The loopback tags every lock with the IaC run whose terraform
took it. A lock is broken only by nclav holding the partition mutex, and only when the run that
took it is over: at the end of each run that failed (a terraform stopped at its deadline may
leave its lock; one that exits on its own releases it) and when recovery finds an abandoned
run. A lock without nclav's tag (an operator's own terraform session) is never broken.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections import deque
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from nclav.errors import TemporaryError
from nclav.iac import procs
from nclav.iac.logs import LogShipper, append_chunk, log_prefix
from nclav.iac.runner import (
    REFRESH_PLAN_FILE,
    Deadline,
    IacCommandError,
    IacTimeoutError,
    RefreshPlan,
    TerraformRunner,
)
from nclav.iac.sandbox import TimeLimit, restore_workspace, save_workspace, workspace_blob
from nclav.iac.state_backend import TerraformStateBackend
from nclav.iac.workspace import MANIFEST_FILE, prepare_workspace, select_tool
from nclav.model import RetrySettings
from nclav.records import IacOperation, IacRun, IacStatus, iso_time, new_id

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator, Mapping
    from pathlib import Path

    from nclav.iac.loopback import LoopbackStateServer
    from nclav.model import PartitionConfig
    from nclav.ports import BlobStore, Clock, StateStore

LOG_TAIL = 4000  # characters of log kept on the record itself
_CHECK_POLL_S = 0.1  # how often an apply waiting for a drift check asks for the mutex again
_UNRECORDED_WAIT_S = 2.0  # how long it waits for a holder that has not recorded its run
TRANSIENT_RETRY_S = 30.0  # a transient terraform failure is tried again this much later
ABANDONED = "abandoned: the nclav process running it stopped before it finished"


@dataclass
class _Recording:
    """The IaC run being recorded: its log callback and the current record."""

    iac: PartitionIac
    record: IacRun
    shipper: LogShipper
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=200))

    @property
    def id(self) -> str:
        return self.record.id

    def log(self, line: str) -> None:
        self.shipper.write(line)
        self.tail.append(line)

    def started_group(self, pgid: int) -> None:
        """Record the process group of the command that runs partition code."""
        host, boot = procs.machine()
        self.record = self.record.model_copy(update={"pgid": pgid, "host": host, "boot_id": boot})
        self.iac.store.put_iac_run(self.record)


class PartitionIac:
    """``timeout_s`` is a step's (init + apply + output), not a command's.

    ``time_limit`` words and sizes the limit of a sandbox runtime; it applies inside
    ``time_limited``. ``owner`` names this worker in the partition mutex.
    """

    def __init__(
        self,
        store: StateStore,
        blobs: BlobStore,
        clock: Clock,
        workspaces: Path,
        *,
        timeout_s: float = 1800.0,
        owner: str = "local",
        lease_s: float = 60.0,
        time_limit: TimeLimit | None = None,
        kill_grace_s: float = 5.0,
        check_timeout_s: float = 600.0,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.clock = clock
        self.workspaces = workspaces
        self.timeout_s = timeout_s
        self.owner = owner
        # The per-partition mutex's lease; no longer than the engine's step lease, or a step
        # taken over after its worker died finds the partition still "busy" and gives up.
        self.lease_s = lease_s
        self.time_limit = time_limit or TimeLimit()
        self.kill_grace_s = kill_grace_s
        # A drift check's deadline, and so the longest an apply waits for one to finish.
        self.check_timeout_s = check_timeout_s
        self.state_backend = TerraformStateBackend(store, blobs, clock)
        self._loopback: LoopbackStateServer | None = None
        self._loopback_lock = threading.Lock()
        self._local = threading.local()

    @property
    def loopback(self) -> LoopbackStateServer:
        """The loopback state backend, made on first use: an API process, which composes
        this runner but never runs terraform, does not import ``http.server`` for it."""
        with self._loopback_lock:
            if self._loopback is None:
                from nclav.iac.loopback import LoopbackStateServer

                self._loopback = LoopbackStateServer(self.state_backend)
            return self._loopback

    def workdir(self, enclave_id: str, partition_id: str) -> Path:
        return self.workspaces / enclave_id / partition_id

    @contextmanager
    def time_limited(self, remaining_s: Callable[[], float]) -> Iterator[None]:
        """Steps run in the block (on this thread) are held to ``remaining_s()`` seconds."""
        self._local.remaining_s = remaining_s
        try:
            yield
        finally:
            self._local.remaining_s = None

    def close(self) -> None:
        """Stop the loopback state backend (a run in flight loses its state backend)."""
        with self._loopback_lock:
            loopback = self._loopback
        if loopback is not None:
            loopback.close()

    # -- the IacRunner port ------------------------------------------------------------------

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
        pid = config.id
        workdir = self.workdir(enclave_id, pid)
        tool = select_tool(config.backend, config.terraform.tool if config.terraform else None)
        deadline = self._deadline("apply", enclave_id, pid)
        op = IacOperation.UPDATE if update else IacOperation.PROVISION
        with (
            self._exclusive(enclave_id, pid),
            self._recorded(run_id, enclave_id, pid, op) as rec,
            self._limited("apply", enclave_id, pid, deadline),
            self.loopback.grant(enclave_id, pid, rec.id) as backend,
        ):
            try:
                prepare_workspace(
                    workdir,
                    files=files,
                    source=config.terraform.source if config.terraform else None,
                    enclave_id=enclave_id,
                    partition_id=pid,
                    inputs=inputs,
                    declared_outputs=config.declared_outputs,
                    backend=backend,
                )
                try:
                    return self._runner(tool).apply(
                        workdir,
                        env=env,
                        backend=backend,
                        declared_outputs=config.declared_outputs,
                        log=rec.log,
                        deadline=deadline,
                        on_start=rec.started_group,
                    )
                except IacCommandError as exc:
                    raise self._transient(exc, config, run_id, enclave_id, pid) from exc
                finally:
                    # Succeeded or not: a destroy elsewhere needs these files and inputs.
                    save_workspace(self.blobs, workdir, enclave_id, pid)
            except BaseException:
                # A terraform that exits on its own releases its lock; one that was stopped
                # (its deadline, a crash of the command) may not have.
                self._break_stale_lock(enclave_id, pid, {rec.id})
                raise

    def destroy(
        self,
        run_id: str | None,
        enclave_id: str,
        config: PartitionConfig | None,
        files: Mapping[str, bytes],
        env: Mapping[str, str],
    ) -> bool:
        """``terraform destroy`` in the partition's workspace; False when there is none.

        The workspace is this machine's working directory, else the one saved after the last
        apply, else rebuilt from ``files`` and the inputs recorded when the last apply started.
        After a successful destroy the working directory and the saved workspace are removed.
        """
        if config is None:
            return False
        pid = config.id
        workdir = self.workdir(enclave_id, pid)
        tool = select_tool(config.backend, config.terraform.tool if config.terraform else None)
        deadline = self._deadline("destroy", enclave_id, pid)
        with self._exclusive(enclave_id, pid):
            here = (workdir / MANIFEST_FILE).is_file() or restore_workspace(
                self.blobs, workdir, enclave_id, pid
            )
            if not here and not (files and self.store.get_tf_state(f"{enclave_id}/{pid}")):
                # Never prepared anywhere with state to show for it (an apply that failed
                # before terraform ran), or nothing to rebuild the workspace from.
                return False
            with (
                self._recorded(run_id, enclave_id, pid, IacOperation.TEARDOWN) as rec,
                self._limited("destroy", enclave_id, pid, deadline),
                self.loopback.grant(enclave_id, pid, rec.id) as backend,
            ):
                try:
                    if not (workdir / MANIFEST_FILE).is_file() and files:
                        prepare_workspace(
                            workdir,
                            files=files,
                            source=config.terraform.source if config.terraform else None,
                            enclave_id=enclave_id,
                            partition_id=pid,
                            inputs=self._started_inputs(enclave_id, pid),
                            declared_outputs=config.declared_outputs,
                            backend=backend,
                        )
                    self._runner(tool).destroy(
                        workdir,
                        env=env,
                        backend=backend,
                        log=rec.log,
                        deadline=deadline,
                        on_start=rec.started_group,
                    )
                except IacCommandError as exc:
                    self._break_stale_lock(enclave_id, pid, {rec.id})
                    raise self._transient(exc, config, run_id, enclave_id, pid) from exc
                except BaseException:
                    self._break_stale_lock(enclave_id, pid, {rec.id})
                    raise
            shutil.rmtree(workdir, ignore_errors=True)
            with suppress(OSError):
                workdir.parent.rmdir()  # only when no other partition's workspace is left
            self.blobs.delete(workspace_blob(enclave_id, pid))
        return True

    def drift_check(
        self,
        enclave_id: str,
        config: PartitionConfig,
        files: Mapping[str, bytes],
        inputs: Mapping[str, str],
        env: Mapping[str, str],
    ) -> tuple[str, RefreshPlan]:
        """A read-only ``plan -refresh-only`` of the configuration last applied.

        ``files`` and ``inputs`` are the ones the partition's last apply started with (its
        recorded bundle and ``started_inputs``), never the newest tree: a plan of a newer tree
        mixes "not applied yet" with real drift. Recorded as an IaC run of operation
        ``drift_check``; returns its id and the plan.

        A check never waits for the partition: when an apply (or another check) holds the
        mutex it raises ``TemporaryError`` at once. An apply that finds a check holding it
        waits for it instead (``_exclusive``), at most ``check_timeout_s``.
        """
        pid = config.id
        workdir = self.workdir(enclave_id, pid)
        tool = select_tool(config.backend, config.terraform.tool if config.terraform else None)
        # The step's deadline (inside a sandbox: its time left), no later than a check's own.
        step = self._deadline("plan", enclave_id, pid)
        deadline = Deadline.after(min(step.left(), self.check_timeout_s))
        with (
            self._exclusive(enclave_id, pid, wait_for_checks=False),
            self._recorded(None, enclave_id, pid, IacOperation.DRIFT_CHECK) as rec,
            self.loopback.grant(enclave_id, pid, rec.id) as backend,
        ):
            try:
                prepare_workspace(
                    workdir,
                    files=files,
                    source=config.terraform.source if config.terraform else None,
                    enclave_id=enclave_id,
                    partition_id=pid,
                    inputs=inputs,
                    declared_outputs=config.declared_outputs,
                    backend=backend,
                )
                plan = self._runner(tool).plan_refresh_only(
                    workdir,
                    env=env,
                    backend=backend,
                    log=rec.log,
                    deadline=deadline,
                    on_start=rec.started_group,
                )
            finally:
                (workdir / REFRESH_PLAN_FILE).unlink(missing_ok=True)
            return rec.id, plan

    def _started_inputs(self, enclave_id: str, partition_id: str) -> dict[str, str]:
        """The inputs the partition's last apply started with (recorded in its state)."""
        found = self.store.get_enclave(enclave_id)
        part = found[0].partitions.get(partition_id) if found else None
        return dict(part.started_inputs) if part else {}

    # -- helpers ---------------------------------------------------------------------------

    def _transient(
        self,
        exc: IacCommandError,
        config: PartitionConfig,
        run_id: str | None,
        enclave_id: str,
        partition_id: str,
    ) -> Exception:
        """A failure whose output matches the partition's ``retry.patterns`` (throttling,
        5xx, dropped connections by default) becomes a TemporaryError, so the step is tried
        again, until ``retry.max_attempts`` terraform runs of this reconcile run failed;
        anything else, and a timeout, stays permanent."""
        retry = config.retry or RetrySettings()
        if isinstance(exc, IacTimeoutError) or retry.max_attempts <= 1:
            return exc
        matched = next(
            (p for p in retry.patterns if re.search(p, exc.log_tail, re.IGNORECASE)), None
        )
        if matched is None:
            return exc
        earlier = sum(
            1
            for r in self.store.list_iac_runs(enclave_id, partition_id)
            if r.reconcile_run_id == run_id and r.status == IacStatus.FAILED
        )
        attempt = earlier + 1  # this one is recorded as failed when the exception leaves
        if attempt >= retry.max_attempts:
            return exc
        return TemporaryError(
            f"{exc.summary} (transient: the output matches {matched!r}; attempt {attempt} of "
            f"{retry.max_attempts})\n{exc.log_tail}",
            retry_after_s=TRANSIENT_RETRY_S,
        )

    def _runner(self, tool: str) -> TerraformRunner:
        return TerraformRunner(tool, timeout_s=self.timeout_s, kill_grace_s=self.kill_grace_s)

    def _deadline(self, command: str, enclave_id: str, partition_id: str) -> Deadline:
        """The step's deadline; refuses to start with less than the sandbox's minimum left."""
        remaining = getattr(self._local, "remaining_s", None)
        if remaining is None:
            return Deadline.after(self.timeout_s)
        left, limit = remaining(), self.time_limit
        if left < limit.min_remaining_s:
            raise limit.not_started(command, f"{enclave_id}/{partition_id}", left)
        return Deadline.after(min(self.timeout_s, left - limit.margin_s))

    @contextmanager
    def _limited(
        self, command: str, enclave_id: str, partition_id: str, deadline: Deadline
    ) -> Iterator[None]:
        """Inside a sandbox, a terraform stopped at the deadline fails in the sandbox's words."""
        try:
            yield
        except IacTimeoutError as exc:
            if getattr(self._local, "remaining_s", None) is None:
                raise
            where = f"{enclave_id}/{partition_id}"
            raise self.time_limit.stopped(command, where, deadline.budget_s) from exc

    @contextmanager
    def _exclusive(
        self, enclave_id: str, partition_id: str, *, wait_for_checks: bool = True
    ) -> Iterator[None]:
        key, lease = f"{enclave_id}/{partition_id}", self.lease_s
        owner = f"{self.owner}:{new_id()}"  # one holder per call, even among a process's threads
        if not self._acquire(key, owner, wait_for_checks=wait_for_checks):
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

    def _acquire(self, key: str, owner: str, *, wait_for_checks: bool) -> bool:
        """Take the partition mutex; while a drift check holds it, wait for it (a check yields
        to an apply: it is short and read-only, so the apply is delayed by at most one check,
        instead of a retry after a backoff). Any other holder: False at once."""
        enclave_id, partition_id = key.split("/", 1)
        give_up = time.monotonic() + self.check_timeout_s
        unrecorded: float | None = None  # since when the holder has shown no running record
        while not self.store.acquire_partition(key, owner, self.lease_s, self.clock.now()):
            now = time.monotonic()
            if not wait_for_checks or now > give_up:
                return False
            newest = self.store.list_iac_runs(enclave_id, partition_id, limit=1)
            running = newest[0] if newest and newest[0].status == IacStatus.RUNNING else None
            if running is not None and running.operation != IacOperation.DRIFT_CHECK:
                return False  # an apply or destroy: the step retries later, as before
            if running is None:
                # The holder has not recorded its run yet (a moment), or holds the mutex
                # without terraform running: do not wait long for that.
                unrecorded = unrecorded or now
                if now - unrecorded > _UNRECORDED_WAIT_S:
                    return False
            else:
                unrecorded = None
            time.sleep(_CHECK_POLL_S)
        return True

    def _recover_abandoned(self, enclave_id: str, partition_id: str) -> None:
        """Clean up after a terraform whose nclav process died (kill -9, power loss).

        Called holding the partition mutex, so an IaC run still marked running belongs to a
        process that no longer holds it: what is left of its process group on this machine is
        stopped first (the partition is about to be applied again), then the run is marked
        failed and the state lock it took is broken.
        """
        stale = [
            r
            for r in self.store.list_iac_runs(enclave_id, partition_id)
            if r.status == IacStatus.RUNNING
        ]
        for run in stale:
            note = f"{ABANDONED}; {self._stop_leftovers(run)}"
            if run.log_chunks:
                append_chunk(self.blobs, run.log_chunks, f"{note}\n".encode())
            elif run.log_blob:
                self.blobs.append(run.log_blob, f"{note}\n".encode())
            done = {
                "status": IacStatus.FAILED,
                "finished_at": iso_time(self.clock.now()),
                "log": f"{run.log}\n{note}"[-LOG_TAIL:] if run.log else note,
            }
            self.store.put_iac_run(run.model_copy(update=done))
        if stale:
            self._break_stale_lock(enclave_id, partition_id, {r.id for r in stale})

    def _stop_leftovers(self, run: IacRun) -> str:
        """Stop what is left of ``run``'s process group here; says what was done."""
        if run.pgid is None:
            return "no terraform process group was recorded"
        host, boot = procs.machine()
        if boot is None or (run.host, run.boot_id) != (host, boot):
            return (
                f"its process group {run.pgid} ran on {run.host or 'an unknown machine'}, "
                "not in this machine's current boot: nothing to stop here"
            )
        since = datetime.fromisoformat(run.started_at.replace("Z", "+00:00")).timestamp() - 2
        stopped = procs.stop_group(run.pgid, since, grace_s=self.kill_grace_s)
        return f"{stopped} leftover process(es) of group {run.pgid} stopped"

    def _break_stale_lock(self, enclave_id: str, partition_id: str, runs: Collection[str]) -> None:
        """Release the state lock if one of ``runs`` (all over) took it; see the module doc."""
        from nclav.iac.loopback import LOCK_TAG

        key = f"{enclave_id}/{partition_id}"
        held = self.store.get_lock(key)
        if held is not None and held.info.get(LOCK_TAG) in runs:
            self.store.unlock(key, held.lock_id)

    @contextmanager
    def _recorded(
        self, run_id: str | None, enc: str, part: str, op: IacOperation
    ) -> Iterator[_Recording]:
        record = IacRun(
            enclave_id=enc,
            partition_id=part,
            operation=op,
            started_at=iso_time(self.clock.now()),
            reconcile_run_id=run_id,
        )
        prefix = log_prefix(enc, part, record.id)
        record = record.model_copy(update={"log_chunks": prefix})
        self.store.put_iac_run(record)
        rec = _Recording(self, record, LogShipper(self.blobs, prefix))
        status, exit_code = IacStatus.SUCCEEDED, 0
        try:
            yield rec
        except BaseException as exc:
            code = getattr(exc, "exit_code", None)
            status, exit_code = IacStatus.FAILED, code if isinstance(code, int) else 1
            raise
        finally:
            size = rec.shipper.close()
            done = {
                "status": status,
                "finished_at": iso_time(self.clock.now()),
                "exit_code": exit_code,
                "log": "\n".join(rec.tail)[-LOG_TAIL:],
                "log_size": size,
            }
            self.store.put_iac_run(rec.record.model_copy(update=done))


__all__ = ["ABANDONED", "LOG_TAIL", "TRANSIENT_RETRY_S", "PartitionIac"]
