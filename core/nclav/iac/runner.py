"""Running terraform/tofu in a prepared workspace.

Each command runs with stdin on /dev/null in its own process group. Its output is streamed,
line by line and as it arrives, to a ``log`` callback (always called on the caller's thread)
under a ``=== <tool> <command> ===`` header.

**One deadline per step.** ``apply`` (init, apply, output) and ``destroy`` (init, destroy) run
under one ``Deadline`` for all their commands, checked before each command starts: a command
gets only the time the step has left, and the process group of one that outlives it is
terminated (SIGTERM, then SIGKILL after ``kill_grace_s``). So a step ends by its deadline plus
the grace, however many commands it runs. Without a deadline the runner's ``timeout_s`` is
the step's.

**A scrubbed environment.** Terraform, its providers and partition code (``local-exec``) get
only: the variables in ``PASSED_THROUGH`` that this process has (PATH, locale, temp dir, TLS
and proxy settings, terraform's plugin cache and CLI config), ``HOME`` set to a private
directory of the workspace (so nobody's ``~/.aws`` or ``~/.terraformrc`` is read),
``TF_IN_AUTOMATION``/``TF_INPUT``, the state backend's credential (``TF_HTTP_PASSWORD``, valid
for this partition's state during this run only) and the ``env`` the caller passes (the
partition's own cloud credentials from the driver). Nothing else: no ``NCLAV_*``, no API
token, no cloud credentials of the process running nclav.

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
HOME_DIR = ".nclav-home"  # the private HOME of terraform, inside the workspace

# What terraform gets from this process's environment (when set); everything else is dropped.
PASSED_THROUGH = (
    "PATH",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "TF_PLUGIN_CACHE_DIR",
    "TF_PLUGIN_CACHE_MAY_BREAK_DEPENDENCY_LOCK_FILE",
    "TF_CLI_CONFIG_FILE",
)
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

Log = Callable[[str], None]
OnStart = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a step must be over: ``at`` in ``time.monotonic()`` seconds; ``budget_s`` for words."""

    at: float
    budget_s: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def left(self) -> float:
        return self.at - time.monotonic()


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
    """The step's deadline passed: a command was killed, or not started (``exit_code`` None)."""


