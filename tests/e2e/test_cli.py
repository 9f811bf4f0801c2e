"""Every CLI command against a real ``nclav serve`` process on a loopback port.

Issue 4, Tests: output text and exit codes checked, ``--output json`` parsed; error paths
(server down, wrong token, invalid YAML, a run that fails, the delete guard). Applies run the
real terraform (the partitions use only built-in things, so nothing is downloaded).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest
from cli_harness import Server, clean_env, run_cli

from support import EXAMPLES, SEED, write_tree

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

if shutil.which("terraform") is None:
    if os.environ.get("CI") == "true":
        pytest.fail("terraform is not on PATH: CI must run the terraform tests", pytrace=False)
    pytest.skip("terraform is not on PATH", allow_module_level=True)

pytestmark = pytest.mark.terraform

RUN_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SEP60 = "\u2500" * 60

PRODUCT_A_PLAN = [
    "+ enclave product-a-dev",
    "  + partition product-a-dev/db",
    "  + partition product-a-dev/api",
    "  > export product-a-dev/api-http",
    "  > export product-a-dev/db-tcp",
    "  < import product-a-dev/database",
    "+ enclave web-dev",
    "  + partition web-dev/frontend",
    "  < import web-dev/product_api",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for tests that apply nothing; NCLAV_URL in its environment is ignored."""
    srv = Server(tmp_path_factory.mktemp("home"), env={"NCLAV_URL": "http://bad.invalid:1"})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Server]:
    """A server of its own, for tests that change applied state."""
    srv = Server(tmp_path / "home").start()
    try:
        yield srv
    finally:
        srv.stop()


def product_a(tmp_path: Path) -> Path:
    return shutil.copytree(EXAMPLES / "product-a" / "enclaves", tmp_path / "product-a")


