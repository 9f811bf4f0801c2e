"""Benchmark: the web dashboard in headless Chromium (Debian's, driven by Playwright).

Two synthetic trees from ``synth_tree.write_tree`` have their applied state seeded straight
into SQLite (as ``bench_noop`` does) and are served by a real local server each:
- 1,000 enclaves x 10 partitions: the overview page, signed in, loaded afresh ``--runs``
  times. Reported: first contentful paint (the Performance API's ``paint`` entry; target at
  most 1 s), the time until the overview's numbers are on screen, and the bytes transferred
  for the page with every asset and the overview document (``transferSize`` of the navigation
  and resource entries: headers included, gzip as sent).
- 100 enclaves x 10 partitions: the graph page, from navigation start until all 100 enclaves
  are drawn (target at most 2 s).
Best and median of ``--runs`` each. Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

from bench_noop import seed  # noqa: E402
from bench_server import local_server  # noqa: E402
from synth_tree import write_tree  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
FCP_TARGET_S = 1.0
GRAPH_TARGET_S = 2.0


def signed_in_page(browser: Any, base: str, token: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    response = context.request.post(f"{base}/ui/login", data={"token": token})
    if response.status != 200:
        raise SystemExit(f"sign-in failed: {response.status} {response.text()}")
    return context


def overview(browser: Any, base: str, token: str, runs: int) -> dict[str, list[float]]:
    context = signed_in_page(browser, base, token)
    found: dict[str, list[float]] = {"fcp": [], "ready": [], "bytes": []}
    try:
        for _ in range(runs):
            page = context.new_page()
            page.goto(f"{base}/ui", wait_until="commit")
            page.wait_for_selector("[data-field=enclave-count]", timeout=60_000)
            ready = page.evaluate("() => performance.now()")
            page.wait_for_function(
                "() => performance.getEntriesByName('first-contentful-paint').length"
            )
            fcp = page.evaluate(
                "() => performance.getEntriesByName('first-contentful-paint')[0].startTime"
            )
            size = page.evaluate(
                "() => [...performance.getEntriesByType('navigation'),"
                " ...performance.getEntriesByType('resource')]"
                ".reduce((n, e) => n + e.transferSize, 0)"
            )
            found["fcp"].append(fcp / 1000)
            found["ready"].append(ready / 1000)
            found["bytes"].append(size)
            page.close()
    finally:
        context.close()
    return found


def graph(browser: Any, base: str, token: str, runs: int, enclaves: int) -> list[float]:
    context = signed_in_page(browser, base, token)
    times: list[float] = []
    try:
        for _ in range(runs):
            page = context.new_page()
            page.goto(f"{base}/ui#/graph", wait_until="commit")
            page.wait_for_function(
                f"() => document.querySelectorAll('svg.graph a.node').length === {enclaves}",
                timeout=60_000,
            )
            times.append(page.evaluate("() => performance.now()") / 1000)
            page.close()
    finally:
        context.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enclaves", type=int, default=1000)
    parser.add_argument("--graph-enclaves", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium (make system-deps)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            with tempfile.TemporaryDirectory(prefix="nclav-bench-tree-") as tree:
                write_tree(tree, args.enclaves, args.partitions)
                with local_server(before_start=seed(tree)) as (client, _home):
                    over = overview(browser, client.base, client.token, args.runs)
            with tempfile.TemporaryDirectory(prefix="nclav-bench-tree-") as tree:
                write_tree(tree, args.graph_enclaves, args.partitions)
                with local_server(before_start=seed(tree)) as (client, _home):
                    drawn = graph(
                        browser, client.base, client.token, args.runs, args.graph_enclaves
                    )
        finally:
            browser.close()

    def fmt(values: list[float]) -> str:
        return f"best {min(values):6.3f} s, median {statistics.median(values):6.3f} s"

    print(f"headless Chromium, best and median of {args.runs}")
    print(
        f"overview of {args.enclaves} x {args.partitions}: first contentful paint "
        f"{fmt(over['fcp'])} (target <= {FCP_TARGET_S:g} s)"
    )
    print(
        f"overview of {args.enclaves} x {args.partitions}: numbers on screen    "
        f"{fmt(over['ready'])}"
    )
    print(
        f"overview transfer size (page + every asset + overview JSON): "
        f"{max(over['bytes']) / 1024:.1f} KB"
    )
    print(
        f"graph of {args.graph_enclaves} enclaves x {args.partitions}: drawn          "
        f"{fmt(drawn)} (target <= {GRAPH_TARGET_S:g} s)"
    )
    if statistics.median(over["fcp"]) > FCP_TARGET_S or statistics.median(drawn) > GRAPH_TARGET_S:
        raise SystemExit("FAILED: a target was missed")


if __name__ == "__main__":
    main()
