"""Without terraform on PATH the terraform test modules skip, unless CI=true (then they fail)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = ["tests/terraform/test_engine_local.py", "tests/terraform/test_iac_runner.py"]


def run_without_terraform(module: str, ci: str | None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    # Only the interpreter's own directory: no terraform there.
    env["PATH"] = str(Path(sys.executable).parent)
    if ci is not None:
        env["CI"] = ci
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", module],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("module", MODULES)
def test_skips_outside_ci(module: str) -> None:
    code, out = run_without_terraform(module, None)  # 5: no test ran, all skipped
    assert code in (0, 5) and "SKIPPED [1]" in out and "terraform is not on PATH" in out, out


@pytest.mark.parametrize("module", MODULES)
def test_fails_in_ci(module: str) -> None:
    code, out = run_without_terraform(module, "true")
    assert code != 0 and "CI must run the terraform tests" in out, out
