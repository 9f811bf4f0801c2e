"""Issue 8 point 8 and the port items of point 9, through a real ``nclav serve``: everything the
server writes under its home is its owner's alone, a shared home is warned about, a port in use
is reported before anything is created, and the CLI finds a server on NCLAV_PORT."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from cli_harness import clean_env, run_cli
from serve_harness import copy_example, require_terraform, server_factory_fixture  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from serve_harness import Server


def modes(home: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(files, directories) under ``home`` -> permission bits, ``home`` itself included."""
    files: dict[str, int] = {}
    dirs: dict[str, int] = {".": stat.S_IMODE(home.stat().st_mode)}
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            dirs[os.path.relpath(path, home)] = stat.S_IMODE(os.lstat(path).st_mode)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                files[os.path.relpath(path, home)] = stat.S_IMODE(os.lstat(path).st_mode)
    return files, dirs


@pytest.mark.terraform
def test_every_file_under_home_is_private_after_an_apply(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    require_terraform()
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    os.chmod(home, 0o700)
    server = server_factory(home=home)
    run = server.reconcile(copy_example("product-a", tmp_path))
    assert run["status"] == "succeeded", run
    files, dirs = modes(home)
    # What this must cover: the database and its journal, state versions, logs, workspaces.
    assert {"state.db", "state.db-wal", "token"} <= set(files), sorted(files)
    assert any(f.startswith("blobs/tfstate/") for f in files), sorted(files)
    assert any(f.startswith("blobs/iac-logs/") or "log" in f for f in files), sorted(files)
    assert any(f.startswith("workspaces/") for f in files), sorted(files)
    assert {f: oct(m) for f, m in files.items() if m & 0o077} == {}
    assert {d: oct(m) for d, m in dirs.items() if m != 0o700} == {}
    assert "accessible to other users" not in server.stderr()
    # Every state and workspace of the apply belongs to an applied partition: no orphans;
    # nor after a clean destroy (its state is empty).
    assert server.ok("GET", "/orphans") == {"orphans": [], "unavailable": []}
    assert server.ok("DELETE", "/enclaves/web-dev?wait=120")["status"] == "succeeded"
    assert server.ok("GET", "/orphans") == {"orphans": [], "unavailable": []}


def test_a_shared_home_is_warned_about_once(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    home = tmp_path / "shared"
    home.mkdir()
    os.chmod(home, 0o755)
    server = server_factory(home=home)
    warnings = [line for line in server.stderr().splitlines() if "other users" in line]
    assert len(warnings) == 1, server.stderr()
    assert "mode 0755" in warnings[0] and f"chmod 700 {home}" in warnings[0]
    assert stat.S_IMODE(home.stat().st_mode) == 0o755  # the user's directory: only warned
    files, _dirs = modes(home)
    assert {f: oct(m) for f, m in files.items() if m & 0o077} == {}


def test_a_port_in_use_is_reported_first_and_suggests_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        home = tmp_path / "never-created"
        done = subprocess.run(
            [sys.executable, "-m", "nclav", "serve", "--port", str(port), "--home", str(home)],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr, done.stderr
    assert "--port" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not home.exists()  # nothing created,
    assert "token" not in done.stdout.lower()  # no token printed


def test_the_cli_calls_the_port_in_nclav_port(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory()
    env = clean_env(NCLAV_PORT=str(server.port), NCLAV_TOKEN=server.token)
    done = run_cli(["status"], env, timeout_s=60)
    assert done.returncode == 0, done
    bad = run_cli(["status"], clean_env(NCLAV_PORT="80a", NCLAV_TOKEN=server.token), 60)
    assert bad.returncode == 2 and "NCLAV_PORT" in bad.stderr, bad
    # NCLAV_URL still wins over NCLAV_PORT.
    both = clean_env(NCLAV_PORT="1", NCLAV_URL=server.url, NCLAV_TOKEN=server.token)
    assert run_cli(["status"], both, timeout_s=60).returncode == 0
