"""Concurrent reconciles through a real ``nclav serve`` with real terraform.

Issue 3, Tests: 20 concurrent POST /reconcile on one tree: every run ends, state is consistent,
terraform never ran twice at once on one partition. And (Engine): runs touching the same
enclave never interleave; later ones wait behind earlier ones, first come first served.
"""

from __future__ import annotations

import shutil
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest
from serve_harness import copy_example, require_terraform, server_factory_fixture, server_fixture  # noqa: F401

if TYPE_CHECKING:
    from pathlib import Path

    from serve_harness import Server

require_terraform()
pytestmark = pytest.mark.terraform

PRODUCT_A = [("product-a-dev", "db"), ("product-a-dev", "api"), ("web-dev", "frontend")]
CLIENTS = 20


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def assert_no_overlap(intervals: list[tuple[datetime, datetime, Any]], what: str) -> None:
    ordered = sorted(intervals, key=lambda i: i[0])
    for (_, end, first), (start, _, second) in zip(ordered, ordered[1:], strict=False):
        assert end <= start, f"{what}: {first} ended at {end}, after {second} started at {start}"


def post_together(server: Server, trees: list[Path]) -> list[dict[str, Any] | None]:
    """POST /reconcile for every tree at once (one thread each); every run must succeed.

    Returns the final runs in the order of ``trees`` (None for a request answered "no
    changes": nothing was in flight and its tree was the one applied, so no run was recorded),
    after checking that runs on one enclave never overlapped and began in the order they were
    created."""
    barrier = threading.Barrier(len(trees))
    answers: list[Any] = [None] * len(trees)

    def client(i: int) -> None:
        barrier.wait()
        try:
            answers[i] = server.request("POST", "/reconcile", {"enclaves_dir": str(trees[i])})
        except Exception as exc:  # reported below, with the others
            answers[i] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(trees))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for answer in answers:
        assert not isinstance(answer, Exception) and answer.status in (200, 202), answer
    for answer in answers:
        if answer.json["run_id"] is None:
            assert answer.status == 200 and answer.json["run"] is None, answer
            assert (answer.json["changes"], answer.json["message"]) == (0, "no changes")
    made = [a.json["run_id"] for a in answers if a.json["run_id"] is not None]
    assert made and len(set(made)) == len(made)

    # Every run ends, and succeeds.
    found = {run_id: server.wait_run(run_id, timeout=150) for run_id in made}
    runs = list(found.values())
    failed = [r for r in runs if r["status"] != "succeeded"]
    assert not failed, failed
    assert {r["id"] for r in server.ok("GET", f"/runs?limit={len(made)}")} == set(made)

    # Runs on one enclave never overlap, and start in the order they were created.
    for enclave in ("product-a-dev", "web-dev"):
        mine = [r for r in runs if enclave in r["enclave_ids"]]
        assert_no_overlap(
            [(at(r["started_at"]), at(r["finished_at"]), r["seq"]) for r in mine],
            f"runs on {enclave}",
        )
        by_start = [r["seq"] for r in sorted(mine, key=lambda r: r["started_at"])]
        assert by_start == sorted(by_start), f"runs on {enclave} did not start in order"
    return [found.get(a.json["run_id"]) for a in answers]


def assert_terraform_serialised(server: Server) -> None:
    """No two IaC runs of one partition overlapped in time, and none failed."""
    for enclave, partition in PRODUCT_A:
        iac = server.iac_runs(enclave, partition)
        assert all(r["status"] == "succeeded" for r in iac), iac
        assert_no_overlap(
            [(at(r["started_at"]), at(r["finished_at"]), r["id"]) for r in iac],
            f"terraform on {enclave}/{partition}",
        )


