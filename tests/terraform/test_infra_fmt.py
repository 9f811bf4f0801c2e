"""The deployment roots under infra/ stay `terraform fmt` clean."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

INFRA = Path(__file__).resolve().parents[2] / "infra"


def test_infra_is_terraform_fmt_clean() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        if os.environ.get("CI") == "true":
            pytest.fail("terraform is not on PATH, and CI=true requires it")
        pytest.skip("terraform is not on PATH")
    roots = sorted({p.parent for p in INFRA.rglob("*.tf")})
    assert roots, "no Terraform roots under infra/"
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(INFRA)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
