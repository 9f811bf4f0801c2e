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


# The SDKs each cloud runtime may import: its own cloud's, never another's.
OWN_SDKS = {
    "functions_aws": ("boto3", "botocore", "aws_lambda_powertools"),
    "functions_gcp": ("google", "functions_framework"),
    "functions_azure": ("azure",),
}


@pytest.mark.parametrize("package", CLOUD_PACKAGES)
def test_cloud_runtimes_import_only_their_own_sdk(package: str) -> None:
    others = set(CLOUD_SDKS) - set(OWN_SDKS[package])
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in (ROOT / package).rglob("*.py")
        if (found := sorted(m for m in imported_modules(path) if top(m) in others))
    }
    assert offenders == {}


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


# -- layers inside core -------------------------------------------------------------------------
# (importer, forbidden imports, allowed exceptions as {file: reason}). Every import counts, also
# one inside a function or under TYPE_CHECKING: a layer that names another depends on it.
NCLAV = ROOT / "core" / "nclav"
LAYER_RULES = [
    ("nclav.model", ("nclav.engine", "nclav.ports"), {}),
    ("nclav.engine", ("nclav.api", "nclav.local", "nclav.cli"), {}),
    (
        "nclav.cli",
        ("nclav.engine", "nclav.local"),
        # serve is the one command that runs a server here: it starts the local runtime.
        {"core/nclav/cli/serve.py": "nclav serve starts the local runtime"},
    ),
    ("nclav.runtime", ("nclav.local", "nclav.cli"), {}),
]


def modules_of(package: str) -> list[Path]:
    base = NCLAV.parent / package.replace(".", "/")
    return sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


def forbidden(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    return sorted(
        m for m in imported_modules(path) if any(m == p or m.startswith(p + ".") for p in prefixes)
    )


@pytest.mark.parametrize(
    ("layer", "prefixes", "allowed"), LAYER_RULES, ids=[r[0] for r in LAYER_RULES]
)
def test_core_layers(layer: str, prefixes: tuple[str, ...], allowed: dict[str, str]) -> None:
    offenders = {
        rel: found
        for path in modules_of(layer)
        if (rel := str(path.relative_to(ROOT))) not in allowed
        and (found := forbidden(path, prefixes))
    }
    assert offenders == {}


def test_the_written_exceptions_are_still_needed() -> None:
    # An exception nobody uses any more is a rule someone could break unnoticed: remove it.
    for layer, prefixes, allowed in LAYER_RULES:
        for rel in allowed:
            assert forbidden(ROOT / rel, prefixes), (layer, rel)


def test_core_names_no_cloud_runtime_in_code() -> None:
    # Drivers come from entry points with their declared options: core's code (comments and
    # docstrings aside) names no cloud's package, flags or variables. The Cloud enum and the
    # per-cloud template variables are the model's vocabulary, not a runtime.
    pattern = ("functions_aws", "--aws-", "NCLAV_AWS_", "aws_")
    offenders = []
    for path in NCLAV.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) not in docstrings and any(p in node.value for p in pattern):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.Name | ast.arg) and "aws" in getattr(
                node, "id", getattr(node, "arg", "")
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
