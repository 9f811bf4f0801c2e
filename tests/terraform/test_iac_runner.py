"""TerraformRunner against the real terraform binary, with local state (backend=None).

Only built-in things are used (``terraform_data``, ``local-exec``, variables, outputs and
local modules), so ``init`` needs no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from typing import TYPE_CHECKING

import pytest

from nclav.iac import (
    IacCommandError,
    IacOutputError,
    IacTimeoutError,
    TerraformRunner,
    prepare_workspace,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

TERRAFORM = shutil.which("terraform")
if TERRAFORM is None:
    if os.environ.get("CI") == "true":
        pytest.fail("terraform is not on PATH: CI must run the terraform tests", pytrace=False)
    print("tests/terraform: skipped because terraform is not on PATH")
    pytest.skip("terraform is not on PATH", allow_module_level=True)

pytestmark = pytest.mark.terraform

MAIN_TF = """
variable "nclav_enclave" { type = string }
variable "nclav_partition" { type = string }
variable "greeting" { type = string }

resource "terraform_data" "echo" {
  input = var.greeting
}

output "text" { value = terraform_data.echo.output }
output "port" { value = 8080 }
output "names" { value = ["a", "b"] }
output "settings" { value = { b = true, a = 1.5 } }
output "context" { value = "${var.nclav_enclave}/${var.nclav_partition}" }
output "undeclared" { value = "ignored" }
output "secret" {
  value     = "hunter2-${var.greeting}"
  sensitive = true
}
"""

GREETING = 'hi "there" ${not_a_ref} %{ if } \\ done'


def tf_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TF_PLUGIN_CACHE_DIR", None)
    return env


def make_runner(timeout_s: float = 120) -> TerraformRunner:
    assert TERRAFORM is not None
    return TerraformRunner(TERRAFORM, timeout_s=timeout_s, base_env=tf_env())


def prepare(
    workdir: Path,
    files: Mapping[str, str],
    *,
    inputs: Mapping[str, str] | None = None,
    declared_outputs: Sequence[str] = (),
    source: str | None = None,
) -> None:
    prepare_workspace(
        workdir,
        files={k: v.encode() for k, v in files.items()},
        source=source,
        enclave_id="prod",
        partition_id="api",
        inputs=inputs or {},
        declared_outputs=declared_outputs,
        backend=None,
    )


def state_resources(workdir: Path) -> list[str]:
    assert TERRAFORM is not None
    done = subprocess.run(
        [TERRAFORM, "state", "list", "-no-color"],
        cwd=workdir,
        env=tf_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.split()


def test_apply_returns_declared_outputs(tmp_path: Path) -> None:
    declared = ["text", "port", "names", "settings", "context", "secret"]
    prepare(
        tmp_path, {"main.tf": MAIN_TF}, inputs={"greeting": GREETING}, declared_outputs=declared
    )
    lines: list[str] = []
    outputs = make_runner().apply(
        tmp_path, env={}, backend=None, declared_outputs=declared, log=lines.append
    )
    assert outputs == {
        "text": GREETING,  # the input reached terraform unchanged
        "port": "8080",
        "names": '["a","b"]',
        "settings": '{"a":1.5,"b":true}',
        "context": "prod/api",  # nclav_enclave / nclav_partition injected
        "secret": f"hunter2-{GREETING}",  # sensitive values are still returned...
    }
    assert list(outputs) == declared
    log = "\n".join(lines)
    assert "hunter2" not in log  # ...but never logged
    assert "=== terraform init ===" in lines
    assert "=== terraform apply ===" in lines
    assert "Apply complete!" in log
    assert state_resources(tmp_path) == ["terraform_data.echo"]


def test_env_reaches_terraform_and_is_not_logged(tmp_path: Path) -> None:
    # Sensitive, so terraform itself does not print the value; the runner must not either.
    main_tf = """
