"""Benchmark: drift checks of many partitions never hold up an apply by more than one check.

The engine with real terraform on the local adapters (``tests/drift_harness.py``: the same
``Engine``, ``PartitionIac``, queue workers and bundles ``nclav serve`` wires). ``--partitions``
(default 200) independent ``terraform_data`` partitions are applied, then:

1. **Checks**: the drift schedule (``DriftScheduler.tick``, as the sweeper calls it) sends every
   partition's check at ``--concurrency`` (default 2) until each partition has been checked.
2. **Applies meanwhile**: whenever a partition's check is running, that partition is re-applied
   (marked degraded, a run started: what drift remediation does), so its apply step arrives
   while the check holds the partition. ``--applies`` (default 20) such applies, one after
   another.

Measured from the records alone:
- an apply's wait for a check: from its step's claim (``StepRecord.started_at``) to its
  terraform run's start (``IacRun.started_at``, written once the partition mutex is taken),
  for the colliding applies, beside the same figure for the first applies (no check around)
  and the duration of each check (its IaC run), the longest of which is the bound;
- Terraform state versions written by in-sync checks: the versions of every partition that was
  not re-applied, before and after the checks (target: 0 new).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

# The harness the drift tests use (tests/ is not a package mypy checks: typed as Any here).
from drift_harness import (  # type: ignore[import-not-found]  # noqa: E402
    DATA_PARTITION,
    DriftHarness,
    write_tree,
)
from nclav.drift import DriftOptions, DriftScheduler  # noqa: E402
from nclav.drift.worker import remediate  # noqa: E402
from nclav.records import DriftStatus, IacOperation, IacRun, IacStatus  # noqa: E402


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def duration(run: IacRun) -> float:
    assert run.finished_at is not None
    return seconds(run.finished_at) - seconds(run.started_at)


def apply_waits(h: DriftHarness, run_id: str) -> list[tuple[float, float]]:
    """Per partition step of the run: from its claim to the start of its terraform, and how
    much of that came after the check running at the claim ended (0 when none ran)."""
    waits: list[tuple[float, float]] = []
    for step in h.store.list_steps(run_id):
        if step.target is None or step.started_at is None:
            continue
        iac = [
            r
            for r in h.store.list_iac_runs("e", step.target)
            if r.reconcile_run_id == run_id and r.operation != IacOperation.DRIFT_CHECK
        ]
        if not iac:
            continue
        claimed, began = seconds(step.started_at), seconds(iac[-1].started_at)
        ended = [
            seconds(r.finished_at)
            for r in h.store.list_iac_runs("e", step.target)
            if r.operation == IacOperation.DRIFT_CHECK
            and r.finished_at
            and seconds(r.started_at) <= claimed <= seconds(r.finished_at)
        ]
        waits.append((began - claimed, began - max(ended) if ended else 0.0))
    return waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--partitions", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--applies", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nclav-bench-drift-") as tmp:
        h = DriftHarness(Path(tmp), workers=args.workers)
        pids = [f"p{i:03d}" for i in range(args.partitions)]
        tree = write_tree(Path(tmp) / "tree", {p: DATA_PARTITION % p for p in pids})
        started = time.monotonic()
        first = h.apply(tree, timeout=3600)
        print(
            f"applied {len(pids)} partitions in {time.monotonic() - started:.1f} s: {first.status}"
        )
        baseline = apply_waits(h, first.id)
        versions_before = {p: h.state_versions(p) for p in pids}

        opts = DriftOptions(interval_s=1.0, concurrency=args.concurrency, timeout_s=600)
        scheduler = DriftScheduler(h.store, h.queue, opts, h.bundles.load)
        done = threading.Event()
        reapplied: dict[str, str] = {}  # partition -> run id

        def collide() -> None:
            """Re-apply a partition while its check runs, one run at a time."""
            while not done.is_set() and len(reapplied) < args.applies:
                target = None
                for record in h.store.list_drift("e"):
                    if record.in_flight_until is None or record.partition_id in reapplied:
                        continue
                    newest = h.store.list_iac_runs("e", record.partition_id, limit=1)
                    if (
                        newest
                        and newest[0].operation == IacOperation.DRIFT_CHECK
                        and newest[0].status == IacStatus.RUNNING
                    ):
                        target = record.partition_id
                        break
                if target is None:
                    time.sleep(0.02)
                    continue
                found = h.store.get_enclave("e")
                assert found is not None
                run_id = remediate(h.engine, found[0], found[0].partitions[target])
                if run_id is None:
                    continue
                reapplied[target] = run_id
                while not done.is_set():
                    run = h.store.get_run(run_id)
                    if run is not None and run.status.final:
                        break
                    time.sleep(0.05)

        collider = threading.Thread(target=collide, daemon=True)
        checks_started = time.monotonic()
        collider.start()
        while True:
            scheduler.tick(h.clock.now())
            checked = [r for r in h.store.list_drift("e") if r.checked_at is not None]
            if len(checked) >= len(pids) and not any(r.in_flight_until for r in checked):
                break
            time.sleep(0.2)
        done.set()
        collider.join(timeout=600)
        assert h.queue.wait_idle(timeout=600)
        checks_s = time.monotonic() - checks_started

        checks = [
            r
            for p in pids
            for r in h.store.list_iac_runs("e", p)
            if r.operation == IacOperation.DRIFT_CHECK and r.finished_at
        ]
        check_s = [duration(r) for r in checks]
        statuses = [r.status for r in h.store.list_drift("e")]
        waits: list[tuple[float, float, str]] = []
        for pid, run_id in reapplied.items():
            run = h.store.get_run(run_id)
            assert run is not None and run.status.final, run
            waits += [(w, after, pid) for w, after in apply_waits(h, run_id)]
        untouched = [p for p in pids if p not in reapplied]
        new_versions = sum(h.state_versions(p) - versions_before[p] for p in untouched)
        h.close()

    longest_check = max(check_s)
    longest_wait, _, where = max(waits) if waits else (0.0, 0.0, "-")
    after_check = max((a for _, a, _ in waits), default=0.0)
    print(
        f"{len(checks)} drift checks at concurrency {args.concurrency} in {checks_s:.1f} s: "
        f"{statuses.count(DriftStatus.IN_SYNC)} in sync, "
        f"{statuses.count(DriftStatus.DRIFTED)} drifted, "
        f"{statuses.count(DriftStatus.CHECK_FAILED)} failed"
    )
    print(
        f"check duration: median {statistics.median(check_s):.2f} s, longest {longest_check:.2f} s"
    )
    print(
        f"apply step claim -> terraform start with no check around (first apply): "
        f"longest {max(w for w, _ in baseline):.3f} s over {len(baseline)} steps"
    )
    print(
        f"applies that arrived during a check of their partition: {len(waits)}; "
        f"longest wait {longest_wait:.2f} s ({where}); "
        f"{'within' if longest_wait <= longest_check else 'OVER'} one check's duration "
        f"(longest check {longest_check:.2f} s); at most {after_check:.3f} s of a wait came "
        "after the check it waited for had ended"
    )
    print(
        f"state versions written by in-sync checks ({len(untouched)} partitions not "
        f"re-applied): {new_versions}"
    )
    if longest_wait > longest_check or new_versions:
        sys.exit(1)


if __name__ == "__main__":
    main()
