"""Benchmark: a no-op apply of the synthetic 1,000 x 10 tree, against its dry-run.

The tree comes from ``synth_tree.write_tree``. Its applied state is seeded straight into the
SQLite store of a fresh NCLAV_HOME (``simulate_apply`` of the validated tree over empty state,
one ``put_enclave`` per enclave), then a real local server (``LocalRuntime``, as ``nclav serve
--cloud local`` wires it) starts on that home. Timed over plain HTTP, from the same
enclaves_dir, best of ``--runs`` each:
- ``POST /reconcile/dry-run``: pack the tree, load, validate, plan against the stored state;
- ``POST /reconcile?wait=...``: the same, plus a persisted run; it must have no steps, and no
  terraform may run (IaC runs are counted over every partition: must be 0).
Prints both times, their ratio, the number of changes and the number of terraform runs.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

sys.path.insert(0, os.path.dirname(__file__))

from bench_server import local_server, timed  # noqa: E402
from nclav.config import load_directory  # noqa: E402
from nclav.graph import validate_graph  # noqa: E402
from nclav.local.sqlite_store import SqliteStateStore  # noqa: E402
from nclav.transitions import simulate_apply  # noqa: E402
from synth_tree import write_tree  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def seed(tree: str) -> Callable[[Path], None]:
    def before_start(home: Path) -> None:
        applied = simulate_apply(validate_graph(load_directory(tree)), {})
        store = SqliteStateStore(home / "state.db")
        try:
            for state in applied.values():
                store.put_enclave(state, None)
        finally:
            store.close()

    return before_start


def iac_runs(home: Path) -> int:
    """Terraform runs recorded over every partition (read-only, beside the running server)."""
    conn = sqlite3.connect(f"file:{home / 'state.db'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM iac_runs").fetchone()[0])
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enclaves", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nclav-bench-tree-") as tree:
        write_tree(tree, args.enclaves, args.partitions)
        started = time.perf_counter()
        with local_server(workers=args.workers, before_start=seed(tree)) as (client, home):
            seeded = time.perf_counter() - started
            body = {"enclaves_dir": tree}
            dry: list[float] = []
            apply: list[float] = []
            changes: set[int] = set()
            step_counts: set[int] = set()
            statuses: set[str] = set()
            for _ in range(args.runs):
                t, plan = timed(lambda: client.call("POST", "/reconcile/dry-run", body))
                dry.append(t)
                changes.add(len(plan["changes"]))
                t, run = timed(lambda: client.call("POST", "/reconcile?wait=600", body))
                apply.append(t)
                statuses.add(run["status"])
                changes.add(run["changes"])
                detail: dict[str, Any] = client.call("GET", f"/runs/{run['id']}")
                step_counts.add(len(detail["steps"]))
            terraform_runs = iac_runs(home)

    t_dry, t_apply = min(dry), min(apply)
    print(
        f"tree: {args.enclaves} enclaves x {args.partitions} partitions, applied state "
        f"seeded in SQLite; server up in {seeded:.1f} s; best of {args.runs}"
    )
    print(f"POST /reconcile/dry-run:           {t_dry:8.3f} s")
    print(f"POST /reconcile?wait (no-op apply): {t_apply:7.3f} s")
    print(f"ratio apply / dry-run:             {t_apply / t_dry:8.2f}")
    print(f"changes:                           {', '.join(map(str, sorted(changes))):>8}")
    print(
        f"run status / steps:                {'/'.join(sorted(statuses))} / "
        f"{', '.join(map(str, sorted(step_counts)))}"
    )
    print(f"terraform runs (must be 0):        {terraform_runs:>8}")
    print(
        f"all runs: dry-run {' '.join(f'{t:.2f}' for t in dry)} s; "
        f"apply {' '.join(f'{t:.2f}' for t in apply)} s"
    )
    if terraform_runs or changes != {0} or step_counts != {0} or statuses != {"succeeded"}:
        raise SystemExit("FAILED: the no-op apply was not a no-op")


if __name__ == "__main__":
    main()
