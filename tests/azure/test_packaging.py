"""The terraform worker image (functions_azure/Dockerfile) and the app root it builds: what can
be checked without building it (no Docker here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from functions_azure import function_app

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "functions_azure" / "Dockerfile").read_text()


def args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))


def test_terraform_and_tofu_are_the_pins_the_aws_worker_checks() -> None:
    aws = args((ROOT / "functions_aws" / "Dockerfile").read_text())
    azure = args(DOCKERFILE)
    for name in (
        "TERRAFORM_VERSION",
        "TERRAFORM_SHA256_AMD64",
        "TOFU_VERSION",
        "TOFU_SHA256_AMD64",
    ):
        assert azure[name] == aws[name], name
    assert azure["PYTHON_IMAGE"].startswith("mcr.microsoft.com/azure-functions/python:4-python3.11")


def test_the_app_root_is_host_json_and_a_function_app_that_is_the_packages_app() -> None:
    assert "functions_azure/host.json /home/site/wwwroot/host.json" in DOCKERFILE
    shim = re.search(r"printf '(.*?)' *\\\n *> /home/site/wwwroot/function_app.py", DOCKERFILE)
    assert shim is not None
    namespace: dict[str, object] = {}
    exec(shim.group(1).replace("\\n", "\n"), namespace)  # noqa: S102 - our own Dockerfile's text
    assert namespace["app"] is function_app.app


def test_the_build_context_holds_every_package_the_install_needs() -> None:
    ignore = (ROOT / "functions_azure" / "Dockerfile.dockerignore").read_text().splitlines()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["package-dir"]
    for directory in packages.values():
        assert f"!{directory}/" in ignore, directory
        assert f"COPY {directory} /tmp/src/{directory}" in DOCKERFILE, directory
