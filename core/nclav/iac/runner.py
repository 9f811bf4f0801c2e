"""Running terraform/tofu in a prepared workspace.

Each command runs with stdin on /dev/null in its own process group. Its output is streamed,
line by line and as it arrives, to a ``log`` callback (always called on the caller's thread)
under a ``=== <tool> <command> ===`` header. A command that outlives its timeout has its whole
process group terminated (SIGTERM, then SIGKILL after a grace period).

Nothing from the environment is ever logged, and output values are never logged either:
``output -json`` is read from stdout alone and only its stderr reaches the log.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from nclav.errors import PermanentError

if TYPE_CHECKING:
    from nclav.iac.workspace import HttpBackend

LOG_TAIL_LINES = 40
_PUMP_DRAIN_S = 2.0

Log = Callable[[str], None]


class IacCommandError(PermanentError):
    """A terraform command could not start, failed, or timed out.

    ``command`` is e.g. ``"terraform apply"``; ``exit_code`` is None when the process never
    started or was stopped for exceeding its timeout; ``log_tail`` holds the command's last
    output lines, which the message repeats after its first line.
    """

    def __init__(self, summary: str, *, command: str, exit_code: int | None, log_tail: str):
        message = f"{summary}\n{log_tail}" if log_tail else summary
        super().__init__(message)
        self.summary = summary
        self.command = command
        self.exit_code = exit_code
        self.log_tail = log_tail


class IacTimeoutError(IacCommandError):
    """A terraform command ran longer than the runner's timeout and was killed."""


class IacOutputError(PermanentError):
    """Terraform's outputs could not be read or lack a declared output."""

    def __init__(
        self, message: str, *, missing: Sequence[str] = (), produced: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
        self.produced = tuple(produced)


@dataclass(frozen=True, slots=True)
class _Result:
    exit_code: int
    stdout: bytes


class TerraformRunner:
    """Runs ``tool`` (a terraform or tofu binary) in workspaces built by ``prepare_workspace``.

    ``base_env`` is the environment every command starts from (default: this process's
    environment at the time of the call).
    """

    def __init__(
        self,
        tool: str,
        *,
        timeout_s: float = 1800,
        base_env: Mapping[str, str] | None = None,
        kill_grace_s: float = 5.0,
    ) -> None:
        self.tool = tool
        self.timeout_s = timeout_s
        self.kill_grace_s = kill_grace_s
        self._base_env = None if base_env is None else dict(base_env)
        self._name = Path(tool).name or tool

    def apply(
        self,
        workdir: Path,
        *,
        env: Mapping[str, str],
        backend: HttpBackend | None,
        declared_outputs: Sequence[str],
        log: Log,
    ) -> dict[str, str]:
        """init + apply, then return the declared outputs as strings.

        Strings are kept as they are; any other value is stored JSON-encoded.
        """
        full_env = self._env(env, backend)
        self._init(workdir, full_env, backend, log)
        self._run(workdir, ["apply", "-auto-approve", "-input=false", "-no-color"], full_env, log)
        result = self._run(workdir, ["output", "-json", "-no-color"], full_env, log, stdout=True)
        return _declared_outputs(result.stdout, declared_outputs, self._name)

    def destroy(
        self,
        workdir: Path,
        *,
        env: Mapping[str, str],
        backend: HttpBackend | None,
        log: Log,
    ) -> None:
        """destroy, running init first when the workspace has not been initialised."""
        if not workdir.is_dir():
            raise PermanentError(f"workspace {workdir} does not exist; prepare it first")
        full_env = self._env(env, backend)
        if not (workdir / ".terraform").is_dir():
            self._init(workdir, full_env, backend, log)
        self._run(workdir, ["destroy", "-auto-approve", "-input=false", "-no-color"], full_env, log)

    # -- internals -------------------------------------------------------------------------

    def _env(self, env: Mapping[str, str], backend: HttpBackend | None) -> dict[str, str]:
        merged = dict(os.environ if self._base_env is None else self._base_env)
        merged["TF_IN_AUTOMATION"] = "1"
        merged["TF_INPUT"] = "0"
        if backend is not None:
            merged.update(backend.env())
        merged.update(env)
        return merged

    def _init(
        self, workdir: Path, env: Mapping[str, str], backend: HttpBackend | None, log: Log
    ) -> None:
        args = ["init", "-input=false", "-no-color"]
        if backend is not None:
            args += ["-reconfigure", *backend.backend_config_args()]
        self._run(workdir, args, env, log)

    def _run(
        self,
        workdir: Path,
        args: list[str],
        env: Mapping[str, str],
        log: Log,
        *,
        stdout: bool = False,
    ) -> _Result:
        """Run one command; with ``stdout`` its stdout is returned and only stderr is logged."""
        command = f"{self._name} {args[0]}"
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)

        def emit(line: str) -> None:
            tail.append(line)
            log(line)

        log(f"=== {command} ===")
        try:
            proc = subprocess.Popen(
                [self.tool, *args],
                cwd=workdir,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if stdout else subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            error = f"{command}: could not start {self.tool!r}: {exc}"
            log(error)
            raise IacCommandError(error, command=command, exit_code=None, log_tail="") from exc

        lines: queue.Queue[str | None] = queue.Queue()
        captured: list[bytes] = []
        assert proc.stdout is not None
        logged = proc.stderr if stdout else proc.stdout
        assert logged is not None
        threads = [threading.Thread(target=_pump, args=(logged, lines), daemon=True)]
        if stdout:
            threads.append(
                threading.Thread(target=_collect, args=(proc.stdout, captured), daemon=True)
            )
        for thread in threads:
            thread.start()

        deadline = time.monotonic() + self.timeout_s
        try:
            finished = _stream(lines, deadline, emit) and _wait(proc, threads, deadline)
        except BaseException:
            self._kill(proc)
            raise
        if not finished:
            self._kill(proc)
            for thread in threads:
                thread.join(_PUMP_DRAIN_S)
            _drain(lines, emit)
            error = f"{command} timed out after {_duration(self.timeout_s)}"
            log(error)
            raise IacTimeoutError(error, command=command, exit_code=None, log_tail="\n".join(tail))
        code = proc.returncode
        if code != 0:
            if code < 0:
                error = f"{command} was killed by signal {-code}"
            else:
                error = f"{command} exited with code {code}"
            log(error)
            raise IacCommandError(error, command=command, exit_code=code, log_tail="\n".join(tail))
        return _Result(exit_code=code, stdout=b"".join(captured))

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        """Terminate the process group, then kill whatever is left after the grace period."""
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=self.kill_grace_s)
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _pump(stream: IO[bytes], lines: queue.Queue[str | None]) -> None:
    try:
        for raw in iter(stream.readline, b""):
            lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)
        stream.close()


