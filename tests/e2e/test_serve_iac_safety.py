"""Partition code against a real ``nclav serve``: what it can reach, and what a crash leaves.

Issue 8 #6: a ``local-exec`` used to get the deployment-wide API token as ``TF_HTTP_PASSWORD``
and could call ``GET /enclaves`` and read another partition's state. Now terraform's state is
served on a loopback port inside the server with a credential for its own partition during one
run, and its environment is scrubbed.

Issue 8 #7: after kill -9 of the server, terraform's ``local-exec`` children lived on and the
restarted server re-applied the partition while the old provisioner still ran. Now the process
group is recorded in the IaC run and recovery stops what is left of it before the re-apply.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import pytest
from serve_harness import (
    require_terraform,
    server_factory_fixture,  # noqa: F401
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from serve_harness import Server

require_terraform()
pytestmark = pytest.mark.terraform

ENCLAVE = "id: e\nname: e\ncloud: local\nregion: local-1\n"

PROBE = r"""
import base64, json, os, sys, urllib.error, urllib.request

def status(url, password, scheme="Basic"):
    request = urllib.request.Request(url)
    if password is not None:
        value = password if scheme == "Bearer" else base64.b64encode(
            f"nclav:{password}".encode()).decode()
        request.add_header("Authorization", f"{scheme} {value}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code

own = json.load(open(".terraform/terraform.tfstate"))["backend"]["config"]["address"]
token = os.environ.get("TF_HTTP_PASSWORD")
api = sys.argv[2]
json.dump({
    "env": dict(os.environ),
    "own": status(own, token),
    "other_on_loopback": status(own.rsplit("/", 1)[0] + "/a", token),
    "api_enclaves": status(api + "/enclaves", token, "Bearer"),
    "api_enclaves_basic": status(api + "/enclaves", token),
    "api_other_state": status(api + "/terraform/state/e/a", token),
}, open(sys.argv[1], "w"))
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_partition_code_cannot_reach_the_api_or_another_partitions_state(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory()
    out = tmp_path / "probe.json"
    probe_tf = (
        'resource "terraform_data" "probe" {\n'
        '  provisioner "local-exec" {\n'
        f'    command = "{sys.executable} probe.py {out} {server.url}"\n'
        "  }\n"
        "}\n"
    )
    tree = write(
        tmp_path / "tree",
        {
            "e/config.yml": ENCLAVE,
            "e/a/config.yml": "id: a\nname: a\n",
            "e/a/main.tf": 'resource "terraform_data" "a" { input = "secret-of-a" }\n',
            "e/b/config.yml": "id: b\nname: b\n",
            "e/b/main.tf": probe_tf,
            "e/b/probe.py": PROBE,
        },
    )
    run = server.reconcile(tree)
    assert run["status"] == "succeeded", run
    found = json.loads(out.read_text())
    assert found["own"] in (200, 204)
    assert found["other_on_loopback"] == 403
    assert found["api_enclaves"] == 401
    assert found["api_enclaves_basic"] == 401
    assert found["api_other_state"] == 401
    env = found["env"]
    assert server.token not in json.dumps(env)
    assert not [k for k in env if k.startswith("NCLAV_")]
    # The operator still reads state with the API token on the public route.
    assert b"secret-of-a" in server.get("/terraform/state/e/a").body


LEFTOVER = """
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "sh run.sh"
  }
}
"""


def test_after_kill_9_the_old_provisioner_is_stopped_before_the_reapply(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    script = (
        f'echo "start $$ $(date +%s.%N)" >> {marker}\n'
        "sleep 8\n"
        f'echo "end $$ $(date +%s.%N)" >> {marker}\n'
    )
    tree = write(
        tmp_path / "tree",
        {
            "e/config.yml": ENCLAVE,
            "e/p/config.yml": "id: p\nname: p\n",
            "e/p/main.tf": LEFTOVER,
            "e/p/run.sh": script,
        },
    )
    server = server_factory(env={"NCLAV_LEASE_S": "3"})
    run = server.start_reconcile(tree)
    wait_until(
        lambda: marker.exists() and "start" in marker.read_text(), 60, "provisioner never ran"
    )
    old_pid = marker.read_text().split()[1]
    (killed,) = server.iac_runs("e", "p")
    killed_at = time.time()
    server.kill_server_only()  # kill -9: the provisioner's shell lives on in its session
    server.start()

    final = server.wait_run(run["id"], timeout=120)
    assert final["status"] == "succeeded", final
    # The run took the new provisioner's 8 s, so the old one would have ended by now.
    assert time.time() - killed_at > 8
    lines = [line.split() for line in marker.read_text().splitlines()]
    events = [(what, pid) for what, pid, _ in lines]
    assert ("end", old_pid) not in events, lines  # stopped, never finished
    (new_start,) = [float(at) for what, pid, at in lines if what == "start" and pid != old_pid]
    assert new_start > killed_at
    assert [e for e in events if e[1] != old_pid] == [("start", events[-1][1]), events[-1]]
    abandoned = server.ok("GET", f"/enclaves/e/partitions/p/iac/runs/{killed['id']}")
    assert abandoned["status"] == "failed"
    assert abandoned["pgid"] and abandoned["boot_id"]
    assert "leftover process(es) of group" in abandoned["log"], abandoned["log"]
    log = server.get(f"/enclaves/e/partitions/p/iac/runs/{killed['id']}/log").text
    assert "abandoned" in log and "stopped" in log
