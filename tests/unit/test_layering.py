"""The dependency rules of docs/architecture.md, checked on the source itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLOUD_SDKS = (
    "boto3",
    "botocore",
    "google",
    "azure",
    "aws_lambda_powertools",
    "functions_framework",
)
CLOUD_PACKAGES = ("functions_aws", "functions_gcp", "functions_azure")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def top(name: str) -> str:
    return name.split(".", 1)[0]


def test_core_never_imports_a_cloud_sdk() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path) if top(m) in CLOUD_SDKS
        )
        for path in (ROOT / "core").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_core_never_imports_a_cloud_runtime() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "core").rglob("*.py")
        if any(top(m) in CLOUD_PACKAGES for m in imported_modules(path))
    ]
    assert offenders == []


@pytest.mark.parametrize("package", CLOUD_PACKAGES)
def test_cloud_runtimes_do_not_import_each_other(package: str) -> None:
    others = set(CLOUD_PACKAGES) - {package}
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / package).rglob("*.py")
        if any(top(m) in others for m in imported_modules(path))
    ]
    assert offenders == []


def test_the_layering_check_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import boto3\nfrom google.cloud import storage\nfrom . import sibling\n")
    assert {top(m) for m in imported_modules(bad)} == {"boto3", "google"}


def test_cli_start_up_imports_nothing_heavy() -> None:
    code = (
        "import sys, nclav.cli; print(sorted(m for m in ('pydantic', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
