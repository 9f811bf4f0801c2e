"""The web dashboard in a real browser (Debian's Chromium driven by Playwright) against a real
``nclav serve`` with examples/product-a applied by real terraform.

Every page is compared with what the API answers; a run started from the CLI shows up and
updates without a reload; a log follows a running terraform; a failing partition's error is
shown; approve works; sign out works. Throughout, no request leaves the
server's origin (Playwright sees every request the page makes) and the console stays free of
errors. Each page's screenshot is saved as an artifact (docs/screenshots/ for the README
with NCLAV_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from serve_harness import REPO, Server, copy_example, require_terraform

if TYPE_CHECKING:
    from collections.abc import Iterator

require_terraform()
CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: CI must run the browser tests", pytrace=False)
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.terraform, pytest.mark.slow]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# Each page's screenshot is a test artifact (under the system's temp directory); with
# NCLAV_UPDATE_SCREENSHOTS=1 they replace the README's pictures in docs/screenshots/.
SCREENSHOTS = (
    REPO / "docs" / "screenshots"
    if os.environ.get("NCLAV_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "nclav-dashboard-screenshots"
)


# A partition that prints a line every half second for a few seconds (a built-in provisioner:
# no provider to download), so a log can be watched while terraform runs.
SLOW_TF = """
variable "nclav_enclave" { type = string }
variable "nclav_partition" { type = string }
resource "terraform_data" "slow" {
  input = "%(stamp)s"
  provisioner "local-exec" {
    command = "echo '%(markup)s'; for i in 1 2 3 4 5 6 7 8 9 10; do echo tick-$i; sleep 0.6; done"
  }
}
output "done" { value = terraform_data.slow.id }
output "banner" { value = "%(markup)s" }
"""
SLOW_CONFIG = """id: slow
name: Slow
backend: terraform
declared_outputs: [done, banner]
"""
# Markup in a log line and an output: shown as text, never run (window.__xss stays unset).
MARKUP = "<b>bold</b><img src=x onerror=window.__xss=1>"
BROKEN_TF = """
variable "nclav_enclave" { type = string }
variable "nclav_partition" { type = string }
resource "terraform_data" "broken" {
  provisioner "local-exec" {
    command = "echo the-broken-partition-fails >&2; exit 3"
  }
}
"""
BROKEN_CONFIG = """id: broken
name: Broken
backend: terraform
"""


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class Watch:
    """Everything the page did that it must not: console errors, page errors, requests to
    another origin (aborted, and recorded)."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.requests: list[str] = []

    def attach(self, context: Any) -> None:
        def check(route: Any) -> None:
            url = route.request.url
            self.requests.append(url)
            parts = urlsplit(url)
            if f"{parts.scheme}://{parts.netloc}" != self.origin:
                self.foreign.append(url)
                route.abort()
            else:
                route.continue_()

        context.route("**/*", check)
        context.on("page", self.attach_page)

    def attach_page(self, page: Any) -> None:
        page.on(
            "console",
            lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"),
        )
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def assert_clean(self) -> None:
        assert self.foreign == [], f"requests left the server's origin: {self.foreign}"
        assert self.errors == [], self.errors


class Dash:
    """The server, its tree, and a signed-in browser page."""

    def __init__(self, server: Server, tree: Path, browser: Any) -> None:
        self.server = server
        self.tree = tree
        self.browser = browser
        parts = urlsplit(server.url)
        self.watch = Watch(f"{parts.scheme}://{parts.netloc}")
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.watch.attach(self.context)
        self.page = self.context.new_page()
        self.watch.attach_page(self.page)

    def api(self, path: str) -> Any:
        response = self.server.get(path)
        assert response.status == 200, response
        return response.json

    def open(self, fragment: str) -> Any:
        self.page.goto(f"{self.server.url}/ui#{fragment}")
        return self.page

    def sign_in(self) -> None:
        page = self.page
        page.goto(f"{self.server.url}/ui")
        page.get_by_label("API token").fill(self.server.token)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("[data-field=enclave-count]")

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


@pytest.fixture(name="dash", scope="module")
def dash_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    root = tmp_path_factory.mktemp("dash")
    env = {"NCLAV_MAX_DELETES": "0"}
    server = Server(root / "home", env=env)
    server.start()
    sync = playwright_api.sync_playwright().start()
    browser = launch(sync)
    try:
        tree = copy_example("product-a", root)
        run = server.reconcile(tree)
        assert run["status"] == "succeeded", run
        dash = Dash(server, tree, browser)
        dash.sign_in()
        yield dash
        dash.watch.assert_clean()
    finally:
        browser.close()
        sync.stop()
        server.stop(timeout=15)


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).first.inner_text()).strip()


