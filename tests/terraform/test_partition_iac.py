"""``PartitionIac`` with real terraform (and, for the deadline, a tool that is only slow).

The step deadline, the scoped state credential and the scrubbed environment seen from inside
a partition's ``local-exec``, the stale-lock rule, destroying where the workspace is not.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import time
from typing import TYPE_CHECKING

import pytest

from nclav.iac import IacTimeoutError
from nclav.iac.logs import read_log
from nclav.iac.loopback import LOCK_TAG
from nclav.iac.partition import PartitionIac
from nclav.iac.runner import PASSED_THROUGH
from nclav.iac.sandbox import NotEnoughTimeError, OutOfTimeError, TimeLimit, workspace_blob
from nclav.local import DirectoryBlobStore, InMemoryStateStore
from nclav.model import PartitionConfig, TerraformSettings
from nclav.ports import SystemClock
from nclav.records import IacOperation, IacRun, IacStatus, iso_time

if TYPE_CHECKING:
    from pathlib import Path

TERRAFORM = shutil.which("terraform")
if TERRAFORM is None:
    if os.environ.get("CI") == "true":
        pytest.fail("terraform is not on PATH: CI must run the terraform tests", pytrace=False)
    pytest.skip("terraform is not on PATH", allow_module_level=True)

pytestmark = pytest.mark.terraform


def make_iac(tmp_path: Path, **kwargs: object) -> PartitionIac:
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    return PartitionIac(
        InMemoryStateStore(),
        blobs,
        SystemClock(),
        tmp_path / "ws",
        **kwargs,  # type: ignore[arg-type]
    )


def slow_tool(tmp_path: Path, seconds: float) -> str:
    """A stand-in for terraform whose every command takes ``seconds`` (output prints {})."""
    script = tmp_path / "slowform"
    script.write_text(f"#!/bin/sh\nsleep {seconds}\nif [ \"$1\" = output ]; then echo '{{}}'; fi\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


# -- A. one deadline per step ------------------------------------------------------------------


def test_a_step_of_three_commands_ends_at_its_deadline_not_three_times_it(
    tmp_path: Path,
) -> None:
    # init, apply and output take 1.5 s each: 4.5 s in all. Each used to get the whole 2 s
    # timeout, so the step succeeded after 4.5 s; the step's deadline is 2 s.
    config = PartitionConfig(
        id="p", name="p", terraform=TerraformSettings(tool=slow_tool(tmp_path, 1.5))
    )
    iac = make_iac(tmp_path, timeout_s=2.0, kill_grace_s=0.5)
    started = time.monotonic()
    with pytest.raises(IacTimeoutError) as info:
        iac.apply(None, "e", config, {"main.tf": b""}, {}, {}, update=False)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0 + 0.5 + 0.75, elapsed
    assert "timed out after 2 s" in str(info.value)
    (run,) = iac.store.list_iac_runs("e", "p")
    assert run.status == IacStatus.FAILED and "timed out" in run.log


def test_a_sandbox_step_gets_the_time_left_minus_the_margin(tmp_path: Path) -> None:
    config = PartitionConfig(
        id="p", name="p", terraform=TerraformSettings(tool=slow_tool(tmp_path, 1.5))
    )
    limit = TimeLimit(min_remaining_s=1.0, margin_s=1.0, where="this test", limit="3 s")
    iac = make_iac(tmp_path, kill_grace_s=0.5, time_limit=limit)
    left_at = time.monotonic() + 3.0
    started = time.monotonic()
    with (
        iac.time_limited(lambda: left_at - time.monotonic()),
        pytest.raises(OutOfTimeError) as info,
    ):
        iac.apply(None, "e", config, {"main.tf": b""}, {}, {}, update=False)
    assert time.monotonic() - started < 2.0 + 0.5 + 0.75
    assert "cannot finish within 3 s" in str(info.value)
    # With less than the minimum left, terraform is not started and nothing is recorded.
    with iac.time_limited(lambda: 0.5), pytest.raises(NotEnoughTimeError, match="not started"):
        iac.apply(None, "e", config.model_copy(update={"id": "q"}), {}, {}, {}, update=False)
    assert iac.store.list_iac_runs("e", "q") == []


# -- B and C. the scoped credential and the scrubbed environment --------------------------------

PROBE = r"""
import base64, json, os, sys, urllib.error, urllib.request

def status(url, password):
    request = urllib.request.Request(url)
    if password is not None:
        pair = base64.b64encode(f"nclav:{password}".encode()).decode()
        request.add_header("Authorization", "Basic " + pair)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code