def _collect(stream: IO[bytes], sink: list[bytes]) -> None:
    try:
        sink.append(stream.read())
    except (OSError, ValueError):
        pass
    finally:
        stream.close()


def _stream(lines: queue.Queue[str | None], deadline: float, emit: Log) -> bool:
    """Hand lines to ``emit`` until the stream ends (True) or the deadline passes (False)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            line = lines.get(timeout=min(remaining, 0.25))
        except queue.Empty:
            continue
        if line is None:
            return True
        emit(line)


def _wait(proc: subprocess.Popen[bytes], threads: list[threading.Thread], deadline: float) -> bool:
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:
        return False
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
        if thread.is_alive():
            return False
    return True


def _drain(lines: queue.Queue[str | None], emit: Log) -> None:
    while True:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            return
        if line is not None:
            emit(line)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute" if minutes == 1 else f"{minutes} minutes"
    return f"{seconds:g} s"


def _declared_outputs(stdout: bytes, declared: Sequence[str], tool: str) -> dict[str, str]:
    try:
        doc = json.loads(stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IacOutputError(f"could not parse {tool} output -json: {exc}") from exc
    if not isinstance(doc, dict):
        raise IacOutputError(f"{tool} output -json did not return a JSON object")
    values: dict[str, object] = {}
    for key, entry in doc.items():
        if isinstance(entry, dict) and entry.get("value") is not None:
            values[key] = entry["value"]
    missing = [key for key in dict.fromkeys(declared) if key not in values]
    if missing:
        produced = sorted(values)
        raise IacOutputError(
            f"declared outputs missing from {tool} output: {', '.join(missing)} "
            f"(produced: {', '.join(produced) if produced else 'none'})",
            missing=missing,
            produced=produced,
        )
    result: dict[str, str] = {}
    for key in declared:
        value = values[key]
        result[key] = (
            value
            if isinstance(value, str)
            else json.dumps(value, sort_keys=True, separators=(",", ":"))
        )
    return result


__all__ = [
    "LOG_TAIL_LINES",
    "IacCommandError",
    "IacOutputError",
    "IacTimeoutError",
    "TerraformRunner",
]
