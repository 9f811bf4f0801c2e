"""The bundle cache of a real ``nclav serve`` is bounded by bytes (issue 8: eight 49 KB bundles
and their dry runs grew the server from 60 to 453 MiB, and it stayed there)."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

from serve_harness import REPO, server_factory_fixture  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from serve_harness import Server


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):  # noqa: SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_dry_runs_of_many_trees_stay_within_the_cache_budget(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    trees = []
    for n in range(8):  # each ~43 KB packed, ~6 MiB once loaded
        root = tmp_path / f"tree{n}"
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "synth_tree.py"), str(root)]
            + ["--enclaves", str(150 + n), "--partitions", "10"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        trees.append(root)
    server = server_factory(env={"NCLAV_BUNDLE_CACHE_MIB": "8"})
    assert server.proc is not None
    sizes = []
    for root in trees:
        server.ok("POST", "/reconcile/dry-run", {"enclaves_dir": str(root)})
        sizes.append(rss_mib(server.proc.pid))
    # With an 8 MiB budget one loaded tree is kept: memory levels off after the second tree
    # (unbounded, the eight trees add ~6 MiB each: ~35 MiB after the second).
    assert sizes[-1] - sizes[1] < 15, sizes
