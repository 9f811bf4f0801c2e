"""Which drivers a local server can have, and what it says when one is missing (issue 8, 4)."""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from nclav.cli import main
from nclav.errors import ConfigurationError
from nclav.model import Cloud
from nclav.runtime.drivers import GROUP, drivers_for

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def gcp_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installation without the gcp driver (this one may have it: every cloud has a driver)."""
    real = importlib.metadata.entry_points
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda **kw: importlib.metadata.EntryPoints(e for e in real(**kw) if e.name != "gcp"),
    )


@pytest.mark.usefixtures("gcp_hidden")
def test_a_cloud_nothing_registers_suggests_no_extra() -> None:
    assert not list(importlib.metadata.entry_points(group=GROUP, name="gcp"))  # the premise
    with pytest.raises(ConfigurationError) as caught:
        drivers_for(Cloud.GCP, ())
    message = str(caught.value)
    assert "nclav[gcp]" not in message and "install nclav" not in message
    assert "no gcp driver in this installation" in message
    assert "use --cloud local" in message


@pytest.mark.usefixtures("gcp_hidden")
def test_serve_with_a_cloud_without_driver_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["serve", "--cloud", "gcp", "--home", str(tmp_path / "home"), "--port", "0"]
    )
    assert result.exit_code == 2, result.output
    assert "no gcp driver in this installation" in result.stderr
    assert "nclav[gcp]" not in result.stderr


def test_the_local_driver_needs_no_entry_point() -> None:
    assert set(drivers_for(Cloud.LOCAL, ())) == {Cloud.LOCAL}
