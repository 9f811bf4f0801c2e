"""``nclav apply`` when the server goes away mid-run (issue 8 §9): the CLI says so once, keeps
trying for a while, and either follows the run again once the server is back or exits 3 with
the run id and how to follow it. A real ``nclav serve`` is killed while terraform sleeps."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from serve_harness import (
    require_terraform,
    server_factory_fixture,  # noqa: F401
    wait_until,
)

from support import write_tree

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from serve_harness import Server

require_terraform()
pytestmark = pytest.mark.terraform

SLOW_TREE = {
    "slow/config.yml": "id: slow\nname: Slow\ncloud: local\nregion: local-1\n",
    "slow/p/config.yml": "id: p\nname: P\n",
    "slow/p/main.tf": 'resource "terraform_data" "slow" {\n'
    '  provisioner "local-exec" {\n    command = "sleep 4"\n  }\n}\n',
}


class Cli:
    """``nclav apply`` as a real process, its output in files (readable while it runs)."""

    def __init__(self, server: Server, tree: Path, window: str) -> None:
        self.out, self.err = tree.parent / "cli.out", tree.parent / "cli.err"
        with self.out.open("wb") as stdout, self.err.open("wb") as stderr:
            self.proc = apply_in_background(server, tree, window, stdout, stderr)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait(self, timeout: float) -> tuple[int, str, str]:
        code = self.proc.wait(timeout)
        return code, self.out.read_text(errors="replace"), self.stderr()


def apply_in_background(
    server: Server, tree: Path, window: str, stdout: Any, stderr: Any
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NCLAV_")}
    env.update(
        NCLAV_URL=server.url,
        NCLAV_TOKEN=server.token,
        NCLAV_RECONNECT_TIMEOUT=window,
        CHECKPOINT_DISABLE="1",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "nclav", "apply", str(tree), "--no-progress"],
        env=env,
        stdout=stdout,
        stderr=stderr,
    )


def run_id_once_terraform_sleeps(server: Server) -> str:
    def running() -> Any:
        found = [r for r in server.iac_runs("slow", "p") if r["status"] == "running"]
        return found[0] if found else None

    iac = wait_until(running, 60, "terraform never started")
    return str(iac["reconcile_run_id"])


def test_the_cli_gives_up_after_the_window_with_the_run_id(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory()
    cli = Cli(server, write_tree(tmp_path / "tree", SLOW_TREE), "2")
    run_id = run_id_once_terraform_sleeps(server)
    server.kill()
    code, out, err = cli.wait(timeout=60)
    assert code == 3, (out, err)
    lines = err.splitlines()
    retrying = f"server unreachable, retrying for up to 2s (run {run_id} carries on on the server)"
    assert lines.count(retrying) == 1, err
    assert re.search(
        rf"^Error: lost the server while following run {run_id}: cannot reach the nclav "
        rf"server at {re.escape(server.url)}: ",
        err,
        re.M,
    ), err
    assert lines[-1] == (
        "The run carries on once the server is back; follow it with: "
        f"nclav runs show {run_id} --follow"
    )


def test_the_cli_follows_the_run_again_when_the_server_is_back(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory(env={"NCLAV_LEASE_S": "3"})
    cli = Cli(server, write_tree(tmp_path / "tree", SLOW_TREE), "90")
    run_id = run_id_once_terraform_sleeps(server)
    port = server.port
    server.kill_server_only()  # a crash: terraform lives on, the restarted server recovers
    wait_until(lambda: "server unreachable" in cli.stderr(), 30, "the CLI never noticed")
    # The same server again, on the same port (the harness picks a new one).
    env = {k: v for k, v in os.environ.items() if not k.startswith("NCLAV_")}
    env.update(NCLAV_HOME=str(server.home), NCLAV_LEASE_S="3", NCLAV_WORKERS="4")
    log = tmp_path / "restart.err"
    with log.open("wb") as stderr:
        server.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nclav",
                "serve",
                "--port",
                str(port),
                "--home",
                str(server.home),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )  # stopped by the fixture with the rest
    code, out, err = cli.wait(timeout=150)
    assert code == 0, (out, err, log.read_text(errors="replace"))
    lines = err.splitlines()
    assert [line for line in lines if line.startswith("server ")] == [
        f"server unreachable, retrying for up to 90s (run {run_id} carries on on the server)",
        f"server reachable again; following run {run_id}",
    ]
    assert f"Run {run_id} succeeded" in out
