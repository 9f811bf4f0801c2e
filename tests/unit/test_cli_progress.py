"""Run progress: plain lines (CI logs) and the live status line (terminals), from run polls."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from nclav.cli.follow import LineProgress, LiveProgress, follow_run, make_progress

if TYPE_CHECKING:
    import pytest


def step(sid: str, status: str, attempts: int = 0, error: str | None = None) -> dict[str, Any]:
    action, _, where = sid.partition(":")
    enclave, _, target = where.partition("/")
    return {
        "step_id": sid,
        "action": action,
        "enclave_id": enclave,
        "target": target or None,
        "status": status,
        "attempts": attempts,
        "error": error,
        "started_at": "2024-01-01T00:00:00.000000Z" if status != "pending" else None,
        "finished_at": "2024-01-01T00:00:01.500000Z"
        if status in ("succeeded", "failed", "skipped")
        else None,
    }


ENC, DB, API = "provision_enclave:e", "provision_partition:e/db", "provision_partition:e/api"
TF_ERROR = "terraform apply exited with code 1\nnoise\nError: first\n\nError: the real cause\n"
POLLS = [
    {
        "status": "running",
        "steps": [step(ENC, "running"), step(DB, "pending"), step(API, "pending")],
    },
    {
        "status": "running",
        "steps": [
            step(ENC, "succeeded", 1),
            step(DB, "ready", 1, "connection reset"),
            step(API, "pending"),
        ],
    },
    {
        "status": "failed",
        "steps": [
            step(ENC, "succeeded", 1),
            step(DB, "failed", 2, TF_ERROR),
            step(API, "blocked"),
        ],
    },
]


def test_plain_lines_one_per_step_event() -> None:
    lines: list[str] = []
    progress = LineProgress(lines.append)
    for poll in POLLS:
        progress.update(poll)
        progress.update(poll)  # an unchanged poll prints nothing
    assert lines == [
        "[0/3] running   provision enclave e",
        "[1/3] succeeded provision enclave e (1.5s)",
        "[1/3] retrying  provision partition e/db (attempt 2): connection reset",
        "[2/3] failed    provision partition e/db (1.5s): terraform apply exited with code 1: "
        "Error: the real cause",
        "[3/3] blocked   provision partition e/api (a step it depends on failed)",
    ]


class Terminal(io.StringIO):
    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


def test_live_line_is_redrawn_in_place_with_failures_above_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    screen = Terminal()
    progress = LiveProgress(screen)
    for poll in POLLS:
        progress.update(poll)
    progress.close()
    text = screen.getvalue()
    frames = text.split("\r\x1b[2K")
    assert "0/3 steps" in frames[0] and "provision enclave e" in frames[0]
    assert "retrying provision partition e/db: connection reset\n" in text
    assert (
        "failed   provision partition e/db: terraform apply exited with code 1: "
        "Error: the real cause\n" in text
    )
    assert "3/3 steps" in frames[-2] and "2 failed" in frames[-2]
    assert frames[-1] == ""  # the status line is cleared at the end
    assert "\x1b[3" not in text  # NO_COLOR: no colour codes


def test_progress_is_plain_when_asked_or_not_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stderr", Terminal())
    monkeypatch.delenv("TERM", raising=False)
    assert isinstance(make_progress(plain=False), LiveProgress)
    assert isinstance(make_progress(plain=True), LineProgress)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(make_progress(plain=False), LineProgress)


class FakeApi:
    def __init__(self, polls: list[dict[str, Any]]) -> None:
        self.polls = list(polls)
        self.paths: list[str] = []

    def get(self, path: str) -> dict[str, Any]:
        self.paths.append(path)
        return self.polls.pop(0)


def test_follow_run_polls_until_the_run_is_final() -> None:
    api = FakeApi(POLLS)
    lines: list[str] = []
    final = follow_run(api, "r 1", LineProgress(lines.append), poll_s=0.001, stream=False)  # type: ignore[arg-type]
    assert final is POLLS[-1]
    assert api.paths == ["/runs/r%201"] * 3
    assert len(lines) == 5