def simple_tree(root: Path, enclaves: dict[str, list[str]], main_tf: str = "") -> Path:
    """Enclaves with plain partitions (no outputs): quick to apply with real terraform."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    files: dict[str, str] = {}
    for eid, parts in enclaves.items():
        files[f"{eid}/config.yml"] = f"id: {eid}\nname: {eid}\ncloud: local\nregion: local-1\n"
        for pid in parts:
            files[f"{eid}/{pid}/config.yml"] = f"id: {pid}\nname: {pid}\n"
            files[f"{eid}/{pid}/main.tf"] = main_tf
    return write_tree(root, files)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ok(result: Any) -> Any:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    return result


def as_json(result: Any) -> Any:
    return json.loads(ok(result).stdout)


# -- diff ------------------------------------------------------------------------------------------


def test_diff_prints_the_plan_in_the_seed_format(server: Server, tmp_path: Path) -> None:
    root = write_tree(tmp_path / "seed", SEED)
    result = ok(server.cli("diff", str(root)))
    assert result.stdout.splitlines() == [
        "+ enclave product-a-dev",
        "  + partition product-a-dev/db",
        "  + partition product-a-dev/api",
        "  > export product-a-dev/api-http",
        "  > export product-a-dev/db-tcp",
        "  < import product-a-dev/database",
        "6 change(s) would be applied.",
    ]
    assert result.stderr == ""


def test_diff_json_is_the_dry_run_report(server: Server, tmp_path: Path) -> None:
    root = product_a(tmp_path)
    doc = as_json(server.cli("diff", str(root), "--output", "json"))
    assert doc["dry_run"] is True and doc["errors"] == []
    assert len(doc["bundle"]) == 64
    assert doc["changes"][0] == {"id": "product-a-dev", "kind": "EnclaveCreated"}
    assert len(doc["changes"]) == 9
    assert {s["action"] for s in doc["steps"]} >= {"provision_enclave", "provision_partition"}


def test_a_real_process_keeps_results_on_stdout_and_diagnostics_on_stderr(
    server: Server, tmp_path: Path
) -> None:
    root = product_a(tmp_path)
    done = server.run("diff", str(root))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [*PRODUCT_A_PLAN, "9 change(s) would be applied."]
    assert done.stderr == ""
    assert "\x1b[" not in done.stdout  # no colours when not on a terminal
    done = server.run("-v", "diff", str(root), "--output", "json")
    assert json.loads(done.stdout)["dry_run"] is True
    assert f"> POST {server.url}/reconcile/dry-run" in done.stderr
    assert server.token not in done.stderr


def test_the_bundle_is_uploaded_once_and_is_the_same_from_any_directory(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = product_a(tmp_path)
    db = root / "product-a/dev/db/main.tf"
    db.write_text(db.read_text() + f"# {tmp_path}\n")  # a tree this server has not seen
    (db.parent / "terraform.tfstate").write_text("{}")  # ignored by the packer
    first = ok(server.cli("-v", "diff", str(root), "--output", "json"))
    digest = json.loads(first.stdout)["bundle"]
    assert f"> GET {server.url}/bundles/{digest}" in first.stderr
    assert f"> POST {server.url}/bundles (" in first.stderr
    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    again = ok(server.cli("diff", "../../product-a", "--output", "json", "-v"))
    assert json.loads(again.stdout)["bundle"] == digest
    assert f"> GET {server.url}/bundles/{digest}" in again.stderr
    assert "already on the server" in again.stderr
    assert "/bundles (" not in again.stderr  # no second upload


# -- error paths --------------------------------------------------------------------------------


def test_server_down_is_exit_3_with_what_to_do(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    done = run_cli(["status"], clean_env(NCLAV_URL=url, NCLAV_TOKEN="t" * 64))
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"Error: cannot reach the nclav server at {url}: connection refused",
        "Start it with `nclav serve`, or point --remote / NCLAV_URL at a running server.",
    ]
    root = product_a(tmp_path)
    done = run_cli(["apply", str(root)], clean_env(NCLAV_URL=url, NCLAV_TOKEN="t" * 64))
    assert done.returncode == 3


def test_wrong_token_is_exit_3(server: Server, tmp_path: Path) -> None:
    done = server.run("status", env={"NCLAV_TOKEN": "w" * 64})
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.startswith(
        f"Error: the server at {server.url} refused the token from NCLAV_TOKEN "
        "(401 Unauthorized: invalid credentials)"
    )
    result = server.cli("diff", str(product_a(tmp_path)), "--token", "x" * 64)
    assert result.exit_code == 3
    assert "refused the token from --token" in result.stderr


def test_no_token_is_exit_3_and_says_what_to_do(server: Server, tmp_path: Path) -> None:
    result = server.cli("status", env={"NCLAV_TOKEN": None, "NCLAV_HOME": str(tmp_path)})
    assert result.exit_code == 3
    assert result.stderr == (
        "Error: no token: start `nclav serve` or set NCLAV_TOKEN "
        f"(no token file at {tmp_path}/token)\n"
    )


def test_the_token_file_is_read_automatically(server: Server, tmp_path: Path) -> None:
    by_home = server.cli("status", env={"NCLAV_TOKEN": None, "NCLAV_HOME": str(server.home)})
    assert ok(by_home).stdout.startswith("Enclaves: ")
    (tmp_path / ".nclav").mkdir()
    shutil.copy(server.home / "token", tmp_path / ".nclav" / "token")
    by_user = server.cli("status", env={"NCLAV_TOKEN": None, "HOME": str(tmp_path)})
    assert ok(by_user).stdout.startswith("Enclaves: ")


def test_remote_after_the_command_beats_nclav_url(server: Server) -> None:
    bad = {"NCLAV_URL": f"http://127.0.0.1:{closed_port()}"}
    assert server.cli("status", env=bad).exit_code == 3
    ok(server.cli("status", "--remote", server.url + "/", env=bad))
    ok(server.cli("--remote", server.url, "status", env=bad))


def test_invalid_yaml_is_exit_2_with_file_and_line(server: Server, tmp_path: Path) -> None:
    files = dict(SEED)
    files["product-a/dev/config.yml"] = SEED["product-a/dev/config.yml"].replace(
        "region: local-1", "region: local-1\nregoin: x"
    )
    root = write_tree(tmp_path / "seed", files)
    for command in ("diff", "apply"):
        result = server.cli(command, str(root))
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f"{root}/product-a/dev/config.yml:5: regoin: unknown key 'regoin' "
            "(did you mean 'region'?)",
            f"1 error(s) in {root}",
        ]
    assert as_json(server.cli("runs", "--output", "json")) == []


def test_graph_errors_found_by_the_server_are_exit_2_with_file_and_line(
    server: Server, tmp_path: Path
) -> None:
    files = dict(SEED)
    files["product-a/dev/config.yml"] = SEED["product-a/dev/config.yml"].replace(
        "  - from: product-a-dev\n", "  - from: nowhere\n"
    )
    root = write_tree(tmp_path / "seed", files)
    result = server.cli("diff", str(root))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{root}/product-a/dev/config.yml:16: imports[0].from: imports from unknown enclave "
        "'nowhere'",
        f"1 error(s) in {root}",
    ]


def test_read_only_commands_on_an_empty_server(server: Server) -> None:
    assert ok(server.cli("graph")).stderr == "No enclaves applied yet.\n"
    assert ok(server.cli("orphans")).stdout == "No orphaned resources found.\n"
    assert as_json(server.cli("orphans", "--output", "json")) == {"orphans": []}
    assert ok(server.cli("runs")).stdout == "No runs yet.\n"
    assert ok(server.cli("iac", "runs", "e", "p")).stdout == "No IaC runs found for e/p\n"
    result = server.cli("iac", "logs", "e", "p")
    assert (result.exit_code, result.stderr) == (1, "Error: No IaC run found for e/p\n")
    result = server.cli("runs", "show", "not-a-run")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: server returned 404 Not Found: run 'not-a-run'")
    result = server.cli("graph", "--output", "json", "--enclave", "nope")
    assert result.exit_code == 1
    result = server.cli("destroy", "--all", "--yes")
    assert ok(result).stdout == "No enclaves to destroy.\n"


# -- apply and everything that reads what it applied --------------------------------------------


def test_apply_then_every_read_command(fresh: Server, tmp_path: Path) -> None:
    root = product_a(tmp_path)
    result = ok(fresh.cli("apply", str(root)))
    lines = result.stdout.splitlines()
    assert lines[:9] == PRODUCT_A_PLAN
    assert re.fullmatch(rf"Run ({RUN_ID}) succeeded in [0-9.]+s: 9 succeeded\.", lines[9])
    assert lines[10:] == ["9 change(s) applied."]
    run_id = re.findall(RUN_ID, lines[9])[0]
    # Plain progress lines on stderr (not a terminal), one per step at least.
    assert "[9/9] succeeded " in result.stderr
    assert "succeeded provision partition web-dev/frontend (" in result.stderr

    assert ok(fresh.cli("apply", str(root))).stdout == "No changes detected.\n"
    assert ok(fresh.cli("diff", str(root))).stdout == "No changes detected.\n"

    # status
    assert ok(fresh.cli("status")).stdout.splitlines()[:3] == [
        "Enclaves: 2 (active: 2)",
        "Default cloud: local",
        "Active drivers: local",
    ]
    status = as_json(fresh.cli("status", "-o", "json"))
    assert (status["enclave_count"], status["errors"]) == (2, [])

    # graph
    text = ok(fresh.cli("graph")).stdout
    assert text.startswith(
        "Enclave: Product A (Development) [local] (product-a-dev) [active]\n"
        "  Partition: Database (db) [active]\n"
        "    produces: tcp\n"
        "    output hostname: product-a-dev-db.postgres.internal\n"
        "    output port: 5432\n"
    )
    assert "  Export: api-http (http) -> any_enclave\n" in text
    assert "  Export: db-tcp (tcp) -> enclave:product-a-dev\n" in text
    assert "Enclave: Web front end (Development) [local] (web-dev) [active]" in text
    one = ok(fresh.cli("graph", "--enclave", "web-dev")).stdout
    assert one.startswith("Enclave: Web front end") and "product-a-dev) [" not in one
    dot = ok(fresh.cli("graph", "--output", "dot")).stdout
    assert dot.startswith("digraph nclav {\n  rankdir=LR;\n")
    assert "  subgraph cluster_product_a_dev {\n" in dot
    assert '    "product-a-dev:db" [label="Database [active]", fillcolor="#c8e6c9"];' in dot
    assert '  "product-a-dev:api" -> "web-dev" [label="api-http"];' in dot
    assert dot.endswith("}\n")
    graph = as_json(fresh.cli("graph", "--output", "json"))
    assert sorted(n["id"] for n in graph["nodes"]) == ["product-a-dev", "web-dev"]
    enclave_graph = as_json(fresh.cli("graph", "-o", "json", "--enclave", "product-a-dev"))
    assert enclave_graph["enclave"] == "product-a-dev"
    assert fresh.cli("graph", "--enclave", "nope").exit_code == 1

    # runs
    table = ok(fresh.cli("runs")).stdout.splitlines()
    assert table[0].split() == ["ID", "STATUS", "TRIGGER", "CHANGES", "ERRORS", "CREATED"]
    assert table[1].split()[:5] == [run_id, "succeeded", "cli", "9", "0"]
    assert len(table) == 2  # the no-op apply started no run
    assert [r["id"] for r in as_json(fresh.cli("runs", "--output", "json"))] == [run_id]
    shown = ok(fresh.cli("runs", "show", run_id)).stdout.splitlines()
    assert shown[0] == f"Run:       {run_id}"
    assert shown[1] == "Status:    succeeded  Trigger: cli  Changes: 9"
    assert "succeeded" in shown[-1] and "provision partition web-dev/frontend" in shown[-1]
    run = as_json(fresh.cli("runs", "show", run_id, "--output", "json"))
    assert len(run["steps"]) == 9

    # iac runs / iac logs
    iac_table = ok(fresh.cli("iac", "runs", "product-a-dev", "db")).stdout.splitlines()
    assert iac_table[0].split() == ["ID", "OPERATION", "STATUS", "STARTED", "EXIT"]
    assert iac_table[1] == "\u2500" * 90
    assert iac_table[2].split()[1:] == ["provision", "succeeded", iac_table[2].split()[3], "0"]
    iac_id = iac_table[2].split()[0]
    iac_runs = as_json(fresh.cli("iac", "runs", "product-a-dev", "db", "-o", "json"))
    assert [r["id"] for r in iac_runs] == [iac_id]
    for args in ([], [iac_id]):
        log = ok(fresh.cli("iac", "logs", "product-a-dev", "db", *args)).stdout
        assert log.startswith(
            f"Run:       {iac_id}\nOperation: provision  Status: succeeded  Exit: 0\nStarted:   "
        )
        assert f"\n{SEP60}\n" in log
        assert "Apply complete!" in log and log.endswith("\n")
    doc = as_json(fresh.cli("iac", "logs", "product-a-dev", "db", "--output", "json"))
    assert doc["id"] == iac_id and "Apply complete!" in doc["log"]
    missing = fresh.cli("iac", "logs", "product-a-dev", "nope")
    assert (missing.exit_code, missing.stderr) == (
        1,
        "Error: No IaC run found for product-a-dev/nope\n",
    )

    # orphans
    assert ok(fresh.cli("orphans", "--enclave", "web-dev")).stdout == (
        "No orphaned resources found.\n"
    )


def test_apply_json_no_wait_and_runs_show_follow(fresh: Server, tmp_path: Path) -> None:
    root = product_a(tmp_path)
    result = ok(fresh.cli("apply", str(root), "--output", "json", "--no-progress"))
    report = json.loads(result.stdout)
    assert report["dry_run"] is False and report["errors"] == []
    assert len(report["changes"]) == 9 and len(report["bundle"]) == 64
    assert report["run"]["status"] == "succeeded" and len(report["run"]["steps"]) == 9
    assert "[9/9] succeeded" in result.stderr  # progress stays on stderr

    db = root / "product-a" / "dev" / "db" / "main.tf"
    db.write_text(db.read_text() + "\n# an edit\n")
    started = ok(fresh.cli("apply", str(root), "--no-wait"))
    assert (
        started.stdout.splitlines()[0]
        == "  ~ partition product-a-dev/db  (config or files changed)"
    )
    (run_id,) = re.findall(rf"^Run ({RUN_ID}) started with 7 change\(s\)\.$", started.stdout, re.M)
    assert f"nclav runs show {run_id} --follow" in started.stderr
    followed = ok(fresh.cli("runs", "show", run_id, "--follow"))
    assert "Status:    succeeded" in followed.stdout
    later = as_json(fresh.cli("apply", str(root), "-o", "json", "--no-wait"))
    assert later == {
        "bundle": later["bundle"],
        "changes": [],
        "dry_run": False,
        "errors": [],
        "run": None,
    }


BROKEN_TF = 'resource "terraform_data" "a" {\n  input = \n'


def test_a_failed_run_exits_1_and_prints_every_error(fresh: Server, tmp_path: Path) -> None:
    root = simple_tree(tmp_path / "tree", {"good": ["p"], "bad": ["p"]})
    (root / "bad" / "p" / "main.tf").write_text(BROKEN_TF)
    result = fresh.cli("apply", str(root))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "+ enclave bad",
        "  + partition bad/p",
        "+ enclave good",
        "  + partition good/p",
    ]
    assert re.fullmatch(rf"Run {RUN_ID} failed in [0-9.]+s: 3 succeeded, 1 failed\.", lines[4])
    assert "applied" not in result.stdout
    err = result.stderr
    assert "failed    provision partition bad/p (" in err
    assert ": terraform init exited with code 1: Error: Invalid expression" in err
    assert (
        "\n1 error(s):\n  ! provision_partition:bad/p: terraform init exited with code 1\n" in err
    )
    assert "\n    Error: Invalid expression\n" in err
    assert '      on main.tf line 2, in resource "terraform_data" "a":' in err

    report = json.loads(fresh.cli("apply", str(root), "-o", "json").stdout)
    assert report["run"]["status"] == "failed" and len(report["errors"]) == 1
    run_id = report["run"]["id"]
    shown = fresh.cli("runs", "show", run_id)
    assert shown.exit_code == 1
    assert "  ! provision_partition:bad/p: terraform init exited with code 1" in shown.stderr
    assert fresh.cli("iac", "logs", "bad", "p").stdout.count("Error: Invalid expression") == 1
    status = ok(fresh.cli("status")).stdout
    assert "Errors: 1\n  ! bad/p: terraform init exited with code 1" in status


def test_delete_guard(fresh: Server, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    ok(fresh.cli("apply", str(simple_tree(tree, {"a": ["p"], "b": ["p"], "c": ["p"]}))))
    runs_before = len(as_json(fresh.cli("runs", "-o", "json")))

    # More than --max-deletes: nothing is applied, and the message says how to go ahead.
    # The server decides (each enclave and each of its partitions counts) and keeps the run,
    # awaiting approval.
    simple_tree(tree, {"a": ["p"]})
    result = fresh.cli("apply", str(tree), "--max-deletes", "1")
    assert result.exit_code == 2
    assert result.stdout == ""
    runs = as_json(fresh.cli("runs", "-o", "json"))
    assert len(runs) == runs_before + 1
    waiting = runs[0]["id"]
    assert runs[0]["status"] == "awaiting_approval"
    assert result.stderr.splitlines() == [
        "Error: refusing to apply: the plan deletes 4 enclave(s)/partition(s), "
        "more than --max-deletes 1",
        "  - enclave c",
        "  - partition c/p",
        "  - enclave b",
        "  - partition b/p",
        f"Review the plan with `nclav diff {tree}`; if it is what you want, re-run with "
        "--allow-delete (or raise --max-deletes to 4).",
        f"Or approve run {waiting} as planned: nclav runs approve {waiting} "
        f"(or drop it: nclav runs cancel {waiting}).",
    ]
    assert as_json(fresh.cli("status", "-o", "json"))["enclave_count"] == 3

    # A plan that deletes every enclave stops even under the limit (3 <= 5).
    simple_tree(tree, {"z": ["p"]})
    diff = ok(fresh.cli("diff", str(tree)))
    assert "Warning: this plan deletes every enclave on the server (3)." in diff.stderr
    result = fresh.cli("apply", str(tree))
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "Error: refusing to apply: the plan deletes every enclave on the server (3)\n"
    )
    assert "re-run with --allow-delete.\n" in result.stderr
    assert as_json(fresh.cli("status", "-o", "json"))["enclave_count"] == 3
    # The later apply superseded the run that awaited approval.
    shown = fresh.cli("runs", "show", waiting, "-o", "json")
    assert shown.exit_code == 1  # it did not apply
    first = json.loads(shown.stdout)
    assert first["status"] == "cancelled"
    assert first["errors"][0].startswith("superseded by run ")

    # A partition removed from an enclave that stays counts once; the default limit is 5.
    simple_tree(tree, {"a": ["q"], "b": ["p"], "c": ["p"]})
    ok(fresh.cli("apply", str(tree)))
    simple_tree(tree, {"z": ["p"]})
    result = ok(fresh.cli("apply", str(tree), "--allow-delete"))
    assert "- enclave a" in result.stdout
    assert [n["id"] for n in as_json(fresh.cli("graph", "-o", "json"))["nodes"]] == ["z"]


def test_destroy(fresh: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok(fresh.cli("apply", str(product_a(tmp_path))))

    # Usage errors (exit 2).
    for args in (
        [],
        ["--all", "web-dev"],
        ["--all", "--partition", "db"],
        ["a", "b", "--partition", "db"],
    ):
        result = fresh.cli("destroy", *args, "--yes")
        assert result.exit_code == 2, args
    # Not on a terminal: --yes is required.
    for args in (["web-dev"], ["--all"], ["product-a-dev", "--partition", "db"]):
        result = fresh.cli("destroy", *args)
        assert result.exit_code == 2
        assert result.stderr == (
            "Error: refusing to destroy without confirmation: not running on a terminal\n"
            "Pass --yes to confirm.\n"
        )

    # On a terminal, the id must be typed.
    monkeypatch.setattr("nclav.cli.teardown.is_tty", lambda _stream: True)
    result = fresh.cli("destroy", "web-dev", input="web\n")
    assert result.exit_code == 1
    assert "  Type 'web-dev' to confirm: " in result.stderr
    prompt = "This will destroy enclave 'web-dev' and delete its local environment.\n"
    assert prompt in result.stderr and "GCP" not in result.stderr
    assert "aborted: web-dev not destroyed" in result.stderr
    result = ok(fresh.cli("destroy", "web-dev", input="web-dev\n"))
    assert re.fullmatch(rf"Destroyed enclave web-dev \(run {RUN_ID}\)\.\n", result.stdout)
    monkeypatch.undo()

    result = ok(fresh.cli("destroy", "product-a-dev", "--partition", "db", "--yes"))
    assert result.stdout.startswith("Destroyed partition product-a-dev/db (run ")
    graph = ok(fresh.cli("graph")).stdout
    assert "  Partition: API (api) [active]" in graph and "(db)" not in graph

    missing = fresh.cli("destroy", "nope", "--yes")
    assert missing.exit_code == 1
    assert "Failed to destroy enclave nope: server returned 404 Not Found" in missing.stderr

    ok(fresh.cli("apply", str(product_a(tmp_path / "again"))))
    doc = as_json(fresh.cli("destroy", "--all", "--yes", "--output", "json"))
    # Importers first: web-dev imports from product-a-dev.
    assert [r["target"] for r in doc["results"]] == ["enclave web-dev", "enclave product-a-dev"]
    assert {r["status"] for r in doc["results"]} == {"succeeded"}
    assert as_json(fresh.cli("status", "-o", "json"))["enclave_count"] == 0


def test_runs_approve_and_cancel(fresh: Server, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    ok(fresh.cli("apply", str(simple_tree(tree, {"a": ["p"], "b": ["p"]}))))

    # The server stops the run; `runs show` says why and how to answer.
    simple_tree(tree, {"b": ["p"]})
    assert fresh.cli("apply", str(tree), "--max-deletes", "1").exit_code == 2
    run_id = as_json(fresh.cli("runs", "-o", "json"))[0]["id"]
    shown = ok(fresh.cli("runs", "show", run_id)).stdout
    assert "Awaiting approval: 2 deletions, limit 1\n  - enclave a\n  - partition a/p\n" in shown
    assert "Plan:\n- enclave a\n  - partition a/p\n" in shown
    assert (
        f"Approve it with `nclav runs approve {run_id}`, or `nclav runs cancel {run_id}`." in shown
    )

    result = ok(fresh.cli("runs", "approve", run_id, "--wait"))
    assert re.match(rf"Run {run_id} succeeded in ", result.stdout)
    approved = run_id
    assert as_json(fresh.cli("status", "-o", "json"))["enclave_count"] == 1
    again = fresh.cli("runs", "approve", run_id)
    assert again.exit_code == 2
    assert again.stderr.startswith(f"Error: run {run_id} not approved: run {run_id} is succeeded")

    # Deleting every enclave waits too; cancel drops it and nothing is deleted.
    simple_tree(tree, {"z": []})
    assert fresh.cli("apply", str(tree)).exit_code == 2
    run_id = as_json(fresh.cli("runs", "-o", "json"))[0]["id"]
    assert ok(fresh.cli("runs", "cancel", run_id)).stdout == f"Run {run_id} cancelled.\n"
    shown = fresh.cli("runs", "show", run_id, "-o", "json")
    assert shown.exit_code == 1 and json.loads(shown.stdout)["status"] == "cancelled"
    assert fresh.cli("runs", "cancel", run_id).exit_code == 2
    assert as_json(fresh.cli("status", "-o", "json"))["enclave_count"] == 1

    # A cancelled run is retried as a new run, planned when it begins: the guard holds it too.
    result = ok(fresh.cli("runs", "retry", run_id))
    retried = re.fullmatch(
        rf"Run {run_id} retried as run ({RUN_ID}) \(try 2\): awaiting_approval\.\n", result.stdout
    )
    assert retried is not None, result.stdout
    assert f"nclav runs show {retried[1]} --follow" in result.stderr
    ok(fresh.cli("runs", "cancel", retried[1]))
    # A succeeded run is not retried (exit 2, the server's reason).
    refused = fresh.cli("runs", "retry", approved)
    assert refused.exit_code == 2
    assert "only a failed or cancelled run can be retried" in refused.stderr
    assert as_json(fresh.cli("status", "-o", "json"))["enclave_count"] == 1


def test_destroy_resources_only_and_a_cloud_without_driver(fresh: Server, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    ok(fresh.cli("apply", str(simple_tree(tree, {"a": ["p", "q"], "b": []}))))
    result = ok(fresh.cli("destroy", "a", "--resources-only", "--yes"))
    assert re.fullmatch(
        rf"Destroyed the partitions of enclave a \(run {RUN_ID}\)\.\n", result.stdout
    )
    graph = as_json(fresh.cli("graph", "-o", "json"))
    assert {n["id"] for n in graph["nodes"]} >= {"a", "b"}
    assert as_json(fresh.cli("status", "-o", "json"))["enclave_count"] == 2
    assert ok(fresh.cli("graph")).stdout.count("Partition:") == 0
    usage = fresh.cli("destroy", "a", "--partition", "p", "--resources-only", "--yes")
    assert usage.exit_code == 2 and "--resources-only cannot be combined" in usage.stderr

    # A cloud this server has no driver for: diff and apply exit 2 naming file and line.
    far = tmp_path / "far"
    write_tree(far, {"far/config.yml": "id: far\nname: far\nregion: r\ncloud: gcp\n"})
    for command in ("diff", "apply"):
        result = fresh.cli(command, str(far))
        assert result.exit_code == 2, result.stderr
        assert (
            f"{far}/far/config.yml:4: cloud: no driver for cloud 'gcp' on this server "
            "(enabled: local)"
        ) in result.stderr


SLOW_TF = """
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "echo nclav-follow-start; sleep 3; echo nclav-follow-end"
  }
}
"""


def test_iac_logs_follow_a_run_in_flight(fresh: Server, tmp_path: Path) -> None:
    root = simple_tree(tmp_path / "tree", {"slow": ["p"]}, SLOW_TF)
    ok(fresh.cli("apply", str(root), "--no-wait"))
    deadline = time.monotonic() + 60
    while not as_json(fresh.cli("iac", "runs", "slow", "p", "-o", "json")):
        assert time.monotonic() < deadline, "no IaC run started"
        time.sleep(0.1)
    result = ok(fresh.cli("iac", "logs", "slow", "p", "--follow"))
    assert "Status: running" in result.stdout.splitlines()[1]  # it was in flight
    assert "nclav-follow-end" in result.stdout
    assert result.stdout.index("nclav-follow-start") < result.stdout.index("nclav-follow-end")
    assert re.search(r"IaC run \S+ ended: succeeded", result.stderr)