# -- sign in and the read pages -----------------------------------------------------------------


def test_sign_in_sets_a_strict_http_only_cookie_and_stores_no_token(dash: Dash) -> None:
    cookies = dash.context.cookies()
    (cookie,) = [c for c in cookies if c["name"] == "nclav_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain HTTP on loopback: Secure would never be sent
    assert dash.server.token not in cookie["value"]
    page = dash.page
    storage = page.evaluate(
        "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    assert json.loads(storage) == [[], []]
    assert page.evaluate("() => document.cookie") == ""  # HttpOnly: no script sees it
    assert dash.server.token not in page.content()


def test_overview_shows_what_the_api_says(dash: Dash) -> None:
    page = dash.open("/")
    page.wait_for_selector("[data-field=enclave-count]")
    overview = dash.api("/ui/api/overview")
    status = dash.api("/status")
    assert text(page, "[data-field=enclave-count]") == str(status["enclave_count"]) == "2"
    for name, count in status["by_status"].items():
        assert text(page, f"[data-field=by-status] dd[data-key={name}]") == str(count)
    for name, count in overview["by_cloud"].items():
        assert text(page, f"[data-field=by-cloud] dd[data-key={name}]") == str(count)
    for name, count in overview["partitions_by_status"].items():
        cell = f"[data-field=partitions-by-status] dd[data-key={name}]"
        assert text(page, cell) == str(count)
    newest = dash.api("/runs")[0]
    row = page.locator(f"[data-field=recent-runs] tr[data-run='{newest['id']}']")
    assert newest["status"] in row.inner_text()
    dash.shot("overview")


def test_graph_draws_every_enclave_and_edge_and_a_click_opens_one(dash: Dash) -> None:
    page = dash.open("/graph")
    page.wait_for_selector("svg.graph")
    graph = dash.api("/graph")
    drawn = page.locator("svg.graph a.node")
    assert sorted(drawn.evaluate_all("ns => ns.map(n => n.dataset.enclave)")) == sorted(
        n["id"] for n in graph["nodes"]
    )
    edges = page.locator("svg.graph path.edge")
    # One arrow per exporter -> importer pair; an enclave's imports of itself draw none.
    pairs = {(e["from"], e["to"]) for e in graph["edges"] if e["from"] != e["to"]}
    assert edges.count() == len(pairs) == 1
    assert edges.first.get_attribute("data-from") == "product-a-dev"
    dash.shot("graph")
    page.locator("svg.graph a.node[data-enclave=web-dev]").click()
    page.wait_for_selector("[data-field=enclave-id]")
    assert text(page, "[data-field=enclave-id]") == "web-dev"


def test_enclave_page_shows_partitions_and_handles(dash: Dash) -> None:
    page = dash.open("/enclave/product-a-dev")
    page.wait_for_selector("[data-field=partitions]")
    enclave = dash.api("/enclaves/product-a-dev")
    for pid, part in enclave["partitions"].items():
        row = page.locator(f"[data-field=partitions] tr[data-partition={pid}]")
        assert (
            row.locator("[data-status]").first.get_attribute("data-status")
            == (part["meta"]["status"])
        )
    assert json.dumps(enclave["enclave_handle"], indent=2) in page.locator("pre").first.inner_text()
    dash.shot("enclave")


def test_partition_page_shows_outputs_and_iac_history(dash: Dash) -> None:
    page = dash.open("/enclave/product-a-dev/partition/api")
    page.wait_for_selector("[data-field=iac-runs]")
    enclave = dash.api("/enclaves/product-a-dev")
    outputs = enclave["partitions"]["api"]["resolved_outputs"]
    assert outputs  # the example's api partition has outputs
    for key, value in outputs.items():
        row = page.locator(f"[data-field=outputs] tr[data-key={key}]")
        assert row.locator("td").nth(1).inner_text() == value
    runs = dash.api("/enclaves/product-a-dev/partitions/api/iac/runs")
    shown = page.locator("[data-field=iac-runs] tr[data-iac-run]")
    assert shown.evaluate_all("rs => rs.map(r => r.dataset.iacRun)") == [r["id"] for r in runs]
    dash.shot("partition")


# -- live: a run, its log, a failure --------------------------------------------------------------


def add_partition(tree: Path, name: str, config: str, main_tf: str) -> None:
    part = tree / "web" / "dev" / name
    part.mkdir(exist_ok=True)
    (part / "config.yml").write_text(config)
    (part / "main.tf").write_text(main_tf)


def start_from_the_cli(dash: Dash) -> str:
    """``nclav apply --no-wait`` in its own process; the id of the run it started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NCLAV_")}
    env |= {"NCLAV_URL": dash.server.url, "NCLAV_TOKEN": dash.server.token, "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "nclav", "apply", str(dash.tree), "--no-wait", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", done.stdout)
    assert found, done.stdout
    return found.group(0)


def test_a_run_started_from_the_cli_appears_and_its_log_follows_terraform(dash: Dash) -> None:
    page = dash.open("/runs")
    page.wait_for_selector("[data-field=runs]")
    add_partition(
        dash.tree, "slow", SLOW_CONFIG, SLOW_TF % {"stamp": time.time(), "markup": MARKUP}
    )
    run_id = start_from_the_cli(dash)
    # The runs list polls: the new run appears without a reload, with its origin.
    row = page.locator(f"[data-field=runs] tr[data-run='{run_id}']")
    row.wait_for(timeout=10_000)
    assert row.locator("td").nth(2).inner_text() == "cli"
    row.get_by_role("link").click()
    page.wait_for_selector("[data-field=steps]")
    step = page.locator("tr[data-step='provision_partition:web-dev/slow']")
    step.locator("[data-status=running]").wait_for(timeout=30_000)
    dash.shot("run")
    step.get_by_role("link", name="log of step provision_partition:web-dev/slow").click()
    log = page.locator("[data-field=log]")
    log.wait_for()
    # Terraform is still running while the first ticks are already on the page.
    page.wait_for_function(
        "() => document.querySelector('[data-field=log]').textContent.includes('tick-2')",
        timeout=30_000,
    )
    assert (
        page.locator("[data-field=log-status] [data-status]").get_attribute("data-status")
        == "running"
    )
    dash.shot("log")
    page.wait_for_function(
        "() => document.querySelector('[data-field=log]').textContent.includes('tick-10')",
        timeout=30_000,
    )
    page.locator("[data-field=log-status] [data-status=succeeded]").wait_for(timeout=30_000)
    latest = dash.api("/enclaves/web-dev/partitions/slow/iac/runs/latest")
    api_log = dash.server.get(f"/enclaves/web-dev/partitions/slow/iac/runs/{latest['id']}/log").text
    assert log.inner_text().strip() == api_log.strip()
    # Markup in the log is text: no element was made from it, no script ran.
    assert MARKUP in log.inner_text()
    assert log.locator("img, b").count() == 0
    assert page.evaluate("() => window.__xss") is None
    # Search keeps the matching lines only.
    page.get_by_label("Search").fill("tick-1")
    assert log.inner_text().split("\n") == [
        line for line in api_log.split("\n") if "tick-1" in line
    ]
    # The run page followed the run to its end.
    page.go_back()
    page.locator("h1 [data-status=succeeded]").wait_for(timeout=30_000)
    assert dash.server.run(run_id)["status"] == "succeeded"
    # So is markup in an output.
    page = dash.open("/enclave/web-dev/partition/slow")
    banner = page.locator("[data-field=outputs] tr[data-key=banner] td").nth(1)
    banner.wait_for()
    assert banner.inner_text() == MARKUP
    assert page.locator("[data-field=outputs] img").count() == 0
    assert page.evaluate("() => window.__xss") is None


def test_a_failing_partition_shows_its_error(dash: Dash) -> None:
    add_partition(dash.tree, "broken", BROKEN_CONFIG, BROKEN_TF)
    run = dash.server.reconcile(dash.tree)
    assert run["status"] == "failed", run
    enclave = dash.api("/enclaves/web-dev")
    message = enclave["partitions"]["broken"]["meta"]["last_error"]["message"]
    page = dash.open("/")
    errors = page.locator("[data-field=errors]")
    errors.get_by_text("broken", exact=True).wait_for()
    assert message.splitlines()[0] in errors.inner_text()
    page = dash.open("/enclave/web-dev/partition/broken")
    alert = page.locator("[data-field=last-error]")
    alert.wait_for()
    assert alert.inner_text() == message
    assert alert.get_attribute("role") == "alert"
    dash.shot("error")
    page = dash.open(f"/run/{run['id']}")
    page.locator("[data-field=run-errors]").wait_for()
    shutil.rmtree(dash.tree / "web" / "dev" / "broken")


# -- the actions -------------------------------------------------------------------------------


def test_a_run_awaiting_approval_is_approved_from_the_browser(dash: Dash) -> None:
    slow = dash.tree / "web" / "dev" / "slow"
    if slow.exists():
        shutil.rmtree(slow)
    # Deleting a partition is over the delete limit this server was started with (0).
    run_id = dash.server.start_reconcile(dash.tree)["run_id"]
    deadline = time.monotonic() + 60
    while (status := dash.server.run(run_id)["status"]) != "awaiting_approval":
        assert status in ("queued", "running") and time.monotonic() < deadline, status
        time.sleep(0.2)
    page = dash.open(f"/run/{run_id}")
    page.locator("[data-field=approval]").wait_for()
    assert "partition web-dev/slow" in page.locator("[data-field=approval]").inner_text()
    dash.shot("approval")
    page.get_by_role("button", name="Approve").click()
    page.locator("h1 [data-status=succeeded]").wait_for(timeout=60_000)
    assert dash.server.run(run_id)["status"] == "succeeded"


def test_drift_is_shown_and_checked_from_the_browser(dash: Dash) -> None:
    route = "/enclaves/product-a-dev/partitions/api/drift"
    page = dash.open("/enclave/product-a-dev/partition/api")
    button = page.get_by_role("button", name="Check drift now")
    button.wait_for(timeout=5_000)
    button.click()
    page.get_by_text("Drift check started").wait_for()
    deadline = time.monotonic() + 90
    while (found := dash.api(route))["checking"] or found["checked_at"] is None:
        assert time.monotonic() < deadline, f"the drift check never finished: {found}"
        time.sleep(0.5)
    # The section looks again while the check runs: it shows the outcome without a reload.
    status = page.locator(f"[data-field=drift-status] [data-status={found['status']}]")
    status.wait_for(timeout=10_000)
    assert found["status"] == "in_sync", found
    overview = dash.api("/ui/api/overview")
    assert overview["drift"]["in_sync"] >= 1
    page = dash.open("/drift")
    table = page.locator("[data-field=drift]")
    table.wait_for()
    rows = table.locator("tr[data-partition]").evaluate_all(
        "rs => rs.map(r => r.dataset.partition)"
    )
    listed = dash.api("/drift")["partitions"]
    assert rows == [f"{d['enclave_id']}/{d['partition_id']}" for d in listed]
    dash.shot("drift")


# -- security and accessibility ------------------------------------------------------------------


def test_pages_carry_a_strict_csp_and_the_cookie_reaches_only_dashboard_routes(
    dash: Dash,
) -> None:
    page_response = dash.server.get("/ui", auth=False)
    csp = page_response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page_response.headers["X-Frame-Options"] == "DENY"
    request = dash.context.request
    base = dash.server.url
    assert request.get(f"{base}/status").status == 200  # the cookie alone, a dashboard read
    # ... but not for a route the dashboard does not use, nor without the CSRF header.
    assert request.get(f"{base}/openapi.json").status == 401
    assert request.post(f"{base}/reconcile", data="{}").status == 401
    assert request.delete(f"{base}/enclaves/web-dev").status == 401
    run = dash.api("/runs")[0]["id"]
    assert request.post(f"{base}/runs/{run}/cancel").status == 403


def test_keyboard_reaches_the_navigation_and_elements_have_labels(dash: Dash) -> None:
    page = dash.open("/")
    page.wait_for_selector("[data-field=enclave-count]")
    # A page change moves the focus to the main region (screen readers read the new page);
    # the navigation and sign-out come before it in tab order.
    assert page.evaluate("() => document.activeElement.id") == "main"
    links = ["Overview", "Graph", "Runs", "Drift"]
    names = []
    for _ in range(len(links) + 1):
        page.keyboard.press("Shift+Tab")
        names.append(page.evaluate("() => document.activeElement.textContent.trim()"))
    assert names == ["Sign out", *reversed(links)]
    page.keyboard.press("Tab")  # from "Overview" to "Graph"
    page.keyboard.press("Enter")
    page.wait_for_selector("svg.graph")
    assert page.get_by_role("navigation", name="Main").is_visible()
    assert page.locator("nav a[aria-current=page]").inner_text() == "Graph"
    page = dash.open("/graph")
    node = page.get_by_role("link", name="Enclave web-dev, active, 1 partitions")
    node.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-field=enclave-id]")
    assert text(page, "[data-field=enclave-id]") == "web-dev"


def test_sign_out_clears_the_session(dash: Dash) -> None:
    page = dash.open("/")
    page.wait_for_selector("[data-field=enclave-count]")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API token").wait_for()
    assert [c for c in dash.context.cookies() if c["name"] == "nclav_session"] == []
    dash.shot("login")
    assert dash.context.request.get(f"{dash.server.url}/status").status == 401
    # Signing back in works (and the next module-level checks still see a clean console).
    dash.sign_in()


def test_no_request_left_the_origin_and_the_console_is_clean(dash: Dash) -> None:
    assert any(url.endswith("/ui/static/app.js") for url in dash.watch.requests)
    dash.watch.assert_clean()
