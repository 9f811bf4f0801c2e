"""``make aws-package``: a reproducible Lambda zip for the Lambda platform, where infra looks.

Needs PyPI (or the configured index) for the manylinux wheels: skipped with the reason when it
cannot be reached.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import aws_package  # noqa: E402

pytestmark = pytest.mark.slow


def index_reachable(tmp: Path) -> bool:
    probe = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            "manylinux2014_x86_64",
            "--python-version",
            "3.11",
            "--dest",
            str(tmp),
            "six==1.17.0",
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    return probe.returncode == 0


def test_the_zip_is_reproducible_for_lambda_x86_64_and_where_infra_looks(tmp_path: Path) -> None:
    if not index_reachable(tmp_path / "probe"):
        pytest.skip("the package index (PyPI) is not reachable: cannot fetch manylinux wheels")
    first = aws_package.build(tmp_path / "a.zip", python_version="3.11", architecture="x86_64")
    again = aws_package.build(tmp_path / "b.zip", python_version="3.11", architecture="x86_64")
    assert first == again == hashlib.sha256((tmp_path / "b.zip").read_bytes()).hexdigest()

    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        names = zf.namelist()
        infos = zf.infolist()
    assert names == sorted(names)
    assert {i.date_time for i in infos} == {aws_package.EPOCH}
    for handler in ("functions_aws/api.py", "functions_aws/worker.py", "functions_aws/schedule.py"):
        assert handler in names
    assert "nclav/service.py" in names and "boto3/__init__.py" in names
    # Compiled for Lambda's platform, not the host's: CPython 3.11 on x86-64 Linux.
    native = [n for n in names if n.startswith("pydantic_core/") and n.endswith(".so")]
    assert native and all(re.search(r"cpython-311-x86_64-linux-gnu\.so$", n) for n in native)
    assert not [n for n in names if "/bin/" in n or n.startswith("bin/") or "direct_url" in n]

    # infra/aws's default lambda_zip is the Makefile's output, relative to infra/aws.
    variables = (ROOT / "infra" / "aws" / "variables.tf").read_text()
    default = re.search(r'variable "lambda_zip" \{.*?default\s*=\s*"([^"]+)"', variables, re.S)
    assert default is not None
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"aws_package\.py .*--out (\S+)", makefile)
    assert target is not None
    assert (ROOT / "infra" / "aws" / default.group(1)).resolve() == (ROOT / target.group(1))
    runtime = re.search(r'variable "runtime" \{.*?default\s*=\s*"python([0-9.]+)"', variables, re.S)
    assert runtime is not None
    assert f"AWS_PYTHON ?= {runtime.group(1)}" in makefile
