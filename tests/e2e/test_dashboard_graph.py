"""The dashboard's graph of 100 enclaves in a real browser: every enclave drawn, no two boxes
overlapping, every exporter left of its importers, each arrow joining the right boxes, drawn
within 2 s of navigation, and the overview of the same tree agreeing with the API.

The applied state of a synthetic 100 x 10 tree (``scripts/synth_tree.py``) is seeded into the
server's SQLite store before it starts, as ``scripts/bench_noop.py`` does: no terraform."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import pytest
from serve_harness import REPO, Server

from nclav.config import load_directory
from nclav.graph import validate_graph
from nclav.local.sqlite_store import SqliteStateStore
from nclav.transitions import simulate_apply

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: CI must run the browser tests", pytrace=False)
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")

sys.path.insert(0, str(REPO / "scripts"))
from synth_tree import write_tree  # noqa: E402

pytestmark = pytest.mark.slow
ENCLAVES = 100
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(name="big", scope="module")
def big_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any]]:
    root = tmp_path_factory.mktemp("big")
    tree = root / "tree"
    write_tree(str(tree), ENCLAVES, 10)
    home = root / "home"
    home.mkdir(mode=0o700)
    store = SqliteStateStore(home / "state.db")
    try:
        for state in simulate_apply(validate_graph(load_directory(tree)), {}).values():
            store.put_enclave(state, None)
    finally:
        store.close()
    server = Server(home)
    server.start()
    sync = playwright_api.sync_playwright().start()
    browser = sync.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        assert context.request.post(f"{server.url}/ui/login", data={"token": server.token}).ok
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        yield server, page
        assert errors == []
    finally:
        browser.close()
        sync.stop()
        server.stop(timeout=15)


def test_the_graph_of_100_enclaves_is_drawn_readably_within_2_s(
    big: tuple[Server, Any], tmp_path: Path
) -> None:
    server, page = big
    page.goto(f"{server.url}/ui#/graph")
    page.wait_for_function(
        f"() => document.querySelectorAll('svg.graph a.node').length === {ENCLAVES}"
    )
    drawn_s = page.evaluate("() => performance.now()") / 1000
    assert drawn_s <= 2.0, f"the graph took {drawn_s:.2f} s"
    boxes = page.locator("svg.graph a.node").evaluate_all(
        """ns => ns.map(n => { const r = n.querySelector('rect.box');
            return {id: n.dataset.enclave, x: +r.getAttribute('x'), y: +r.getAttribute('y'),
                    w: +r.getAttribute('width'), h: +r.getAttribute('height'),
                    parts: n.querySelectorAll('rect.part').length}; })"""
    )
    graph = server.get("/graph").json
    assert sorted(b["id"] for b in boxes) == sorted(n["id"] for n in graph["nodes"])
    assert all(b["parts"] == 10 for b in boxes)
    by_id = {b["id"]: b for b in boxes}
    ordered = sorted(boxes, key=lambda b: (b["x"], b["y"]))
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            apart = (
                a["x"] + a["w"] <= b["x"]
                or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"]
                or b["y"] + b["h"] <= a["y"]
            )
            assert apart, f"{a['id']} overlaps {b['id']}"
    pairs = {(e["from"], e["to"]) for e in graph["edges"] if e["from"] != e["to"]}
    arrows = page.locator("svg.graph path.edge").evaluate_all(
        "es => es.map(e => [e.dataset.from, e.dataset.to, e.getAttribute('d')])"
    )
    assert {(f, t) for f, t, _ in arrows} == pairs
    for src, dst, path in arrows:
        a, b = by_id[src], by_id[dst]
        assert a["x"] < b["x"], f"{src} is not left of its importer {dst}"
        start, end = path.split(" C")[0], path.split(" ")[-1]
        assert start == f"M{a['x'] + a['w']},{a['y'] + a['h'] / 2:g}"
        assert end == f"{b['x']},{b['y'] + b['h'] / 2:g}"
    page.screenshot(path=str(REPO / "docs" / "screenshots" / "graph-100.png"))


def test_the_overview_of_the_big_tree_matches_the_api(big: tuple[Server, Any]) -> None:
    server, page = big
    page.goto(f"{server.url}/ui#/")
    page.wait_for_selector("[data-field=enclave-count]")
    assert page.locator("[data-field=enclave-count]").inner_text() == str(ENCLAVES)
    overview = server.get("/ui/api/overview").json
    assert overview["partition_count"] == ENCLAVES * 10
    for status, count in overview["partitions_by_status"].items():
        cell = page.locator(f"[data-field=partitions-by-status] dd[data-key={status}]")
        assert cell.inner_text() == str(count)