def test_twenty_concurrent_reconciles_on_one_tree(server: Server, tmp_path: Path) -> None:
    tree = copy_example("product-a", tmp_path)
    runs = [r for r in post_together(server, [tree] * CLIENTS) if r is not None]

    # Each run was planned when it began: the first did the work, the others had none (a
    # request that came when nothing was in flight any more recorded no run at all).
    by_seq = sorted(runs, key=lambda r: r["seq"])
    assert [r["changes"] for r in by_seq] == [9] + [0] * (len(runs) - 1)
    # Terraform never ran twice at once on one partition (here: it ran once), and succeeded.
    for enclave, partition in PRODUCT_A:
        assert len(server.iac_runs(enclave, partition)) == 1
    assert_terraform_serialised(server)

    # The state is consistent: all active, and nothing left to change.
    assert server.dry_run(tree)["changes"] == []
    enclaves = server.enclaves()
    assert {e: s["meta"]["status"] for e, s in enclaves.items()} == {
        "product-a-dev": "active",
        "web-dev": "active",
    }
    for state in enclaves.values():
        assert all(p["meta"]["status"] == "active" for p in state["partitions"].values())
    counts = {p: len(server.iac_runs(*p)) for p in PRODUCT_A}
    again = server.reconcile(tree)
    assert again["run"] is None and again["changes"] == 0  # no run recorded
    assert {p: len(server.iac_runs(*p)) for p in PRODUCT_A} == counts
    assert "unhandled error" not in server.stderr()


def test_concurrent_reconciles_of_alternating_trees(server: Server, tmp_path: Path) -> None:
    """Ten clients at once, alternating between two versions of db's main.tf: every run has
    terraform to do, terraform still never overlaps on a partition, and the tree of the run
    created last is the one applied."""
    one = copy_example("product-a", tmp_path)
    assert server.reconcile(one)["status"] == "succeeded"
    two = tmp_path / "two"
    shutil.copytree(one, two)
    main_tf = two / "product-a" / "dev" / "db" / "main.tf"
    main_tf.write_text(main_tf.read_text().replace(".internal", ".internal.example"))
    trees = [two if i % 2 == 0 else one for i in range(10)]

    found = post_together(server, trees)
    assert_terraform_serialised(server)
    # A request answered "no changes" came when its tree was the one applied: no run.
    made = [i for i in range(len(found)) if found[i] is not None]
    runs = {i: found[i] for i in made}
    last = max(made, key=lambda i: runs[i]["seq"])
    assert server.dry_run(trees[last])["changes"] == []
    hostname = server.ok("GET", "/enclaves/product-a-dev")["partitions"]["db"]["resolved_outputs"]
    expected = "product-a-dev-db.postgres.internal"
    assert hostname["hostname"] == (expected + ".example" if trees[last] is two else expected)
    # In the order they ran, a run re-applied db and api exactly when its tree differed from
    # the one applied before it; the front end reads nothing that moved.
    applied, switches = one, 0
    for i in sorted(made, key=lambda i: runs[i]["seq"]):
        switched = trees[i] is not applied
        assert (runs[i]["changes"] > 0) == switched, runs[i]
        switches += switched
        applied = trees[i]
    assert switches > 0
    assert len(server.iac_runs("product-a-dev", "db")) == 1 + switches
    assert len(server.iac_runs("product-a-dev", "api")) == 1 + switches
    assert len(server.iac_runs("web-dev", "frontend")) == 1


def test_the_tree_posted_last_wins(server: Server, tmp_path: Path) -> None:
    """A run queued behind another is planned when it begins, against the state the earlier
    run left, so the tree posted last is what ends up applied."""
    first = copy_example("product-a", tmp_path)
    second = tmp_path / "second"
    shutil.copytree(first, second)
    shutil.rmtree(second / "web" / "dev" / "frontend")
    a = server.start_reconcile(first)
    b = server.start_reconcile(second)  # queued behind a: it touches the same enclaves
    assert server.wait_run(a["id"])["status"] == "succeeded"
    assert server.wait_run(b["id"])["status"] == "succeeded"
    assert server.dry_run(second)["changes"] == []
    assert "frontend" not in server.ok("GET", "/enclaves/web-dev")["partitions"]
