"""The AWS runtime's delete guard limit comes from ``NCLAV_MAX_DELETES`` (issue 8, point 1)."""

from __future__ import annotations

import pytest

from functions_aws import bootstrap, constants

BASE = {name: f"value-of-{name.lower()}" for name in constants.REQUIRED}


def test_the_default_limit_is_5() -> None:
    assert bootstrap.Settings.from_env(BASE).max_deletes == 5


def test_nclav_max_deletes_sets_it() -> None:
    settings = bootstrap.Settings.from_env({**BASE, "NCLAV_MAX_DELETES": "2"})
    assert settings.max_deletes == 2


@pytest.mark.parametrize("bad", ["many", "-1"])
def test_a_bad_limit_is_named(bad: str) -> None:
    with pytest.raises(bootstrap.ConfigurationError, match="NCLAV_MAX_DELETES"):
        bootstrap.Settings.from_env({**BASE, "NCLAV_MAX_DELETES": bad})
