"""``GET /orphans`` through a real ``nclav serve`` (issue 8 point 5b): the local driver reports
the Terraform states and workspaces nclav holds for partitions no applied enclave owns, the
answer names the drivers that could not be asked, and ``nclav orphans`` renders it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from cli_harness import clean_env, run_cli
from serve_harness import copy_example, require_terraform, server_factory_fixture  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable

    from serve_harness import Server


RESOURCE = b'{"version": 4, "resources": [{"mode": "managed", "type": "terraform_data", '
RESOURCE += b'"name": "x", "instances": [{"attributes": {}}]}]}'
EMPTY = b'{"version": 4, "resources": []}'


def cli(server: Server, *args: str) -> tuple[int, str, str]:
    env = clean_env(NCLAV_URL=server.url, NCLAV_TOKEN=server.token)
    done = run_cli(["orphans", *args], env, timeout_s=60)
    return done.returncode, done.stdout, done.stderr


def test_states_and_workspaces_nobody_owns_are_orphans(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory()
    assert server.ok("GET", "/orphans") == {"orphans": [], "unavailable": []}
    assert cli(server)[0] == 0

    # Terraform state held for a partition no enclave has (as a failed teardown leaves it).
    assert server.request("POST", "/terraform/state/ghost/db", RESOURCE).status == 200
    (server.home / "workspaces" / "gone" / "api").mkdir(parents=True)
    # A partition destroyed cleanly (an empty state) is no orphan, nor is its workspace.
    assert server.request("POST", "/terraform/state/clean/p", EMPTY).status == 200
    (server.home / "workspaces" / "clean" / "p").mkdir(parents=True)
    doc = server.ok("GET", "/orphans")
    assert doc["unavailable"] == []
    got = {(o["resource_type"], o["enclave_id"], o["partition_id"]) for o in doc["orphans"]}
    assert got == {("terraform-state", "ghost", "db"), ("terraform-workspace", "gone", "api")}
    state = next(o for o in doc["orphans"] if o["resource_type"] == "terraform-state")
    assert state["cloud"] == "local" and state["resource_id"] == "/terraform/state/ghost/db"
    assert "1 resource(s)" in state["reason"] and "no applied enclave" in state["reason"]

    code, stdout, _ = cli(server)
    assert code == 1 and "ghost" in stdout and "/terraform/state/ghost/db" in stdout, stdout
    code, stdout, _ = cli(server, "--enclave", "ghost", "--output", "json")
    assert code == 1 and [o["partition_id"] for o in json.loads(stdout)["orphans"]] == ["db"]

    # A state whose pointer terraform deleted is no longer held: not an orphan.
    assert server.request("DELETE", "/terraform/state/ghost/db").status == 200
    kinds = [o["resource_type"] for o in server.ok("GET", "/orphans")["orphans"]]
    assert kinds == ["terraform-workspace"]