class IacOutputError(PermanentError):
    """Terraform's outputs could not be read or lack a declared output."""

    def __init__(
        self, message: str, *, missing: Sequence[str] = (), produced: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
        self.produced = tuple(produced)


REFRESH_PLAN_FILE = "drift.tfplan"


@dataclass(frozen=True, slots=True)
class RefreshPlan:
    """A refresh-only plan: its exit code (0 nothing, 2 changes), ``show -json`` and text."""

    exit_code: int
    plan: dict[str, object]
    text: str


@dataclass(frozen=True, slots=True)
class _Result:
    exit_code: int
    stdout: bytes


class TerraformRunner:
    """Runs ``tool`` (a terraform or tofu binary) in workspaces built by ``prepare_workspace``.

    ``base_env`` is where the ``PASSED_THROUGH`` variables are taken from (default: this
    process's environment at the time of the call).
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
        deadline: Deadline | None = None,
        on_start: OnStart | None = None,
    ) -> dict[str, str]:
        """init + apply, then return the declared outputs as strings.

        Strings are kept as they are; any other value is stored JSON-encoded. All three
        commands share ``deadline`` (default: ``timeout_s`` from now); ``on_start`` gets the
        process group id of the apply command (the one that runs partition code).
        """
        deadline = deadline or Deadline.after(self.timeout_s)
        full_env = self._env(workdir, env, backend)
        self._init(workdir, full_env, backend, log, deadline)
        apply = ["apply", "-auto-approve", "-input=false", "-no-color"]
        self._run(workdir, apply, full_env, log, deadline, on_start=on_start)
        output = ["output", "-json", "-no-color"]
        result = self._run(workdir, output, full_env, log, deadline, stdout=True)
        return _declared_outputs(result.stdout, declared_outputs, self._name)

    def destroy(
        self,
        workdir: Path,
        *,
        env: Mapping[str, str],
        backend: HttpBackend | None,
        log: Log,
        deadline: Deadline | None = None,
        on_start: OnStart | None = None,
    ) -> None:
        """destroy, running init first when the workspace has not been initialised.

        With a backend, init always runs: its address (a loopback port) changes between runs.
        """
        if not workdir.is_dir():
            raise PermanentError(f"workspace {workdir} does not exist; prepare it first")
        deadline = deadline or Deadline.after(self.timeout_s)
        full_env = self._env(workdir, env, backend)
        if backend is not None or not (workdir / ".terraform").is_dir():
            self._init(workdir, full_env, backend, log, deadline)
        destroy = ["destroy", "-auto-approve", "-input=false", "-no-color"]
        self._run(workdir, destroy, full_env, log, deadline, on_start=on_start)

    def plan_refresh_only(
        self,
        workdir: Path,
        *,
        env: Mapping[str, str],
        backend: HttpBackend | None,
        log: Log,
        deadline: Deadline | None = None,
        on_start: OnStart | None = None,
    ) -> RefreshPlan:
        """init, then ``plan -refresh-only -detailed-exitcode -lock=false`` into a plan file,
        then ``show -json`` and ``show`` of it: what changed outside Terraform.

        Read-only: a plan never writes state, and ``-lock=false`` keeps the check from taking
        the state lock an apply needs. Exit code 2 (changes found) is not a failure here.
        """
        deadline = deadline or Deadline.after(self.timeout_s)
        full_env = self._env(workdir, env, backend)
        self._init(workdir, full_env, backend, log, deadline)
        plan = [
            "plan",
            "-refresh-only",
            "-detailed-exitcode",
            "-lock=false",
            "-input=false",
            "-no-color",
            f"-out={REFRESH_PLAN_FILE}",
        ]
        planned = self._run(workdir, plan, full_env, log, deadline, on_start=on_start, ok=(0, 2))
        show = ["show", "-json", "-no-color", REFRESH_PLAN_FILE]
        doc = self._run(workdir, show, full_env, log, deadline, stdout=True).stdout
        text = ["show", "-no-color", REFRESH_PLAN_FILE]
        shown = self._run(workdir, text, full_env, log, deadline, stdout=True).stdout
        try:
            parsed = json.loads(doc.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise IacOutputError(f"could not parse {self._name} show -json: {exc}") from exc
        if not isinstance(parsed, dict):
            raise IacOutputError(f"{self._name} show -json did not return a JSON object")
        return RefreshPlan(
            exit_code=planned.exit_code,
            plan=parsed,
            text=shown.decode("utf-8", "replace"),
        )

    # -- internals -------------------------------------------------------------------------

    def _env(
        self, workdir: Path, env: Mapping[str, str], backend: HttpBackend | None
    ) -> dict[str, str]:
        source = os.environ if self._base_env is None else self._base_env
        merged = {name: source[name] for name in PASSED_THROUGH if name in source}
        merged.setdefault("PATH", _DEFAULT_PATH)
        home = workdir / HOME_DIR
        home.mkdir(mode=0o700, exist_ok=True)
        merged["HOME"] = str(home)
        merged["TF_IN_AUTOMATION"] = "1"
        merged["TF_INPUT"] = "0"
        if backend is not None:
            merged.update(backend.env())
        merged.update(env)
        return merged

    def _init(
        self,
        workdir: Path,
        env: Mapping[str, str],
        backend: HttpBackend | None,
        log: Log,
        deadline: Deadline,
    ) -> None:
        args = ["init", "-input=false", "-no-color"]
        if backend is not None:
            args += ["-reconfigure", *backend.backend_config_args()]
        self._run(workdir, args, env, log, deadline)

    def _run(
        self,
        workdir: Path,
        args: list[str],
        env: Mapping[str, str],
        log: Log,
        deadline: Deadline,
        *,
        stdout: bool = False,
        on_start: OnStart | None = None,
        ok: tuple[int, ...] = (0,),
    ) -> _Result:
        """Run one command; with ``stdout`` its stdout is returned and only stderr is logged.

        An exit code outside ``ok`` fails the command.
        """
        command = f"{self._name} {args[0]}"
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)

        def emit(line: str) -> None:
            tail.append(line)
            log(line)

        log(f"=== {command} ===")
        if deadline.left() <= 0:
            error = (
                f"{command} timed out after {_duration(deadline.budget_s)}: not started, "
                "the step's time was used up"
            )
            log(error)
            raise IacTimeoutError(error, command=command, exit_code=None, log_tail="")
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

        if on_start is not None:
            try:
                on_start(proc.pid)  # start_new_session: the pid is the process group id
            except BaseException:
                self._kill(proc)
                raise
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

        try:
            finished = _stream(lines, deadline.at, emit) and _wait(proc, threads, deadline.at)
        except BaseException:
            self._kill(proc)
            raise
        if not finished:
            self._kill(proc)
            for thread in threads:
                thread.join(_PUMP_DRAIN_S)
            _drain(lines, emit)
            error = f"{command} timed out after {_duration(deadline.budget_s)}"
            log(error)
            raise IacTimeoutError(error, command=command, exit_code=None, log_tail="\n".join(tail))
        code = proc.returncode
        if code not in ok:
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
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2g} s"


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
    "HOME_DIR",
    "LOG_TAIL_LINES",
    "PASSED_THROUGH",
    "REFRESH_PLAN_FILE",
    "Deadline",
    "IacCommandError",
    "IacOutputError",
    "IacTimeoutError",
    "RefreshPlan",
    "TerraformRunner",
]