backend = json.load(open(".terraform/terraform.tfstate"))["backend"]["config"]
own = backend["address"]
other = own.rsplit("/", 2)[0] + "/e/other"
token = os.environ.get("TF_HTTP_PASSWORD")
found = {
    "env": dict(os.environ),
    "own": status(own, token),
    "other": status(other, token),
    "other_enclave": status(own.rsplit("/", 2)[0] + "/x/p", token),
    "no_credential": status(own, None),
    "backend_config": json.dumps(backend),
}
if len(sys.argv) > 2:
    found["api"] = status(sys.argv[2] + "/enclaves", token)
json.dump(found, open(sys.argv[1], "w"))
"""


def probe_partition(out: Path) -> dict[str, bytes]:
    main_tf = f'''
resource "terraform_data" "probe" {{
  provisioner "local-exec" {{
    command = "{sys.executable} probe.py {out}"
  }}
}}
'''
    return {"main.tf": main_tf.encode(), "probe.py": PROBE.encode()}


def test_partition_code_sees_a_scoped_credential_and_a_scrubbed_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NCLAV_API_TOKEN", "master-token-of-the-deployment")
    monkeypatch.setenv("NCLAV_TABLE", "nclav-state")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-workers-own-secret")
    monkeypatch.setenv("AWS_PROFILE", "the-workers-profile")
    monkeypatch.setenv("TF_PLUGIN_CACHE_DIR", str(tmp_path / "plugins"))
    iac = make_iac(tmp_path)
    out = tmp_path / "probe.json"
    driver_env = {"AWS_PROFILE": "partition-role", "AWS_REGION": "eu-west-1"}
    config = PartitionConfig(id="p", name="p")
    iac.apply("r1", "e", config, probe_partition(out), {}, driver_env, update=False)
    found = json.loads(out.read_text())

    # The loopback backend: its own state yes; another partition's no; no credential no.
    assert found["own"] in (200, 204)
    assert found["other"] == 403 and found["other_enclave"] == 403
    assert found["no_credential"] == 401
    env: dict[str, str] = found["env"]
    token = env["TF_HTTP_PASSWORD"]
    assert token not in found["backend_config"]  # never written to the workspace

    # The environment: nothing of nclav's, the partition's credentials, not the worker's.
    assert not [k for k in env if k.startswith("NCLAV_")]
    assert "master-token-of-the-deployment" not in json.dumps(env)
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["AWS_PROFILE"] == "partition-role" and env["AWS_REGION"] == "eu-west-1"
    assert env["HOME"] == str(iac.workdir("e", "p") / ".nclav-home")
    assert env["TF_IN_AUTOMATION"] == "1"
    assert env["TF_PLUGIN_CACHE_DIR"] == str(tmp_path / "plugins")
    shell = {"PWD", "OLDPWD", "SHLVL", "_"}  # what /bin/sh adds for the local-exec command
    allowed = {*PASSED_THROUGH, "HOME", "TF_IN_AUTOMATION", "TF_INPUT", "TF_HTTP_PASSWORD"}
    assert set(env) - allowed - set(driver_env) - shell == set()

    # The credential ended with the run.
    with iac.loopback.grant("e", "p", "probe") as backend:  # the loopback still serves
        import urllib.error
        import urllib.request

        request = urllib.request.Request(backend.state_url)
        request.add_header("Authorization", "Bearer " + token)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 401
    # And the state is in nclav's store, not the workspace.
    assert iac.state_backend.get_state("e", "p") is not None
    assert not (iac.workdir("e", "p") / "terraform.tfstate").exists()
    iac.close()


# -- the stale-lock rule -----------------------------------------------------------------------


def running(iac: PartitionIac, partition: str = "p") -> IacRun:
    run = IacRun(
        enclave_id="e",
        partition_id=partition,
        operation=IacOperation.PROVISION,
        started_at=iso_time(time.time() - 5),
    )
    iac.store.put_iac_run(run)
    return run


def test_a_lock_taken_by_an_abandoned_run_is_broken_and_an_operators_is_kept(
    tmp_path: Path,
) -> None:
    iac = make_iac(tmp_path)
    store = iac.store
    dead = running(iac)
    store.lock("e/p", {"ID": "L1", "Who": "x@host", LOCK_TAG: dead.id})
    with iac._exclusive("e", "p"):  # noqa: SLF001 (recovery runs on taking the mutex)
        pass
    assert store.get_lock("e/p") is None
    after = store.get_iac_run(dead.id)
    assert after is not None and after.status == IacStatus.FAILED and "abandoned" in after.log
    # An operator's lock (no nclav tag) is left alone, abandoned run or not ...
    running(iac)
    store.lock("e/p", {"ID": "mine", "Who": "alice@laptop"})
    with iac._exclusive("e", "p"):  # noqa: SLF001
        pass
    assert store.get_lock("e/p") is not None
    # ... and so is a lock of a run that is not over (it holds the partition mutex).
    store.unlock("e/p", None)
    live = running(iac, "q")
    store.lock("e/q", {"ID": "L2", LOCK_TAG: live.id})
    assert store.acquire_partition("e/q", "other-worker", 60, time.time())
    with pytest.raises(Exception, match="busy"), iac._exclusive("e", "q"):  # noqa: SLF001
        pass
    assert store.get_lock("e/q") is not None


# -- destroy: where the working directory is, was saved, or is not -----------------------------

DESTROYABLE = """
variable "marker" { type = string }
resource "terraform_data" "x" {
  input = var.marker
  provisioner "local-exec" {
    when    = destroy
    command = "echo destroyed > ${self.input}"
  }
}
"""


def test_destroy_restores_the_saved_workspace_then_removes_it(tmp_path: Path) -> None:
    iac = make_iac(tmp_path)
    config = PartitionConfig(id="p", name="p")
    files = {"main.tf": DESTROYABLE.encode()}
    marker = tmp_path / "destroyed"
    iac.apply(None, "e", config, files, {"marker": str(marker)}, {}, update=False)
    assert iac.blobs.exists(workspace_blob("e", "p"))
    shutil.rmtree(iac.workdir("e", "p"))  # another machine, or a sandbox that is gone
    # The saved workspace has the inputs (a variable without a default): destroy works.
    assert iac.destroy(None, "e", config, {}, {}) is True
    assert marker.read_text().strip() == "destroyed"
    assert not iac.workdir("e", "p").exists()
    assert not iac.blobs.exists(workspace_blob("e", "p"))
    runs = iac.store.list_iac_runs("e", "p")
    assert [r.operation for r in runs] == [IacOperation.TEARDOWN, IacOperation.PROVISION]
    assert "Destroy complete!" in read_log(iac.blobs, runs[0]).decode()


def test_destroy_rebuilds_the_workspace_from_the_files(tmp_path: Path) -> None:
    iac = make_iac(tmp_path)
    config = PartitionConfig(id="p", name="p")
    marker = tmp_path / "destroyed"
    main_tf = DESTROYABLE.replace('variable "marker" { type = string }', "").replace(
        "var.marker", f'"{marker}"'
    )
    files = {"main.tf": main_tf.encode()}
    iac.apply(None, "e", config, files, {}, {}, update=False)
    shutil.rmtree(iac.workdir("e", "p"))
    iac.blobs.delete(workspace_blob("e", "p"))
    assert iac.destroy(None, "e", config, files, {}) is True
    assert marker.exists()
    assert json.loads(iac.state_backend.get_state("e", "p") or b"{}")["resources"] == []
    assert not iac.workdir("e", "p").exists()
    # Nothing anywhere and no files: nothing to destroy, and nothing recorded.
    assert iac.destroy(None, "e", config.model_copy(update={"id": "none"}), {}, {}) is False
    assert iac.store.list_iac_runs("e", "none") == []


# -- E. a 2,000-line log through PartitionIac -------------------------------------------------


class CountingBlobs(DirectoryBlobStore):
    """The real directory store, counting every request on IaC log keys."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.log_requests = 0

    def _count(self, key: str) -> None:
        if key.startswith("iac-logs/"):
            self.log_requests += 1

    def put(self, key: str, data: bytes) -> None:
        self._count(key)
        super().put(key, data)

    def append(self, key: str, data: bytes) -> None:
        self._count(key)
        super().append(key, data)

    def get(self, key: str) -> bytes:
        self._count(key)
        return super().get(key)

    def list(self, prefix: str = "") -> list[str]:
        self._count(prefix)
        return super().list(prefix)


def test_a_2000_line_apply_ships_its_log_in_a_few_requests(tmp_path: Path) -> None:
    chatty = tmp_path / "chattyform"
    chatty.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = apply ]; then seq -f "terraform_data.item[%g]: Creation complete" 2000; fi\n'
        "if [ \"$1\" = output ]; then echo '{}'; fi\n"
    )
    chatty.chmod(chatty.stat().st_mode | stat.S_IXUSR)
    blobs = CountingBlobs(tmp_path / "blobs")
    iac = PartitionIac(InMemoryStateStore(), blobs, SystemClock(), tmp_path / "ws")
    config = PartitionConfig(id="p", name="p", terraform=TerraformSettings(tool=str(chatty)))
    iac.apply(None, "e", config, {"main.tf": b""}, {}, {}, update=False)
    assert blobs.log_requests <= 20, blobs.log_requests  # before: one append per line
    (run,) = iac.store.list_iac_runs("e", "p")
    log = read_log(blobs, run).decode()
    assert log.count("Creation complete") == 2000
    assert "=== chattyform apply ===" in log
    assert run.log_size == len(log.encode())
    middle = log.index("item[1000]")
    assert read_log(blobs, run, middle).decode() == log[middle:]
