"""The CLI following runs live against a real ``nclav serve`` and real terraform: server-sent
events when offered, offset polling when the server's streams are all in use, and the log of
a run still in flight."""

from __future__ import annotations

import http.client
import json
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from cli_harness import Server
from serve_harness import require_terraform

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

require_terraform()

SLOW_TF = """
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "for i in $(seq 1 30); do echo line $i; sleep PAUSE; done"
  }
}
"""


def tree(root: Path, pause_s: float = 0.1) -> Path:
    """A partition printing 30 lines, ``pause_s`` apart."""
    (root / "live" / "p").mkdir(parents=True)
    (root / "live" / "config.yml").write_text("id: live\nname: live\ncloud: local\nregion: r\n")
    (root / "live" / "p" / "config.yml").write_text("id: p\nname: p\n")
    (root / "live" / "p" / "main.tf").write_text(SLOW_TF.replace("PAUSE", f"{pause_s:g}"))
    return root


def ok(result: object) -> object:
    code = getattr(result, "exit_code", None)
    assert code == 0, (
        f"exit {code}\n{getattr(result, 'stdout', '')}\n{getattr(result, 'stderr', '')}"
    )
    return result


def started(srv: Server, root: Path) -> str:
    """Apply without waiting; the IaC run's id once it runs."""
    ok(srv.cli("apply", str(root), "--no-wait"))
    deadline = time.monotonic() + 90
    while True:
        runs = json.loads(ok(srv.cli("iac", "runs", "live", "p", "-o", "json")).stdout)  # type: ignore[attr-defined]
        if runs:
            return str(runs[0]["id"])
        assert time.monotonic() < deadline, "no IaC run started"
        time.sleep(0.1)


def assert_every_line_once(text: str) -> None:
    for i in range(1, 31):
        assert text.count(f": line {i}\n") == 1, (i, text)
    assert text.index(": line 1\n") < text.index(": line 30\n")


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "home").start()
    try:
        yield server
    finally:
        server.stop()


def test_iac_logs_follow_streams_events(srv: Server, tmp_path: Path) -> None:
    started(srv, tree(tmp_path / "t"))
    result = ok(srv.cli("--verbose", "iac", "logs", "live", "p", "--follow"))
    out, err = result.stdout, result.stderr  # type: ignore[attr-defined]
    assert "/log (stream)" in err and "offset=" not in err  # one stream, no polling
    assert_every_line_once(out)
    assert "ended: succeeded" in err


def test_iac_logs_follow_polls_when_no_stream_is_free(tmp_path: Path) -> None:
    server = Server(tmp_path / "home", env={"NCLAV_MAX_STREAMS": "1"}).start()
    try:
        iac_id = started(server, tree(tmp_path / "t", pause_s=0.2))
        parts = urlsplit(server.url)
        holder = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        holder.request(
            "GET",
            f"/enclaves/live/partitions/p/iac/runs/{iac_id}/log",
            headers={"Authorization": f"Bearer {server.token}", "Accept": "text/event-stream"},
        )
        # Keep the response: dropping it closes the socket, and the server frees the slot at
        # its next write (then the CLI would find a free slot when the machine is slow).
        held = holder.getresponse()
        assert held.status == 200  # the only stream slot, held open
        try:
            result = ok(server.cli("--verbose", "iac", "logs", "live", "p", "--follow"))
        finally:
            held.close()
            holder.close()
        out, err = result.stdout, result.stderr  # type: ignore[attr-defined]
        assert "< 503" in err and "offset=" in err  # refused a stream, then polled
        assert_every_line_once(out)
    finally:
        server.stop()


def test_iac_logs_shows_a_running_runs_log_so_far(srv: Server, tmp_path: Path) -> None:
    started(srv, tree(tmp_path / "t"))
    deadline = time.monotonic() + 60
    while True:
        result = ok(srv.cli("iac", "logs", "live", "p"))
        out = result.stdout  # type: ignore[attr-defined]
        if ": line 2\n" in out:
            break
        assert time.monotonic() < deadline, out
        time.sleep(0.1)
    assert "Status: running" in out and ": line 30\n" not in out


def test_apply_follows_the_run_through_its_event_stream(srv: Server, tmp_path: Path) -> None:
    result = ok(srv.cli("--verbose", "apply", str(tree(tmp_path / "t"))))
    err = result.stderr  # type: ignore[attr-defined]
    assert "/events (stream)" in err
    assert "[2/2] succeeded provision partition live/p" in err  # progress from the stream
    # It did not poll the run meanwhile: one GET of the run, at the end.
    assert err.count("/runs/") - err.count("/events") <= 2, err
