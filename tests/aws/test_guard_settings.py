"""The AWS runtime's delete guard limit comes from ``NCLAV_MAX_DELETES`` (issue 8, point 1),
read by core's settings and handed to the engine by ``compose``."""

from __future__ import annotations

import pytest

from functions_aws.settings import Settings
from nclav.errors import ConfigurationError

BASE = {
    "NCLAV_TABLE": "t",
    "NCLAV_BUCKET": "b",
    "NCLAV_STEPS_QUEUE_URL": "http://127.0.0.1:1/q/steps",
    "NCLAV_IAC_QUEUE_URL": "http://127.0.0.1:1/q/iac",
}


def test_the_default_limit_is_5() -> None:
    assert Settings.from_env(BASE).max_deletes == 5


def test_nclav_max_deletes_sets_it() -> None:
    assert Settings.from_env({**BASE, "NCLAV_MAX_DELETES": "2"}).max_deletes == 2


@pytest.mark.parametrize("bad", ["many", "-1"])
def test_a_bad_limit_is_named(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="NCLAV_MAX_DELETES"):
        Settings.from_env({**BASE, "NCLAV_MAX_DELETES": bad})