variable "from_env" {
  type      = string
  sensitive = true
}
output "seen" {
  value     = var.from_env
  sensitive = true
}
"""
    prepare(tmp_path, {"main.tf": main_tf}, declared_outputs=["seen"])
    lines: list[str] = []
    outputs = make_runner().apply(
        tmp_path,
        env={"TF_VAR_from_env": "credential-xyz"},
        backend=None,
        declared_outputs=["seen"],
        log=lines.append,
    )
    assert outputs == {"seen": "credential-xyz"}
    assert not any("credential-xyz" in line for line in lines)


def test_module_mode_passes_inputs_and_reexports_sensitive_outputs(tmp_path: Path) -> None:
    module = """
variable "greeting" { type = string }
resource "terraform_data" "echo" { input = var.greeting }
output "text" { value = terraform_data.echo.output }
output "token" {
  value     = "tok-${var.greeting}"
  sensitive = true
}
"""
    prepare(
        tmp_path,
        {"modules/app/main.tf": module},
        source="./modules/app",
        inputs={"greeting": GREETING},
        declared_outputs=["text", "token"],
    )
    lines: list[str] = []
    outputs = make_runner().apply(
        tmp_path, env={}, backend=None, declared_outputs=["text", "token"], log=lines.append
    )
    assert outputs == {"text": GREETING, "token": f"tok-{GREETING}"}
    assert not any("tok-" in line for line in lines)


def test_missing_declared_outputs_are_all_named(tmp_path: Path) -> None:
    declared = ["text", "hostname", "queue_url"]
    prepare(tmp_path, {"main.tf": MAIN_TF}, inputs={"greeting": "x"}, declared_outputs=declared)
    with pytest.raises(IacOutputError) as info:
        make_runner().apply(
            tmp_path, env={}, backend=None, declared_outputs=declared, log=lambda _: None
        )
    err = info.value
    assert err.missing == ("hostname", "queue_url")
    assert "hostname" in str(err)
    assert "queue_url" in str(err)
    assert "undeclared" in err.produced
    assert "text" in str(err)  # what terraform did produce is listed


def test_syntax_error_fails_with_exit_code_and_log_tail(tmp_path: Path) -> None:
    prepare(tmp_path, {"main.tf": 'resource "terraform_data" "broken" {\n'})
    with pytest.raises(IacCommandError) as info:
        make_runner().apply(tmp_path, env={}, backend=None, declared_outputs=(), log=print)
    err = info.value
    assert err.command == "terraform init"
    assert err.exit_code == 1
    assert "Unclosed configuration block" in err.log_tail
    first, _, rest = str(err).partition("\n")
    assert first == "terraform init exited with code 1"
    assert "Unclosed configuration block" in rest
    assert len(err.log_tail.splitlines()) <= 40


def test_failing_precondition_fails_apply(tmp_path: Path) -> None:
    main_tf = """
