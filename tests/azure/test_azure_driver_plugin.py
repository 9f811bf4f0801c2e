"""The azure driver plugin found through its ``nclav.drivers`` entry point, and ``nclav serve
--cloud azure`` with the seed README's ``--azure-*`` options.

The entry point is declared in pyproject.toml; an editable install made before it existed does
not list it, so these tests put a distribution declaring the same entry point on the path
(what ``pip install -e .`` writes), instead of depending on how the venv was installed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from functions_azure.driver import AzureDriver
from nclav.cli.serve import ServeCommand, serve
from nclav.model import Cloud
from nclav.runtime.drivers import drivers_for, installed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from serve_harness import Server  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

OPTIONS = {
    "tenant_id": "00000000-0000-0000-0000-0000000000aa",
    "management_group_id": "nclav-enclaves",
    "billing_account_name": "ba-1",
    "billing_profile_name": "bp-1",
    "invoice_section_name": "is-1",
}


def _distribution(root: Path) -> Path:
    info = root / "nclav_azure_entry_point-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: nclav-azure-entry-point\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text(
        "[nclav.drivers]\nazure = functions_azure.driver:PLUGIN\n"
    )
    return root


@pytest.fixture
def entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = _distribution(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    return root


@pytest.fixture
def fresh_serve() -> Iterator[ServeCommand]:
    """``serve`` without the driver flags an earlier test may have built and cached (its
    callback reads them from the module's ``serve``); put back as it was afterwards."""
    assert isinstance(serve, ServeCommand)
    params, had = list(serve.params), hasattr(serve, "driver_flags")
    flags = getattr(serve, "driver_flags", None)
    serve.params = [p for p in params if not (p.name or "").startswith("driver_")]
    if had:
        del serve.driver_flags
    yield serve
    serve.params = params
    if had:
        serve.driver_flags = flags  # type: ignore[assignment]
    elif hasattr(serve, "driver_flags"):
        del serve.driver_flags


@pytest.mark.usefixtures("entry_point")
def test_the_core_finds_the_azure_driver_through_its_entry_point() -> None:
    assert "azure" in installed()
    drivers = drivers_for(Cloud.AZURE, (Cloud.LOCAL,), {"azure": OPTIONS})
    assert isinstance(drivers[Cloud.AZURE], AzureDriver)
    assert drivers[Cloud.AZURE].config.default_location == "eastus2"
    env = {f"NCLAV_AZURE_{k.upper()}": v for k, v in OPTIONS.items()}
    from_env = drivers_for(Cloud.AZURE, (), environ=env)[Cloud.AZURE]
    assert isinstance(from_env, AzureDriver)
    assert from_env.config.management_group_id == "nclav-enclaves"


@pytest.mark.usefixtures("entry_point")
def test_serve_has_the_azure_flags_and_names_a_missing_one(
    tmp_path: Path, fresh_serve: ServeCommand
) -> None:
    result = CliRunner().invoke(fresh_serve, ["--help"])
    assert result.exit_code == 0
    for flag in ("--azure-tenant-id", "--azure-invoice-section-name", "--azure-client-secret"):
        assert flag in result.output
    env = {"NCLAV_URL": "", **{f"NCLAV_AZURE_{k.upper()}": "" for k in OPTIONS}}
    args = ["--cloud", "azure", "--ephemeral", "--port", "0", "--home", str(tmp_path)]
    result = CliRunner(env=env).invoke(fresh_serve, args)
    assert result.exit_code == 2
    assert "--azure-tenant-id" in result.output and "NCLAV_AZURE_TENANT_ID" in result.output


def test_serve_cloud_azure_runs(tmp_path: Path) -> None:
    """A real ``nclav serve`` whose default cloud is azure: it answers, and GET /orphans asks
    the azure driver (no enclave yet: nothing to query)."""
    site = _distribution(tmp_path / "site")
    env = {f"NCLAV_AZURE_{k.upper()}": v for k, v in OPTIONS.items()}
    env.update(
        {
            "NCLAV_CLOUD": "azure",
            "NCLAV_EPHEMERAL": "1",
            "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        }
    )
    server = Server(tmp_path / "home", env=env)
    server.start()
    try:
        # The azure driver is an OrphanScanner: asked, it answered (no enclave: nothing found);
        # a driver that could not be asked would be listed as unavailable.
        assert server.ok("GET", "/orphans") == {"orphans": [], "unavailable": []}
    finally:
        server.stop()
