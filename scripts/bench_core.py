"""Benchmark: load + validate + plan a synthetic 1,000 x 10 tree, against PyYAML's C loader.

Prints the best of several runs of each, and their ratio (target: at most 2.0).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(__file__))

from typing import TYPE_CHECKING

from nclav.config import load_directory  # noqa: E402
from nclav.graph import validate_graph  # noqa: E402
from nclav.plan import plan_changes  # noqa: E402
from nclav.transitions import simulate_apply  # noqa: E402
from synth_tree import write_tree  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable


def best_of(runs: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--enclaves", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as root:
        write_tree(root, args.enclaves, args.partitions)
        configs = sorted(
            os.path.join(d, "config.yml") for d, _, files in os.walk(root) if "config.yml" in files
        )

        def parse_only() -> None:
            for path in configs:
                with open(path, "rb") as fh:
                    yaml.load(fh.read(), Loader=yaml.CSafeLoader)

        def nclav_plan() -> None:
            plan_changes(validate_graph(load_directory(root)), {})

        parse_only()  # warm the page cache for both
        t_yaml = best_of(args.runs, parse_only)
        t_nclav = best_of(args.runs, nclav_plan)

        graph = validate_graph(load_directory(root))
        applied = simulate_apply(graph, {})
        t_noop = best_of(
            args.runs, lambda: plan_changes(validate_graph(load_directory(root)), applied)
        )
        noop = plan_changes(graph, applied)

    print(
        f"tree: {args.enclaves} enclaves x {args.partitions} partitions "
        f"({len(configs)} config.yml files)"
    )
    print(f"PyYAML CSafeLoader parse only:        {t_yaml:8.3f} s")
    print(f"nclav load + validate + plan:         {t_nclav:8.3f} s")
    print(f"ratio (target <= 2.0):                {t_nclav / t_yaml:8.2f}")
    print(
        f"no-op re-plan against applied state:  {t_noop:8.3f} s "
        f"({len(noop.changes)} changes, {len(noop.steps)} steps)"
    )


if __name__ == "__main__":
    main()
