"""``nclav init`` then ``nclav apply`` of its tree, and ``nclav events``, against a real
``nclav serve`` (real terraform: the init tree uses only ``terraform_data``)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest
from cli_harness import Server
from serve_harness import require_terraform

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

require_terraform()
pytestmark = pytest.mark.terraform


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "home").start()
    try:
        yield srv
    finally:
        srv.stop()


def ok(result: Any) -> Any:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    return result


def test_init_applies_and_events_tell_the_story(fresh: Server, tmp_path: Path) -> None:
    tree = tmp_path / "enclaves"
    assert ok(fresh.cli("events")).stdout == "No events yet.\n"
    ok(fresh.cli("init", str(tree)))
    ok(fresh.cli("validate", str(tree)))
    applied = ok(fresh.cli("apply", str(tree), "--no-progress"))
    assert re.search(r"^Run \S+ succeeded", applied.stdout, re.M), applied.stdout
    graph = ok(fresh.cli("graph")).stdout
    assert "Partition: Web (web) [active]" in graph
    assert "output hostname: hello-web.local" in graph

    events = json.loads(ok(fresh.cli("events", "--output", "json")).stdout)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "ReconcileStarted" and kinds[-1] == "ReconcileCompleted"
    assert {"EnclaveProvisioned", "PartitionProvisioned", "ExportWired"} <= set(kinds)
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)

    text = ok(fresh.cli("events")).stdout.splitlines()
    assert text[0].split() == ["SEQ", "TIME", "KIND", "WHERE", "DETAILS"]
    assert len(text) == 1 + len(events)
    assert any(line.split()[2:4] == ["PartitionProvisioned", "hello/web"] for line in text[1:]), (
        text
    )

    last_two = json.loads(ok(fresh.cli("events", "--limit", "2", "-o", "json")).stdout)
    assert last_two == events[-2:]
    mine = json.loads(ok(fresh.cli("events", "--enclave", "hello", "-o", "json")).stdout)
    assert mine and all(e.get("enclave_id", e.get("importer_enclave")) == "hello" for e in mine)
    assert ok(fresh.cli("events", "--enclave", "nope")).stdout == "No events for enclave nope.\n"
    assert fresh.cli("events", "--limit", "0").exit_code == 2
