"""A real ``nclav serve`` process on a loopback port, and ways to run the CLI against it.

``Server`` starts ``python -m nclav serve --port 0 --home <tmp>``, reads the URL it prints on
stderr and the token it wrote to HOME/token, and stops it with SIGTERM (then SIGKILL).
``Server.cli`` runs the CLI in this process (click's runner, fast); ``Server.run`` runs it as a
real process (``python -m nclav``), for what only a process shows: exit codes from the entry
point, and stdout and stderr as separate pipes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from click.testing import CliRunner, Result

from nclav.cli import main

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

# Variables that would point the CLI (or the server) somewhere else than the test says.
_SCRUB = ("NCLAV_URL", "NCLAV_TOKEN", "NCLAV_HOME", "NCLAV_PORT", "NCLAV_BIND", "NO_COLOR")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["CHECKPOINT_DISABLE"] = "1"  # terraform must not phone home
    env.update(extra)
    return env


class Server:
    def __init__(self, home: Path, env: Mapping[str, str] | None = None) -> None:
        self.home = home
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.token = ""

    @property
    def log(self) -> str:
        path = self.home / "serve.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout_s: float = 60.0) -> Server:
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "nclav", "serve", "--port", "0", "--home", str(self.home)]
        env = clean_env(**self.extra_env)
        with (
            open(self.home / "serve.stdout", "wb") as out,
            open(self.home / "serve.stderr", "wb") as err,
        ):
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.log.splitlines():
                if "listening on " in line:
                    self.url = line.split("listening on ", 1)[1].split()[0]
                    self.token = (self.home / "token").read_text().strip()
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"nclav serve exited {self.proc.returncode}:\n{self.log}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nclav serve did not start within {timeout_s}s:\n{self.log}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def env(self, **extra: str) -> dict[str, str]:
        """What a client of this server needs: its URL and token."""
        return {"NCLAV_URL": self.url, "NCLAV_TOKEN": self.token, **extra}

    def cli(
        self, *args: str, env: Mapping[str, str | None] | None = None, input: str | None = None
    ) -> Result:
        """The CLI in this process (stdin is not a terminal, so progress is plain lines)."""
        full: dict[str, str | None] = dict.fromkeys(_SCRUB)
        full.update(self.env())
        full.update(env or {})
        return CliRunner().invoke(main, list(args), env=full, input=input)

    def run(
        self, *args: str, env: Mapping[str, str] | None = None, timeout_s: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """The CLI as a real process: ``python -m nclav ARGS``."""
        return run_cli(args, clean_env(**self.env(**(env or {}))), timeout_s)


def run_cli(
    args: Sequence[str], env: Mapping[str, str], timeout_s: float = 300, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nclav", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        **kwargs,
    )


__all__ = ["Server", "clean_env", "run_cli"]
