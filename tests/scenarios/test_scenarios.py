"""The scenario suite: what "a runtime works" means, run on every runtime (``runtime`` fixture).

Real terraform, real stand-ins (SQLite and the thread queue locally; DynamoDB, SQS and S3 on
moto for AWS). Each scenario drives the runtime through the HTTP API and the uniform driver of
``runtimes.py`` only, so a new cloud passes the same suite by adding a driver.

A scenario a runtime fails today for a known defect is marked ``xfail(strict=True)`` for that
runtime (``known_defect``), naming the defect: when the fix lands the test passes, strict
reports it, and the mark goes. The 50 MB state and the 2,000-line log are ``slow``.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from runtimes import WorkerDied
from serve_harness import require_terraform

import nclav.engine.engine as engine_module
from nclav.errors import TemporaryError
from stand_ins import COLLECTION_GROUPS, FIELD_DELETES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from runtimes import Runtime

    from nclav.records import StepRecord

require_terraform()
pytestmark = pytest.mark.terraform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PRODUCT_A = [("product-a-dev", "db"), ("product-a-dev", "api"), ("web-dev", "frontend")]


def known_defect(request: pytest.FixtureRequest, runtime: Runtime, **reasons: str) -> None:
    """Expect this scenario to fail on the runtimes named in ``reasons`` (strictly: once the
    defect is fixed, the pass is reported, and the mark must go)."""
    reason = reasons.get(runtime.name)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


# -- trees ---------------------------------------------------------------------------------------


def copy_example(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(EXAMPLES / name / "enclaves", target)
    return target


def enclave(root: Path, enclave_id: str, partitions: dict[str, str], extra: str = "") -> Path:
    """An enclave of terraform partitions: ``partitions`` maps each id to its main.tf."""
    base = root / enclave_id
    base.mkdir(parents=True, exist_ok=True)
    config = f"id: {enclave_id}\nname: {enclave_id}\ncloud: local\nregion: local-1\n{extra}"
    (base / "config.yml").write_text(config)
    for pid, main_tf in partitions.items():
        (base / pid).mkdir(exist_ok=True)
        (base / pid / "config.yml").write_text(f"id: {pid}\nname: {pid}\nbackend: terraform\n")
        variables = 'variable "nclav_enclave" { type = string }\n'
        variables += 'variable "nclav_partition" { type = string }\n'
        (base / pid / "main.tf").write_text(variables + main_tf)
    return root


SMALL = 'resource "terraform_data" "thing" { input = "x" }\n'
FAILING = (
    'resource "terraform_data" "broken" {\n'
    '  provisioner "local-exec" { command = "echo about to fail; exit 3" }\n'
    "}\n"
)


def iac_counts(rt: Runtime, partitions: list[tuple[str, str]]) -> dict[str, int]:
    return {f"{e}/{p}": len(rt.iac_runs(e, p)) for e, p in partitions}


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["step_id"]: s for s in run["steps"]}


# -- fault injection: through the runtime's own engine, the same on every runtime ------------------


@pytest.fixture
def crash_once(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], list[str]]:
    """``crash_once(step_id)``: the first worker to carry out that step dies in it (after its
    claim took the step and its lease, before any outcome). Returns the crashed step ids."""
    crashed: list[str] = []
    real = engine_module.carry_out

    def carry_out(ctx: Any, step: StepRecord) -> Any:
        if step.step_id in targets and step.step_id not in crashed:
            crashed.append(step.step_id)
            raise WorkerDied(step.step_id)
        return real(ctx, step)

    targets: set[str] = set()
    monkeypatch.setattr(engine_module, "carry_out", carry_out)

    def arm(step_id: str) -> list[str]:
        targets.add(step_id)
        return crashed

    return arm


@pytest.fixture
def failing_claims(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, int], None]:
    """``failing_claims(step_id, n)``: the runtime's state store fails the next ``n`` claims
    of that step with a temporary error (the store is down for that step's deliveries)."""
    store = runtime.engine.store
    real = store.claim_step
    left: dict[str, int] = {}
    guard = threading.Lock()

    def claim_step(
        run_id: str, step_id: str, owner: str, lease_s: float, now: float
    ) -> StepRecord | None:
        with guard:
            failing = left.get(step_id, 0) > 0
            if failing:
                left[step_id] -= 1
        if failing:
            raise TemporaryError("state store: throttled", retry_after_s=0)
        return real(run_id, step_id, owner, lease_s, now)

    monkeypatch.setattr(store, "claim_step", claim_step)

    def arm(step_id: str, times: int) -> None:
        left[step_id] = times

    return arm


@pytest.fixture
def blob_requests(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every request the runtime's blob store is asked for, by method and key."""
    blobs = runtime.engine.blobs
    seen: list[str] = []
    for method in ("put", "get", "append", "exists", "delete", "list"):
        real = getattr(blobs, method)

        def counted(*args: Any, _real: Any = real, _name: str = method, **kw: Any) -> Any:
            seen.append(f"{_name} {args[0] if args else ''}")
            return _real(*args, **kw)

        monkeypatch.setattr(blobs, method, counted)
    yield seen


# -- scenarios -----------------------------------------------------------------------------------


# On the npm Firestore emulator a finished run stays listed as unfinished: the no-op apply
# queues behind it.
@pytest.mark.needs_gcloud_firestore(FIELD_DELETES)
def test_apply_with_cross_enclave_imports_then_no_op_then_destroy(
    runtime: Runtime, tmp_path: Path
) -> None:
    tree = copy_example("product-a", tmp_path)
    run = runtime.apply(tree)
    assert run["status"] == "succeeded", run
    assert run["changes"] == 9 and run["errors"] == []
    assert {s["status"] for s in run["steps"]} == {"succeeded"}
    assert iac_counts(runtime, PRODUCT_A) == {f"{e}/{p}": 1 for e, p in PRODUCT_A}
    found = runtime.enclaves()
    db = found["product-a-dev"]["partitions"]["db"]["resolved_outputs"]
    assert db == {"hostname": "product-a-dev-db.postgres.internal", "port": "5432"}
    # web-dev's frontend got product-a-dev's api outputs across the enclave boundary.
    api = found["product-a-dev"]["partitions"]["api"]["resolved_outputs"]
    assert found["web-dev"]["import_handles"]["product_api"]["outputs"] == api
    state = runtime.request("GET", "/terraform/state/product-a-dev/db")
    assert state.status == 200 and [r["type"] for r in state.json["resources"]] == [
        "terraform_data"
    ]

    # -- the same tree again: nothing to do, no terraform --------------------------------------
    again = runtime.apply(tree)
    assert again["run"] is None and again["changes"] == 0, again  # no run recorded
    assert iac_counts(runtime, PRODUCT_A) == {f"{e}/{p}": 1 for e, p in PRODUCT_A}

    # -- destroy: one partition, then one enclave, then the rest by applying an empty tree -----
    assert runtime.destroy("/enclaves/web-dev/partitions/frontend")["status"] == "succeeded"
    assert runtime.ok("GET", "/enclaves/web-dev")["partitions"] == {}
    assert runtime.destroy("/enclaves/web-dev")["status"] == "succeeded"
    assert runtime.request("GET", "/enclaves/web-dev").status == 404
    empty = tmp_path / "empty"
    empty.mkdir()
    # The delete guard: a tree with no enclave would delete every enclave; it is refused
    # unless the request allows deleting.
    refused = runtime.request("POST", "/reconcile", {"bundle": runtime.upload(empty)})
    assert refused.status == 422 and "allow_delete" in refused.text, refused
    assert set(runtime.enclaves()) == {"product-a-dev"}
    assert runtime.apply(empty, allow_delete=True)["status"] == "succeeded"
    for enclave_id, partition in PRODUCT_A:
        last = runtime.iac_runs(enclave_id, partition)[0]
        assert (last["operation"], last["status"]) == ("teardown", "succeeded"), last
        assert "Destroy complete! Resources: 1 destroyed." in last["log"]
    assert runtime.ok("GET", "/enclaves") == []
    assert runtime.ok("GET", "/graph") == {"nodes": [], "edges": []}


def test_a_failing_partition_blocks_its_dependents_while_others_finish(
    runtime: Runtime, tmp_path: Path
) -> None:
    tree = copy_example("product-a", tmp_path)
    (tree / "product-a" / "dev" / "db" / "main.tf").write_text(
        'variable "nclav_enclave" { type = string }\n'
        'variable "nclav_partition" { type = string }\n'
        'variable "engine" { type = string }\n'
        'variable "storage_gb" { type = number }\n' + FAILING
    )
    enclave(tree, "solo", {"p": SMALL})
    run = runtime.apply(tree)
    assert run["status"] == "failed"
    steps = {k: v["status"] for k, v in steps_of(run).items()}
    assert steps["provision_partition:product-a-dev/db"] == "failed"
    assert steps["provision_partition:product-a-dev/api"] == "blocked"
    assert steps["provision_partition:web-dev/frontend"] == "blocked"
    assert steps["provision_partition:solo/p"] == "succeeded"
    assert steps["provision_enclave:solo"] == "succeeded"
    (failed,) = runtime.iac_runs("product-a-dev", "db")
    assert failed["status"] == "failed"
    assert runtime.iac_runs("product-a-dev", "api") == []
    db = runtime.enclaves()["product-a-dev"]["partitions"]["db"]
    assert db["meta"]["status"] == "error"


def test_a_duplicate_delivery_does_the_work_once(runtime: Runtime, tmp_path: Path) -> None:
    tree = enclave(tmp_path / "t", "alpha", {"p": SMALL})
    run = runtime.run(runtime.submit(tree)["id"])  # begun at once: its steps are planned
    for step in run["steps"]:  # every message twice, at once
        runtime.deliver(run["id"], step["step_id"])
    final = runtime.wait(run)
    assert final["status"] == "succeeded", final
    # ... and each once more after the run ended.
    for step in final["steps"]:
        runtime.deliver(run["id"], step["step_id"])
    again = runtime.wait(final)
    assert again["steps"] == final["steps"]
    assert all(s["attempts"] == 1 for s in final["steps"]), final["steps"]
    assert len(runtime.iac_runs("alpha", "p")) == 1
    events = [e for e in runtime.ok("GET", "/events?limit=1000") if e.get("run_id") == run["id"]]
    assert [e["kind"] for e in events].count("PartitionProvisioned") == 1


# The dying worker thread of the local runtime is reported by pytest; it is the point here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.needs_gcloud_firestore(COLLECTION_GROUPS)  # how the sweeper finds expired leases
def test_a_crashed_workers_step_is_taken_over_after_its_lease(
    runtime: Runtime, tmp_path: Path, crash_once: Callable[[str], list[str]]
) -> None:
    crashed = crash_once("provision_partition:alpha/p")
    tree = enclave(tmp_path / "t", "alpha", {"p": SMALL})
    final = runtime.apply(tree, timeout=60)
    assert crashed == ["provision_partition:alpha/p"]
    assert final["status"] == "succeeded", final
    step = steps_of(final)["provision_partition:alpha/p"]
    assert step["attempts"] == 2 and step["lease_owner"] is None
    # The dead worker never got to terraform: one apply, by the worker that took over.
    (iac,) = runtime.iac_runs("alpha", "p")
    assert iac["status"] == "succeeded"


def test_deliveries_that_keep_failing_give_the_step_up(
    runtime: Runtime,
    tmp_path: Path,
    failing_claims: Callable[[str, int], None],
) -> None:
    failing_claims("provision_partition:alpha/bad", runtime.max_deliveries)
    tree = enclave(tmp_path / "t", "alpha", {"bad": SMALL, "good": SMALL})
    final = runtime.apply(tree, timeout=60)
    assert final["status"] == "failed", final
    steps = steps_of(final)
    bad = steps["provision_partition:alpha/bad"]
    assert bad["status"] == "failed" and bad["lease_owner"] is None
    assert "throttled" in bad["error"]
    assert f"gave up after {runtime.max_deliveries} deliveries" in bad["error"]
    assert steps["provision_partition:alpha/good"]["status"] == "succeeded"
    assert runtime.iac_runs("alpha", "bad") == []


LINES = 2_000


@pytest.mark.slow
def test_a_two_thousand_line_log_is_shipped_in_a_few_requests(
    runtime: Runtime, tmp_path: Path, blob_requests: list[str]
) -> None:
    loud = (
        'resource "terraform_data" "loud" {\n'
        f'  provisioner "local-exec" {{ command = "seq 1 {LINES}" }}\n'
        "}\n"
    )
    tree = enclave(tmp_path / "t", "alpha", {"loud": loud})
    final = runtime.apply(tree, timeout=90)
    assert final["status"] == "succeeded", final["errors"]
    (iac,) = runtime.iac_runs("alpha", "loud")
    shipped = [r for r in blob_requests if iac["id"] in r]  # before the log is read below
    log = runtime.request("GET", f"/enclaves/alpha/partitions/loud/iac/runs/{iac['id']}/log")
    assert log.status == 200
    assert all(f"{n}\n" in log.text for n in (1, LINES // 2, LINES))
    # The target: at most 10 blob-store requests per 1,000 lines.
    assert len(shipped) <= LINES * 10 // 1000, (len(shipped), shipped[:5])


STATE_MB = 50


@pytest.mark.slow
def test_a_fifty_megabyte_state_saves_and_loads(runtime: Runtime, tmp_path: Path) -> None:
    # The value is in the state twice (input and output): 25 MB of it makes 50 MB of state.
    half = STATE_MB * 1024 * 1024 // 2
    big = f'resource "terraform_data" "big" {{ input = format("%{half}s", "x") }}\n'
    tree = enclave(tmp_path / "t", "alpha", {"big": big})
    final = runtime.apply(tree, timeout=150)
    assert final["status"] == "succeeded", final["errors"]
    (applied,) = runtime.iac_runs("alpha", "big")
    assert applied["status"] == "succeeded", applied
    state = runtime.request("GET", "/terraform/state/alpha/big")
    assert state.status == 200 and len(state.body) >= STATE_MB * 1024 * 1024
    # Loaded again: terraform destroy reads the stored 50 MB state, then saves an empty one.
    # (alpha is the only enclave: deleting every enclave needs allow_delete.)
    assert runtime.destroy("/enclaves/alpha?allow_delete=true", timeout=150)["status"] == (
        "succeeded"
    )
    teardown = runtime.iac_runs("alpha", "big")[0]
    assert (teardown["operation"], teardown["status"]) == ("teardown", "succeeded"), teardown
    assert "Destroy complete! Resources: 1 destroyed." in teardown["log"]


# -- retries people ask for (issue 14) -------------------------------------------------------------


def flaky(flag: Path) -> str:
    """A partition failing until ``flag`` exists: a transient fault outside nclav (a quota,
    a dependency not up yet) that an operator fixes, then retries the run."""
    return (
        'resource "terraform_data" "flaky" {\n'
        f'  provisioner "local-exec" {{ command = "test -f {flag} || exit 3" }}\n'
        "}\n"
    )


def failed_on_a_transient_fault(runtime: Runtime, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    flag = tmp_path / "fault-fixed"
    tree = enclave(tmp_path / "t", "alpha", {"good": SMALL, "flaky": flaky(flag)})
    run = runtime.apply(tree)
    assert run["status"] == "failed", run
    steps = {k: v["status"] for k, v in steps_of(run).items()}
    assert steps["provision_partition:alpha/flaky"] == "failed"
    assert steps["provision_partition:alpha/good"] == "succeeded"
    return run, flag


def test_a_run_failing_on_a_transient_fault_is_retried_to_success(
    runtime: Runtime, tmp_path: Path
) -> None:
    run, flag = failed_on_a_transient_fault(runtime, tmp_path)
    flag.write_text("fixed")

    started = runtime.ok("POST", f"/runs/{run['id']}/retry", {}, expect=202)
    assert started["id"] != run["id"] and started["retry_of"] == run["id"], started
    retried = runtime.wait(started)
    assert retried["status"] == "succeeded", retried
    assert retried["trigger"] == "retry" and retried["attempt"] == 2
    (first,) = retried["attempts"]  # the history of the earlier tries
    assert (first["attempt"], first["run_id"], first["status"]) == (1, run["id"], "failed")
    assert first["created_at"] == run["created_at"] and first["finished_at"] == run["finished_at"]
    assert any("alpha/flaky" in e for e in first["errors"]), first
    # Planned again when it began: the failed step got a fresh attempt, the succeeded one
    # was not redone (one terraform apply of `good` in all, two of `flaky`).
    steps = steps_of(retried)
    assert steps["provision_partition:alpha/flaky"]["status"] == "succeeded"
    assert "provision_partition:alpha/good" not in steps, list(steps)
    assert [r["status"] for r in runtime.iac_runs("alpha", "good")] == ["succeeded"]
    assert [r["status"] for r in runtime.iac_runs("alpha", "flaky")] == ["succeeded", "failed"]
    assert runtime.enclaves()["alpha"]["partitions"]["flaky"]["meta"]["status"] == "active"
    assert runtime.run(run["id"])["status"] == "failed"  # the earlier try's record stays

    # The original again: a newer run (the retry) changed alpha since; a succeeded run is
    # not retried either. Both refusals say why.
    again = runtime.request("POST", f"/runs/{run['id']}/retry", {})
    assert again.status == 409, again
    assert retried["id"] in again.text and "reconcile" in again.text, again
    done = runtime.request("POST", f"/runs/{retried['id']}/retry", {})
    assert done.status == 409 and "only a failed or cancelled run" in done.text, done
    missing = runtime.request("POST", "/runs/no-such-run/retry", {})
    assert missing.status == 404, missing


def test_a_control_message_on_the_queue_starts_the_work_it_names(
    runtime: Runtime, tmp_path: Path
) -> None:
    run, flag = failed_on_a_transient_fault(runtime, tmp_path)
    flag.write_text("fixed")

    # Unknown kinds and bad retries are logged and acknowledged, never delivered forever.
    runtime.send_control({"kind": "no_such_kind"})
    runtime.send_control({"kind": "retry_run", "run_id": "no-such-run"})

    # retry_run: as POST /runs/{id}/retry, with no API token, only the queue's send right.
    runtime.send_control({"kind": "retry_run", "run_id": run["id"]})

    def the_retry() -> dict[str, Any] | None:
        found = [r for r in runtime.ok("GET", "/runs") if r.get("retry_of") == run["id"]]
        return found[0] if found else None

    retried = runtime.wait(runtime.until(the_retry))
    assert retried["status"] == "succeeded", retried
    assert retried["attempt"] == 2 and retried["trigger"] == "retry"
    assert [r["status"] for r in runtime.iac_runs("alpha", "flaky")] == ["succeeded", "failed"]

    # drift_check: the named partition is checked (a refresh-only terraform plan).
    drift = "/enclaves/alpha/partitions/good/drift"
    assert runtime.ok("GET", drift)["status"] == "not_checked"
    runtime.send_control({"kind": "drift_check", "enclave": "alpha", "partition": "good"})
    checked = runtime.until(lambda: (d := runtime.ok("GET", drift))["checked_at"] and d)
    assert checked["status"] == "in_sync", checked
    assert len(runtime.iac_runs("alpha", "good")) == 2  # the apply, then the check's plan
    # Nothing was left behind: the unknown kind and the refused retry were acknowledged.
    retries = [r["id"] for r in runtime.ok("GET", "/runs") if r["trigger"] == "retry"]
    assert retries == [retried["id"]]
