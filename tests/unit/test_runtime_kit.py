"""The small shared pieces of the runtime kit (``nclav.runtime``, ``nclav.naming``, errors)."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner
from engine_fakes import EXAMPLES, Rig

from nclav.api.http import ApiRequest, ApiResponse, json_response
from nclav.api.router import Router
from nclav.cli.serve import serve
from nclav.engine.engine import MAX_ERROR_BYTES, bound_error
from nclav.errors import ConfigurationError, TemporaryError, classify
from nclav.naming import nclav_tags, short_hash
from nclav.plan import Action
from nclav.records import RunStatus, StepStatus
from nclav.runtime import backoff, heartbeat
from nclav.runtime.drivers import DriverOption, DriverPlugin
from nclav.runtime.handlers import BadEventError, answer
from nclav.runtime.logs import JsonFormatter
from nclav.runtime.routing import RoutedQueue
from nclav.runtime.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

# -- backoff and heartbeat ---------------------------------------------------------------------


def test_backoff_doubles_within_its_jitter_and_cap() -> None:
    assert [backoff(n, 2.0, rand=lambda lo, hi: 1.0) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert backoff(30, 2.0, 60.0, rand=lambda lo, hi: 1.0) == 60.0
    assert backoff(10_000, 1.0, 5.0, rand=lambda lo, hi: 1.0) == 5.0  # no overflow
    samples = [backoff(3, 1.0, jitter=0.5) for _ in range(200)]
    assert all(2.0 <= s <= 6.0 for s in samples) and len(set(samples)) > 1


def test_heartbeat_beats_until_the_block_ends_and_survives_a_failed_beat() -> None:
    beats: list[float] = []

    def beat() -> None:
        beats.append(time.monotonic())
        if len(beats) == 2:
            raise RuntimeError("one missed beat")

    with heartbeat(0.02, beat):
        time.sleep(0.2)
    count = len(beats)
    assert count >= 4  # the failure did not stop it
    time.sleep(0.06)
    assert len(beats) == count  # and the block's end did


def test_a_beat_returning_false_ends_the_heartbeat() -> None:
    beats: list[int] = []
    with heartbeat(0.01, lambda: beats.append(1) or False):
        time.sleep(0.1)
    assert beats == [1]


def test_the_engine_renews_a_lease_through_the_heartbeat(tmp_path: Path) -> None:
    rig = Rig(tmp_path, lease_s=0.06)
    rig.add_tree("pa", EXAMPLES / "product-a" / "enclaves")
    renewed = threading.Event()
    store_renew = rig.store.renew_lease

    def renew(*args: Any) -> bool:
        renewed.set()
        return store_renew(*args)

    rig.store.renew_lease = renew  # type: ignore[method-assign]
    original = rig.driver.provision_enclave

    def slow(*args: Any) -> Any:
        time.sleep(0.1)
        return original(*args)

    rig.driver.provision_enclave = slow  # type: ignore[method-assign]
    rig.engine.start_run("pa")
    rig.drain()
    assert renewed.is_set()
    rig.close()


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "ThrottlingException", "temporary"),
        (429, "RESOURCE_EXHAUSTED", "temporary"),
        (503, "", "temporary"),
        (400, "ServiceUnavailable", "temporary"),
        (404, "", "not_found"),
        (409, "", "conflict"),
        (412, "", "conflict"),
        (403, "AccessDenied", "permanent"),
        (400, "ValidationException", "permanent"),
    ],
)
def test_classify(status: int, code: str, kind: str) -> None:
    assert classify(status, code) == kind


def test_a_service_s_own_codes_win() -> None:
    assert classify(409, "BucketAlreadyOwnedByYou", {"BucketAlreadyOwnedByYou": "permanent"}) == (
        "permanent"
    )


# -- step errors are bounded once, in the engine --------------------------------------------------


def test_bound_error() -> None:
    assert bound_error("short") == "short"
    long = "HEAD" + "é" * 5000 + "TAIL"  # two bytes each: cut on a character, not inside one
    cut = bound_error(long)
    assert len(cut.encode()) <= MAX_ERROR_BYTES and "\n[truncated]\n" in cut
    assert cut.startswith("HEAD") and cut.endswith("TAIL")  # a tool's last words are kept


def test_a_huge_step_error_is_stored_bounded(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.add_tree("pa", EXAMPLES / "product-a" / "enclaves")
    error = RuntimeError("x" * 100_000 + "Error: the real cause")
    rig.iac.failures.times("apply:product-a-dev/db", error, 1)
    run = rig.apply("pa")
    assert run.status == RunStatus.FAILED
    step = rig.step(run.id, "provision_partition:product-a-dev/db")
    assert step.status == StepStatus.FAILED and step.error is not None
    assert len(step.error.encode()) <= MAX_ERROR_BYTES and "[truncated]" in step.error
    assert step.error.endswith("Error: the real cause")
    last = rig.enclave("product-a-dev").partitions["db"].meta.last_error
    assert last is not None and len(last.message.encode()) <= MAX_ERROR_BYTES
    rig.close()


# -- routing: the engine puts the action in the message --------------------------------------------


class Recording:
    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None:
        self.sent.append(dict(message))

    def close(self) -> None:
        pass


def test_terraform_steps_are_routed_apart_by_the_action_in_the_message(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.add_tree("pa", EXAMPLES / "product-a" / "enclaves")
    rig.apply("pa")
    sent = [m for m, _ in rig.queue.sent]
    assert sent and all(m["action"] == m["step_id"].partition(":")[0] for m in sent)
    steps, iac = Recording(), Recording()
    routed = RoutedQueue.terraform_apart(steps, iac)  # type: ignore[arg-type]
    for message in sent:
        routed.send(message)
    assert {m["action"] for m in iac.sent} == {Action.PROVISION_PARTITION.value}
    assert all(not Action(m["action"]).runs_terraform for m in steps.sent)
    assert len(iac.sent) + len(steps.sent) == len(sent)
    rig.close()


# -- settings -----------------------------------------------------------------------------------


def test_settings_from_the_environment_with_explicit_values_winning() -> None:
    env = {"NCLAV_LEASE_S": "30", "NCLAV_ENABLE_CLOUDS": "aws, gcp", "NCLAV_MAX_RECEIVES": "3"}
    s = Settings.from_env(env, max_receives=7)
    assert (s.lease_s, s.enable_clouds, s.max_receives, s.max_deletes) == (
        30.0,
        ("aws", "gcp"),
        7,
        5,
    )
    assert Settings.from_env({"NCLAV_MAX_DELETES": "9"}).max_deletes == 9
    assert Settings.from_env({"NCLAV_MAX_DELETES": "0"}).max_deletes == 0
    with pytest.raises(ConfigurationError, match="NCLAV_MAX_RECEIVES: expected at least 1"):
        Settings.from_env({"NCLAV_MAX_RECEIVES": "0"})
    with pytest.raises(ConfigurationError, match="NCLAV_LEASE_S: expected a number"):
        Settings.from_env({"NCLAV_LEASE_S": "soon"})
    with pytest.raises(ConfigurationError, match="unknown cloud 'mars'"):
        _ = Settings.from_env({"NCLAV_CLOUD": "mars"}).default_cloud


def test_a_cloud_adds_its_resource_names_and_required_ones_are_named() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True, kw_only=True)
    class CloudSettings(Settings):
        bucket: str
        prefix: str = "p/"

    with pytest.raises(ConfigurationError, match="NCLAV_BUCKET"):
        CloudSettings.from_env({})
    s = CloudSettings.from_env({"NCLAV_BUCKET": "b", "NCLAV_BACKOFF_S": "1"})
    assert (s.bucket, s.prefix, s.backoff_s) == ("b", "p/", 1.0)


# -- driver plugins -------------------------------------------------------------------------------


def test_a_plugin_checks_its_declared_options() -> None:
    made: list[Mapping[str, str | None]] = []
    plugin = DriverPlugin(
        "mars",
        (DriverOption("site", "Where.", required=True), DriverOption("size", "How big.", "2")),
        lambda values: made.append(values),  # type: ignore[arg-type,func-returns-value]
    )
    plugin.make_driver({"site": "olympus", "size": None})
    assert made == [{"site": "olympus", "size": "2"}]
    with pytest.raises(Exception, match="--mars-site.*NCLAV_MARS_SITE"):
        plugin.make_driver({})
    with pytest.raises(Exception, match="unknown mars driver option"):
        plugin.make_driver({"site": "x", "colour": "red"})


def test_serve_builds_flags_from_the_installed_plugins() -> None:
    result = CliRunner().invoke(serve, ["--help"])
    assert result.exit_code == 0
    for option in ("--aws-org-unit-id", "--aws-email-domain", "--aws-role-arn"):
        assert option in result.output  # declared once, by the plugin


# -- handlers, errors as HTTP, logs ----------------------------------------------------------------


def test_handler_plumbing() -> None:
    def to_request(event: dict[str, str]) -> ApiRequest:
        if "path" not in event:
            raise BadEventError("not an HTTP event")
        return ApiRequest.build(event.get("method", "GET"), event["path"], request_id="rid")

    def broken() -> Router:
        raise ConfigurationError("NCLAV_TABLE not set")

    def call(event: dict[str, str], router: Any = broken) -> ApiResponse:
        return answer(
            event, request_id="rid", to_request=to_request, to_result=lambda r: r, router=router
        )

    bad = call({})
    assert bad.status == 400 and json.loads(bad.body)["error"]["request_id"] == "rid"
    assert call({"path": "/health"}).status == 200  # the runtime is not built
    failed = call({"path": "/runs"})
    assert failed.status == 500 and failed.headers["X-Request-Id"] == "rid"
    assert json.loads(failed.body) == {
        "error": {"code": "internal", "message": "internal error", "request_id": "rid"}
    }


def test_a_temporary_store_error_answers_503_with_retry_after() -> None:
    router = Router()

    def throttled(_r: ApiRequest, _p: dict[str, str], _b: Any) -> ApiResponse:
        raise TemporaryError("dynamodb: throttled", retry_after_s=2.5)

    router.add("GET", "/x", throttled, auth="none")
    router.add("GET", "/ok", lambda *_: json_response(200, {}), auth="none")
    response = router.dispatch(ApiRequest.build("GET", "/x"))
    assert response.status == 503 and response.headers["Retry-After"] == "3"
    assert json.loads(response.body)["error"]["code"] == "unavailable"
    assert "dynamodb" not in response.body.decode()


def test_json_log_formatter() -> None:
    record = logging.LogRecord("nclav.x", logging.ERROR, "f.py", 1, "step %s failed", ("s",), None)
    record.run_id = "r1"
    doc = json.loads(JsonFormatter("svc").format(record))
    assert doc["message"] == "step s failed" and doc["run_id"] == "r1"
    assert (doc["level"], doc["logger"], doc["service"]) == ("ERROR", "nclav.x", "svc")


# -- naming ---------------------------------------------------------------------------------------


def test_naming_rules() -> None:
    assert short_hash("dev/api") == short_hash("dev/api") and len(short_hash("x", 12)) == 12
    assert nclav_tags("dev", nclav_partition="db") == {
        "nclav-managed": "true",
        "nclav-enclave": "dev",
        "nclav-partition": "db",
    }


def test_serve_names_a_missing_driver_option_by_flag_and_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--ephemeral", "--port", "0", "--home", str(tmp_path)]
    env = {"NCLAV_AWS_ORG_UNIT_ID": "", "NCLAV_AWS_EMAIL_DOMAIN": "", "NCLAV_URL": ""}
    result = CliRunner(env=env).invoke(serve, ["--cloud", "aws", *args])
    assert result.exit_code == 2
    assert "--aws-org-unit-id" in result.output and "NCLAV_AWS_EMAIL_DOMAIN" in result.output
    # a cloud whose plugin is not installed (gcp's hidden: this installation may have it)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda **kw: importlib.metadata.EntryPoints(e for e in real(**kw) if e.name != "gcp"),
    )
    result = CliRunner(env=env).invoke(serve, ["--cloud", "gcp", *args])
    assert result.exit_code == 2 and "no gcp driver in this installation" in result.output


def test_the_engine_handles_the_drift_check_kind_the_scheduler_sends() -> None:
    from nclav.drift.schedule import DRIFT_KIND as SENT
    from nclav.engine.engine import DRIFT_KIND as HANDLED

    assert SENT == HANDLED