variable "allowed" { default = false }
resource "terraform_data" "guarded" {
  lifecycle {
    precondition {
      condition     = var.allowed
      error_message = "nclav-precondition-failed"
    }
  }
}
"""
    prepare(tmp_path, {"main.tf": main_tf})
    with pytest.raises(IacCommandError) as info:
        make_runner().apply(tmp_path, env={}, backend=None, declared_outputs=(), log=print)
    err = info.value
    assert err.command == "terraform apply"
    assert err.exit_code == 1
    assert str(err).startswith("terraform apply exited with code 1\n")
    assert "nclav-precondition-failed" in err.log_tail


def test_destroy_after_apply_empties_state(tmp_path: Path) -> None:
    prepare(tmp_path, {"main.tf": MAIN_TF}, inputs={"greeting": "x"})
    runner = make_runner()
    runner.apply(tmp_path, env={}, backend=None, declared_outputs=(), log=lambda _: None)
    assert state_resources(tmp_path) == ["terraform_data.echo"]
    lines: list[str] = []
    runner.destroy(tmp_path, env={}, backend=None, log=lines.append)
    assert "=== terraform destroy ===" in lines
    assert "Destroy complete!" in "\n".join(lines)
    assert state_resources(tmp_path) == []
    state = json.loads((tmp_path / "terraform.tfstate").read_text())
    assert state["resources"] == []


def test_destroy_reinitialises_a_workspace_without_dot_terraform(tmp_path: Path) -> None:
    # A local module makes init create .terraform/; without it destroy cannot load config.
    files = {
        "main.tf": 'module "inner" { source = "./modules/inner" }\n',
        "modules/inner/main.tf": 'resource "terraform_data" "inner" { input = "x" }\n',
    }
    prepare(tmp_path, files)
    runner = make_runner()
    runner.apply(tmp_path, env={}, backend=None, declared_outputs=(), log=lambda _: None)
    assert state_resources(tmp_path) == ["module.inner.terraform_data.inner"]
    shutil.rmtree(tmp_path / ".terraform")
    lines: list[str] = []
    runner.destroy(tmp_path, env={}, backend=None, log=lines.append)
    assert lines.index("=== terraform init ===") < lines.index("=== terraform destroy ===")
    assert state_resources(tmp_path) == []


def test_destroy_skips_init_when_initialised(tmp_path: Path) -> None:
    files = {
        "main.tf": 'module "inner" { source = "./modules/inner" }\n',
        "modules/inner/main.tf": 'resource "terraform_data" "inner" { input = "x" }\n',
    }
    prepare(tmp_path, files)
    runner = make_runner()
    runner.apply(tmp_path, env={}, backend=None, declared_outputs=(), log=lambda _: None)
    lines: list[str] = []
    runner.destroy(tmp_path, env={}, backend=None, log=lines.append)
    assert "=== terraform init ===" not in lines


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    main_tf = """
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "sleep 30 & echo $! > sleep.pid; wait"
  }
}
"""
    prepare(tmp_path, {"main.tf": main_tf})
    runner = make_runner(timeout_s=3)
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(IacTimeoutError) as info:
        runner.apply(tmp_path, env={}, backend=None, declared_outputs=(), log=lines.append)
    elapsed = time.monotonic() - started
    assert elapsed < 15
    err = info.value
    assert err.command == "terraform apply"
    assert err.exit_code is None
    assert str(err).startswith("terraform apply timed out after 3 s")
    assert "terraform apply timed out after 3 s" in lines
    pid = int((tmp_path / "sleep.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), f"sleep (pid {pid}) survived the timeout"


def test_log_lines_arrive_while_the_command_runs(tmp_path: Path) -> None:
    main_tf = """
resource "terraform_data" "chatty" {
  provisioner "local-exec" {
    command = "echo nclav-first; sleep 2; echo nclav-second"
  }
}
"""
    prepare(tmp_path, {"main.tf": main_tf})
    seen: list[tuple[float, str]] = []
    threads: set[threading.Thread] = set()

    def log(line: str) -> None:
        seen.append((time.monotonic(), line))
        threads.add(threading.current_thread())

    make_runner().apply(tmp_path, env={}, backend=None, declared_outputs=(), log=log)
    finished = time.monotonic()
    first = next(t for t, line in seen if line.endswith("(local-exec): nclav-first"))
    second = next(t for t, line in seen if line.endswith("(local-exec): nclav-second"))
    assert second - first >= 1.5
    assert finished - first >= 1.5
    assert [line for _, line in seen].count("=== terraform apply ===") == 1
    assert threads == {threading.current_thread()}  # log is called on the caller's thread


def test_missing_binary_is_named(tmp_path: Path) -> None:
    prepare(tmp_path, {"main.tf": MAIN_TF})
    runner = TerraformRunner(str(tmp_path / "no-such-terraform"), base_env=tf_env())
    with pytest.raises(IacCommandError, match="no-such-terraform") as info:
        runner.apply(tmp_path, env={}, backend=None, declared_outputs=(), log=lambda _: None)
    assert info.value.exit_code is None
